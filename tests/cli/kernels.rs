//! The int8 kernel sets: every set this CPU runs gives the same per-member probabilities bit for
//! bit, within 1e-5 of the shipped ensemble's stored ones (the float tail after the int8 layers
//! runs on tract's kernels, which tract picks per CPU: AVX-512 and AVX2 machines differ in the
//! last bits), `inspect` names the set in use, and a set the CPU cannot run is refused with the
//! ones it can.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::util::*;

/// Every kernel set's name, whether this CPU runs it or not.
const SETS: [&str; 7] = [
    "portable",
    "x86-avx2",
    "x86-avx512",
    "x86-avx512-vnni",
    "x86-avx512-vnni-vbmi",
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
fn every_kernel_set_gives_the_same_member_probabilities_close_to_the_stored_ones() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/fixtures/int8-reference/probabilities.json"))
            .unwrap(),
    )
    .unwrap();
    let samples = root.join("models/samples");
    let mut checked = vec![];
    let mut first_bits = std::collections::HashMap::new();
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
                assert_eq!(ours.len(), expected.len(), "{set}: {name}, {file}");
                for (o, e) in ours.iter().zip(&expected) {
                    assert!(
                        (o - e).abs() <= 1e-5,
                        "{set}: {name}, {file}: {ours:?} {expected:?}"
                    );
                }
                let bits: Vec<u32> = ours.iter().map(|p| p.to_bits()).collect();
                let first = first_bits
                    .entry((name.to_string(), file.to_string()))
                    .or_insert_with(|| bits.clone());
                assert_eq!(
                    &bits,
                    first,
                    "{set}: {name}, {file} against {}",
                    checked.first().unwrap_or(&set)
                );
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
