//! The check that an exported file computes what the trained model computes: both run on the same
//! inputs, the burn model directly and the file through the runtime (tract).

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::prelude::*;
use dermedge::manifest::{ClassInfo, InputSpec};
use dermedge::preprocess::{load_image_file, to_input_tensor, ImageLimits};

use super::manifest::{write_manifest, write_member, EnsembleInfo};
use crate::nn::Classifier;

/// Stand-in classes for a one-off manifest around a model with `count` outputs.
fn placeholder_classes(count: usize) -> Vec<ClassInfo> {
    (0..count)
        .map(|i| ClassInfo {
            code: format!("class{i}"),
            name: format!("output {i}"),
            malignant: false,
            watch: false,
        })
        .collect()
}

/// Largest absolute difference between the burn model's and the runtime's (tract) logits on
/// `inputs`.
pub fn parity(
    model: &Classifier,
    onnx: &[u8],
    spec: &InputSpec,
    inputs: &[Vec<f32>],
) -> anyhow::Result<f32> {
    let dir = dermedge::paths::fresh_temp_dir("dermedge-parity")
        .context("cannot create a temporary directory")?;
    let member = write_member(&dir, "member.onnx", onnx, "check")?;
    let [_, outputs] = model.head.output.weight.shape().dims();
    let classes = placeholder_classes(outputs);
    let manifest = write_manifest(
        &dir,
        &EnsembleInfo::trained("parity", "0", "parity check".into(), spec, &classes),
        &[member],
    )?;
    let ensemble = dermedge::Ensemble::load(&manifest)?;
    let device = crate::backend::ndarray_device();
    let (h, w) = (spec.height as usize, spec.width as usize);
    let mut worst = 0.0f32;
    for input in inputs {
        let tract = ensemble.members[0]
            .run_raw(&dermedge::ensemble::tensor_from_nchw(input.clone(), spec))?;
        let x = Tensor::<4>::from_data(TensorData::new(input.clone(), [1, 3, h, w]), &device);
        let logits = model.forward(x).into_data_as::<f32>();
        let burn = logits
            .as_slice::<f32>()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        for (a, b) in tract.iter().zip(burn) {
            worst = worst.max((a - b).abs());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(worst)
}

/// Preprocessed inputs for every image file in `folder` (sorted), at most `limit`.
pub fn folder_inputs(
    folder: &Path,
    spec: &InputSpec,
    limit: usize,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(folder)
        .with_context(|| format!("cannot read {}", folder.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        })
        .collect();
    paths.sort();
    paths.truncate(limit);
    paths
        .iter()
        .map(|p| {
            let image = load_image_file(p, &ImageLimits::default())?;
            Ok(to_input_tensor(&image.rgb, spec))
        })
        .collect()
}
