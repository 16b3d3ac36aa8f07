//! The int8 kernel sets: every set this CPU runs gives the shipped ensemble's stored per-member
//! probabilities bit for bit, `inspect` names the set in use, and a set the CPU cannot run is
//! refused with the ones it can.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::util::*;

/// Every kernel set's name, whether this CPU runs it or not.
const SETS: [&str; 6] = [
    "portable",
    "x86-avx2",
    "x86-avx512",
    "x86-avx512-vnni",
    "aarch64-neon",
    "aarch64-neon-sdot",
];

fn shipped_manifest() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/ensemble.toml")
}

fn with_kernels(set: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dermedge"))
        .arg("--ensemble")
        .arg(shipped_manifest())
        .args(args)
        .env("DERMEDGE_INT8_KERNELS", set)
        .env_remove("DERMEDGE_JOURNAL")
        .output()
        .unwrap()
}

fn refused_here(out: &Output) -> bool {
    out.status.code() != Some(0) && stderr(out).contains("this CPU lacks its instructions")
}

#[test]
fn every_kernel_set_gives_the_stored_member_probabilities_bit_for_bit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/fixtures/int8-reference/probabilities.json"))
            .unwrap(),
    )
    .unwrap();
    let samples = root.join("models/samples");
    let mut checked = vec![];
    for set in SETS {
        let out = with_kernels(
            set,
            &[
                "classify",
                "--json",
                "--no-journal",
                samples.to_str().unwrap(),
            ],
        );
        if refused_here(&out) {
            continue;
        }
        assert_eq!(out.status.code(), Some(0), "{set}: {}", stderr(&out));
        let records = json_lines(&stdout(&out));
        assert_eq!(records.len(), 7, "{set}");
        for record in &records {
            assert_eq!(record["ensemble"], reference["ensemble"]);
            let input = record["input"].as_str().unwrap();
            let name = Path::new(input).file_name().unwrap().to_str().unwrap();
            for member in record["members"].as_array().unwrap() {
                let file = member["file"].as_str().unwrap();
                let expected = &reference["samples"][name][file];
                let ours: Vec<f32> = member["probabilities"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["probability"].as_f64().unwrap() as f32)
                    .collect();
                let expected: Vec<f32> = expected
                    .as_array()
                    .unwrap_or_else(|| panic!("no reference for {name} {file}"))
                    .iter()
                    .map(|p| p.as_f64().unwrap() as f32)
                    .collect();
                let bits = |v: &[f32]| v.iter().map(|p| p.to_bits()).collect::<Vec<u32>>();
                assert_eq!(bits(&ours), bits(&expected), "{set}: {name}, {file}");
            }
        }
        checked.push(set);
    }
    assert!(checked.contains(&"portable"), "{checked:?}");
}

#[test]
fn inspect_names_the_kernel_set_and_an_unrunnable_or_unknown_one_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_dermedge"))
        .arg("--ensemble")
        .arg(shipped_manifest())
        .arg("inspect")
        .env_remove("DERMEDGE_INT8_KERNELS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.starts_with("int8 kernels: "))
        .unwrap_or_else(|| panic!("no kernel line:\n{text}"));
    assert!(
        SETS.iter().any(|s| line == format!("int8 kernels: {s}")),
        "{line}"
    );

    let out = with_kernels("portable", &["inspect"]);
    assert!(
        stdout(&out).contains("int8 kernels: portable\n"),
        "{}",
        stdout(&out)
    );

    let out = with_kernels("x86-sse9", &["inspect"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains("DERMEDGE_INT8_KERNELS=x86-sse9"),
        "{message}"
    );
    assert!(message.contains("portable"), "{message}");
    for set in SETS {
        let out = with_kernels(set, &["inspect"]);
        if refused_here(&out) {
            assert_eq!(out.status.code(), Some(2), "{set}");
            assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
        }
    }
}
