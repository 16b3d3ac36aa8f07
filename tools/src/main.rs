use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dermedge::manifest::{ColourConstancy, TestTimeAugmentation};
use dermedge_tools::backend::BackendKind;
use dermedge_tools::commands::{
    calibrate, evaluate, export, parse_weights, train, EvaluateRequest, ExportRequest, TrainRequest,
};
use dermedge_tools::data::load_ham10000;
use dermedge_tools::fixture::{write_fixture_ensemble, FixtureArch};
use dermedge_tools::nn::{Arch, ClassifierSpec, Normalisation};
use dermedge_tools::quantize::{
    compare, quantize, quantize_summary, CompareRequest, QuantizeRequest, RangeMethod,
};
use dermedge_tools::sign::{keygen, sign};
use dermedge_tools::split::{counts_table, k_fold, train_val_test, write_split_csv};
use dermedge_tools::train::{training_throughput, LossChoice, RunOptions, TrainConfig};

#[derive(Debug, Parser)]
#[command(
    name = "dermedge-tools",
    version,
    about = "Training-side tools for the dermedge runtime."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write an untrained fixture ensemble (seeded random weights) for tests and benchmarks.
    Fixture {
        /// Folder to write the members and ensemble.toml into.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = FixtureArch::TinyCnn)]
        arch: FixtureArch,
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=16))]
        members: u8,
        #[arg(long, default_value_t = 64)]
        width: u32,
        #[arg(long, default_value_t = 48)]
        height: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Lesion-grouped, class-stratified, seeded split of a HAM10000 folder, written as CSV.
    Split {
        /// Dataset root: HAM10000_metadata.csv plus images/ or HAM10000_images_part_1/ and _2/.
        #[arg(long, default_value = "../shared/ham10000")]
        data: PathBuf,
        /// Output CSV (image_id,lesion_id,dx,split).
        #[arg(long, default_value = "splits/split.csv")]
        out: PathBuf,
        /// Share of each class's lesions for validation.
        #[arg(long, default_value_t = 0.15)]
        val: f64,
        /// Share of each class's lesions for test.
        #[arg(long, default_value_t = 0.15)]
        test: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// K folds instead of train/val/test.
        #[arg(long, value_parser = clap::value_parser!(u8).range(2..=20))]
        folds: Option<u8>,
    },
    /// Train ensemble members (every --arch x --seed) on a HAM10000 folder.
    Train(Box<TrainArgs>),
    /// Export a run's members (best checkpoints) as ONNX plus ensemble.toml, checked against tract.
    Export {
        /// The --out folder of `train`.
        #[arg(long)]
        run: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "dermedge-ham10000")]
        name: String,
        #[arg(long, default_value = "0.1.0")]
        version: String,
        /// Folder of images on which burn and tract logits must agree.
        #[arg(long)]
        check_images: Option<PathBuf>,
        #[arg(long, default_value_t = 1e-4)]
        tolerance: f32,
    },
    /// Evaluate an ensemble through the runtime's tract path on one side of a lesion-grouped split.
    Evaluate {
        #[command(flatten)]
        side: SideArgs,
        /// Report folder (report.md, reliability.png, melanoma-roc.png).
        #[arg(long, default_value = "reports/test")]
        out: PathBuf,
    },
    /// Fit temperature, referral and uncertainty thresholds on the validation side; writes them into the manifest.
    Calibrate {
        #[command(flatten)]
        side: SideArgs,
        /// Share of malignant validation images the referral threshold must refer.
        #[arg(long, default_value_t = 0.95)]
        sensitivity: f64,
    },
    /// Post-training int8 quantization of an f32 ensemble (QDQ members), calibrated on training images; compares int8 with f32 on the validation side.
    Quantize {
        /// The f32 ensemble.
        #[arg(long, default_value = "models/f32/ensemble.toml")]
        manifest: PathBuf,
        #[command(flatten)]
        dataset: DatasetArgs,
        /// Folder for the int8 members and their ensemble.toml.
        #[arg(long)]
        out: PathBuf,
        /// Training images to calibrate activation ranges on.
        #[arg(long, default_value_t = 200)]
        calibration_images: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// How activation ranges are chosen from the calibration images.
        #[arg(long, value_enum, default_value_t = RangeMethod::Mse)]
        ranges: RangeMethod,
        /// Keep the first N Conv/Gemm layers in f32 (the full-resolution stem, where int8 costs the most agreement).
        #[arg(long, default_value_t = 4)]
        float_layers: usize,
        /// At most this many validation images for the int8 vs f32 comparison.
        #[arg(long)]
        compare_limit: Option<usize>,
    },
    /// Compare an int8 ensemble with its f32 reference through tract: top-1 agreement and accuracy on one side of the split.
    Compare {
        /// The int8 ensemble.
        #[arg(long, default_value = "models/ensemble.toml")]
        manifest: PathBuf,
        /// The f32 ensemble it was made from.
        #[arg(long, default_value = "models/f32/ensemble.toml")]
        reference: PathBuf,
        #[command(flatten)]
        dataset: DatasetArgs,
        #[arg(long, default_value = "test")]
        side: String,
        /// At most this many images of the side.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Training throughput (images/s) of one backbone on one backend, on random batches.
    Throughput {
        #[command(flatten)]
        common: ModelArgs,
        #[arg(long, value_enum)]
        arch: Arch,
        #[arg(long, default_value_t = 3)]
        steps: usize,
    },
    /// Make an ed25519 release key pair: PREFIX.key (private, 0600; keep it off devices) and PREFIX.pub.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign an ensemble manifest (after checking that it loads) into <manifest>.sig.
    Sign {
        #[arg(long, default_value = "models/ensemble.toml")]
        manifest: PathBuf,
        /// The private key written by `keygen`.
        #[arg(long)]
        key: PathBuf,
    },
}

