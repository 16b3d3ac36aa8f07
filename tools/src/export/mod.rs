//! `dermedge-tools export`: a run's members (their best checkpoints) as ONNX files plus the
//! `ensemble.toml` that lists them, each file checked against its trained model through tract.

mod manifest;
mod onnx;
mod parity;

pub use manifest::{write_manifest, write_member, EnsembleInfo, ExportedMember};
pub use onnx::{classifier_onnx, fold_conv_bn};
pub use parity::{folder_inputs, parity};

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use dermedge::manifest::InputSpec;

use crate::classes::Classes;
use crate::nn::Arch;
use crate::train::{load_best, LossChoice};

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
    /// The classes the members were trained on, listed in the manifest.
    pub classes: Classes,
}

/// One member as `export` checked and wrote it.
#[derive(Debug, Clone)]
pub struct ExportedFile {
    /// The member's folder name in the run.
    pub name: String,
    pub arch: Arch,
    /// Size of the ONNX file.
    pub bytes: usize,
    /// Largest |logit difference| between burn and tract.
    pub worst: f32,
    /// Inputs the difference was measured on.
    pub inputs: usize,
}

/// What `export` wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    pub manifest: PathBuf,
    pub members: Vec<ExportedFile>,
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

/// Exports every member of a run as ONNX plus `ensemble.toml`; writes the manifest only when every
/// file matches its trained model within the tolerance.
pub fn export(request: &ExportRequest) -> anyhow::Result<Exported> {
    let device = crate::backend::ndarray_device();
    let mut members = Vec::new();
    let mut files = Vec::new();
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
        if config.spec.classes != request.classes.len() {
            bail!(
                "{} has {} outputs but the class list has {} classes. Fix: pass --classes with the manifest the run was trained with",
                dir.display(),
                config.spec.classes,
                request.classes.len()
            );
        }
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("member")
            .to_string();
        let loss = match config.loss {
            LossChoice::WeightedCe => "class-weighted cross-entropy",
            LossChoice::Focal => "focal",
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
        if worst > request.tolerance {
            bail!(
                "{name}: the exported file differs from the trained model by {worst:.2e} on {} inputs (tolerance {:.0e}); not writing a manifest",
                check.len(),
                request.tolerance
            );
        }
        members.push(write_member(
            &request.out,
            &format!("{name}.onnx"),
            &bytes,
            config.spec.arch.name(),
        )?);
        files.push(ExportedFile {
            name,
            arch: config.spec.arch,
            bytes: bytes.len(),
            worst,
            inputs: check.len(),
        });
        backbones.push(format!(
            "{} (seed {}, {loss} loss)",
            config.spec.arch, config.seed
        ));
        input = Some(spec);
    }
    let spec = input.context("no member exported")?;
    let manifest = write_manifest(
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
            request.classes.infos(),
        ),
        &members,
    )?;
    Ok(Exported {
        manifest,
        members: files,
    })
}
