//! The binary's command-line layer: one module per command (its options and the printing of its
//! result) and the options several commands share.

pub mod calibrate;
pub mod compare;
pub mod evaluate;
pub mod export;
pub mod fixture;
pub mod keygen;
pub mod quantize;
pub mod sign;
pub mod split;
pub mod throughput;
pub mod train;

use std::path::PathBuf;

use dermedge::manifest::{ColourConstancy, TestTimeAugmentation};
use dermedge_tools::backend::BackendKind;
use dermedge_tools::classes::{Classes, DEFAULT_MANIFEST};
use dermedge_tools::evaluate::SideRequest;
use dermedge_tools::nn::{Arch, ClassifierSpec, Normalisation};
use dermedge_tools::train::{LossChoice, TrainConfig};

/// Where a command without an ensemble of its own takes the class list from.
#[derive(Debug, clap::Args)]
pub struct ClassesArgs {
    /// Ensemble manifest whose [[classes]] (codes, names, malignant flags, order) are used.
    #[arg(long = "classes", default_value = DEFAULT_MANIFEST)]
    pub manifest: PathBuf,
}

impl ClassesArgs {
    pub fn load(&self) -> anyhow::Result<Classes> {
        Classes::load(&self.manifest)
    }
}

/// The HAM10000 folder and the split of it.
#[derive(Debug, clap::Args)]
pub struct DatasetArgs {
    #[arg(long, default_value = "../shared/ham10000")]
    pub data: PathBuf,
    /// Split CSV; without it the default split (seed 1, as `train` makes) is used.
    #[arg(long)]
    pub split: Option<PathBuf>,
}

/// Which ensemble, dataset and side `evaluate` and `calibrate` use.
#[derive(Debug, clap::Args)]
pub struct SideArgs {
    #[arg(long, default_value = DEFAULT_MANIFEST)]
    pub manifest: PathBuf,
    #[command(flatten)]
    pub dataset: DatasetArgs,
    /// train, val or test (evaluate defaults to test, calibrate to val).
    #[arg(long)]
    pub side: Option<String>,
    /// At most this many images of the side.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Test-time augmentation (none, horizontal-flip, flips) instead of the manifest's;
    /// `calibrate` writes it into the manifest.
    #[arg(long)]
    pub tta: Option<TestTimeAugmentation>,
}

impl SideArgs {
    /// The request, on `default_side` unless `--side` names another.
    pub fn request(self, default_side: &str) -> SideRequest {
        SideRequest {
            manifest: self.manifest,
            data: self.dataset.data,
            split: self.dataset.split,
            side: self.side.unwrap_or_else(|| default_side.to_string()),
            limit: self.limit,
            tta: self.tta,
        }
    }
}

/// `--colour-constancy` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ColourConstancyArg {
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

/// Options shared by `train` and `throughput`.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    #[arg(long, value_enum, default_value_t = BackendKind::Ndarray)]
    pub backend: BackendKind,
    /// Network input width (the manifest's [input]).
    #[arg(long, default_value_t = 200)]
    pub width: u32,
    #[arg(long, default_value_t = 150)]
    pub height: u32,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[arg(long, default_value_t = 3e-4)]
    pub lr: f64,
    /// Channel width multiplier of the backbone (1.0 = published network).
    #[arg(long, default_value_t = 1.0)]
    pub model_width: f32,
    /// Repeat multiplier of the backbone's stages (1.0 = published network).
    #[arg(long, default_value_t = 1.0)]
    pub model_depth: f32,
    /// Units of the head's hidden dense layer.
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    #[arg(long, default_value_t = 0.3)]
    pub dropout: f64,
}

impl ModelArgs {
    /// A one-epoch config of `arch` with `classes` outputs, at a constant learning rate.
    pub fn config(&self, arch: Arch, classes: usize) -> TrainConfig {
        TrainConfig {
            spec: ClassifierSpec {
                width: self.model_width,
                depth: self.model_depth,
                hidden: self.hidden,
                dropout: self.dropout,
                ..ClassifierSpec::new(arch, classes)
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