/// `--colour-constancy` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ColourConstancyArg {
    None,
    /// Shades of Gray, p = 6.
    ShadesOfGray,
}

impl From<ColourConstancyArg> for ColourConstancy {
    fn from(arg: ColourConstancyArg) -> ColourConstancy {
        match arg {
            ColourConstancyArg::None => ColourConstancy::None,
            ColourConstancyArg::ShadesOfGray => ColourConstancy::ShadesOfGray,
        }
    }
}

/// `dermedge-tools train` options.
#[derive(Debug, clap::Args)]
struct TrainArgs {
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
    /// Class weights file: 7 numbers (akiec bcc bkl df mel nv vasc), whitespace or comma separated; `#` starts a comment line.
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
}

/// The HAM10000 folder and the split of it.
#[derive(Debug, clap::Args)]
struct DatasetArgs {
    #[arg(long, default_value = "../shared/ham10000")]
    data: PathBuf,
    /// Split CSV; without it the default split (seed 1, as `train` makes) is used.
    #[arg(long)]
    split: Option<PathBuf>,
}

/// Which ensemble, dataset and side `evaluate` and `calibrate` use.
#[derive(Debug, clap::Args)]
struct SideArgs {
    #[arg(long, default_value = "models/ensemble.toml")]
    manifest: PathBuf,
    #[command(flatten)]
    dataset: DatasetArgs,
    /// train, val or test (evaluate defaults to test, calibrate to val).
    #[arg(long)]
    side: Option<String>,
    /// At most this many images of the side.
    #[arg(long)]
    limit: Option<usize>,
    /// Test-time augmentation (none, horizontal-flip, flips) instead of the manifest's;
    /// `calibrate` writes it into the manifest.
    #[arg(long)]
    tta: Option<TestTimeAugmentation>,
}

impl SideArgs {
    fn request(self, default_side: &str, out: PathBuf) -> EvaluateRequest {
        EvaluateRequest {
            manifest: self.manifest,
            data: self.dataset.data,
            split: self.dataset.split,
            side: self.side.unwrap_or_else(|| default_side.to_string()),
            out,
            limit: self.limit,
            tta: self.tta,
        }
    }
}

