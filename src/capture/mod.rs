//! Frame sources: the V4L2 camera (cargo feature `camera`) and replays for tests and field
//! debugging (a folder of images, an MJPEG stream, raw YUYV), behind one trait.

pub mod mjpeg;
#[cfg(feature = "camera")]
pub mod v4l2;

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::codec::{jpeg, yuyv};
use crate::digest::sha256_hex;
use crate::inputs::{expand_inputs, InputItem};
use crate::preprocess::{decode_upright, read_image_file, ImageError, ImageLimits};

/// Why a source could not deliver frames. The run loop reopens the source after these.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot open {source_name}: {message}. Fix: {fix}")]
    Open {
        source_name: String,
        message: String,
        fix: String,
    },
    #[error("{source_name} stopped delivering frames: {message}. dermedge reopens it; Fix: check the cable and the camera")]
    Lost {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: {message}. Fix: {fix}")]
    Unsupported {
        source_name: String,
        message: String,
        fix: String,
    },
}

impl CaptureError {
    /// Whether retrying cannot help (a build without camera support), unlike a camera that may
    /// be plugged in later.
    pub fn is_permanent(&self) -> bool {
        matches!(self, CaptureError::Unsupported { .. })
    }
}

/// Why one frame could not be turned into an upright RGB image; the loop skips such frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{origin}: {source}. Fix: set [camera] width/height to a size the camera sends (`dermedge cameras`)")]
    Yuyv {
        origin: String,
        source: yuyv::YuyvError,
    },
    #[error("{origin}: {width}x{height} frame is over the {max_width}x{max_height} limit. Fix: set a smaller [camera] width and height")]
    TooLarge {
        origin: String,
        width: u32,
        height: u32,
        max_width: u32,
        max_height: u32,
    },
}

impl FrameError {
    /// Whether the frame was cut short in capture or transfer (as opposed to damaged or oversized).
    pub fn is_incomplete(&self) -> bool {
        matches!(
            self,
            FrameError::Image(ImageError::Incomplete { .. })
                | FrameError::Yuyv {
                    source: yuyv::YuyvError::WrongLength { .. },
                    ..
                }
        )
    }
}

/// The pixels of one frame, as the source delivered them.
#[derive(Debug, Clone)]
pub enum FramePixels {
    /// A JPEG or PNG file's bytes, or one MJPEG frame (Huffman tables possibly left out).
    Encoded(Vec<u8>),
    /// Packed YUYV 4:2:2.
    Yuyv {
        data: Vec<u8>,
        width: u32,
        height: u32,
    },
}

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Where it came from: a file path, or the source and frame number.
    pub origin: String,
    pub pixels: FramePixels,
}

impl Frame {
    /// SHA-256 of the bytes as delivered: the file or MJPEG frame, or the raw YUYV buffer.
    pub fn sha256(&self) -> String {
        match &self.pixels {
            FramePixels::Encoded(bytes) => sha256_hex(bytes),
            FramePixels::Yuyv { data, .. } => sha256_hex(data),
        }
    }

    /// Decodes the frame upright, within `limits`.
    pub fn to_rgb(&self, limits: &ImageLimits) -> Result<RgbImage, FrameError> {
        match &self.pixels {
            FramePixels::Encoded(bytes) => {
                Ok(decode_upright(bytes, Path::new(&self.origin), limits)?)
            }
            FramePixels::Yuyv {
                data,
                width,
                height,
            } => {
                if *width > limits.max_width || *height > limits.max_height {
                    return Err(FrameError::TooLarge {
                        origin: self.origin.clone(),
                        width: *width,
                        height: *height,
                        max_width: limits.max_width,
                        max_height: limits.max_height,
                    });
                }
                yuyv::yuyv_to_rgb(data, *width, *height).map_err(|source| FrameError::Yuyv {
                    origin: self.origin.clone(),
                    source,
                })
            }
        }
    }

