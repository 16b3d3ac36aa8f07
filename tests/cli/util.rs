use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use serde_json::Value;

/// A copy of the committed tiny fixture ensemble (`tests/fixtures/tiny-cnn-ensemble`: two
/// untrained members, 64x48 input) in a temporary folder, free to edit.
pub struct Fixture {
    pub dir: crate::scratch_dir::ScratchDir,
    pub manifest: PathBuf,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = crate::scratch_dir::ScratchDir::new();
        let committed =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-cnn-ensemble");
        let copy = dir.path().join("ensemble");
        std::fs::create_dir(&copy).unwrap();
        for entry in std::fs::read_dir(committed).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, copy.join(path.file_name().unwrap())).unwrap();
        }
        Fixture {
            dir,
            manifest: copy.join("ensemble.toml"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn member(&self, index: usize) -> PathBuf {
        self.manifest
            .parent()
            .unwrap()
            .join(format!("tiny-cnn-{index}.onnx"))
    }

    pub fn edit_manifest(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.manifest).unwrap();
        assert!(text.contains(from), "{from} not in manifest:\n{text}");
        std::fs::write(&self.manifest, text.replacen(from, to, 1)).unwrap();
    }

    /// Runs `dermedge --ensemble <fixture> ARGS`.
    pub fn run(&self, args: &[&str]) -> Output {
        dermedge(&self.manifest, args)
    }
}

pub fn dermedge(manifest: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dermedge"))
        .arg("--ensemble")
        .arg(manifest)
        .args(args)
        .env_remove("DERMEDGE_JOURNAL")
        .output()
        .unwrap()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
        .collect()
}

/// A few real HAM10000 images from `../shared/ham10000`, or `None` (with a message) where that
/// folder is absent.
pub fn ham10000_images(count: usize) -> Option<Vec<PathBuf>> {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/ham10000/images");
    let Ok(entries) = std::fs::read_dir(&folder) else {
        eprintln!(
            "SKIPPED: {} is absent; real-image checks need the shared HAM10000 copy",
            folder.display()
        );
        return None;
    };
    let mut paths: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    paths.sort();
    paths.truncate(count);
    Some(paths)
}

/// The sample images shipped in `models/samples`.
pub fn sample_images() -> Vec<PathBuf> {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/samples");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    paths.sort();
    paths
}

pub fn sha256_of(path: &Path) -> String {
    dermedge::digest::sha256_hex(&std::fs::read(path).unwrap())
}

/// A test shim from `tests/shims/NAME.c`, compiled once per test run into a preloadable library.
pub fn shim(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("lib{name}.so"));
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !built.iter().any(|b| b == name) {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/shims/{name}.c"));
        let compiled = Command::new("cc")
            .args(["-shared", "-fPIC", "-O1", "-Wall", "-o"])
            .arg(&out)
            .arg(&source)
            .arg("-ldl")
            .output()
            .expect("the shim tests need a C compiler (cc)");
        assert!(compiled.status.success(), "{}", stderr(&compiled));
        built.push(name.to_string());
    }
    out
}

/// Codes of the classes `manifest` marks malignant, in its order.
pub fn malignant_codes(manifest: &Path) -> Vec<String> {
    dermedge::Manifest::load(manifest)
        .unwrap()
        .classes
        .into_iter()
        .filter(|c| c.malignant)
        .map(|c| c.code)
        .collect()
}