/// Options shared by `train` and `throughput`.
#[derive(Debug, clap::Args)]
struct ModelArgs {
    #[arg(long, value_enum, default_value_t = BackendKind::Ndarray)]
    backend: BackendKind,
    /// Network input width (the manifest's [input]).
    #[arg(long, default_value_t = 200)]
    width: u32,
    #[arg(long, default_value_t = 150)]
    height: u32,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, default_value_t = 3e-4)]
    lr: f64,
    /// Channel width multiplier of the backbone (1.0 = published network).
    #[arg(long, default_value_t = 1.0)]
    model_width: f32,
    /// Repeat multiplier of the backbone's stages (1.0 = published network).
    #[arg(long, default_value_t = 1.0)]
    model_depth: f32,
    /// Units of the head's hidden dense layer.
    #[arg(long, default_value_t = 256)]
    hidden: usize,
    #[arg(long, default_value_t = 0.3)]
    dropout: f64,
}

impl ModelArgs {
    fn config(&self, arch: Arch) -> TrainConfig {
        TrainConfig {
            spec: ClassifierSpec {
                width: self.model_width,
                depth: self.model_depth,
                hidden: self.hidden,
                dropout: self.dropout,
                ..ClassifierSpec::new(arch)
            },
            pretrained: None,
            input_width: self.width,
            input_height: self.height,
            frozen_epochs: 0,
            epochs: 1,
            batch: self.batch,
            lr_head: self.lr,
            lr: self.lr,
            min_lr: self.lr,
            weight_decay: 0.0,
            loss: LossChoice::WeightedCe,
            focal_gamma: 2.0,
            class_weights: None,
            augment: false,
            seed: 1,
            patience: usize::MAX,
            limit_per_class: None,
            input_normalisation: Some(Normalisation::IMAGENET),
            label_smoothing: 0.0,
            ema_decay: None,
            extra_training_data: Vec::new(),
            colour_constancy: ColourConstancy::None,
        }
    }
}

fn read_class_weights(path: &Path) -> anyhow::Result<Vec<f32>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let weights: Vec<f32> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.split(|c: char| c.is_whitespace() || c == ','))
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<f32>())
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{}: {e}. Fix: write 7 numbers", path.display()))?;
    if weights.len() != 7 || weights.iter().any(|w| !w.is_finite() || *w <= 0.0) {
        anyhow::bail!(
            "{}: expected 7 positive class weights (akiec bcc bkl df mel nv vasc), found {:?}",
            path.display(),
            weights
        );
    }
    Ok(weights)
}

