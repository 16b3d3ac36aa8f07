use dermedge::integrity::{hex_encode, signature_path};
use ed25519_dalek::{Signer, SigningKey};

use crate::util::*;

fn refused(fx: &Fixture, expected: &[&str]) {
    let sample = sample_images()[0].clone();
    let out = fx.run(&["classify", "--no-journal", sample.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    for part in expected {
        assert!(err.contains(part), "expected {part:?} in:\n{err}");
    }
    assert!(err.contains("Fix:"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(stdout(&out).is_empty());
}

#[test]
fn wrong_checksum_is_refused() {
    let fx = Fixture::new();
    let text = std::fs::read_to_string(&fx.manifest).unwrap();
    let first = text.split("sha256 = \"").nth(1).unwrap()[..64].to_string();
    fx.edit_manifest(&first, &"0".repeat(64));
    refused(
        &fx,
        &[
            "checksum mismatch",
            "tiny-cnn-0.onnx",
            &"0".repeat(64),
            &first,
        ],
    );
}

#[test]
fn truncated_member_is_refused_by_checksum_and_by_parser() {
    let fx = Fixture::new();
    let bytes = std::fs::read(fx.member(1)).unwrap();
    let truncated = &bytes[..bytes.len() / 3];
    std::fs::write(fx.member(1), truncated).unwrap();
    refused(&fx, &["checksum mismatch", "tiny-cnn-1.onnx"]);

    let text = std::fs::read_to_string(&fx.manifest).unwrap();
    let second = text.split("sha256 = \"").nth(2).unwrap()[..64].to_string();
    fx.edit_manifest(&second, &dermedge::digest::sha256_hex(truncated));
    refused(&fx, &["not a loadable ONNX model", "tiny-cnn-1.onnx"]);
}

#[test]
fn missing_member_is_refused() {
    let fx = Fixture::new();
    std::fs::remove_file(fx.member(0)).unwrap();
    refused(&fx, &["tiny-cnn-0.onnx", "is missing"]);
}

#[test]
fn class_count_mismatch_is_refused() {
    let fx = Fixture::new();
    fx.edit_manifest(
        "[[classes]]\ncode = \"vasc\"\nname = \"Vascular lesion\"\nmalignant = false\n",
        "",
    );
    refused(&fx, &["outputs shape [1, 7]", "lists 6 classes"]);
}

#[test]
fn input_size_mismatch_is_refused() {
    let fx = Fixture::new();
    fx.edit_manifest("width = 64", "width = 80");
    refused(&fx, &["takes input [1, 3, 48, 64]", "[1, 3, 48, 80]"]);
}

#[test]
fn malformed_and_missing_manifests_are_refused() {
    let fx = Fixture::new();
    fx.edit_manifest("[input]", "[input");
    refused(&fx, &["is not valid", "ensemble.toml"]);

    let out = dermedge(&fx.path("nowhere.toml"), &["inspect"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read ensemble manifest"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn with_a_public_key_only_a_validly_signed_ensemble_starts() {
    let fx = Fixture::new();
    let key = SigningKey::from_bytes(&[7; 32]);
    let public = fx.path("release.pub");
    std::fs::write(&public, hex_encode(&key.verifying_key().to_bytes())).unwrap();
    let sample = sample_images()[0].clone();
    let args = [
        "--public-key",
        public.to_str().unwrap(),
        "classify",
        "--no-journal",
        sample.to_str().unwrap(),
    ];
    let out = fx.run(&args);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("is not signed") && stderr(&out).contains("Fix:"),
        "{}",
        stderr(&out)
    );

    let signature = key.sign(&std::fs::read(&fx.manifest).unwrap());
    std::fs::write(
        signature_path(&fx.manifest),
        hex_encode(&signature.to_bytes()),
    )
    .unwrap();
    let out = fx.run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    fx.edit_manifest("version = \"0.0.0\"", "version = \"0.0.1\"");
    let out = fx.run(&args);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("does not match its signature"),
        "{}",
        stderr(&out)
    );
}
