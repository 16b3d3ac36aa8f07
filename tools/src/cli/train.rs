//! `dermedge-tools train`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use dermedge_tools::nn::Arch;
use dermedge_tools::train::{
    read_class_weights, train, LossChoice, RunOptions, TrainConfig, TrainRequest,
};

use super::{ClassesArgs, ColourConstancyArg, ModelArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: ModelArgs,
    #[arg(long, default_value = "../shared/ham10000")]
    data: PathBuf,
    /// Split CSV from `dermedge-tools split`; without it the default split (seed 1) is made.
    #[arg(long)]
    split: Option<PathBuf>,
    /// Run folder; each member trains into OUT/<backbone>-s<seed>/.
    #[arg(long)]
    out: PathBuf,
    /// Backbones (repeatable).
    #[arg(long = "arch", value_enum, required = true)]
    archs: Vec<Arch>,
    /// Seeds (comma-separated); one member per backbone and seed.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    seeds: Vec<u64>,
    /// ImageNet checkpoint per backbone, BACKBONE=PATH (repeatable).
    #[arg(long = "weights", value_parser = parse_weights)]
    weights: Vec<(Arch, PathBuf)>,
    /// Continue members from their last checkpoint.
    #[arg(long)]
    resume: bool,
    #[arg(long, default_value_t = 12)]
    epochs: usize,
    /// Epochs (within --epochs) that train the head only.
    #[arg(long, default_value_t = 2)]
    frozen_epochs: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr_head: f64,
    #[arg(long, default_value_t = 1e-6)]
    min_lr: f64,
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f32,
    #[arg(long, value_enum, default_value_t = LossChoice::WeightedCe)]
    loss: LossChoice,
    #[arg(long, default_value_t = 2.0)]
    gamma: f32,
    /// Class weights file: one number per class, in the class list's order, whitespace or comma separated; `#` starts a comment line.
    #[arg(long)]
    class_weights: Option<PathBuf>,
    #[arg(long)]
    no_augment: bool,
    #[arg(long, default_value_t = 4)]
    patience: usize,
    /// At most this many training images per class (quick runs).
    #[arg(long)]
    limit_per_class: Option<usize>,
    /// Label smoothing of the cross-entropy target, e.g. 0.1.
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f32,
    /// Keep a moving average of the weights with this decay per step (e.g. 0.998); it is
    /// validated, kept as best and exported.
    #[arg(long)]
    ema: Option<f64>,
    /// A training-only image set (metadata.csv with image_id and dx, plus images), such as
    /// ../shared/isic2017; repeatable. Never used for validation or test.
    #[arg(long = "extra-data")]
    extra_data: Vec<PathBuf>,
    /// Colour constancy of the input, declared in the exported manifest.
    #[arg(long, value_enum, default_value_t = ColourConstancyArg::None)]
    colour_constancy: ColourConstancyArg,
    /// Minutes between checkpoints inside an epoch (one is written at every epoch's end too).
    #[arg(long, default_value_t = 10.0)]
    checkpoint_minutes: f64,
    /// Stop after this many training steps in this call, with a checkpoint (continue with --resume).
    #[arg(long)]
    stop_after_steps: Option<usize>,
    /// Stop each member once it has trained this many minutes in this call, with a checkpoint
    /// (continue with --resume).
    #[arg(long)]
    stop_after_minutes: Option<f64>,
    /// Threads that decode and augment training batches (default: the CPU's cores, at most 8).
    #[arg(long)]
    loader_threads: Option<usize>,
    #[command(flatten)]
    classes: ClassesArgs,
}

/// A duration given in minutes on the command line, or an error naming the option.
fn minutes(option: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value * 60.0)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{option} {value}: give a positive number of minutes"))
}

/// Parses `ARCH=PATH`.
fn parse_weights(text: &str) -> Result<(Arch, PathBuf), String> {
    let (arch, path) = text
        .split_once('=')
        .ok_or_else(|| format!("expected BACKBONE=PATH, got '{text}'"))?;
    Ok((arch.parse()?, PathBuf::from(path)))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if !args.checkpoint_minutes.is_finite() || args.checkpoint_minutes < 0.0 {
        bail!(
            "--checkpoint-minutes {} must be a number of minutes >= 0",
            args.checkpoint_minutes
        );
    }
    let classes = args.classes.load()?;
    let class_weights = args
        .class_weights
        .as_deref()
        .map(|path| read_class_weights(path, &classes))
        .transpose()?;
    let template = TrainConfig {
        frozen_epochs: args.frozen_epochs,
        epochs: args.epochs,
        lr_head: args.lr_head,
        min_lr: args.min_lr,
        weight_decay: args.weight_decay,
        loss: args.loss,
        focal_gamma: args.gamma,
        class_weights,
        augment: !args.no_augment,
        patience: args.patience,
        limit_per_class: args.limit_per_class,
        label_smoothing: args.label_smoothing,
        ema_decay: args.ema,
        extra_training_data: args.extra_data,
        colour_constancy: args.colour_constancy.into(),
        ..args.common.config(Arch::TinyCnn, classes.len())
    };
    let runs = train(&TrainRequest {
        data: args.data,
        split: args.split,
        out: args.out,
        archs: args.archs,
        seeds: args.seeds,
        weights: args.weights,
        backend: args.common.backend,
        options: RunOptions {
            resume: args.resume,
            checkpoint_every: minutes("--checkpoint-minutes", args.checkpoint_minutes)?,
            stop_after_steps: args.stop_after_steps,
            stop_after: args
                .stop_after_minutes
                .map(|m| minutes("--stop-after-minutes", m))
                .transpose()?,
            loader_threads: match args.loader_threads {
                Some(0) => bail!("--loader-threads 0: give at least 1"),
                Some(n) => n,
                None => std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
            },
        },
        classes,
        template,
    })?;
    for run in runs {
        println!(
            "{}: best validation balanced accuracy {:.4} at epoch {}",
            run.dir.display(),
            run.best_balanced_accuracy,
            run.best_epoch.map_or("-".to_string(), |e| e.to_string())
        );
    }
    Ok(())
}
