//! ResNet50 (torchvision's v1.5 layout: the stride sits on the 3x3 convolution).

use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::PaddingConfig2d;
use burn::prelude::*;
use burn::tensor::activation::relu;

use super::layers::{Activation, ConvBn, ConvSpec};
use super::{scale_channels, scale_repeats};

/// Bottleneck expansion: output channels are four times the inner width.
pub const EXPANSION: usize = 4;

/// The shape of a bottleneck ResNet.
#[derive(Debug, Clone, PartialEq)]
pub struct ResNetSpec {
    pub stem: usize,
    pub planes: [usize; 4],
    pub blocks: [usize; 4],
}

impl ResNetSpec {
    /// ResNet50.
    pub fn resnet50() -> ResNetSpec {
        ResNetSpec {
            stem: 64,
            planes: [64, 128, 256, 512],
            blocks: [3, 4, 6, 3],
        }
    }

    /// The same network with channels scaled by `width` and blocks by `depth` (for tests).
    pub fn scaled(mut self, width: f32, depth: f32) -> ResNetSpec {
        self.stem = scale_channels(self.stem, width);
        self.planes = self.planes.map(|p| scale_channels(p, width));
        self.blocks = self.blocks.map(|b| scale_repeats(b, depth));
        self
    }
}

/// 1x1 reduce, 3x3 (strided), 1x1 expand, plus a projected or identity shortcut.
#[derive(Module, Debug)]
pub struct Bottleneck {
    pub reduce: ConvBn,
    pub spatial: ConvBn,
    pub expand: ConvBn,
    pub downsample: Option<ConvBn>,
}

impl Bottleneck {
    fn init(in_c: usize, planes: usize, stride: usize, device: &Device) -> Bottleneck {
        let out_c = planes * EXPANSION;
        Bottleneck {
            reduce: ConvBn::init(&ConvSpec::new(in_c, planes, 1, 1), device),
            spatial: ConvBn::init(&ConvSpec::new(planes, planes, 3, stride), device),
            expand: ConvBn::init(
                &ConvSpec {
                    activation: Activation::Identity,
                    ..ConvSpec::new(planes, out_c, 1, 1)
                },
                device,
            ),
            downsample: (stride != 1 || in_c != out_c).then(|| {
                ConvBn::init(
                    &ConvSpec {
                        activation: Activation::Identity,
                        ..ConvSpec::new(in_c, out_c, 1, stride)
                    },
                    device,
                )
            }),
        }
    }

    /// `relu(branch(x) + shortcut(x))`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let shortcut = match &self.downsample {
            Some(down) => down.forward(x.clone()),
            None => x.clone(),
        };
        let branch = self
            .expand
            .forward(self.spatial.forward(self.reduce.forward(x)));
        relu(branch + shortcut)
    }
}

/// 7x7 stem, 3x3 max pool, four stages of bottlenecks.
#[derive(Module, Debug)]
pub struct ResNet {
    pub stem: ConvBn,
    pub pool: MaxPool2d,
    pub stages: Vec<Vec<Bottleneck>>,
}

impl ResNet {
    /// A freshly initialised network.
    pub fn init(spec: &ResNetSpec, device: &Device) -> ResNet {
        let stem = ConvBn::init(&ConvSpec::new(3, spec.stem, 7, 2), device);
        let pool = MaxPool2dConfig::new([3, 3])
            .with_strides([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init();
        let mut in_c = spec.stem;
        let mut stages = Vec::new();
        for (stage, (&planes, &blocks)) in spec.planes.iter().zip(&spec.blocks).enumerate() {
            let mut stage_blocks = Vec::new();
            for i in 0..blocks {
                let stride = if i == 0 && stage > 0 { 2 } else { 1 };
                stage_blocks.push(Bottleneck::init(in_c, planes, stride, device));
                in_c = planes * EXPANSION;
            }
            stages.push(stage_blocks);
        }
        ResNet { stem, pool, stages }
    }

    /// Feature maps.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.pool.forward(self.stem.forward(x));
        self.stages
            .iter()
            .flatten()
            .fold(x, |x, block| block.forward(x))
    }

    /// Channels of the feature maps.
    pub fn features(&self) -> usize {
        self.stages
            .last()
            .and_then(|s| s.last())
            .map(|b| b.expand.out_channels())
            .unwrap_or(3)
    }
}
