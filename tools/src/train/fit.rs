//! The training loop of one member: epochs of shuffled, augmented batches, a checkpoint every few
//! minutes and at every epoch's end, validation and early stopping.
//!
//! Everything random is a function of the seed, the epoch and the step (the order of an epoch,
//! each batch's augmentations, the backend's dropout stream), so a run stopped at any step and
//! resumed from its last checkpoint computes what an uninterrupted run computes.

use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use burn::optim::GradientsParams;
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};

use super::average::update_average;
use super::checkpoint::{save_checkpoint, save_module, EpochProgress, RunFiles};
use super::inputs::{loss_for, step_seed, training_indices};
use super::report::{log_epoch, write_log};
use super::start::{start_or_resume, Start};
use super::validation::{logits_values, smoothed_balanced_accuracy, tensor_batch, validate};
use super::TrainConfig;
use crate::augment::AugmentConfig;
use crate::batch::{make_batch, Batch};
use crate::classes::Classes;
use crate::data::Sample;
use crate::nn::Classifier;
use crate::plot::EpochRow;
use crate::rng::SeededRng;
use crate::split::shuffle;

/// How a member's training is run, beyond what defines the member.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Continue from the member folder's last checkpoint.
    pub resume: bool,
    /// Time between checkpoints inside an epoch (one is also written at every epoch's end).
    pub checkpoint_every: Duration,
    /// Stop (after a checkpoint) once this many steps have run in this call.
    pub stop_after_steps: Option<usize>,
    /// Stop (after a checkpoint) once the member has trained this long in this call.
    pub stop_after: Option<Duration>,
    /// Threads that decode and augment the training batches (at least one).
    pub loader_threads: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            resume: false,
            checkpoint_every: Duration::from_secs(600),
            stop_after_steps: None,
            stop_after: None,
            loader_threads: 1,
        }
    }
}

impl RunOptions {
    /// Whether the member has run its share of this call: `steps_run` steps since `started`.
    fn should_stop(&self, steps_run: usize, started: Instant) -> bool {
        self.stop_after_steps.is_some_and(|n| steps_run >= n)
            || self
                .stop_after
                .is_some_and(|limit| started.elapsed() >= limit)
    }
}

/// What a member run produced.
#[derive(Debug, Clone)]
pub struct MemberRun {
    pub dir: PathBuf,
    pub best_epoch: Option<usize>,
    pub best_balanced_accuracy: f64,
    /// Whether every epoch ran or early stopping ended the run (false after `stop_after_steps`).
    pub finished: bool,
}

/// The images a member trains and validates on.
#[derive(Debug, Clone, Copy)]
pub struct TrainingSet<'a> {
    pub samples: &'a [Sample],
    /// Indices of the training images.
    pub train: &'a [usize],
    /// Indices of the validation images.
    pub val: &'a [usize],
    /// The classes the samples' labels index.
    pub classes: &'a Classes,
}