fn split(
    data: &Path,
    out: &Path,
    val: f64,
    test: f64,
    seed: u64,
    folds: Option<u8>,
) -> anyhow::Result<()> {
    if !(0.0..1.0).contains(&val) || !(0.0..1.0).contains(&test) || val + test >= 1.0 {
        anyhow::bail!("--val {val} and --test {test} must be shares in [0, 1) that sum below 1. Fix: e.g. --val 0.15 --test 0.15");
    }
    let (samples, report) = load_ham10000(data)?;
    if !report.is_clean() {
        eprint!("{}", report.summary());
    }
    if samples.is_empty() {
        anyhow::bail!(
            "no usable images under {}. Fix: point --data at a HAM10000 folder",
            data.display()
        );
    }
    let assignment = match folds {
        Some(k) => k_fold(&samples, usize::from(k), seed),
        None => train_val_test(&samples, val, test, seed),
    };
    write_split_csv(out, &samples, &assignment)?;
    print!("{}", counts_table(&samples, &assignment));
    println!(
        "wrote {} ({} images, seed {seed})",
        out.display(),
        samples.len()
    );
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Fixture {
            out,
            arch,
            members,
            width,
            height,
            seed,
        } => write_fixture_ensemble(&out, arch, usize::from(members), width, height, seed).map(
            |path| {
                println!("wrote {}", path.display());
            },
        ),
        Command::Split {
            data,
            out,
            val,
            test,
            seed,
            folds,
        } => split(&data, &out, val, test, seed, folds),
        Command::Train(args) => (|| {
            let TrainArgs {
                common,
                data,
                split,
                out,
                archs,
                seeds,
                weights,
                resume,
                epochs,
                frozen_epochs,
                lr_head,
                min_lr,
                weight_decay,
                loss,
                gamma,
                class_weights,
                no_augment,
                patience,
                limit_per_class,
                label_smoothing,
                ema,
                extra_data,
                colour_constancy,
                checkpoint_minutes,
                stop_after_steps,
            } = *args;
            let class_weights = class_weights
                .as_deref()
                .map(read_class_weights)
                .transpose()?;
            let template = TrainConfig {
                frozen_epochs,
                epochs,
                lr_head,
                min_lr,
                weight_decay,
                loss,
                focal_gamma: gamma,
                class_weights,
                augment: !no_augment,
                patience,
                limit_per_class,
                label_smoothing,
                ema_decay: ema,
                extra_training_data: extra_data,
                colour_constancy: colour_constancy.into(),
                ..common.config(Arch::TinyCnn)
            };
            if !checkpoint_minutes.is_finite() || checkpoint_minutes < 0.0 {
                anyhow::bail!(
                    "--checkpoint-minutes {checkpoint_minutes} must be a number of minutes >= 0"
                );
            }
            train(&TrainRequest {
                data,
                split,
                out,
                archs,
                seeds,
                weights,
                backend: common.backend,
                options: RunOptions {
                    resume,
                    checkpoint_every: std::time::Duration::from_secs_f64(checkpoint_minutes * 60.0),
                    stop_after_steps,
                },
                template,
            })
            .map(|_| ())
        })(),
        Command::Export {
            run,
            out,
            name,
            version,
            check_images,
            tolerance,
        } => export(&ExportRequest {
            run,
            out,
            name,
            version,
            check_images,
            tolerance,
        })
        .map(|path| println!("wrote {}", path.display())),
        Command::Evaluate { side, out } => {
            evaluate(&side.request("test", out)).map(|path| eprintln!("wrote {}", path.display()))
        }
        Command::Calibrate { side, sensitivity } => {
            calibrate(&side.request("val", PathBuf::new()), sensitivity).map(|_| ())
        }
        Command::Quantize {
            manifest,
            dataset: DatasetArgs { data, split },
            out,
            calibration_images,
            seed,
            ranges,
            float_layers,
            compare_limit,
        } => quantize(&QuantizeRequest {
            manifest,
            data,
            split,
            out,
            calibration_images,
            seed,
            range_method: ranges,
            float_layers,
            compare_limit,
        })
        .map(|(members, comparison)| print!("{}", quantize_summary(&members, &comparison))),
        Command::Compare {
            manifest,
            reference,
            dataset: DatasetArgs { data, split },
            side,
            limit,
        } => compare(&CompareRequest {
            reference,
            candidate: manifest,
            data,
            split,
            side: side.clone(),
            limit,
        })
        .map(|c| println!("{side} side: {}", c.summary())),
        Command::Throughput {
            common,
            arch,
            steps,
        } => common.backend.device().and_then(|device| {
            let rate = training_throughput(&common.config(arch), &device, steps.max(1))?;
            println!(
                "{arch} backend={:?} batch={} input={}x{}: {rate:.2} training images/s",
                common.backend, common.batch, common.width, common.height
            );
            Ok(())
        }),
        Command::Keygen { out } => keygen(&out).map(|(private, public)| {
            println!(
                "wrote {} (private: keep it off devices) and {}",
                private.display(),
                public.display()
            );
        }),
        Command::Sign { manifest, key } => sign(&manifest, &key).map(|path| {
            println!("wrote {}", path.display());
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dermedge-tools: {e:#}");
            ExitCode::from(2)
        }
    }
}
