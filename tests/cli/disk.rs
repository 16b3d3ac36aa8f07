//! Disk trouble while `dermedge run` is journaling: the journal's file fails the writes of
//! records 3 and 4 with ENOSPC or EROFS (`tests/shims/full_disk.c`, preloaded; the first failing
//! write lands half a record). Results are still printed, the error is on stderr and in the health readings,
//! nothing already journaled is damaged, and journaling resumes once the disk is back.

use std::process::Command;

use serde_json::Value;

use crate::util::*;

fn journal_survives(errno: &str, message: &str) {
    let fx = Fixture::new();
    let journal = fx.path("journal.jsonl");
    let config = fx.path("dermedge.toml");
    std::fs::write(
        &config,
        "[trigger]\nmode = \"every\"\nmin_interval_ms = 0\n",
    )
    .unwrap();
    let frames = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/samples-200x150.mjpeg");
    let output = Command::new(env!("CARGO_BIN_EXE_dermedge"))
        .arg("--ensemble")
        .arg(&fx.manifest)
        .args(["run", "--json", "--stats-every", "1", "--max-frames", "6"])
        .arg("--source")
        .arg(format!("mjpeg:{}", frames.display()))
        .arg("--config")
        .arg(&config)
        .arg("--journal")
        .arg(&journal)
        .env_remove("DERMEDGE_JOURNAL")
        .env("LD_PRELOAD", shim("full_disk"))
        .env("FULL_DISK_PATH", &journal)
        .env("FULL_DISK_RECORDS", "3-4")
        .env("FULL_DISK_ERRNO", errno)
        .output()
        .unwrap();
    let records = json_lines(&stdout(&output));
    let err = stderr(&output);

    assert_eq!(records.len(), 6);
    assert!(
        records.iter().all(|r| r["top"].is_array()),
        "every result is printed"
    );
    assert_eq!(
        output.status.code(),
        Some(1),
        "journal failures exit 1\n{err}"
    );
    assert!(
        err.contains(&format!(
            "cannot append to journal {}: {message}",
            journal.display()
        )) && err.contains("Earlier records are intact. Fix: free disk space"),
        "{err}"
    );
    assert!(err.contains("appending again after 2 record(s)"), "{err}");
    let health: Vec<Value> = err
        .lines()
        .filter_map(|l| l.strip_prefix("health "))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let journal_state: Vec<(u64, bool)> = health
        .iter()
        .map(|h| {
            (
                h["journal_failures"].as_u64().unwrap(),
                h["journal_error"].is_string(),
            )
        })
        .collect();
    assert_eq!(
        journal_state,
        [
            (0, false),
            (0, false),
            (1, true),
            (2, true),
            (2, false),
            (2, false)
        ],
        "{err}"
    );

    let text = std::fs::read_to_string(&journal).unwrap();
    let journaled: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let hashes = |records: &[&Value]| -> Vec<String> {
        records.iter().map(|r| r["sha256"].to_string()).collect()
    };
    let expected: Vec<&Value> = [0, 1, 4, 5].iter().map(|&i| &records[i]).collect();
    assert_eq!(
        hashes(&journaled.iter().collect::<Vec<_>>()),
        hashes(&expected),
        "the journal holds whole records of frames 1, 2, 5 and 6:\n{text}"
    );
    assert!(text.ends_with('\n'));
    assert!(!fx.path("journal.jsonl.torn").exists());
}

#[test]
fn a_full_disk_loses_only_the_records_it_refused_and_journaling_resumes() {
    journal_survives("ENOSPC", "No space left on device");
}

#[test]
fn a_read_only_journal_loses_only_the_records_it_refused_and_journaling_resumes() {
    journal_survives("EROFS", "Read-only file system");
}
