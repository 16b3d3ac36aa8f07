//! The `train`, `export` and `throughput` commands, behind the thin binary.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use burn::prelude::*;
use dermedge::manifest::{InputSpec, TestTimeAugmentation};
use dermedge::preprocess::{load_image_file, to_input_tensor, ImageLimits};

use crate::backend::BackendKind;
use crate::data::{load_extra_training_set, load_ham10000, Sample};
use crate::evaluate::{
    fit_decision, markdown_report, nll, summarise, write_plots, write_predictions, Fitted, Scores,
    Summary,
};
use crate::export::{classifier_onnx, write_manifest, write_member, EnsembleInfo, ExportedMember};
use crate::nn::{Arch, Classifier};
use crate::split::{counts_table, indices_on, read_split_csv, train_val_test, write_split_csv};
use crate::train::{load_best, train_member, RunOptions, TrainConfig};

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
    /// Template for every member; `spec.arch`, `pretrained` and `seed` are set per member.
    pub template: TrainConfig,
}

/// Parses `ARCH=PATH`.
pub fn parse_weights(text: &str) -> Result<(Arch, PathBuf), String> {
    let (arch, path) = text
        .split_once('=')
        .ok_or_else(|| format!("expected BACKBONE=PATH, got '{text}'"))?;
    Ok((arch.parse()?, PathBuf::from(path)))
}

/// A dataset and the indices of its three sides.
pub struct SplitData {
    pub samples: Vec<Sample>,
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub test: Vec<usize>,
}

/// The dataset and its train/val/test assignment (read from `split`, or made with seed 1 and
/// written beside the run).
pub fn load_split(data: &Path, split: Option<&Path>, out: &Path) -> anyhow::Result<SplitData> {
    let (samples, report) = load_ham10000(data)?;
    if !report.is_clean() {
        eprint!("{}", report.summary());
    }
    if samples.is_empty() {
        bail!(
            "no usable images under {}. Fix: point --data at a HAM10000 folder",
            data.display()
        );
    }
    let assignment = match split {
        Some(path) => read_split_csv(path, &samples)?,
        None => {
            let assignment = train_val_test(&samples, 0.15, 0.15, 1);
            let path = out.join("split.csv");
            write_split_csv(&path, &samples, &assignment)?;
            log::info!(
                "no --split given: wrote the default split (seed 1) to {}",
                path.display()
            );
            assignment
        }
    };
    eprint!("{}", counts_table(&samples, &assignment));
    Ok(SplitData {
        train: indices_on(&assignment, "train"),
        val: indices_on(&assignment, "val"),
        test: indices_on(&assignment, "test"),
        samples,
    })
}

/// Member folder name for a backbone and seed.
pub fn member_name(arch: Arch, seed: u64) -> String {
    format!("{}-s{seed}", arch.name())
}

/// Trains every backbone x seed member; returns their folders.
pub fn train(request: &TrainRequest) -> anyhow::Result<Vec<PathBuf>> {
    let device = request.backend.device()?;
    std::fs::create_dir_all(&request.out)
        .with_context(|| format!("cannot create {}", request.out.display()))?;
    let SplitData {
        mut samples,
        mut train,
        val,
        ..
    } = load_split(&request.data, request.split.as_deref(), &request.out)?;
    add_extra_training_data(
        &request.template.extra_training_data,
        &mut samples,
        &mut train,
    )?;
    let mut dirs = Vec::new();
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
            let run = train_member(
                &config,
                &samples,
                &train,
                &val,
                &dir,
                &device,
                &request.options,
            )?;
            println!(
                "{}: best validation balanced accuracy {:.4} at epoch {}",
                dir.display(),
                run.best_balanced_accuracy,
                run.best_epoch.map_or("-".to_string(), |e| e.to_string())
            );
            dirs.push(dir);
        }
    }
    Ok(dirs)
}