/// Trains one member into `dir` on `device` (a plain device; gradients are enabled here).
pub fn train_member(
    config: &TrainConfig,
    set: &TrainingSet,
    dir: &Path,
    device: &Device,
    options: &RunOptions,
) -> anyhow::Result<MemberRun> {
    config.check()?;
    let TrainingSet {
        samples,
        train,
        val,
        classes,
    } = *set;
    if config.spec.classes != classes.len() {
        bail!(
            "the member has {} outputs for {} classes",
            config.spec.classes,
            classes.len()
        );
    }
    if train.is_empty() || val.is_empty() {
        bail!(
            "the split has {} training and {} validation images; both sides need images",
            train.len(),
            val.len()
        );
    }
    let files = RunFiles { dir: dir.into() };
    std::fs::create_dir_all(files.checkpoints())
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let autodiff = device.clone().autodiff();
    let spec = config.input_spec();
    let train = training_indices(config, samples, train);
    let loss = loss_for(config, samples, &train);

    let Start {
        mut state,
        mut model,
        mut optimizer,
        mut average,
    } = start_or_resume(config, &files, device, &autodiff, options.resume)?;

    let steps = train.len().div_ceil(config.batch);
    let augmentation = if config.augment {
        AugmentConfig::default()
    } else {
        AugmentConfig::none()
    };
    let started = Instant::now();
    let mut last_checkpoint = started;
    let mut steps_run = 0usize;
    let loader_threads = options.loader_threads.max(1);
    while state.next_epoch < config.epochs && state.epochs_without_improvement < config.patience {
        let epoch = state.next_epoch;
        model.backbone = if epoch < config.frozen_epochs {
            model.backbone.freeze()
        } else {
            model.backbone.unfreeze()
        };
        let resumed_at = Instant::now();
        let mut order = train.clone();
        let mut rng = SeededRng::new(config.seed.wrapping_mul(1000).wrapping_add(epoch as u64));
        shuffle(&mut order, &mut rng);
        let bar = ProgressBar::new(steps as u64).with_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(format!("epoch {}/{}", epoch + 1, config.epochs));
        bar.set_position(state.next_step as u64);
        let phase = if epoch < config.frozen_epochs {
            "frozen"
        } else {
            "fine-tune"
        };
        let mut progress = std::mem::take(&mut state.progress);
        let mut lr = config.learning_rate(epoch, state.next_step, steps);
        let first_step = state.next_step;
        let interrupted = std::thread::scope(|scope| -> anyhow::Result<bool> {
            let order = &order;
            let augmentation = &augmentation;
            let spec = &spec;
            let receivers: Vec<_> = (0..loader_threads)
                .map(|worker| {
                    let (tx, rx) = sync_channel::<anyhow::Result<Batch>>(2);
                    scope.spawn(move || {
                        let mine = order
                            .chunks(config.batch)
                            .enumerate()
                            .skip(first_step)
                            .filter(|(step, _)| step % loader_threads == worker);
                        for (step, chunk) in mine {
                            let mut aug_rng = SeededRng::new(step_seed(config.seed, epoch, step));
                            let batch = make_batch(
                                samples,
                                chunk,
                                spec,
                                Some((augmentation, &mut aug_rng)),
                            );
                            if tx.send(batch).is_err() {
                                break;
                            }
                        }
                    });
                    rx
                })
                .collect();
            for step in first_step..steps {
                let batch = receivers[step % loader_threads]
                    .recv()
                    .context("a batch loader thread stopped")??;
                lr = config.learning_rate(epoch, step, steps);
                device.seed(step_seed(config.seed ^ 0xd40, epoch, step));
                let logits = model.forward(tensor_batch(&batch, &autodiff));
                let batch_loss = loss.compute(logits.clone(), &batch.labels);
                let grads = GradientsParams::from_grads(batch_loss.backward(), &model);
                model = optimizer.step(lr, model.clone(), grads);
                if let (Some(decay), Some(current)) = (config.ema_decay, average.take()) {
                    average = Some(update_average(current, &model.valid(), decay));
                }
                let l: f32 = batch_loss.into_scalar();
                if !l.is_finite() {
                    bail!(
                        "the training loss became {l} at epoch {}, step {step}; lower --lr",
                        epoch + 1
                    );
                }
                let values = logits_values(logits);
                progress.correct += values
                    .chunks(classes.len())
                    .zip(&batch.labels)
                    .filter(|(row, &label)| crate::metrics::argmax(row) == label)
                    .count();
                progress.loss_sum += l as f64 * batch.len() as f64;
                progress.seen += batch.len();
                steps_run += 1;
                bar.set_message(format!(
                    "loss {:.4} acc {:.3} lr {lr:.2e}",
                    progress.loss_sum / progress.seen as f64,
                    progress.correct as f64 / progress.seen as f64
                ));
                bar.inc(1);
                let stop = options.should_stop(steps_run, started);
                let due = last_checkpoint.elapsed() >= options.checkpoint_every;
                if step + 1 < steps && (stop || due) {
                    state.next_step = step + 1;
                    state.progress = EpochProgress {
                        seconds: progress.seconds + resumed_at.elapsed().as_secs_f64(),
                        ..progress.clone()
                    };
                    save_checkpoint(&files, &mut state, &model, &optimizer, average.as_ref())?;
                    last_checkpoint = Instant::now();
                    if stop {
                        return Ok(true);
                    }
                }
            }
            Ok(false)
        })?;
        bar.finish_and_clear();
        if interrupted {
            log::info!(
                "{}: stopped at epoch {}, step {} of {steps}; continue with --resume",
                dir.display(),
                epoch + 1,
                state.next_step
            );
            return Ok(MemberRun {
                dir: dir.into(),
                best_epoch: state.best_epoch,
                best_balanced_accuracy: state.best_balanced_accuracy,
                finished: false,
            });
        }

        let eval = model.valid();
        let validation_batch = config.batch.max(16);
        let validation =
            |model: &Classifier| validate(model, set, &spec, validation_batch, device, &loss);
        let figures = validation(&eval)?;
        let average_figures = average.as_ref().map(validation).transpose()?;
        let row = EpochRow {
            epoch: epoch + 1,
            phase: phase.into(),
            lr,
            train_loss: progress.loss_sum / progress.seen.max(1) as f64,
            train_accuracy: progress.correct as f64 / progress.seen.max(1) as f64,
            val_loss: figures.loss,
            val_accuracy: figures.accuracy,
            val_balanced_accuracy: figures.balanced_accuracy,
            val_melanoma_sensitivity: figures.melanoma_sensitivity,
            average: average_figures,
            seconds: progress.seconds + resumed_at.elapsed().as_secs_f64(),
        };
        state.rows.push(row.clone());
        log_epoch(dir, &state.rows, config.epochs);

        let selected = row.selected_balanced_accuracy();
        if selected > state.best_balanced_accuracy {
            state.best_balanced_accuracy = selected;
            state.best_epoch = Some(row.epoch);
            save_module(average.as_ref().unwrap_or(&eval), &files.best())?;
        }
        let smoothed = smoothed_balanced_accuracy(&state.rows);
        if smoothed > state.best_smoothed {
            state.best_smoothed = smoothed;
            state.epochs_without_improvement = 0;
        } else if epoch >= config.frozen_epochs {
            state.epochs_without_improvement += 1;
        }
        state.next_epoch = epoch + 1;
        state.next_step = 0;
        state.progress = EpochProgress::default();
        save_checkpoint(&files, &mut state, &model, &optimizer, average.as_ref())?;
        write_log(&files, &state.rows)?;
        last_checkpoint = Instant::now();
        if state.epochs_without_improvement >= config.patience {
            log::info!(
                "{}: the smoothed validation balanced accuracy has not improved for {} epochs; stopping",
                dir.display(),
                config.patience
            );
            break;
        }
        if state.next_epoch < config.epochs && options.should_stop(steps_run, started) {
            log::info!(
                "{}: stopped after epoch {}; continue with --resume",
                dir.display(),
                state.next_epoch
            );
            return Ok(MemberRun {
                dir: dir.into(),
                best_epoch: state.best_epoch,
                best_balanced_accuracy: state.best_balanced_accuracy,
                finished: false,
            });
        }
    }
    Ok(MemberRun {
        dir: dir.into(),
        best_epoch: state.best_epoch,
        best_balanced_accuracy: state.best_balanced_accuracy,
        finished: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classes::tests::shipped;
    use crate::nn::{Arch, ClassifierSpec, Normalisation};
    use crate::train::checkpoint::load_module;
    use crate::train::{LossChoice, TrainState};
    use dermedge::manifest::ColourConstancy;

    /// Images whose class is visible in their colour, in a temporary folder.
    fn samples(dir: &Path, n: usize) -> Vec<Sample> {
        let palette = [[200, 40, 40], [40, 200, 40], [40, 40, 200]];
        (0..n)
            .map(|i| {
                let class = i % palette.len();
                let mut rng = SeededRng::new(i as u64);
                let image = image::RgbImage::from_fn(40, 30, |_, _| {
                    image::Rgb(
                        palette[class]
                            .map(|v: i32| (v + (rng.uniform() * 50.0) as i32).clamp(0, 255) as u8),
                    )
                });
                let path = dir.join(format!("img{i}.png"));
                image.save(&path).unwrap();
                Sample {
                    image_id: format!("img{i}"),
                    lesion_id: format!("l{i}"),
                    class,
                    path,
                }
            })
            .collect()
    }

    /// A toy data set in a temporary folder: `n` images, the first `n_train` for training.
    struct Toy {
        dir: tempfile::TempDir,
        data: Vec<Sample>,
        train: Vec<usize>,
        val: Vec<usize>,
        classes: Classes,
    }

    impl Toy {
        fn new(n: usize, n_train: usize) -> Toy {
            let dir = tempfile::tempdir().unwrap();
            let data = samples(dir.path(), n);
            let (train, val) = (0..n).partition(|&i| i < n_train);
            Toy {
                dir,
                data,
                train,
                val,
                classes: shipped(),
            }
        }

        fn set(&self) -> TrainingSet<'_> {
            TrainingSet {
                samples: &self.data,
                train: &self.train,
                val: &self.val,
                classes: &self.classes,
            }
        }
    }

    fn config() -> TrainConfig {
        TrainConfig {
            spec: ClassifierSpec {
                hidden: 16,
                ..ClassifierSpec::new(Arch::TinyCnn, 7)
            },
            pretrained: None,
            input_width: 32,
            input_height: 32,
            frozen_epochs: 0,
            epochs: 2,
            batch: 4,
            lr_head: 1e-3,
            lr: 1e-3,
            min_lr: 1e-4,
            weight_decay: 1e-4,
            loss: LossChoice::WeightedCe,
            focal_gamma: 2.0,
            class_weights: None,
            augment: true,
            seed: 9,
            patience: 10,
            limit_per_class: None,
            input_normalisation: Some(Normalisation::IMAGENET),
            label_smoothing: 0.1,
            ema_decay: Some(0.8),
            extra_training_data: Vec::new(),
            colour_constancy: ColourConstancy::ShadesOfGray,
        }
    }

    fn logits(dir: &Path, file: &str, device: &Device) -> Vec<f32> {
        let model = load_module(Classifier::init(&config().spec, device), &dir.join(file))
            .unwrap()
            .valid();
        let mut rng = SeededRng::new(5);
        let x = Tensor::<4>::from_data(
            TensorData::new(rng.normals(2 * 3 * 32 * 32, 1.0), [2, 3, 32, 32]),
            device,
        );
        logits_values(model.forward(x))
    }

    #[test]
    fn a_run_stopped_anywhere_and_resumed_computes_what_an_uninterrupted_run_computes() {
        let _rng = super::super::backend_rng_lock();
        let toy = Toy::new(18, 12);
        let set = toy.set();
        let tmp = &toy.dir;
        let device = crate::backend::ndarray_device();
        // Checkpoints after every step must not change what a run computes.
        let whole = tmp.path().join("whole");
        let every_step = RunOptions {
            checkpoint_every: Duration::ZERO,
            ..RunOptions::default()
        };
        let run = train_member(&config(), &set, &whole, &device, &every_step).unwrap();
        assert!(run.finished);

        // Stops after 2 steps (mid-epoch), 2 more (across the epoch boundary), then the rest,
        // with a checkpoint after every step.
        let pieces = tmp.path().join("pieces");
        let mut calls = 0;
        loop {
            // Three loader threads here, one in the uninterrupted run: the batches are the same.
            let options = RunOptions {
                resume: calls > 0,
                checkpoint_every: Duration::ZERO,
                stop_after_steps: (calls < 2).then_some(2),
                loader_threads: 3,
                ..RunOptions::default()
            };
            calls += 1;
            let run = train_member(&config(), &set, &pieces, &device, &options).unwrap();
            if run.finished {
                break;
            }
            assert!(calls < 5, "the run never finished");
        }
        assert_eq!(calls, 3);

        let state = |dir: &Path| -> TrainState {
            serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap()).unwrap()
        };
        let (a, b) = (state(&whole), state(&pieces));
        assert_eq!(a.rows.len(), 2);
        for (x, y) in a.rows.iter().zip(&b.rows) {
            assert_eq!(
                EpochRow {
                    seconds: 0.0,
                    ..x.clone()
                },
                EpochRow {
                    seconds: 0.0,
                    ..y.clone()
                }
            );
        }
        assert!(a.rows[0].average.is_some());
        for file in [
            "checkpoints/e002-s00000/model.bpk",
            "checkpoints/e002-s00000/average.bpk",
            "best.bpk",
        ] {
            assert_eq!(
                logits(&whole, file, &device),
                logits(&pieces, file, &device),
                "{file}"
            );
        }
        let checkpoints: Vec<_> = std::fs::read_dir(pieces.join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            checkpoints,
            ["e002-s00000"],
            "older checkpoints are removed"
        );
        let log = std::fs::read_to_string(pieces.join("log.csv")).unwrap();
        assert_eq!(log.lines().count(), 3, "{log}");
    }

    #[test]
    fn a_time_limit_stops_the_call_with_a_checkpoint_to_resume_from() {
        let _rng = super::super::backend_rng_lock();
        let toy = Toy::new(12, 9);
        let set = toy.set();
        let tmp = &toy.dir;
        let device = crate::backend::ndarray_device();
        let dir = tmp.path().join("run");
        let out_of_time = RunOptions {
            stop_after: Some(Duration::ZERO),
            ..RunOptions::default()
        };
        let run = train_member(&config(), &set, &dir, &device, &out_of_time).unwrap();
        assert!(!run.finished);
        let state: TrainState =
            serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap())
                .unwrap();
        assert_eq!(
            (state.next_epoch, state.next_step),
            (0, 1),
            "one step, then the stop"
        );
        assert!(dir.join("checkpoints/e000-s00001/model.bpk").exists());
        let resume = RunOptions {
            resume: true,
            ..RunOptions::default()
        };
        assert!(
            train_member(&config(), &set, &dir, &device, &resume)
                .unwrap()
                .finished
        );
    }

    #[test]
    fn resuming_with_other_settings_is_refused() {
        let _rng = super::super::backend_rng_lock();
        let toy = Toy::new(8, 6);
        let set = toy.set();
        let tmp = &toy.dir;
        let device = crate::backend::ndarray_device();
        let dir = tmp.path().join("run");
        let options = RunOptions {
            stop_after_steps: Some(1),
            ..RunOptions::default()
        };
        train_member(&config(), &set, &dir, &device, &options).unwrap();
        let other = TrainConfig {
            label_smoothing: 0.0,
            ..config()
        };
        let resume = RunOptions {
            resume: true,
            ..RunOptions::default()
        };
        let error = train_member(&other, &set, &dir, &device, &resume)
            .unwrap_err()
            .to_string();
        assert!(error.contains("other settings"), "{error}");
    }

    #[test]
    fn resuming_with_another_patience_goes_on_and_records_it() {
        let _rng = super::super::backend_rng_lock();
        let toy = Toy::new(8, 6);
        let set = toy.set();
        let dir = toy.dir.path().join("run");
        let device = crate::backend::ndarray_device();
        let options = RunOptions {
            stop_after_steps: Some(1),
            ..RunOptions::default()
        };
        assert!(
            !train_member(&config(), &set, &dir, &device, &options)
                .unwrap()
                .finished
        );
        let patient = TrainConfig {
            patience: config().patience + 5,
            ..config()
        };
        let resume = RunOptions {
            resume: true,
            ..RunOptions::default()
        };
        let run = train_member(&patient, &set, &dir, &device, &resume).unwrap();
        assert!(run.finished);
        assert_eq!(super::super::read_config(&dir).unwrap(), patient);
        let state: TrainState =
            serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap())
                .unwrap();
        assert_eq!(state.next_epoch, patient.epochs);
    }
}
