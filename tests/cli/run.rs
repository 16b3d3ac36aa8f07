use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

fn fixture_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/samples")
}

fn run_dermedge(fx: &Fixture, args: &[&str]) -> std::process::Output {
    fx.run(&[&["run"], args].concat())
}

/// Runs with a config that classifies every frame passing the gate, without a rate limit.
fn run_every(fx: &Fixture, args: &[&str]) -> std::process::Output {
    let config = fx.path("every.toml");
    std::fs::write(
        &config,
        "[trigger]\nmode = \"every\"\nmin_interval_ms = 0\n",
    )
    .unwrap();
    fx.run(&[&["run", "--config", config.to_str().unwrap()], args].concat())
}

fn write_config(fx: &Fixture, text: &str) -> PathBuf {
    let path = fx.path("dermedge.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn(fx: &Fixture, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dermedge"))
        .arg("--ensemble")
        .arg(&fx.manifest)
        .arg("run")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_for_lines(path: &Path, count: usize, limit: Duration) {
    let started = Instant::now();
    while started.elapsed() < limit {
        let lines = std::fs::read_to_string(path)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if lines >= count {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "{} did not reach {count} lines in {limit:?}",
        path.display()
    );
}

#[test]
fn folder_source_classifies_every_frame_and_journals_the_source() {
    let fx = Fixture::new();
    let journal = fx.path("j.jsonl");
    let source = format!("folder:{}", samples_dir().display());
    let out = run_every(
        &fx,
        &[
            "--source",
            &source,
            "--json",
            "--journal",
            journal.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let records = json_lines(&stdout(&out));
    let samples = sample_images();
    assert_eq!(records.len(), samples.len());
    for (record, sample) in records.iter().zip(&samples) {
        assert_eq!(record["input"], sample.display().to_string());
        assert_eq!(record["sha256"], sha256_of(sample));
        assert_eq!(record["top"].as_array().unwrap().len(), 3);
    }
    let journaled = json_lines(&std::fs::read_to_string(&journal).unwrap());
    assert_eq!(journaled.len(), samples.len());
    assert_eq!(journaled[0]["source"], source);
    assert!(
        stderr(&out).contains("7 frames, 7 classified"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn mjpeg_and_yuyv_sources_decode_and_classify_each_frame() {
    let fx = Fixture::new();
    let mjpeg = fixture_file("samples-200x150.mjpeg");
    let out = run_every(
        &fx,
        &[
            "--source",
            &format!("mjpeg:{}", mjpeg.display()),
            "--json",
            "--journal",
            fx.path("a.jsonl").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let records = json_lines(&stdout(&out));
    assert_eq!(records.len(), 7, "{}", stderr(&out));
    assert!(records
        .iter()
        .all(|r| r["top"].as_array().is_some_and(|t| t.len() == 3)));
    assert!(records[6]["input"].as_str().unwrap().ends_with("#7"));

    let yuyv = fixture_file("samples-160x120.yuyv");
    let source = format!("yuyv:160x120:{}", yuyv.display());
    let out = run_every(
        &fx,
        &[
            "--source",
            &source,
            "--json",
            "--journal",
            fx.path("b.jsonl").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let records = json_lines(&stdout(&out));
    assert_eq!(records.len(), 3, "{}", stderr(&out));
    let raw = std::fs::read(&yuyv).unwrap();
    assert_eq!(
        records[0]["sha256"],
        dermedge::digest::sha256_hex(&raw[..160 * 120 * 2])
    );
}

#[test]
fn mjpeg_from_standard_input() {
    let fx = Fixture::new();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dermedge"))
        .args([
            "--ensemble",
            fx.manifest.to_str().unwrap(),
            "run",
            "--source",
            "mjpeg:-",
            "--json",
        ])
        .arg("--config")
        .arg(write_config(
            &fx,
            "[trigger]\nmode = \"every\"\nmin_interval_ms = 0\n",
        ))
        .arg("--journal")
        .arg(fx.path("j.jsonl"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let bytes = std::fs::read(fixture_file("samples-200x150.mjpeg")).unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        for chunk in bytes.chunks(1000) {
            stdin.write_all(chunk).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_lines(&stdout(&out)).len(), 7);
}

#[test]
fn gate_rejections_are_printed_and_journaled_with_the_fix() {
    let fx = Fixture::new();
    let folder = fx.path("frames");
    std::fs::create_dir(&folder).unwrap();
    let sharp = image::open(&sample_images()[4]).unwrap().to_rgb8();
    image::imageops::blur(&sharp, 3.0)
        .save(folder.join("a-blurred.png"))
        .unwrap();
    sharp.save(folder.join("b-sharp.png")).unwrap();
    let journal = fx.path("j.jsonl");
    let out = run_every(
        &fx,
        &[
            "--source",
            &format!("folder:{}", folder.display()),
            "--journal",
            journal.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("a-blurred.png: retake: out of focus"),
        "{text}"
    );
    assert!(
        text.contains("b-sharp.png") && text.contains("  1. "),
        "{text}"
    );
    let journaled = json_lines(&std::fs::read_to_string(&journal).unwrap());
    assert_eq!(journaled.len(), 2);
    assert!(journaled[0]["reasons"][0]
        .as_str()
        .unwrap()
        .contains("out of focus"));
    assert!(journaled[0]["measures"]["focus"].as_f64().unwrap() < 8.0);
    assert_eq!(journaled[1]["top"].as_array().unwrap().len(), 3);
}

#[test]
fn auto_trigger_fires_once_per_steady_view() {
    let fx = Fixture::new();
    let folder = fx.path("frames");
    std::fs::create_dir(&folder).unwrap();
    let samples = sample_images();
    for i in 0..12 {
        let src = if i < 6 { &samples[1] } else { &samples[2] };
        std::fs::copy(src, folder.join(format!("{i:02}.jpg"))).unwrap();
    }
    let config = write_config(&fx, "[trigger]\nsteady_frames = 3\nmin_interval_ms = 0\n");
    let out = run_dermedge(
        &fx,
        &[
            "--config",
            config.to_str().unwrap(),
            "--source",
            &format!("folder:{}", folder.display()),
            "--auto",
            "--json",
            "--journal",
            fx.path("j.jsonl").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let records = json_lines(&stdout(&out));
    let inputs: Vec<String> = records
        .iter()
        .map(|r| {
            r["input"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(inputs, vec!["03.jpg", "09.jpg"]);
}

#[test]
fn sigusr1_requests_and_sigterm_stops_cleanly_with_the_journal_intact() {
    let fx = Fixture::new();
    let journal = fx.path("j.jsonl");
    let config = write_config(
        &fx,
        "[trigger]\nmode = \"manual\"\nmin_interval_ms = 0\n[replay]\nfps = 50.0\nloop = true\n",
    );
    let source = format!("folder:{}", samples_dir().display());
    let child = spawn(
        &fx,
        &[
            "--config",
            config.to_str().unwrap(),
            "--source",
            &source,
            "--json",
            "--journal",
            journal.to_str().unwrap(),
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, "USR1");
    wait_for_lines(&journal, 1, Duration::from_secs(20));
    signal(&child, "USR1");
    wait_for_lines(&journal, 2, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(200));
    signal(&child, "TERM");
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(&journal).unwrap();
    assert!(text.ends_with('\n'));
    let records = json_lines(&text);
    assert_eq!(records.len(), 2, "{text}");
    assert_eq!(json_lines(&stdout(&out)).len(), 2);
    assert!(stderr(&out).contains("2 classified"), "{}", stderr(&out));
}

#[test]
fn a_full_disk_is_logged_and_capture_goes_on() {
    if !Path::new("/dev/full").exists() {
        eprintln!("SKIPPED: no /dev/full here");
        return;
    }
    let fx = Fixture::new();
    let source = format!("folder:{}", samples_dir().display());
    let out = run_every(
        &fx,
        &["--source", &source, "--json", "--journal", "/dev/full"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(json_lines(&stdout(&out)).len(), 7);
    assert!(
        stderr(&out).contains("cannot append to journal /dev/full"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("7 journal failures"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn frames_are_saved_only_when_the_setting_is_on() {
    let fx = Fixture::new();
    let frames = fx.path("saved");
    let source = format!("mjpeg:{}", fixture_file("samples-200x150.mjpeg").display());
    let journal = fx.path("j.jsonl");
    let args = [
        "--source",
        &source,
        "--json",
        "--journal",
        journal.to_str().unwrap(),
    ];
    let out = run_every(&fx, &args);
    assert_eq!(out.status.code(), Some(0));
    assert!(!frames.exists());

    let config = write_config(
        &fx,
        &format!("save_frames = true\nframes_dir = \"{}\"\n[trigger]\nmode = \"every\"\nmin_interval_ms = 0\n", frames.display()),
    );
    let out = run_dermedge(
        &fx,
        &[&["--config", config.to_str().unwrap()], &args[..]].concat(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let records = json_lines(&stdout(&out));
    for record in &records {
        let saved = frames.join(format!("{}.jpg", record["sha256"].as_str().unwrap()));
        assert_eq!(
            dermedge::digest::sha256_hex(&std::fs::read(&saved).unwrap()),
            record["sha256"]
        );
    }
}

#[test]
fn bad_sources_and_configs_exit_2_with_the_fix() {
    let fx = Fixture::new();
    let out = run_dermedge(&fx, &["--source", "webcam"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown source `webcam`"),
        "{}",
        stderr(&out)
    );
    let out = run_dermedge(&fx, &["--source", "mjpeg:/no/such/stream.mjpeg"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("Fix:"), "{}", stderr(&out));
    let config = write_config(&fx, "[gate]\nmin_fokus = 2.0\n");
    let out = run_dermedge(&fx, &["--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("min_fokus"), "{}", stderr(&out));
}

#[test]
fn permanent_source_problems_exit_2_instead_of_waiting() {
    let fx = Fixture::new();
    let empty = fx.path("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = run_dermedge(&fx, &["--source", &format!("folder:{}", empty.display())]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("holds no .jpg"), "{}", stderr(&out));
    if !cfg!(feature = "camera") {
        let out = run_dermedge(
            &fx,
            &[
                "--source",
                "camera",
                "--journal",
                fx.path("j.jsonl").to_str().unwrap(),
            ],
        );
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr(&out).contains("built without camera support"),
            "{}",
            stderr(&out)
        );
    }
}