/// Appends the images of each extra training set to `samples` and to the training side; refuses a
/// set that shares an image id with the split's dataset (it could reach validation or test).
pub fn add_extra_training_data(
    folders: &[PathBuf],
    samples: &mut Vec<Sample>,
    train: &mut Vec<usize>,
) -> anyhow::Result<()> {
    for folder in folders {
        let (extra, report) = load_extra_training_set(folder)?;
        if !report.is_clean() {
            eprint!("{}: {}", folder.display(), report.summary());
        }
        let known: std::collections::HashSet<&str> =
            samples.iter().map(|s| s.image_id.as_str()).collect();
        if let Some(shared) = extra.iter().find(|s| known.contains(s.image_id.as_str())) {
            bail!(
                "{} holds {}, which is also in the split's dataset; extra training data must not overlap it. Fix: remove the shared images from {}",
                folder.display(),
                shared.image_id,
                folder.display()
            );
        }
        if extra.is_empty() {
            bail!(
                "{} holds no usable image. Fix: point --extra-data at a folder with metadata.csv (image_id, dx) and its images",
                folder.display()
            );
        }
        eprintln!(
            "{}: {} extra training images ({})",
            folder.display(),
            extra.len(),
            crate::data::class_counts(&extra)
                .iter()
                .zip(crate::data::CLASSES)
                .filter(|(n, _)| **n > 0)
                .map(|(n, c)| format!("{c} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let first = samples.len();
        samples.extend(extra);
        train.extend(first..samples.len());
    }
    Ok(())
}

/// Member folders under a run folder (those holding a `config.json`), sorted.
pub fn member_dirs(run: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(run).with_context(|| {
        format!(
            "cannot read {}. Fix: pass the --out folder of `dermedge-tools train`",
            run.display()
        )
    })?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("config.json").is_file())
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        bail!(
            "{} holds no trained member (no */config.json). Fix: run `dermedge-tools train --out {}` first",
            run.display(),
            run.display()
        );
    }
    Ok(dirs)
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
    let manifest = write_manifest(
        &dir,
        &EnsembleInfo::trained("parity", "0", "parity check".into(), spec),
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

/// Options of `dermedge-tools export`.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub run: PathBuf,
    pub out: PathBuf,
    pub name: String,
    pub version: String,
    /// Images whose logits must match between burn and the exported file.
    pub check_images: Option<PathBuf>,
    pub tolerance: f32,
}

/// Exports every member of a run as ONNX plus `ensemble.toml`; returns the manifest path.
pub fn export(request: &ExportRequest) -> anyhow::Result<PathBuf> {
    let device = crate::backend::ndarray_device();
    let mut members: Vec<ExportedMember> = Vec::new();
    let mut input: Option<InputSpec> = None;
    let mut backbones = Vec::new();
    for dir in member_dirs(&request.run)? {
        let (config, model) = load_best(&dir, &device)?;
        let spec = config.input_spec();
        if let Some(first) = &input {
            if *first != spec {
                bail!(
                    "{} was trained for input {:?}, other members for {:?}; an ensemble needs one input. Fix: export them separately",
                    dir.display(),
                    spec,
                    first
                );
            }
        }
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("member")
            .to_string();
        let loss = match config.loss {
            crate::train::LossChoice::WeightedCe => "class-weighted cross-entropy",
            crate::train::LossChoice::Focal => "focal",
        };
        let doc = format!(
            "dermedge member {name}: {} trained by dermedge-tools {} (seed {}, {loss} loss)",
            config.spec.arch,
            env!("CARGO_PKG_VERSION"),
            config.seed,
        );
        let bytes = classifier_onnx(&model, spec.height as usize, spec.width as usize, &doc);
        let mut check = match &request.check_images {
            Some(folder) => folder_inputs(folder, &spec, 8)?,
            None => Vec::new(),
        };
        let mut rng = crate::rng::SeededRng::new(config.seed);
        check.push(rng.normals(3 * spec.width as usize * spec.height as usize, 1.0));
        let worst = parity(&model, &bytes, &spec, &check)?;
        println!(
            "{name}: {} ({:.1} MiB), burn vs tract max |logit difference| {worst:.2e} on {} inputs",
            config.spec.arch,
            bytes.len() as f64 / (1024.0 * 1024.0),
            check.len()
        );
        if worst > request.tolerance {
            bail!(
                "{name}: the exported file differs from the trained model by {worst:.2e} (tolerance {:.0e}); not writing a manifest",
                request.tolerance
            );
        }
        members.push(write_member(
            &request.out,
            &format!("{name}.onnx"),
            &bytes,
            config.spec.arch.name(),
        )?);
        backbones.push(format!(
            "{} (seed {}, {loss} loss)",
            config.spec.arch, config.seed
        ));
        input = Some(spec);
    }
    let spec = input.context("no member exported")?;
    write_manifest(
        &request.out,
        &EnsembleInfo::trained(
            &request.name,
            &request.version,
            format!(
                "{} member(s) trained on HAM10000 by dermedge-tools: {}",
                members.len(),
                backbones.join(", ")
            ),
            &spec,
        ),
        &members,
    )
}

/// Options of `dermedge-tools evaluate` and `calibrate`.
#[derive(Debug, Clone)]
pub struct EvaluateRequest {
    pub manifest: PathBuf,
    pub data: PathBuf,
    pub split: Option<PathBuf>,
    pub side: String,
    /// Report folder (evaluate only).
    pub out: PathBuf,
    /// At most this many images of the side (quick checks).
    pub limit: Option<usize>,
    /// Overrides the manifest's test-time augmentation.
    pub tta: Option<TestTimeAugmentation>,
}

/// The HAM10000 samples and the indices of those on `side` of the split (`split` CSV, or the
/// default seed-1 split), at most `limit` of them.
pub fn side_samples(
    data: &Path,
    split: Option<&Path>,
    side: &str,
    limit: Option<usize>,
) -> anyhow::Result<(Vec<Sample>, Vec<usize>)> {
    let (samples, report) = load_ham10000(data)?;
    if !report.is_clean() {
        eprint!("{}", report.summary());
    }
    let assignment = match split {
        Some(path) => read_split_csv(path, &samples)?,
        None => train_val_test(&samples, 0.15, 0.15, 1),
    };
    let mut indices = indices_on(&assignment, side);
    if indices.is_empty() {
        bail!("the split has no '{side}' images. Fix: --side train, val or test");
    }
    if let Some(limit) = limit {
        indices.truncate(limit);
    }
    Ok((samples, indices))
}

/// Loads the request's ensemble and runs it over its side of the split.
fn side_scores(request: &EvaluateRequest) -> anyhow::Result<(dermedge::Ensemble, Scores)> {
    let mut ensemble = dermedge::Ensemble::load(&request.manifest)?;
    if let Some(tta) = request.tta {
        ensemble.manifest.inference.test_time_augmentation = tta;
    }
    let (samples, indices) = side_samples(
        &request.data,
        request.split.as_deref(),
        &request.side,
        request.limit,
    )?;
    let scores = Scores::collect(&ensemble, &samples, &indices)?;
    Ok((ensemble, scores))
}

/// Evaluates the ensemble on one side of the split through tract; writes `report.md` and plots.
pub fn evaluate(request: &EvaluateRequest) -> anyhow::Result<PathBuf> {
    let (ensemble, scores) = side_scores(request)?;
    let decision = &ensemble.manifest.decision;
    let temperature = decision.temperature.unwrap_or(1.0);
    let referral = decision.referral_threshold;
    let mut summaries: Vec<Summary> = (0..scores.member_logits.len())
        .map(|m| {
            summarise(
                &scores.member_names[m],
                &scores.member_probabilities(m, temperature),
                &scores.labels,
                referral,
            )
        })
        .collect();
    let probabilities = scores.ensemble_probabilities(temperature);
    let ensemble_summary = summarise("ensemble", &probabilities, &scores.labels, referral);
    let plots = write_plots(
        &request.out,
        &ensemble_summary,
        &probabilities,
        &scores.labels,
    )?;
    summaries.push(ensemble_summary);
    write_predictions(
        &request.out.join("predictions.csv"),
        &scores,
        &probabilities,
    )?;
    let title = format!(
        "{} {}: {} side ({} images)",
        ensemble.manifest.name,
        ensemble.manifest.version,
        request.side,
        scores.labels.len()
    );
    let md = markdown_report(&title, &summaries, &scores, decision, &plots);
    let path = request.out.join("report.md");
    std::fs::write(&path, &md).with_context(|| format!("cannot write {}", path.display()))?;
    print!("{md}");
    Ok(path)
}

/// Fits temperature, referral and uncertainty thresholds on one side and writes them into the
/// manifest's `[decision]`.
pub fn calibrate(request: &EvaluateRequest, sensitivity: f64) -> anyhow::Result<Fitted> {
    let (ensemble, scores) = side_scores(request)?;
    let fitted = fit_decision(&scores, sensitivity);
    let mut manifest = ensemble.manifest.clone();
    manifest.decision.temperature = Some(fitted.temperature);
    manifest.decision.referral_threshold = Some(fitted.referral_threshold);
    manifest.decision.uncertainty_entropy = Some(fitted.uncertainty_entropy);
    manifest.inference.test_time_augmentation = scores.test_time_augmentation;
    std::fs::write(&request.manifest, manifest.to_toml())
        .with_context(|| format!("cannot write {}", request.manifest.display()))?;
    let before = nll(&scores.ensemble_probabilities(1.0), &scores.labels);
    let after = nll(
        &scores.ensemble_probabilities(fitted.temperature),
        &scores.labels,
    );
    println!(
        "fitted on {} '{}' images (test-time augmentation: {}): temperature {:.2} (NLL {before:.4} -> {after:.4}), referral threshold {:.4} (>= {:.0}% malignant sensitivity), uncertainty entropy {:.3}",
        scores.labels.len(),
        request.side,
        scores.test_time_augmentation.name(),
        fitted.temperature,
        fitted.referral_threshold,
        sensitivity * 100.0,
        fitted.uncertainty_entropy
    );
    Ok(fitted)
}
