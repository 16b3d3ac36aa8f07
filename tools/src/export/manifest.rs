//! The exported members' files and the `ensemble.toml` that lists them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use dermedge::manifest::{
    ClassInfo, DecisionSettings, EnsembleStatus, InputSpec, Manifest, MemberOutput, MemberSpec,
};
use dermedge::preprocess::sha256_hex;

/// One exported member before it is listed in a manifest.
#[derive(Debug, Clone)]
pub struct ExportedMember {
    pub file: PathBuf,
    pub sha256: String,
    pub backbone: String,
    pub weight: f32,
}

/// Writes `bytes` as `dir/file` and returns its manifest entry.
pub fn write_member(
    dir: &Path,
    file: &str,
    bytes: &[u8],
    backbone: &str,
) -> anyhow::Result<ExportedMember> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(file);
    std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(ExportedMember {
        file: PathBuf::from(file),
        sha256: sha256_hex(bytes),
        backbone: backbone.into(),
        weight: 1.0,
    })
}

/// What the manifest says about the ensemble beyond its members.
#[derive(Debug, Clone)]
pub struct EnsembleInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub status: EnsembleStatus,
    /// The one input spec of every member.
    pub input: InputSpec,
    /// The members' output classes, in order.
    pub classes: Vec<ClassInfo>,
    pub decision: DecisionSettings,
}

impl EnsembleInfo {
    /// A trained ensemble with `classes` for inputs of `spec`, without decision settings yet.
    pub fn trained(
        name: &str,
        version: &str,
        description: String,
        spec: &InputSpec,
        classes: &[ClassInfo],
    ) -> EnsembleInfo {
        EnsembleInfo {
            name: name.into(),
            version: version.into(),
            description,
            status: EnsembleStatus::Trained,
            input: spec.clone(),
            classes: classes.to_vec(),
            decision: DecisionSettings::default(),
        }
    }
}

/// Writes `dir/ensemble.toml` listing `members`; returns its path.
pub fn write_manifest(
    dir: &Path,
    info: &EnsembleInfo,
    members: &[ExportedMember],
) -> anyhow::Result<PathBuf> {
    let manifest = Manifest {
        name: info.name.clone(),
        version: info.version.clone(),
        status: info.status,
        description: info.description.clone(),
        input: info.input.clone(),
        classes: info.classes.clone(),
        members: members
            .iter()
            .map(|m| MemberSpec {
                file: m.file.clone(),
                sha256: m.sha256.clone(),
                weight: m.weight,
                backbone: m.backbone.clone(),
                precision: "f32".into(),
                output: MemberOutput::Logits,
                input: None,
            })
            .collect(),
        inference: Default::default(),
        decision: info.decision.clone(),
    };
    let path = dir.join("ensemble.toml");
    std::fs::write(&path, manifest.to_toml())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