    /// The frame as a file others can open, and its extension: JPEG or PNG bytes as delivered
    /// (MJPEG frames with their Huffman tables completed), or `image` (the decoded frame) as PNG
    /// for raw formats.
    pub fn file_for_saving(
        &self,
        image: &RgbImage,
    ) -> Result<(Vec<u8>, &'static str), image::ImageError> {
        match &self.pixels {
            FramePixels::Encoded(bytes) => {
                let extension = match image::guess_format(bytes) {
                    Ok(image::ImageFormat::Png) => "png",
                    _ => "jpg",
                };
                Ok((jpeg::with_huffman_tables(bytes).into_owned(), extension))
            }
            FramePixels::Yuyv { .. } => {
                let mut png = Vec::new();
                image.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
                Ok((png, "png"))
            }
        }
    }
}

/// Something that delivers frames.
pub trait FrameSource {
    /// The next frame; `Ok(None)` when a finite source (a file, a folder) is exhausted.
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError>;
    /// A short description for logs and the journal's `source` field.
    fn name(&self) -> String;
}

/// The images of a folder (or single files), in sorted order, as frames.
#[derive(Debug)]
pub struct FolderSource {
    name: String,
    items: std::vec::IntoIter<InputItem>,
    limits: ImageLimits,
}

impl FolderSource {
    /// Lists the images under `path` now; fails when nothing readable is there.
    pub fn open(path: &Path, limits: &ImageLimits) -> Result<FolderSource, CaptureError> {
        let items = expand_inputs(&[path.to_path_buf()]);
        let open_error = |message: String| CaptureError::Open {
            source_name: path.display().to_string(),
            message,
            fix: "point the source at a folder of JPEG or PNG images".into(),
        };
        if let Some(InputItem::Unreadable { error, .. }) = items.first() {
            return Err(open_error(error.clone()));
        }
        if !items.iter().any(|i| matches!(i, InputItem::Image(_))) {
            return Err(open_error("it holds no .jpg, .jpeg or .png file".into()));
        }
        Ok(FolderSource {
            name: format!("folder:{}", path.display()),
            items: items.into_iter(),
            limits: *limits,
        })
    }
}

impl FrameSource for FolderSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        for item in self.items.by_ref() {
            let InputItem::Image(path) = item else {
                continue;
            };
            match read_image_file(&path, &self.limits) {
                Ok(bytes) => {
                    return Ok(Some(Frame {
                        origin: path.display().to_string(),
                        pixels: FramePixels::Encoded(bytes),
                    }))
                }
                Err(e) => log::warn!("{}: skipped: {e}", self.name),
            }
        }
        Ok(None)
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

fn open_stream(path: &Path) -> Result<Box<dyn Read + Send>, CaptureError> {
    if path == Path::new("-") {
        return Ok(Box::new(std::io::stdin()));
    }
    File::open(path)
        .map(|f| Box::new(f) as Box<dyn Read + Send>)
        .map_err(|e| CaptureError::Open {
            source_name: path.display().to_string(),
            message: e.to_string(),
            fix: "check the stream's path (or use - for standard input)".into(),
        })
}

/// An MJPEG byte stream from a file, a named pipe or standard input (`-`).
pub struct MjpegStreamSource {
    name: String,
    reader: Box<dyn Read + Send>,
    splitter: mjpeg::MjpegSplitter,
    frames: u64,
}

impl MjpegStreamSource {
    /// Opens the stream at `path` (`-` for standard input).
    pub fn open(path: &Path) -> Result<MjpegStreamSource, CaptureError> {
        Ok(MjpegStreamSource {
            name: format!("mjpeg:{}", path.display()),
            reader: open_stream(path)?,
            splitter: mjpeg::MjpegSplitter::new(),
            frames: 0,
        })
    }
}

