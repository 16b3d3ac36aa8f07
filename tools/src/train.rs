//! Training one ensemble member: ImageNet transfer learning with a frozen-backbone warm-up, then
//! fine-tuning under a cosine learning rate, class-weighted cross-entropy or focal loss, early
//! stopping on validation balanced accuracy, checkpoints that resume, a CSV log and a PNG plot.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use anyhow::{bail, Context};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::activation::softmax;
use dermedge::manifest::{ChannelOrder, InputSpec, ResizePolicy};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::augment::AugmentConfig;
use crate::batch::{make_batch, Batch};
use crate::data::{class_counts, class_weights, Sample};
use crate::import::load_backbone;
use crate::loss::LossKind;
use crate::metrics::Confusion;
use crate::nn::{Classifier, ClassifierSpec, Normalisation};
use crate::plot::{write_training_plot, EpochRow};
use crate::rng::SeededRng;
use crate::split::shuffle;

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
        Ok(())
    }
}

/// Training progress saved after every epoch, for `--resume`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub next_epoch: usize,
    pub best_epoch: Option<usize>,
    pub best_balanced_accuracy: f64,
    pub epochs_without_improvement: usize,
    pub rows: Vec<EpochRow>,
}

/// What a finished member run produced.
#[derive(Debug, Clone)]
pub struct MemberRun {
    pub dir: PathBuf,
    pub best_epoch: Option<usize>,
    pub best_balanced_accuracy: f64,
}

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
    pub fn best(&self) -> PathBuf {
        self.dir.join("best.bpk")
    }
    pub fn last(&self) -> PathBuf {
        self.dir.join("last.bpk")
    }
    pub fn optimizer(&self) -> PathBuf {
        self.dir.join("optimizer.bpk")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("log.csv")
    }
    pub fn plot(&self) -> PathBuf {
        self.dir.join("curves.png")
    }
}

/// Saves a module's weights as burnpack.
pub fn save_module<M: Module>(module: &M, path: &Path) -> anyhow::Result<()> {
    let mut store = BurnpackStore::from_file(path).overwrite(true);
    module
        .save_into(&mut store)
        .map_err(|e| anyhow::anyhow!("cannot save {}: {e:?}", path.display()))
}

