//! A member's run folder: its config, the training state, and checkpoints written so that a
//! stop at any moment (a session ending, a power cut) leaves the last complete one to resume from.
//!
//! A checkpoint is a folder `checkpoints/e<epoch>-s<step>/` holding the model, the optimizer and
//! the weight average; `state.json`, replaced atomically after the folder is complete, names the
//! current one, and only then is the previous folder removed.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::optim::ModuleOptimizer;
use burn::prelude::*;
use burn::store::{BurnpackStore, ModuleSnapshot};
use serde::{Deserialize, Serialize};

use super::TrainConfig;
use crate::nn::Classifier;
use crate::plot::EpochRow;

/// Files of a member's run folder.
pub struct RunFiles {
    pub dir: PathBuf,
}

impl RunFiles {
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    /// The best weights by validation balanced accuracy (the average's, when one is kept).
    pub fn best(&self) -> PathBuf {
        self.dir.join("best.bpk")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("log.csv")
    }
    pub fn plot(&self) -> PathBuf {
        self.dir.join("curves.png")
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.dir.join("checkpoints")
    }
}

/// Sums over the steps of the epoch in progress, so that a resumed epoch reports the same
/// training loss and accuracy as an uninterrupted one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochProgress {
    pub loss_sum: f64,
    pub correct: usize,
    pub seen: usize,
    /// Training seconds spent on the epoch before the checkpoint.
    pub seconds: f64,
}

/// Training progress, saved with every checkpoint, for `--resume`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// The epoch to run next (0-based).
    pub next_epoch: usize,
    /// The step of `next_epoch` to run next; 0 at an epoch boundary.
    #[serde(default)]
    pub next_step: usize,
    #[serde(default)]
    pub progress: EpochProgress,
    pub best_epoch: Option<usize>,
    pub best_balanced_accuracy: f64,
    /// Best of the smoothed validation balanced accuracy, which early stopping watches.
    #[serde(default)]
    pub best_smoothed: f64,
    pub epochs_without_improvement: usize,
    pub rows: Vec<EpochRow>,
    /// The checkpoint folder (under `checkpoints/`) this state belongs to.
    #[serde(default)]
    pub checkpoint: Option<String>,
}

/// The files of one checkpoint.
pub struct Checkpoint {
    pub dir: PathBuf,
}

impl Checkpoint {
    pub fn model(&self) -> PathBuf {
        self.dir.join("model.bpk")
    }
    pub fn optimizer(&self) -> PathBuf {
        self.dir.join("optimizer.bpk")
    }
    pub fn average(&self) -> PathBuf {
        self.dir.join("average.bpk")
    }
}

/// Saves a module's weights as burnpack, through a temporary file renamed into place.
pub fn save_module<M: Module>(module: &M, path: &Path) -> anyhow::Result<()> {
    let partial = path.with_extension("partial.bpk");
    let mut store = BurnpackStore::from_file(&partial).overwrite(true);
    module
        .save_into(&mut store)
        .map_err(|e| anyhow::anyhow!("cannot save {}: {e:?}", path.display()))?;
    sync_file(&partial)?;
    std::fs::rename(&partial, path)
        .with_context(|| format!("cannot move {} into place", path.display()))?;
    sync_parent(path)
}

/// Loads weights saved by [`save_module`] into `module`.
pub fn load_module<M: Module>(mut module: M, path: &Path) -> anyhow::Result<M> {
    let mut store = BurnpackStore::from_file(path);
    module
        .load_from(&mut store)
        .map_err(|e| anyhow::anyhow!("cannot load {}: {e:?}", path.display()))?;
    Ok(module)
}

fn sync_file(path: &Path) -> anyhow::Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot flush {} to disk", path.display()))
}

fn sync_parent(path: &Path) -> anyhow::Result<()> {
    match path.parent() {
        Some(parent) => sync_file(parent),
        None => Ok(()),
    }
}

/// Writes `bytes` to `path` through a temporary file renamed into place.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let partial = path.with_extension("partial");
    let mut file = std::fs::File::create(&partial)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, path)
        .with_context(|| format!("cannot move {} into place", path.display()))?;
    sync_parent(path)
}

/// Writes a checkpoint of the model, optimizer and weight average at `state`'s position, makes
/// `state` name it, and removes every older checkpoint.
pub fn save_checkpoint(
    files: &RunFiles,
    state: &mut TrainState,
    model: &Classifier,
    optimizer: &ModuleOptimizer,
    average: Option<&Classifier>,
) -> anyhow::Result<()> {
    let name = format!("e{:03}-s{:05}", state.next_epoch, state.next_step);
    let checkpoint = Checkpoint {
        dir: files.checkpoints().join(&name),
    };
    if checkpoint.dir.exists() {
        std::fs::remove_dir_all(&checkpoint.dir)
            .with_context(|| format!("cannot replace {}", checkpoint.dir.display()))?;
    }
    std::fs::create_dir_all(&checkpoint.dir)
        .with_context(|| format!("cannot create {}", checkpoint.dir.display()))?;
    save_module(model, &checkpoint.model())?;
    optimizer
        .save(checkpoint.optimizer())
        .map_err(|e| anyhow::anyhow!("cannot save {}: {e:?}", checkpoint.optimizer().display()))?;
    sync_file(&checkpoint.optimizer())?;
    if let Some(average) = average {
        save_module(average, &checkpoint.average())?;
    }
    state.checkpoint = Some(name.clone());
    write_atomically(
        &files.state(),
        serde_json::to_string_pretty(state)?.as_bytes(),
    )?;
    for entry in std::fs::read_dir(files.checkpoints())?.flatten() {
        if entry.file_name().to_str() != Some(name.as_str()) {
            std::fs::remove_dir_all(entry.path())
                .with_context(|| format!("cannot remove {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// The saved state and its checkpoint, or `None` when the folder holds no resumable run.
pub fn read_state(files: &RunFiles) -> anyhow::Result<Option<(TrainState, Checkpoint)>> {
    if !files.state().exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(files.state())
        .with_context(|| format!("cannot read {}", files.state().display()))?;
    let state: TrainState = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a training state", files.state().display()))?;
    let Some(name) = state.checkpoint.clone() else {
        anyhow::bail!(
            "{} names no checkpoint (written by an older dermedge-tools). Fix: train into a new --out",
            files.state().display()
        );
    };
    let checkpoint = Checkpoint {
        dir: files.checkpoints().join(name),
    };
    Ok(Some((state, checkpoint)))
}

/// Reads a member's `config.json`.
pub fn read_config(dir: &Path) -> anyhow::Result<TrainConfig> {
    let path = RunFiles { dir: dir.into() }.config();
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {}; is {} a member folder written by `dermedge-tools train`?",
            path.display(),
            dir.display()
        )
    })?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a training config", path.display()))
}

/// The member's best weights (else its latest checkpoint's) as an eval-mode classifier on
/// `device`.
pub fn load_best(dir: &Path, device: &Device) -> anyhow::Result<(TrainConfig, Classifier)> {
    let config = read_config(dir)?;
    let files = RunFiles { dir: dir.into() };
    let path = if files.best().exists() {
        files.best()
    } else {
        let Some((_, checkpoint)) = read_state(&files)? else {
            anyhow::bail!(
                "{} holds no trained weights yet. Fix: let `dermedge-tools train` finish an epoch",
                dir.display()
            );
        };
        if config.ema_decay.is_some() {
            checkpoint.average()
        } else {
            checkpoint.model()
        }
    };
    let model = load_module(Classifier::init(&config.spec, device), &path)?;
    Ok((config, model.valid()))
}