impl FrameSource for MjpegStreamSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some(bytes) = self.splitter.next_frame() {
                self.frames += 1;
                return Ok(Some(Frame {
                    origin: format!("{}#{}", self.name, self.frames),
                    pixels: FramePixels::Encoded(bytes),
                }));
            }
            match self.reader.read(&mut chunk) {
                Ok(0) => {
                    if self.splitter.pending() > 0 {
                        log::warn!(
                            "{}: stream ended inside a frame; {} bytes dropped",
                            self.name,
                            self.splitter.pending()
                        );
                    }
                    return Ok(None);
                }
                Ok(n) => self.splitter.push(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(CaptureError::Lost {
                        source_name: self.name.clone(),
                        message: e.to_string(),
                    })
                }
            }
        }
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

/// Raw YUYV frames of a given size from a file, a named pipe or standard input (`-`).
pub struct YuyvStreamSource {
    name: String,
    reader: Box<dyn Read + Send>,
    width: u32,
    height: u32,
    frames: u64,
}

impl YuyvStreamSource {
    /// Opens the stream at `path` (`-` for standard input) of `width` x `height` frames.
    pub fn open(
        path: &Path,
        width: u32,
        height: u32,
        limits: &ImageLimits,
    ) -> Result<YuyvStreamSource, CaptureError> {
        if width == 0
            || height == 0
            || !width.is_multiple_of(2)
            || width > limits.max_width
            || height > limits.max_height
        {
            return Err(CaptureError::Open {
                source_name: path.display().to_string(),
                message: format!("{width}x{height} is not a usable YUYV frame size"),
                fix: format!(
                    "give an even width and a height within {}x{}",
                    limits.max_width, limits.max_height
                ),
            });
        }
        Ok(YuyvStreamSource {
            name: format!("yuyv:{}", path.display()),
            reader: open_stream(path)?,
            width,
            height,
            frames: 0,
        })
    }
}

impl FrameSource for YuyvStreamSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        let len = yuyv::yuyv_frame_len(self.width, self.height);
        let mut data = vec![0u8; len];
        let mut filled = 0;
        while filled < len {
            match self.reader.read(&mut data[filled..]) {
                Ok(0) => {
                    if filled > 0 {
                        log::warn!(
                            "{}: stream ended inside a frame; {filled} bytes dropped",
                            self.name
                        );
                    }
                    return Ok(None);
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(CaptureError::Lost {
                        source_name: self.name.clone(),
                        message: e.to_string(),
                    })
                }
            }
        }
        self.frames += 1;
        Ok(Some(Frame {
            origin: format!("{}#{}", self.name, self.frames),
            pixels: FramePixels::Yuyv {
                data,
                width: self.width,
                height: self.height,
            },
        }))
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

/// Where frames come from, as written in the config or on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A V4L2 device; `None` picks the first capture device.
    Camera(Option<PathBuf>),
    Folder(PathBuf),
    Mjpeg(PathBuf),
    Yuyv {
        path: PathBuf,
        width: u32,
        height: u32,
    },
}

impl SourceSpec {
    /// Whether the frames come from standard input (`-` as the stream's path).
    pub fn reads_stdin(&self) -> bool {
        matches!(self, SourceSpec::Mjpeg(p) | SourceSpec::Yuyv { path: p, .. } if p.as_os_str() == "-")
    }
}

impl std::str::FromStr for SourceSpec {
    type Err = String;

