//! Training one ensemble member: ImageNet transfer learning with a frozen-backbone warm-up, then
//! fine-tuning under a cosine learning rate, class-weighted cross-entropy (optionally
//! label-smoothed) or focal loss, an optional moving average of the weights, early stopping on a
//! smoothed validation curve, checkpoints that resume exactly, a CSV log and a PNG plot.
//!
//! `run` trains the members of a run, `fit` is the training loop of one member, `start` its fresh
//! or resumed start, `inputs` its images, loss and seeds, `checkpoint` the run folder, `average`
//! the weight average, `validation` the per-epoch figures and `report` the log.

mod average;
mod checkpoint;
mod fit;
mod inputs;
mod report;
mod run;
mod start;
mod validation;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use dermedge::manifest::{ChannelOrder, ColourConstancy, InputSpec, ResizePolicy};
use serde::{Deserialize, Serialize};

use crate::loss::LossKind;
use crate::nn::{Classifier, ClassifierSpec, Normalisation};
use crate::rng::SeededRng;

pub use average::update_average;
pub use checkpoint::{
    load_best, load_module, read_config, save_module, EpochProgress, RunFiles, TrainState,
};
pub use fit::{train_member, MemberRun, RunOptions, TrainingSet};
pub use run::{member_name, read_class_weights, train, TrainRequest};

/// Serialises the tests that seed or draw from burn's backend random generator, which is one per
/// process: a test running beside them would change what they draw.
#[cfg(test)]
pub(crate) fn backend_rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Which loss to train with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LossChoice {
    /// Cross-entropy weighted by `N / (K n_c)` (or the weights file).
    WeightedCe,
    /// Focal loss with per-class alpha = the class weights.
    Focal,
}

/// Everything that defines a member's training run; saved as `config.json` beside its checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub spec: ClassifierSpec,
    /// ImageNet checkpoint for the backbone; `None` trains from scratch.
    pub pretrained: Option<PathBuf>,
    pub input_width: u32,
    pub input_height: u32,
    /// Epochs with the backbone frozen (head only); counted within `epochs`.
    pub frozen_epochs: usize,
    pub epochs: usize,
    pub batch: usize,
    pub lr_head: f64,
    pub lr: f64,
    pub min_lr: f64,
    pub weight_decay: f32,
    pub loss: LossChoice,
    pub focal_gamma: f32,
    /// Per-class weights; `None` means `N / (K n_c)` from the training side.
    pub class_weights: Option<Vec<f32>>,
    pub augment: bool,
    pub seed: u64,
    /// Epochs without a better validation balanced accuracy before stopping.
    pub patience: usize,
    /// At most this many training images per class (quick runs); `None` uses all.
    pub limit_per_class: Option<usize>,
    /// The input normalisation the member is trained and exported with; `None` (runs written
    /// before this setting existed) means the backbone checkpoint's own.
    #[serde(default)]
    pub input_normalisation: Option<Normalisation>,
    /// Label smoothing of the cross-entropy target (0 = none).
    #[serde(default)]
    pub label_smoothing: f32,
    /// Decay of a moving average of the weights updated after every step; the average is
    /// validated, kept as best and exported. `None` keeps no average.
    #[serde(default)]
    pub ema_decay: Option<f64>,
    /// Training-only image sets (folders in the ISIC 2017 copy's layout) added to the split's
    /// training side.
    #[serde(default)]
    pub extra_training_data: Vec<PathBuf>,
    /// Colour constancy of the member's input (declared in the exported manifest).
    #[serde(default)]
    pub colour_constancy: ColourConstancy,
}

impl TrainConfig {
    /// The runtime input spec the member is trained for.
    pub fn input_spec(&self) -> InputSpec {
        let Normalisation { mean, std } = self.normalisation();
        InputSpec {
            width: self.input_width,
            height: self.input_height,
            resize: ResizePolicy::Stretch,
            mean,
            std,
            channel_order: ChannelOrder::Rgb,
            colour_constancy: self.colour_constancy,
        }
    }

    /// The input normalisation the member sees.
    pub fn normalisation(&self) -> Normalisation {
        self.input_normalisation
            .unwrap_or_else(|| self.spec.arch.weights_normalisation())
    }

