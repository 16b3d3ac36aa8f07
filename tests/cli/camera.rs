//! The V4L2 path without hardware: `dermedge run --source camera:...` with the real `v4l` crate
//! code against a fake camera at the system-call level (`tests/shims/fake_v4l2.c`, built here
//! and preloaded), serving the sample frames as MJPEG or YUYV, with one injected fault per test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::util::*;

const DEVICE: &str = "/dev/video77";
const FRAMES: u64 = 6;

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Mjpeg,
    Yuyv,
}

impl Format {
    fn fourcc(self) -> &'static str {
        match self {
            Format::Mjpeg => "MJPG",
            Format::Yuyv => "YUYV",
        }
    }

    /// The sample images as this format's frames, and their size.
    fn frames(self) -> (PathBuf, u32, u32) {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        match self {
            Format::Mjpeg => (fixtures.join("samples-200x150.mjpeg"), 200, 150),
            Format::Yuyv => (fixtures.join("samples-160x120.yuyv"), 160, 120),
        }
    }
}

/// What one `dermedge run` against the fake camera left behind.
struct CameraRun {
    output: Output,
    records: Vec<Value>,
    journal: Vec<Value>,
    events: String,
}

fn run_camera(fourcc: &str, frames: (PathBuf, u32, u32), prefer: &str, faults: &str) -> CameraRun {
    let fx = Fixture::new();
    let (file, width, height) = frames;
    let config = fx.path("dermedge.toml");
    std::fs::write(
        &config,
        format!(
            "[camera]\nwidth = 1280\nheight = 960\nprefer = \"{prefer}\"\ntimeout_ms = 300\n\
             [reconnect]\ninitial_ms = 20\nmax_ms = 100\n\
             [trigger]\nmode = \"every\"\nmin_interval_ms = 0\n"
        ),
    )
    .unwrap();
    let journal = fx.path("journal.jsonl");
    let events = fx.path("camera-events.log");
    let output = Command::new(env!("CARGO_BIN_EXE_dermedge"))
        .arg("--ensemble")
        .arg(&fx.manifest)
        .args(["run", "--json", "--source", &format!("camera:{DEVICE}")])
        .args(["--max-frames", &FRAMES.to_string()])
        .arg("--config")
        .arg(&config)
        .arg("--journal")
        .arg(&journal)
        .env_remove("DERMEDGE_JOURNAL")
        .env("RUST_LOG", "info")
        .env("LD_PRELOAD", shim("fake_v4l2"))
        .env("FAKE_V4L2_DEVICE", DEVICE)
        .env("FAKE_V4L2_FORMAT", fourcc)
        .env("FAKE_V4L2_FRAMES", &file)
        .env("FAKE_V4L2_WIDTH", width.to_string())
        .env("FAKE_V4L2_HEIGHT", height.to_string())
        .env("FAKE_V4L2_FAULTS", faults)
        .env("FAKE_V4L2_UNPLUG_MS", "150")
        .env("FAKE_V4L2_LOG", &events)
        .output()
        .unwrap();
    let journal = std::fs::read_to_string(&journal).unwrap_or_default();
    CameraRun {
        records: json_lines(&stdout(&output)),
        journal: json_lines(&journal),
        events: std::fs::read_to_string(&events).unwrap_or_default(),
        output,
    }
}

/// Runs `format`'s frames through the fake camera with `faults`, checks that every frame got a
/// printed and journaled record, none lost or torn, and returns the run.
fn run_with_fault(format: Format, faults: &str) -> CameraRun {
    let run = run_camera(format.fourcc(), format.frames(), "mjpeg", faults);
    let err = stderr(&run.output);
    assert!(
        !err.contains("panicked"),
        "{faults}: dermedge panicked:\n{err}"
    );
    assert_eq!(
        run.records.len() as u64,
        FRAMES,
        "{faults}: one record per frame\nstderr:\n{err}\ncamera:\n{}",
        run.events
    );
    assert_eq!(run.journal.len(), run.records.len(), "{faults}: {err}");
    for (printed, journaled) in run.records.iter().zip(&run.journal) {
        assert_eq!(printed["input"], journaled["input"]);
        assert_eq!(printed["sha256"], journaled["sha256"]);
        assert!(journaled["time"].is_string() && journaled["source"].is_string());
    }
    run
}

fn classified(run: &CameraRun) -> usize {
    run.records.iter().filter(|r| r["top"].is_array()).count()
}

