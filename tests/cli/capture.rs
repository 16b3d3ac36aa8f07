use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use dermedge::capture::mjpeg::MjpegSplitter;
use dermedge::capture::{CaptureError, Frame, FramePixels, FrameSource};
use dermedge::codec::jpeg::with_huffman_tables;
use dermedge::codec::yuyv::yuyv_to_rgb;
use dermedge::config::RunConfig;
use dermedge::device_loop::RunLoop;
use dermedge::preprocess::{load_image_bytes, ImageLimits};
use dermedge::trigger::TriggerMode;
use dermedge::Ensemble;

use crate::util::*;

fn fixture_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn mjpeg_frames() -> Vec<Vec<u8>> {
    let mut splitter = MjpegSplitter::new();
    splitter.push(&std::fs::read(fixture_file("samples-200x150.mjpeg")).unwrap());
    std::iter::from_fn(|| splitter.next_frame()).collect()
}

/// Removes every DHT segment (marker FFC4) before the first scan.
fn strip_huffman_tables(jpeg: &[u8]) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    let mut at = 2;
    while jpeg[at + 1] != 0xDA {
        let length = usize::from(jpeg[at + 2]) << 8 | usize::from(jpeg[at + 3]);
        if jpeg[at + 1] != 0xC4 {
            out.extend_from_slice(&jpeg[at..at + 2 + length]);
        }
        at += 2 + length;
    }
    out.extend_from_slice(&jpeg[at..]);
    out
}

#[test]
fn frames_without_huffman_tables_decode_like_the_originals_once_tables_are_inserted() {
    let frames = mjpeg_frames();
    assert_eq!(frames.len(), 7);
    let limits = ImageLimits::default();
    for frame in &frames {
        let stripped = strip_huffman_tables(frame);
        assert!(stripped.len() < frame.len());
        assert!(!stripped.windows(2).any(|w| w == [0xFF, 0xC4]));
        let original = load_image_bytes(frame, Path::new("orig"), &limits)
            .unwrap()
            .rgb;
        assert!(
            image::load_from_memory(&stripped).is_err(),
            "the decoder read a frame without tables: insertion would be untested"
        );
        let patched = with_huffman_tables(&stripped);
        assert!(image::load_from_memory(&patched).is_ok());
        let decoded = load_image_bytes(&stripped, Path::new("stripped"), &limits)
            .unwrap()
            .rgb;
        assert_eq!(decoded, original);
    }
}

#[test]
fn yuyv_conversion_matches_ffmpeg_within_3() {
    let yuyv = std::fs::read(fixture_file("testsrc2-160x120.yuyv")).unwrap();
    let reference = std::fs::read(fixture_file("testsrc2-160x120.rgb")).unwrap();
    let rgb = yuyv_to_rgb(&yuyv, 160, 120).unwrap();
    let worst = rgb
        .as_raw()
        .iter()
        .zip(&reference)
        .map(|(a, b)| (i16::from(*a) - i16::from(*b)).abs())
        .max()
        .unwrap();
    assert!(worst <= 3, "largest difference {worst}");
}

/// Delivers `frames` frames, then fails (a camera unplugged) or ends.
struct ScriptedSource {
    frames: Vec<Vec<u8>>,
    fail_at_end: bool,
}

impl FrameSource for ScriptedSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        match self.frames.pop() {
            Some(bytes) => Ok(Some(Frame {
                origin: "scripted".into(),
                pixels: FramePixels::Encoded(bytes),
            })),
            None if self.fail_at_end => Err(CaptureError::Lost {
                source_name: "scripted".into(),
                message: "device unplugged".into(),
            }),
            None => Ok(None),
        }
    }

    fn name(&self) -> String {
        "scripted".into()
    }
}

