//! The fixture ensemble committed under `tests/fixtures/tiny-cnn-ensemble/`, which the runtime's
//! tests load without building the tools, is byte for byte what `dermedge-tools fixture` writes.

use std::collections::BTreeMap;
use std::path::Path;

use dermedge_tools::fixture::{write_fixture_ensemble, FixtureArch, FixtureSpec};

use crate::util::shipped_classes;

/// Rewrites the committed fixture, from the repository root.
const REGENERATE: &str = "cargo run --release -p dermedge-tools -- fixture --out tests/fixtures/tiny-cnn-ensemble --arch tiny-cnn --members 2 --width 64 --height 48 --seed 11";

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

#[test]
fn the_committed_fixture_ensemble_is_what_the_tools_write() {
    let committed =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-cnn-ensemble");
    let dir = tempfile::tempdir().unwrap();
    let spec = FixtureSpec {
        arch: FixtureArch::TinyCnn,
        members: 2,
        width: 64,
        height: 48,
        seed: 11,
    };
    write_fixture_ensemble(dir.path(), &spec, shipped_classes().infos()).unwrap();
    let (fresh, committed) = (files(dir.path()), files(&committed));
    assert_eq!(
        fresh.keys().collect::<Vec<_>>(),
        committed.keys().collect::<Vec<_>>(),
        "Fix: {REGENERATE}"
    );
    for (name, bytes) in &fresh {
        assert!(
            *bytes == committed[name],
            "{name} differs from the committed fixture. Fix: {REGENERATE}"
        );
    }
}