fn check_clean(format: Format) {
    let run = run_with_fault(format, "");
    assert_eq!(classified(&run), FRAMES as usize, "{}", stderr(&run.output));
    assert_eq!(run.output.status.code(), Some(0));
    assert!(stderr(&run.output).contains(" 0 reconnects"));
    assert_eq!(
        run.events.lines().filter(|l| *l == "open").count(),
        1,
        "{}",
        run.events
    );
}

fn check_reconnect(format: Format, fault: &str, event: &str) {
    let run = run_with_fault(format, &format!("{fault}@3"));
    let err = stderr(&run.output);
    assert!(run.events.contains(event), "{}", run.events);
    assert!(
        err.contains(" 1 reconnects") || err.contains(" 2 reconnects"),
        "{err}"
    );
    assert!(
        run.events.matches("streamon").count() >= 2,
        "{}",
        run.events
    );
    assert_eq!(classified(&run), FRAMES as usize, "{err}");
    assert_eq!(run.output.status.code(), Some(0), "{err}");
}

fn check_short_frame(format: Format) {
    let run = run_with_fault(format, "short@3");
    let err = stderr(&run.output);
    assert!(run.events.contains("fault short"), "{}", run.events);
    let refused: Vec<&Value> = run
        .records
        .iter()
        .filter(|r| r["error"].is_string())
        .collect();
    assert_eq!(refused.len(), 1, "{:?}", run.records);
    let message = refused[0]["error"].as_str().unwrap();
    let expected = match format {
        Format::Mjpeg => "is incomplete",
        Format::Yuyv => "needs 38400 bytes",
    };
    assert!(message.contains(expected), "{message}");
    assert_eq!(classified(&run), FRAMES as usize - 1);
    assert!(err.contains("1 undecodable (1 cut short)"), "{err}");
}

fn check_refused_format(format: Format) {
    let other = match format {
        Format::Mjpeg => "yuyv",
        Format::Yuyv => "mjpeg",
    };
    let run = run_camera(format.fourcc(), format.frames(), other, "refuse-format");
    let err = stderr(&run.output);
    assert!(run.events.contains("s_fmt adjusted"), "{}", run.events);
    assert_eq!(classified(&run), FRAMES as usize, "{err}");
    assert!(
        err.contains(&format!(
            "driver set {}x{} {}",
            format.frames().1,
            format.frames().2,
            format.fourcc()
        )),
        "{err}"
    );
}

#[test]
fn mjpeg_frames_from_a_camera_are_classified_and_journaled() {
    check_clean(Format::Mjpeg);
}

#[test]
fn yuyv_frames_from_a_camera_are_classified_and_journaled() {
    check_clean(Format::Yuyv);
}

#[test]
fn an_unplugged_mjpeg_camera_is_reopened_with_backoff() {
    check_reconnect(Format::Mjpeg, "unplug", "open refused: unplugged");
}

#[test]
fn an_unplugged_yuyv_camera_is_reopened_with_backoff() {
    check_reconnect(Format::Yuyv, "unplug", "open refused: unplugged");
}

#[test]
fn an_io_error_on_dequeue_reopens_an_mjpeg_camera() {
    check_reconnect(Format::Mjpeg, "eio", "fault eio");
}

#[test]
fn an_io_error_on_dequeue_reopens_a_yuyv_camera() {
    check_reconnect(Format::Yuyv, "eio", "fault eio");
}

#[test]
fn a_stalled_mjpeg_stream_is_restarted_by_the_watchdog() {
    check_reconnect(Format::Mjpeg, "stall", "fault stall");
}

#[test]
fn a_stalled_yuyv_stream_is_restarted_by_the_watchdog() {
    check_reconnect(Format::Yuyv, "stall", "fault stall");
}

#[test]
fn a_short_mjpeg_frame_is_refused_and_counted() {
    check_short_frame(Format::Mjpeg);
}

#[test]
fn a_short_yuyv_frame_is_refused_and_counted() {
    check_short_frame(Format::Yuyv);
}

#[test]
fn an_mjpeg_camera_that_refuses_yuyv_is_used_in_mjpeg() {
    check_refused_format(Format::Mjpeg);
}

#[test]
fn a_yuyv_camera_that_refuses_mjpeg_is_used_in_yuyv() {
    check_refused_format(Format::Yuyv);
}

#[test]
fn a_camera_with_neither_mjpeg_nor_yuyv_is_a_clear_error() {
    let run = run_camera("GREY", Format::Yuyv.frames(), "mjpeg", "");
    let err = stderr(&run.output);
    assert_eq!(run.output.status.code(), Some(2), "{err}");
    assert!(
        err.contains("neither MJPEG nor YUYV (it offers GREY)") && err.contains("Fix:"),
        "{err}"
    );
    assert!(run.records.is_empty());
}