/// Loads weights saved by [`save_module`] into `module`.
pub fn load_module<M: Module>(mut module: M, path: &Path) -> anyhow::Result<M> {
    let mut store = BurnpackStore::from_file(path);
    module
        .load_from(&mut store)
        .map_err(|e| anyhow::anyhow!("cannot load {}: {e:?}", path.display()))?;
    Ok(module)
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

/// The member's best checkpoint as an eval-mode classifier on `device`.
pub fn load_best(dir: &Path, device: &Device) -> anyhow::Result<(TrainConfig, Classifier)> {
    let config = read_config(dir)?;
    let files = RunFiles { dir: dir.into() };
    let path = if files.best().exists() {
        files.best()
    } else {
        files.last()
    };
    let model = load_module(Classifier::init(&config.spec, device), &path)?;
    Ok((config, model.valid()))
}

fn tensor_batch(batch: &Batch, device: &Device) -> Tensor<4> {
    Tensor::from_data(
        TensorData::new(
            batch.images.clone(),
            [batch.len(), 3, batch.height, batch.width],
        ),
        device,
    )
}

fn logits_values(logits: Tensor<2>) -> Vec<f32> {
    logits
        .into_data_as::<f32>()
        .as_slice::<f32>()
        .map(<[f32]>::to_vec)
        .unwrap_or_default()
}

/// Class probabilities `[n][classes]` of `model` over `samples[indices]`, in batches.
pub fn predict_samples(
    model: &Classifier,
    samples: &[Sample],
    indices: &[usize],
    spec: &InputSpec,
    batch: usize,
    device: &Device,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(indices.len());
    for chunk in indices.chunks(batch.max(1)) {
        let b = make_batch(samples, chunk, spec, None)?;
        let probs = softmax(model.forward(tensor_batch(&b, device)), 1);
        let classes = probs.dims()[1];
        let values = logits_values(probs);
        out.extend(values.chunks(classes).map(<[f32]>::to_vec));
    }
    Ok(out)
}

/// Validation loss, accuracy and balanced accuracy of an eval-mode model.
fn validate(
    model: &Classifier,
    samples: &[Sample],
    indices: &[usize],
    spec: &InputSpec,
    batch: usize,
    device: &Device,
    loss: &LossKind,
) -> anyhow::Result<(f64, Confusion)> {
    let mut confusion = Confusion::new(7);
    let mut loss_sum = 0.0;
    for chunk in indices.chunks(batch.max(1)) {
        let b = make_batch(samples, chunk, spec, None)?;
        let logits = model.forward(tensor_batch(&b, device));
        let l: f32 = loss.compute(logits.clone(), &b.labels).into_scalar();
        loss_sum += l as f64 * b.len() as f64;
        let values = logits_values(logits);
        for (row, &label) in values.chunks(7).zip(&b.labels) {
            confusion.add(label, crate::metrics::argmax(row));
        }
    }
    Ok((loss_sum / indices.len().max(1) as f64, confusion))
}

fn training_indices(config: &TrainConfig, samples: &[Sample], train: &[usize]) -> Vec<usize> {
    let Some(limit) = config.limit_per_class else {
        return train.to_vec();
    };
    let mut rng = SeededRng::new(config.seed ^ 0x5eed);
    let mut shuffled = train.to_vec();
    shuffle(&mut shuffled, &mut rng);
    let mut taken = [0usize; 7];
    let mut out: Vec<usize> = shuffled
        .into_iter()
        .filter(|&i| {
            let c = samples[i].class;
            taken[c] += 1;
            taken[c] <= limit
        })
        .collect();
    out.sort_unstable();
    out
}

fn loss_for(config: &TrainConfig, samples: &[Sample], train: &[usize]) -> LossKind {
    let weights = config.class_weights.clone().unwrap_or_else(|| {
        let subset: Vec<Sample> = train.iter().map(|&i| samples[i].clone()).collect();
        class_weights(&class_counts(&subset))
    });
    match config.loss {
        LossChoice::WeightedCe => LossKind::WeightedCrossEntropy { weights },
        LossChoice::Focal => LossKind::Focal {
            gamma: config.focal_gamma,
            alpha: weights,
        },
    }
}

fn append_log_row(path: &Path, row: &EpochRow) -> anyhow::Result<()> {
    let new = !path.exists();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    if new {
        writeln!(file, "{}", EpochRow::CSV_HEADER)?;
    }
    writeln!(file, "{}", row.csv())?;
    Ok(())
}

/// Trains one member into `dir` on `device` (a plain device; gradients are enabled here).
pub fn train_member(
    config: &TrainConfig,
    samples: &[Sample],
    train: &[usize],
    val: &[usize],
    dir: &Path,
    device: &Device,
    resume: bool,
) -> anyhow::Result<MemberRun> {
    config.check()?;
    if train.is_empty() || val.is_empty() {
        bail!(
            "the split has {} training and {} validation images; both sides need images",
            train.len(),
            val.len()
        );
    }
    let files = RunFiles { dir: dir.into() };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let autodiff = device.clone().autodiff();
    let spec = config.input_spec();
    let train = training_indices(config, samples, train);
    let loss = loss_for(config, samples, &train);

    let mut state = TrainState::default();
    let mut optimizer: ModuleOptimizer = AdamWConfig::new()
        .with_weight_decay(config.weight_decay)
        .init();
    let mut model = if resume && files.state().exists() {
        let text = std::fs::read_to_string(files.state())?;
        state = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a training state", files.state().display()))?;
        let saved = read_config(dir)?;
        if saved != *config {
            bail!(
                "{} was trained with other settings; resume with the same options or use a new --out",
                dir.display()
            );
        }
        optimizer = optimizer
            .load(files.optimizer())
            .map_err(|e| anyhow::anyhow!("cannot load {}: {e:?}", files.optimizer().display()))?;
        log::info!(
            "resuming {} at epoch {}",
            dir.display(),
            state.next_epoch + 1
        );
        load_module(Classifier::init(&config.spec, &autodiff), &files.last())?
    } else {
        std::fs::write(files.config(), serde_json::to_string_pretty(config)?)?;
        let _ = std::fs::remove_file(files.log());
        device.seed(config.seed);
        match &config.pretrained {
            Some(path) => {
                let backbone = load_backbone(path, &config.spec, &autodiff)?.renormalised(
                    config.spec.arch.weights_normalisation(),
                    config.normalisation(),
                )?;
                Classifier::with_backbone(backbone, &config.spec, &autodiff)
            }
            None => Classifier::init(&config.spec, &autodiff),
        }
    };
    if state.next_epoch < config.frozen_epochs {
        model.backbone = model.backbone.freeze();
    }

    let steps = train.len().div_ceil(config.batch);
    let augmentation = if config.augment {
        AugmentConfig::default()
    } else {
        AugmentConfig::none()
    };
    for epoch in state.next_epoch..config.epochs {
        if epoch == config.frozen_epochs && config.frozen_epochs > 0 {
            model.backbone = model.backbone.unfreeze();
        }
        let started = Instant::now();
        let mut order = train.clone();
        let mut rng = SeededRng::new(config.seed.wrapping_mul(1000).wrapping_add(epoch as u64));
        shuffle(&mut order, &mut rng);
        let bar = ProgressBar::new(steps as u64).with_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(format!("epoch {}/{}", epoch + 1, config.epochs));
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        let phase = if epoch < config.frozen_epochs {
            "frozen"
        } else {
            "fine-tune"
        };
        let mut lr = config.learning_rate(epoch, 0, steps);
        std::thread::scope(|scope| -> anyhow::Result<()> {
            let (tx, rx) = sync_channel::<anyhow::Result<Batch>>(3);
            let order = &order;
            let augmentation = &augmentation;
            let spec = &spec;
            scope.spawn(move || {
                let mut aug_rng = rng;
                for chunk in order.chunks(config.batch) {
                    let batch =
                        make_batch(samples, chunk, spec, Some((augmentation, &mut aug_rng)));
                    if tx.send(batch).is_err() {
                        break;
                    }
                }
            });
            for (step, batch) in rx.iter().enumerate() {
                let batch = batch?;
                lr = config.learning_rate(epoch, step, steps);
                let logits = model.forward(tensor_batch(&batch, &autodiff));
                let batch_loss = loss.compute(logits.clone(), &batch.labels);
                let grads = GradientsParams::from_grads(batch_loss.backward(), &model);
                model = optimizer.step(lr, model.clone(), grads);
                let l: f32 = batch_loss.into_scalar();
                if !l.is_finite() {
                    bail!(
                        "the training loss became {l} at epoch {}, step {step}; lower --lr",
                        epoch + 1
                    );
                }
                let values = logits_values(logits);
                correct += values
                    .chunks(7)
                    .zip(&batch.labels)
                    .filter(|(row, &label)| crate::metrics::argmax(row) == label)
                    .count();
                loss_sum += l as f64 * batch.len() as f64;
                seen += batch.len();
                bar.set_message(format!(
                    "loss {:.4} acc {:.3} lr {lr:.2e}",
                    loss_sum / seen as f64,
                    correct as f64 / seen as f64
                ));
                bar.inc(1);
            }
            Ok(())
        })?;
        bar.finish_and_clear();

        let eval = model.valid();
        let (val_loss, confusion) = validate(
            &eval,
            samples,
            val,
            &spec,
            config.batch.max(16),
            device,
            &loss,
        )?;
        let row = EpochRow {
            epoch: epoch + 1,
            phase: phase.into(),
            lr,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            val_loss,
            val_accuracy: confusion.accuracy(),
            val_balanced_accuracy: confusion.balanced_accuracy(),
            seconds: started.elapsed().as_secs_f64(),
        };
        log::info!(
            "{} epoch {}/{} [{phase}] train loss {:.4} acc {:.3} | val loss {:.4} acc {:.3} balanced {:.3} | {:.0} s",
            dir.display(),
            row.epoch,
            config.epochs,
            row.train_loss,
            row.train_accuracy,
            row.val_loss,
            row.val_accuracy,
            row.val_balanced_accuracy,
            row.seconds
        );
        append_log_row(&files.log(), &row)?;
        state.rows.push(row.clone());
        write_training_plot(&files.plot(), &state.rows)?;

        let improved = row.val_balanced_accuracy > state.best_balanced_accuracy;
        if improved {
            state.best_balanced_accuracy = row.val_balanced_accuracy;
            state.best_epoch = Some(row.epoch);
            state.epochs_without_improvement = 0;
            save_module(&eval, &files.best())?;
        } else if epoch >= config.frozen_epochs {
            state.epochs_without_improvement += 1;
        }
        state.next_epoch = epoch + 1;
        save_module(&model, &files.last())?;
        optimizer
            .save(files.optimizer())
            .map_err(|e| anyhow::anyhow!("cannot save {}: {e:?}", files.optimizer().display()))?;
        std::fs::write(files.state(), serde_json::to_string_pretty(&state)?)?;
        if state.epochs_without_improvement >= config.patience {
            log::info!(
                "{}: no better validation balanced accuracy for {} epochs; stopping",
                dir.display(),
                config.patience
            );
            break;
        }
    }
    Ok(MemberRun {
        dir: dir.into(),
        best_epoch: state.best_epoch,
        best_balanced_accuracy: state.best_balanced_accuracy,
    })
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