#[test]
fn a_lost_source_is_reopened_with_backoff_and_capture_resumes() {
    let fx = Fixture::new();
    let ensemble = Ensemble::load(&fx.manifest).unwrap();
    let mut config = RunConfig::default();
    config.trigger.mode = TriggerMode::Every;
    config.trigger.min_interval_ms = 0;
    config.reconnect.initial_ms = 10;
    config.reconnect.max_ms = 40;
    let frames = mjpeg_frames();
    let mut opens = 0;
    let mut open = || {
        opens += 1;
        match opens {
            1 => Ok(Box::new(ScriptedSource {
                frames: frames[..2].to_vec(),
                fail_at_end: true,
            }) as Box<dyn FrameSource>),
            2 | 3 => Err(CaptureError::Open {
                source_name: "scripted".into(),
                message: "no such device".into(),
                fix: "plug it in".into(),
            }),
            _ => Ok(Box::new(ScriptedSource {
                frames: frames[2..5].to_vec(),
                fail_at_end: false,
            }) as Box<dyn FrameSource>),
        }
    };
    let (stop, request) = (AtomicBool::new(false), AtomicBool::new(false));
    let mut out = Vec::new();
    let started = std::time::Instant::now();
    let stats = RunLoop {
        ensemble: &ensemble,
        journal: None,
        config: &config,
        limits: ImageLimits::default(),
        stop: &stop,
        request: &request,
        out: &mut out,
        max_frames: None,
        stats_every: Some(2),
    }
    .run(&mut open);
    let sampled: Vec<u64> = stats.health.iter().map(|h| h.frames).collect();
    assert_eq!(sampled, vec![1, 2, 4]);
    assert_eq!(opens, 4);
    assert_eq!(
        (stats.frames, stats.classified, stats.reconnects),
        (5, 5, 1)
    );
    // Backoff: 10 ms after the loss, then 20 and 40 ms after the failed reopens.
    assert!(started.elapsed() >= std::time::Duration::from_millis(70));
    assert_eq!(String::from_utf8(out).unwrap().matches("  1. ").count(), 5);
}

/// Delivers the given frames in order, then ends.
struct FramesSource(std::vec::IntoIter<FramePixels>);

impl FrameSource for FramesSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        Ok(self.0.next().map(|pixels| Frame {
            origin: "camera:/dev/video0#7".into(),
            pixels,
        }))
    }

    fn name(&self) -> String {
        "frames".into()
    }
}

#[test]
fn frames_cut_short_are_counted_and_never_classified() {
    let fx = Fixture::new();
    let ensemble = Ensemble::load(&fx.manifest).unwrap();
    let mut config = RunConfig::default();
    config.trigger.mode = TriggerMode::Every;
    config.trigger.min_interval_ms = 0;
    let mjpeg = mjpeg_frames();
    let yuyv = std::fs::read(fixture_file("testsrc2-160x120.yuyv")).unwrap();
    let whole_yuyv = yuyv[..160 * 120 * 2].to_vec();
    let frames = vec![
        FramePixels::Encoded(mjpeg[0].clone()),
        // A short `bytesused`: the frame's first 60%, no end-of-image marker.
        FramePixels::Encoded(mjpeg[1][..mjpeg[1].len() * 6 / 10].to_vec()),
        FramePixels::Yuyv {
            data: whole_yuyv[..whole_yuyv.len() - 320].to_vec(),
            width: 160,
            height: 120,
        },
        FramePixels::Yuyv {
            data: whole_yuyv,
            width: 160,
            height: 120,
        },
    ];
    let mut source = Some(FramesSource(frames.into_iter()));
    let mut open = || {
        source
            .take()
            .map(|s| Box::new(s) as Box<dyn FrameSource>)
            .ok_or(CaptureError::Open {
                source_name: "frames".into(),
                message: "opened twice".into(),
                fix: "-".into(),
            })
    };
    let (stop, request) = (AtomicBool::new(false), AtomicBool::new(false));
    let mut out = Vec::new();
    let stats = RunLoop {
        ensemble: &ensemble,
        journal: None,
        config: &config,
        limits: ImageLimits::default(),
        stop: &stop,
        request: &request,
        out: &mut out,
        max_frames: Some(4),
        stats_every: None,
    }
    .run(&mut open);
    let out = String::from_utf8(out).unwrap();
    assert_eq!(
        (stats.frames, stats.undecodable, stats.incomplete),
        (4, 2, 2),
        "{out}"
    );
    assert_eq!(stats.classified + stats.rejected, 2, "{out}");
    assert!(out.contains("is incomplete"), "{out}");
    assert!(out.contains("needs 38400 bytes, got 38080"), "{out}");
}
