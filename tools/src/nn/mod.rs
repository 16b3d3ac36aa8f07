//! The networks the tools train: one burn model code for every backend. A [`Classifier`] is a
//! backbone (tiny CNN, MobileNetV2, EfficientNet-Lite0/1/2 or ResNet50) under the paper's modified
//! head: global average pooling, dropout, a hidden dense layer, dropout, a dense output per class.

mod batch_norm;
mod clipped_relu;
mod inverted;
mod layers;
mod native_conv;
mod resnet;
mod tiny;

#[cfg(test)]
mod test_tensors {
    use burn::prelude::*;

    use crate::rng::SeededRng;

    /// A tensor of seeded standard normal values.
    pub fn random<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
        let values = SeededRng::new(seed).normals(shape.iter().product(), 1.0);
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    /// The largest absolute difference between two tensors.
    pub fn max_difference<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar()
    }
}

use std::fmt;
use std::str::FromStr;

use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use serde::{Deserialize, Serialize};

pub use inverted::{InvertedResidual, InvertedResidualNet, InvertedSpec, StageSpec};
pub use layers::{host_values, tf_same_pads, Activation, ConvBn, ConvSpec, Padding};
pub use resnet::{Bottleneck, ResNet, ResNetSpec};
pub use tiny::TinyCnn;

/// The backbones the tools know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
pub enum Arch {
    /// Four conv layers; for tests and the CI pipeline.
    #[serde(rename = "tiny-cnn")]
    #[value(name = "tiny-cnn")]
    TinyCnn,
    #[serde(rename = "mobilenet-v2")]
    #[value(name = "mobilenet-v2")]
    MobileNetV2,
    #[serde(rename = "efficientnet-lite0")]
    #[value(name = "efficientnet-lite0")]
    EfficientNetLite0,
    #[serde(rename = "efficientnet-lite1")]
    #[value(name = "efficientnet-lite1")]
    EfficientNetLite1,
    #[serde(rename = "efficientnet-lite2")]
    #[value(name = "efficientnet-lite2")]
    EfficientNetLite2,
    /// The paper's backbone.
    #[serde(rename = "resnet50")]
    #[value(name = "resnet50")]
    ResNet50,
}

impl Arch {
    /// Every architecture, in a stable order.
    pub const ALL: [Arch; 6] = [
        Arch::TinyCnn,
        Arch::MobileNetV2,
        Arch::EfficientNetLite0,
        Arch::EfficientNetLite1,
        Arch::EfficientNetLite2,
        Arch::ResNet50,
    ];

    /// The name used on the command line and in manifests.
    pub fn name(self) -> &'static str {
        match self {
            Arch::TinyCnn => "tiny-cnn",
            Arch::MobileNetV2 => "mobilenet-v2",
            Arch::EfficientNetLite0 => "efficientnet-lite0",
            Arch::EfficientNetLite1 => "efficientnet-lite1",
            Arch::EfficientNetLite2 => "efficientnet-lite2",
            Arch::ResNet50 => "resnet50",
        }
    }

    /// The `(width, depth)` compound scaling of an EfficientNet-Lite variant; `None` for the
    /// other backbones.
    pub fn efficientnet_lite_scaling(self) -> Option<(f32, f32)> {
        match self {
            Arch::EfficientNetLite0 => Some((1.0, 1.0)),
            Arch::EfficientNetLite1 => Some((1.0, 1.1)),
            Arch::EfficientNetLite2 => Some((1.1, 1.2)),
            _ => None,
        }
    }

    /// The input normalisation this backbone's ImageNet checkpoint expects.
    pub fn weights_normalisation(self) -> Normalisation {
        match self {
            Arch::EfficientNetLite0 | Arch::EfficientNetLite1 | Arch::EfficientNetLite2 => {
                Normalisation {
                    mean: [0.5; 3],
                    std: [0.5; 3],
                }
            }
            _ => Normalisation::IMAGENET,
        }
    }
}

/// Per-channel mean and standard deviation that map `[0, 1]` RGB to a network's input.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalisation {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalisation {
    /// ImageNet's statistics (torchvision): what every member is trained with, so that members of
    /// any backbone share one manifest `[input]`.
    pub const IMAGENET: Normalisation = Normalisation {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Arch::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Arch::ALL.iter().map(|a| a.name()).collect();
                format!("unknown backbone '{s}' (known: {})", names.join(", "))
            })
    }
}

/// Everything needed to rebuild a classifier's shape (weights aside).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierSpec {
    pub arch: Arch,
    /// Channel width multiplier (1.0 for the published networks; smaller in tests).
    pub width: f32,
    /// Repeats per stage multiplier (1.0 for the published networks).
    pub depth: f32,
    pub hidden: usize,
    pub dropout: f64,
    pub classes: usize,
}

impl ClassifierSpec {
    /// The published backbone at full size under the paper's head, with `classes` outputs.
    pub fn new(arch: Arch, classes: usize) -> ClassifierSpec {
        ClassifierSpec {
            arch,
            width: 1.0,
            depth: 1.0,
            hidden: 256,
            dropout: 0.3,
            classes,
        }
    }
}

