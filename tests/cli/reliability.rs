use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use dermedge::capture::mjpeg::MjpegSplitter;
use dermedge::journal::{read_journal, Journal};

use crate::util::*;

/// An MJPEG file of `count` frames cycling through the sample stream's seven.
fn long_mjpeg(dir: &Path, count: usize) -> PathBuf {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/samples-200x150.mjpeg");
    let mut splitter = MjpegSplitter::new();
    splitter.push(&std::fs::read(fixture).unwrap());
    let frames: Vec<Vec<u8>> = std::iter::from_fn(|| splitter.next_frame()).collect();
    let path = dir.join("long.mjpeg");
    let bytes: Vec<u8> = frames
        .iter()
        .cycle()
        .take(count)
        .flatten()
        .copied()
        .collect();
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn sigkill_at_random_points_loses_at_most_the_record_being_written() {
    let fx = Fixture::new();
    let stream = long_mjpeg(fx.dir.path(), 3000);
    let config = fx.path("every.toml");
    std::fs::write(
        &config,
        "[trigger]\nmode = \"every\"\nmin_interval_ms = 0\n",
    )
    .unwrap();
    let journal = fx.path("journal.jsonl");
    let kills = 25;
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..kills {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dermedge"))
            .arg("--ensemble")
            .arg(&fx.manifest)
            .args([
                "run",
                "--config",
                config.to_str().unwrap(),
                "--json",
                "--source",
            ])
            .arg(format!("mjpeg:{}", stream.display()))
            .arg("--journal")
            .arg(&journal)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        std::thread::sleep(Duration::from_millis(40 + state % 260));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    // Opening repairs a torn last line, as the next start would.
    drop(Journal::open(&journal).unwrap());

    let records: Vec<_> = read_journal(&journal)
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert!(
        records.len() > kills,
        "too few records ({}) for the test to mean anything",
        records.len()
    );
    let frame_numbers: Vec<u64> = records
        .iter()
        .map(|r| {
            r.outcome
                .input()
                .rsplit('#')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    let mut runs = 0;
    let mut gaps = 0;
    for (i, n) in frame_numbers.iter().enumerate() {
        if *n == 1 {
            runs += 1;
        } else if i == 0 || frame_numbers[i - 1] + 1 != *n {
            // A run that lost its torn last record leaves no gap inside the run; a gap would
            // mean a whole record vanished.
            gaps += 1;
        }
    }
    let torn = std::fs::read_to_string(fx.path("journal.jsonl.torn"))
        .map(|t| t.lines().count())
        .unwrap_or(0);
    eprintln!("kills {kills}: {} records kept, {runs} runs started, {torn} torn records moved aside, {gaps} gaps", records.len());
    assert_eq!(gaps, 0, "records went missing inside a run");
    assert!(
        runs <= kills && runs >= kills / 2,
        "{runs} runs for {kills} kills"
    );
    assert!(torn <= kills, "{torn} torn records for {kills} kills");
}
