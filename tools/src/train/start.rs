//! Where a member's training starts: a fresh model (ImageNet backbone or random weights) or the
//! model, optimizer and weight average of its last checkpoint.

use anyhow::{bail, Context};
use burn::optim::{AdamWConfig, ModuleOptimizer};
use burn::prelude::*;

use super::checkpoint::{
    load_module, read_config, read_state, write_atomically, RunFiles, TrainState,
};
use super::TrainConfig;
use crate::import::load_backbone;
use crate::nn::Classifier;

/// The training state, model, optimizer and weight average a member continues from.
pub(super) struct Start {
    pub state: TrainState,
    pub model: Classifier,
    pub optimizer: ModuleOptimizer,
    pub average: Option<Classifier>,
}

/// Resumes from the last checkpoint in `files` when `resume` is set and one exists; otherwise
/// starts afresh (removing what an earlier run left).
pub(super) fn start_or_resume(
    config: &TrainConfig,
    files: &RunFiles,
    device: &Device,
    autodiff: &Device,
    resume: bool,
) -> anyhow::Result<Start> {
    let optimizer: ModuleOptimizer = AdamWConfig::new()
        .with_weight_decay(config.weight_decay)
        .init();
    let dir = &files.dir;
    let saved = if resume { read_state(files)? } else { None };
    let Some((state, checkpoint)) = saved else {
        if resume {
            log::info!("{}: no checkpoint to resume; starting", dir.display());
        }
        let model = fresh(config, files, device, autodiff)?;
        let average = config.ema_decay.map(|_| model.valid());
        return Ok(Start {
            state: TrainState::default(),
            model,
            optimizer,
            average,
        });
    };
    let saved_config = read_config(dir)?;
    let same_training = TrainConfig {
        patience: config.patience,
        ..saved_config.clone()
    };
    if same_training != *config {
        bail!(
            "{} was trained with other settings; resume with the same options (only --patience may change) or use a new --out",
            dir.display()
        );
    }
    if saved_config.patience != config.patience {
        log::info!(
            "{}: patience {} -> {} epochs",
            dir.display(),
            saved_config.patience,
            config.patience
        );
        write_atomically(
            &files.config(),
            serde_json::to_string_pretty(config)?.as_bytes(),
        )?;
    }
    let optimizer = optimizer
        .load(checkpoint.optimizer())
        .map_err(|e| anyhow::anyhow!("cannot load {}: {e:?}", checkpoint.optimizer().display()))?;
    let model = load_module(
        Classifier::init(&config.spec, autodiff),
        &checkpoint.model(),
    )?;
    let average = match config.ema_decay {
        Some(_) => Some(
            load_module(
                Classifier::init(&config.spec, device),
                &checkpoint.average(),
            )?
            .valid(),
        ),
        None => None,
    };
    log::info!(
        "resuming {} at epoch {}, step {}",
        dir.display(),
        state.next_epoch + 1,
        state.next_step
    );
    Ok(Start {
        state,
        model,
        optimizer,
        average,
    })
}

/// A fresh member: the ImageNet backbone (renormalised to the run's input) or random weights.
fn fresh(
    config: &TrainConfig,
    files: &RunFiles,
    device: &Device,
    autodiff: &Device,
) -> anyhow::Result<Classifier> {
    for stale in [files.state(), files.best(), files.log()] {
        if stale.exists() {
            std::fs::remove_file(&stale)
                .with_context(|| format!("cannot remove {}", stale.display()))?;
        }
    }
    if files.checkpoints().exists() {
        std::fs::remove_dir_all(files.checkpoints())
            .with_context(|| format!("cannot remove {}", files.checkpoints().display()))?;
    }
    write_atomically(
        &files.config(),
        serde_json::to_string_pretty(config)?.as_bytes(),
    )?;
    device.seed(config.seed);
    Ok(match &config.pretrained {
        Some(path) => {
            let backbone = load_backbone(path, &config.spec, autodiff)?.renormalised(
                config.spec.arch.weights_normalisation(),
                config.normalisation(),
            )?;
            Classifier::with_backbone(backbone, &config.spec, autodiff)
        }
        None => Classifier::init(&config.spec, autodiff),
    })
}
