//! The V4L2 source: a UVC camera through the `v4l` crate, mmap streaming, MJPEG preferred with
//! YUYV as the fallback. Everything below the ioctls (MJPEG tables, YUYV conversion, the loop) is
//! shared with the replay sources and tested there.

use std::path::{Path, PathBuf};
use std::time::Duration;

use v4l::buffer::Type;
use v4l::capability::Flags;
use v4l::frameinterval::FrameIntervalEnum;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, FourCC};

use super::{CameraSettings, CaptureError, Frame, FramePixels, FrameSource};

const MJPEG: [u8; 4] = *b"MJPG";
const YUYV: [u8; 4] = *b"YUYV";

/// A streaming V4L2 capture device.
pub struct V4l2Source {
    name: String,
    stream: Stream<'static>,
    fourcc: [u8; 4],
    width: u32,
    height: u32,
    stride: usize,
    _device: Device,
}

fn open_error(path: &Path, message: impl std::fmt::Display, fix: &str) -> CaptureError {
    CaptureError::Open {
        source_name: path.display().to_string(),
        message: message.to_string(),
        fix: fix.into(),
    }
}

/// The first device that can capture video, if any.
pub fn first_capture_device() -> Option<PathBuf> {
    let mut nodes = v4l::context::enum_devices();
    nodes.sort_by_key(|n| n.index());
    nodes
        .into_iter()
        .map(|n| n.path().to_path_buf())
        .find(|path| {
            Device::with_path(path)
                .and_then(|d| d.query_caps())
                .is_ok_and(|caps| caps.capabilities.contains(Flags::VIDEO_CAPTURE))
        })
}

impl V4l2Source {
    /// Opens `device` (or the first capture device) and negotiates a format.
    pub fn open(
        device: Option<&Path>,
        settings: &CameraSettings,
    ) -> Result<V4l2Source, CaptureError> {
        let path = match device {
            Some(p) => p.to_path_buf(),
            None => first_capture_device().ok_or_else(|| {
                open_error(
                    Path::new("camera"),
                    "no V4L2 capture device found",
                    "plug in the dermatoscope and check `dermedge cameras`",
                )
            })?,
        };
        let dev = Device::with_path(&path).map_err(|e| {
            open_error(
                &path,
                e,
                "check the device path and that the user is in group `video`",
            )
        })?;
        let offered: Vec<[u8; 4]> = dev
            .enum_formats()
            .map_err(|e| open_error(&path, e, "is this a video capture device?"))?
            .into_iter()
            .map(|d| d.fourcc.repr)
            .collect();
        let order = if settings.prefer.eq_ignore_ascii_case("yuyv") {
            [YUYV, MJPEG]
        } else {
            [MJPEG, YUYV]
        };
        if offered.is_empty() {
            return Err(open_error(
                &path,
                "the device lists no pixel format",
                "reconnect the camera",
            ));
        }
        let fourcc = order
            .into_iter()
            .find(|f| offered.contains(f))
            .ok_or_else(|| CaptureError::Unsupported {
                source_name: path.display().to_string(),
                message: format!(
                    "the camera offers neither MJPEG nor YUYV (it offers {})",
                    offered
                        .iter()
                        .map(|f| String::from_utf8_lossy(f).into_owned())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                fix: "use a UVC camera that sends MJPEG or YUYV".into(),
            })?;
        let mut format = dev
            .format()
            .map_err(|e| open_error(&path, e, "reconnect the camera"))?;
        format.width = settings.width;
        format.height = settings.height;
        format.fourcc = FourCC::new(&fourcc);
        let actual = dev.set_format(&format).map_err(|e| {
            open_error(
                &path,
                e,
                "choose a size the camera offers (`dermedge cameras`)",
            )
        })?;
        log::info!(
            "{}: asked for {}x{} {}, driver set {}x{} {}",
            path.display(),
            settings.width,
            settings.height,
            String::from_utf8_lossy(&fourcc),
            actual.width,
            actual.height,
            String::from_utf8_lossy(&actual.fourcc.repr)
        );
        if actual.fourcc.repr != MJPEG && actual.fourcc.repr != YUYV {
            return Err(open_error(
                &path,
                format!(
                    "driver set format {}",
                    String::from_utf8_lossy(&actual.fourcc.repr)
                ),
                "set prefer = \"yuyv\" or \"mjpeg\" in [camera]",
            ));
        }
        let mut stream = Stream::with_buffers(&dev, Type::VideoCapture, settings.buffers.max(2))
            .map_err(|e| open_error(&path, e, "another program may hold the camera"))?;
        stream.set_timeout(Duration::from_millis(settings.timeout_ms.max(1)));
        Ok(V4l2Source {
            name: format!("camera:{}", path.display()),
            stream,
            fourcc: actual.fourcc.repr,
            width: actual.width,
            height: actual.height,
            stride: actual.stride as usize,
            _device: dev,
        })
    }
}

impl FrameSource for V4l2Source {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        let (buffer, meta) = self.stream.next().map_err(|e| CaptureError::Lost {
            source_name: self.name.clone(),
            message: e.to_string(),
        })?;
        let used = (meta.bytesused as usize).min(buffer.len());
        let pixels = if self.fourcc == MJPEG {
            FramePixels::Encoded(buffer[..used].to_vec())
        } else {
            let data = crate::codec::yuyv::unpad_rows(
                &buffer[..used],
                self.width,
                self.height,
                self.stride,
            )
            .unwrap_or_else(|| buffer[..used].to_vec());
            FramePixels::Yuyv {
                data,
                width: self.width,
                height: self.height,
            }
        };
        Ok(Some(Frame {
            origin: format!("{}#{}", self.name, meta.sequence),
            pixels,
        }))
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

/// A readable list of capture devices with their formats, sizes and frame rates.
pub fn describe_cameras() -> String {
    let mut out = String::new();
    let mut nodes = v4l::context::enum_devices();
    nodes.sort_by_key(|n| n.index());
    if nodes.is_empty() {
        return "no V4L2 devices found\n".into();
    }
    for node in nodes {
        let path = node.path().to_path_buf();
        let Ok(dev) = Device::with_path(&path) else {
            out.push_str(&format!("{}: cannot open\n", path.display()));
            continue;
        };
        let caps = dev.query_caps().ok();
        let card = caps.as_ref().map_or("?".to_string(), |c| c.card.clone());
        let capture = caps.is_some_and(|c| c.capabilities.contains(Flags::VIDEO_CAPTURE));
        out.push_str(&format!(
            "{}  {}{}\n",
            path.display(),
            card,
            if capture { "" } else { "  (no video capture)" }
        ));
        if !capture {
            continue;
        }
        for format in dev.enum_formats().unwrap_or_default() {
            out.push_str(&format!(
                "  {} ({})\n",
                String::from_utf8_lossy(&format.fourcc.repr),
                format.description
            ));
            for size in dev.enum_framesizes(format.fourcc).unwrap_or_default() {
                for d in size.size.to_discrete() {
                    let rates: Vec<String> = dev
                        .enum_frameintervals(format.fourcc, d.width, d.height)
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|i| match i.interval {
                            FrameIntervalEnum::Discrete(f) if f.numerator > 0 => Some(format!(
                                "{:.0}",
                                f64::from(f.denominator) / f64::from(f.numerator)
                            )),
                            _ => None,
                        })
                        .collect();
                    out.push_str(&format!(
                        "    {}x{}  fps {}\n",
                        d.width,
                        d.height,
                        rates.join(", ")
                    ));
                }
            }
        }
    }
    out
}
