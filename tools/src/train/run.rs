//! `dermedge-tools train`: every backbone x seed member of a run, on one split of the dataset.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::fit::{train_member, MemberRun, RunOptions, TrainingSet};
use super::TrainConfig;
use crate::backend::BackendKind;
use crate::classes::Classes;
use crate::nn::Arch;
use crate::sides::{add_extra_training_data, load_split, SplitData};

/// Options of `dermedge-tools train` beyond the per-member config.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    pub data: PathBuf,
    pub split: Option<PathBuf>,
    pub out: PathBuf,
    pub archs: Vec<Arch>,
    pub seeds: Vec<u64>,
    /// ImageNet checkpoints by backbone.
    pub weights: Vec<(Arch, PathBuf)>,
    pub backend: BackendKind,
    pub options: RunOptions,
    /// The classes the members learn; the template's `spec.classes` must be their number.
    pub classes: Classes,
    /// Template for every member; `spec.arch`, `pretrained` and `seed` are set per member.
    pub template: TrainConfig,
}

/// Member folder name for a backbone and seed.
pub fn member_name(arch: Arch, seed: u64) -> String {
    format!("{}-s{seed}", arch.name())
}

/// Trains every backbone x seed member; returns what each run produced, in training order.
pub fn train(request: &TrainRequest) -> anyhow::Result<Vec<MemberRun>> {
    if request.template.spec.classes != request.classes.len() {
        bail!(
            "the members would have {} outputs for {} classes",
            request.template.spec.classes,
            request.classes.len()
        );
    }
    let device = request.backend.device()?;
    std::fs::create_dir_all(&request.out)
        .with_context(|| format!("cannot create {}", request.out.display()))?;
    let SplitData {
        mut samples,
        mut train,
        val,
        ..
    } = load_split(
        &request.data,
        request.split.as_deref(),
        &request.out,
        &request.classes,
    )?;
    add_extra_training_data(
        &request.template.extra_training_data,
        &mut samples,
        &mut train,
        &request.classes,
    )?;
    let set = TrainingSet {
        samples: &samples,
        train: &train,
        val: &val,
        classes: &request.classes,
    };
    let mut runs = Vec::new();
    for &arch in &request.archs {
        let pretrained = request
            .weights
            .iter()
            .find(|(a, _)| *a == arch)
            .map(|(_, p)| p.clone());
        if pretrained.is_none() && arch != Arch::TinyCnn {
            log::warn!(
                "no --weights {arch}=PATH given: {arch} starts from random weights, not ImageNet"
            );
        }
        for &seed in &request.seeds {
            let mut config = request.template.clone();
            config.spec.arch = arch;
            config.pretrained = pretrained.clone();
            config.seed = seed;
            if config.pretrained.is_none() {
                config.frozen_epochs = 0;
            }
            let dir = request.out.join(member_name(arch, seed));
            runs.push(train_member(
                &config,
                &set,
                &dir,
                &device,
                &request.options,
            )?);
        }
    }
    Ok(runs)
}

/// Reads a class weights file: one positive number per class in the classes' order, whitespace or
/// comma separated; `#` starts a comment line.
pub fn read_class_weights(path: &Path, classes: &Classes) -> anyhow::Result<Vec<f32>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let order = classes.codes().collect::<Vec<_>>().join(" ");
    let weights: Vec<f32> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.split(|c: char| c.is_whitespace() || c == ','))
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<f32>())
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!(
                "{}: not a list of numbers. Fix: write {} numbers ({order})",
                path.display(),
                classes.len()
            )
        })?;
    if weights.len() != classes.len() || weights.iter().any(|w| !w.is_finite() || *w <= 0.0) {
        bail!(
            "{}: expected {} positive class weights ({order}), found {:?}",
            path.display(),
            classes.len(),
            weights
        );
    }
    Ok(weights)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classes::tests::shipped;

    #[test]
    fn class_weights_are_one_positive_number_per_class() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weights.txt");
        let classes = shipped();
        let numbers: Vec<String> = (1..=classes.len()).map(|n| n.to_string()).collect();
        std::fs::write(&path, format!("# weights\n{}\n", numbers.join(", "))).unwrap();
        let weights = read_class_weights(&path, &classes).unwrap();
        assert_eq!(weights.len(), classes.len());
        assert_eq!(weights[0], 1.0);

        std::fs::write(&path, "1 2\n").unwrap();
        let err = read_class_weights(&path, &classes).unwrap_err().to_string();
        assert!(err.contains(classes.code(0)), "{err}");
        std::fs::write(&path, "1 x\n").unwrap();
        let err = format!("{:#}", read_class_weights(&path, &classes).unwrap_err());
        assert!(err.contains("Fix:"), "{err}");
    }
}