/// A backbone of any supported architecture (one per model, so variant sizes do not matter).
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Backbone {
    Tiny(TinyCnn),
    Inverted(InvertedResidualNet),
    ResNet(ResNet),
}

impl Backbone {
    /// A freshly initialised backbone for `spec`.
    pub fn init(spec: &ClassifierSpec, device: &Device) -> Backbone {
        match spec.arch {
            Arch::TinyCnn => Backbone::Tiny(TinyCnn::init(spec.width, device)),
            Arch::MobileNetV2 => Backbone::Inverted(InvertedResidualNet::init(
                &InvertedSpec::mobilenet_v2().scaled(spec.width, spec.depth),
                device,
            )),
            Arch::EfficientNetLite0 | Arch::EfficientNetLite1 | Arch::EfficientNetLite2 => {
                Backbone::Inverted(InvertedResidualNet::init(
                    &InvertedSpec::efficientnet_lite_variant(spec.arch)
                        .scaled(spec.width, spec.depth),
                    device,
                ))
            }
            Arch::ResNet50 => Backbone::ResNet(ResNet::init(
                &ResNetSpec::resnet50().scaled(spec.width, spec.depth),
                device,
            )),
        }
    }

    /// Feature maps `[N, C, H', W']`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Backbone::Tiny(m) => m.forward(x),
            Backbone::Inverted(m) => m.forward(x),
            Backbone::ResNet(m) => m.forward(x),
        }
    }

    /// The same network for inputs normalised by `to` instead of `from`: the stem convolution's
    /// weights and BatchNorm mean absorb the change (exact away from the zero-padded border).
    /// The tiny CNN has no checkpoint and comes back unchanged.
    pub fn renormalised(self, from: Normalisation, to: Normalisation) -> anyhow::Result<Backbone> {
        if from == to {
            return Ok(self);
        }
        Ok(match self {
            Backbone::Tiny(m) => Backbone::Tiny(m),
            Backbone::Inverted(mut m) => {
                m.stem = m.stem.renormalised(from, to)?;
                Backbone::Inverted(m)
            }
            Backbone::ResNet(mut m) => {
                m.stem = m.stem.renormalised(from, to)?;
                Backbone::ResNet(m)
            }
        })
    }

    /// Channels of the feature maps.
    pub fn features(&self) -> usize {
        match self {
            Backbone::Tiny(m) => m.features(),
            Backbone::Inverted(m) => m.features(),
            Backbone::ResNet(m) => m.features(),
        }
    }
}

/// The paper's modified head: pooled features -> dropout -> dense + ReLU -> dropout -> logits.
#[derive(Module, Debug)]
pub struct Head {
    pub dropout_in: Dropout,
    pub hidden: Linear,
    pub dropout_hidden: Dropout,
    pub output: Linear,
}

impl Head {
    /// A head from `features` pooled channels to `classes` logits.
    pub fn init(
        features: usize,
        hidden: usize,
        classes: usize,
        dropout: f64,
        device: &Device,
    ) -> Head {
        Head {
            dropout_in: DropoutConfig::new(dropout).init(),
            hidden: LinearConfig::new(features, hidden).init(device),
            dropout_hidden: DropoutConfig::new(dropout).init(),
            output: LinearConfig::new(hidden, classes).init(device),
        }
    }

    /// Logits `[N, classes]` from feature maps `[N, C, H, W]`.
    pub fn forward(&self, maps: Tensor<4>) -> Tensor<2> {
        let pooled: Tensor<2> = maps.mean_dims(&[2, 3]).flatten(1, 3);
        let x = self.dropout_in.forward(pooled);
        let x = relu(self.hidden.forward(x));
        self.output.forward(self.dropout_hidden.forward(x))
    }
}

/// Backbone plus head.
#[derive(Module, Debug)]
pub struct Classifier {
    pub backbone: Backbone,
    pub head: Head,
}

impl Classifier {
    /// A freshly initialised classifier.
    pub fn init(spec: &ClassifierSpec, device: &Device) -> Classifier {
        Classifier::with_backbone(Backbone::init(spec, device), spec, device)
    }

    /// A classifier on an existing (for example ImageNet-initialised) backbone.
    pub fn with_backbone(backbone: Backbone, spec: &ClassifierSpec, device: &Device) -> Classifier {
        let head = Head::init(
            backbone.features(),
            spec.hidden,
            spec.classes,
            spec.dropout,
            device,
        );
        Classifier { backbone, head }
    }

    /// Logits `[N, classes]` for a preprocessed NCHW batch.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.head.forward(self.backbone.forward(x))
    }
}

/// Scales a channel count by `width`, rounded to a multiple of 8 (at least 8), as MobileNet does.
pub fn scale_channels(channels: usize, width: f32) -> usize {
    if (width - 1.0).abs() < f32::EPSILON {
        return channels;
    }
    let scaled = channels as f32 * width;
    let rounded = ((scaled + 4.0) as usize / 8 * 8).max(8);
    if (rounded as f32) < 0.9 * scaled {
        rounded + 8
    } else {
        rounded
    }
}

/// Scales a repeat count by `depth` (at least 1).
pub fn scale_repeats(repeats: usize, depth: f32) -> usize {
    ((repeats as f32 * depth).ceil() as usize).max(1)
}