    /// Learning rate at `step` of epoch `epoch` with `steps` steps per epoch.
    pub fn learning_rate(&self, epoch: usize, step: usize, steps: usize) -> f64 {
        if epoch < self.frozen_epochs {
            return self.lr_head;
        }
        let total = ((self.epochs - self.frozen_epochs) * steps).max(1) as f64;
        let t = ((epoch - self.frozen_epochs) * steps + step) as f64 / total;
        self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + (std::f64::consts::PI * t).cos())
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.epochs == 0 || self.batch == 0 {
            bail!("--epochs and --batch must be at least 1");
        }
        if self.frozen_epochs > self.epochs {
            bail!(
                "--frozen-epochs ({}) cannot exceed --epochs ({})",
                self.frozen_epochs,
                self.epochs
            );
        }
        if self.input_width < 32 || self.input_height < 32 {
            bail!("--width and --height must be at least 32 pixels");
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            bail!(
                "--label-smoothing {} must be in [0, 1). Fix: e.g. --label-smoothing 0.1",
                self.label_smoothing
            );
        }
        if self.label_smoothing > 0.0 && self.loss == LossChoice::Focal {
            bail!("--label-smoothing applies to the cross-entropy losses only. Fix: drop it or use --loss weighted-ce");
        }
        if let Some(decay) = self.ema_decay {
            if !(0.0..1.0).contains(&decay) {
                bail!("--ema {decay} must be in [0, 1). Fix: e.g. --ema 0.998");
            }
        }
        Ok(())
    }
}

/// Training images per second for `config`'s network on `device`, from `steps` timed steps on
/// random batches after one warm-up step.
pub fn training_throughput(
    config: &TrainConfig,
    device: &Device,
    steps: usize,
) -> anyhow::Result<f64> {
    config.check()?;
    let autodiff = device.clone().autodiff();
    let mut model = Classifier::init(&config.spec, &autodiff);
    let mut optimizer = AdamWConfig::new().init();
    let loss = LossKind::WeightedCrossEntropy {
        weights: vec![1.0; config.spec.classes],
        smoothing: 0.0,
    };
    let (h, w) = (config.input_height as usize, config.input_width as usize);
    let mut rng = SeededRng::new(config.seed);
    let mut started = Instant::now();
    for step in 0..=steps {
        if step == 1 {
            device.sync().map_err(|e| anyhow::anyhow!("{e:?}"))?;
            started = Instant::now();
        }
        let images = rng.normals(config.batch * 3 * h * w, 1.0);
        let labels: Vec<usize> = (0..config.batch).map(|i| i % config.spec.classes).collect();
        let x = Tensor::<4>::from_data(TensorData::new(images, [config.batch, 3, h, w]), &autodiff);
        let l = loss.compute(model.forward(x), &labels);
        let grads = GradientsParams::from_grads(l.backward(), &model);
        model = optimizer.step(config.lr, model.clone(), grads);
        let _: f32 = l.into_scalar();
    }
    device.sync().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok((steps * config.batch) as f64 / started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LITE0_CONFIG: &str = r#"{
        "spec": {"arch": "efficientnet-lite0", "width": 1.0, "depth": 1.0, "hidden": 256,
                 "dropout": 0.3, "classes": 7},
        "pretrained": "efficientnet-lite0-57934424.pth",
        "input_width": 160, "input_height": 120, "frozen_epochs": 1, "epochs": 8, "batch": 32,
        "lr_head": 0.001, "lr": 0.0005, "min_lr": 0.00001, "weight_decay": 0.0001,
        "loss": "weighted-ce", "focal_gamma": 2.0, "class_weights": null, "augment": true,
        "seed": 6, "patience": 3, "limit_per_class": null"#;

    #[test]
    fn a_run_written_before_input_normalisation_keeps_its_checkpoint_normalisation() {
        let old: TrainConfig = serde_json::from_str(&format!("{LITE0_CONFIG}}}")).unwrap();
        assert_eq!(old.input_normalisation, None);
        assert_eq!(old.input_spec().mean, [0.5; 3]);
        assert_eq!(old.input_spec().std, [0.5; 3]);

        let new: TrainConfig = serde_json::from_str(&format!(
            r#"{LITE0_CONFIG}, "input_normalisation": {{"mean": [0.485, 0.456, 0.406],
                "std": [0.229, 0.224, 0.225]}}}}"#
        ))
        .unwrap();
        assert_eq!(new.normalisation(), Normalisation::IMAGENET);
        assert_eq!(new.input_spec().mean, Normalisation::IMAGENET.mean);
        assert_eq!(new.input_spec().std, Normalisation::IMAGENET.std);
    }
}