    /// `camera`, `camera:/dev/video0`, `folder:PATH`, `mjpeg:PATH`, `yuyv:WIDTHxHEIGHT:PATH`
    /// (`-` as PATH reads standard input).
    fn from_str(s: &str) -> Result<SourceSpec, String> {
        let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
        let need_path = |rest: &str| {
            if rest.is_empty() {
                Err(format!("source `{s}` needs a path after `{kind}:`"))
            } else {
                Ok(PathBuf::from(rest))
            }
        };
        match kind {
            "camera" if rest.is_empty() => Ok(SourceSpec::Camera(None)),
            "camera" => Ok(SourceSpec::Camera(Some(PathBuf::from(rest)))),
            "folder" => Ok(SourceSpec::Folder(need_path(rest)?)),
            "mjpeg" => Ok(SourceSpec::Mjpeg(need_path(rest)?)),
            "yuyv" => {
                let (size, path) = rest
                    .split_once(':')
                    .ok_or_else(|| format!("source `{s}`: write yuyv:WIDTHxHEIGHT:PATH"))?;
                let (w, h) = size
                    .split_once('x')
                    .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
                    .ok_or_else(|| format!("source `{s}`: `{size}` is not WIDTHxHEIGHT"))?;
                Ok(SourceSpec::Yuyv {
                    path: need_path(path)?,
                    width: w,
                    height: h,
                })
            }
            _ => Err(format!(
                "unknown source `{s}`: use camera[:DEVICE], folder:PATH, mjpeg:PATH or yuyv:WIDTHxHEIGHT:PATH"
            )),
        }
    }
}

/// Camera negotiation settings (used by the V4L2 source).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraSettings {
    pub width: u32,
    pub height: u32,
    /// `mjpeg` (preferred) or `yuyv`.
    pub prefer: String,
    pub buffers: u32,
    /// A camera that delivers no frame for this long is reopened (the stream's watchdog).
    pub timeout_ms: u64,
}

impl Default for CameraSettings {
    fn default() -> Self {
        CameraSettings {
            width: 1280,
            height: 960,
            prefer: "mjpeg".into(),
            buffers: 4,
            timeout_ms: 5000,
        }
    }
}

/// Opens the source a spec names.
pub fn open_source(
    spec: &SourceSpec,
    camera: &CameraSettings,
    limits: &ImageLimits,
) -> Result<Box<dyn FrameSource>, CaptureError> {
    match spec {
        SourceSpec::Folder(path) => Ok(Box::new(FolderSource::open(path, limits)?)),
        SourceSpec::Mjpeg(path) => Ok(Box::new(MjpegStreamSource::open(path)?)),
        SourceSpec::Yuyv {
            path,
            width,
            height,
        } => Ok(Box::new(YuyvStreamSource::open(
            path, *width, *height, limits,
        )?)),
        SourceSpec::Camera(device) => open_camera(device.as_deref(), camera),
    }
}

#[cfg(feature = "camera")]
fn open_camera(
    device: Option<&Path>,
    settings: &CameraSettings,
) -> Result<Box<dyn FrameSource>, CaptureError> {
    Ok(Box::new(v4l2::V4l2Source::open(device, settings)?))
}

#[cfg(not(feature = "camera"))]
fn open_camera(
    device: Option<&Path>,
    _settings: &CameraSettings,
) -> Result<Box<dyn FrameSource>, CaptureError> {
    Err(CaptureError::Unsupported {
        source_name: device.map_or("camera".into(), |d| d.display().to_string()),
        message: "this dermedge was built without camera support".into(),
        fix: "build with `cargo build --release --features camera` (needs libclang-dev), or use a folder:, mjpeg: or yuyv: source".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_source_specs() {
        assert_eq!("camera".parse(), Ok(SourceSpec::Camera(None)));
        assert_eq!(
            "camera:/dev/dermatoscope".parse(),
            Ok(SourceSpec::Camera(Some("/dev/dermatoscope".into())))
        );
        assert_eq!("folder:x".parse(), Ok(SourceSpec::Folder("x".into())));
        assert_eq!("mjpeg:-".parse(), Ok(SourceSpec::Mjpeg("-".into())));
        assert_eq!(
            "yuyv:640x480:/tmp/f.raw".parse(),
            Ok(SourceSpec::Yuyv {
                path: "/tmp/f.raw".into(),
                width: 640,
                height: 480
            })
        );
        assert!("yuyv:640:/tmp/f".parse::<SourceSpec>().is_err());
        assert!("folder:".parse::<SourceSpec>().is_err());
        assert!("webcam".parse::<SourceSpec>().is_err());
    }
}
