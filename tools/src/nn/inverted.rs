//! Inverted-residual networks: MobileNetV2 and EfficientNet-Lite0/1/2 (MBConv without
//! squeeze-excitation, ReLU6), which differ only in stages, kernels, padding and BatchNorm epsilon.

use burn::prelude::*;

use super::layers::{Activation, ConvBn, ConvSpec, Padding};
use super::{scale_channels, scale_repeats, Arch};

/// One stage: `repeats` blocks of expansion `expand`, `channels` outputs, the first with `stride`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StageSpec {
    pub expand: usize,
    pub channels: usize,
    pub repeats: usize,
    pub stride: usize,
    pub kernel: usize,
}

/// The shape of an inverted-residual network.
#[derive(Debug, Clone, PartialEq)]
pub struct InvertedSpec {
    pub stem: usize,
    pub stages: Vec<StageSpec>,
    pub last: usize,
    pub padding: Padding,
    pub bn_epsilon: f64,
}

fn stages(rows: &[[usize; 5]]) -> Vec<StageSpec> {
    rows.iter()
        .map(|&[expand, channels, repeats, stride, kernel]| StageSpec {
            expand,
            channels,
            repeats,
            stride,
            kernel,
        })
        .collect()
}

impl InvertedSpec {
    /// MobileNetV2 (Sandler et al. 2018), width 1.0.
    pub fn mobilenet_v2() -> InvertedSpec {
        InvertedSpec {
            stem: 32,
            stages: stages(&[
                [1, 16, 1, 1, 3],
                [6, 24, 2, 2, 3],
                [6, 32, 3, 2, 3],
                [6, 64, 4, 2, 3],
                [6, 96, 3, 1, 3],
                [6, 160, 3, 2, 3],
                [6, 320, 1, 1, 3],
            ]),
            last: 1280,
            padding: Padding::Symmetric,
            bn_epsilon: 1e-5,
        }
    }

    /// EfficientNet-Lite0 (no squeeze-excitation, ReLU6, fixed stem and head).
    pub fn efficientnet_lite0() -> InvertedSpec {
        InvertedSpec::efficientnet_lite(1.0, 1.0)
    }

    /// The EfficientNet-Lite network `arch` names (Lite0 for a backbone that is none).
    pub fn efficientnet_lite_variant(arch: Arch) -> InvertedSpec {
        let (width, depth) = arch.efficientnet_lite_scaling().unwrap_or((1.0, 1.0));
        InvertedSpec::efficientnet_lite(width, depth)
    }

    /// An EfficientNet-Lite network compound-scaled from the Lite0: stage channels by `width`
    /// and stage repeats by `depth`, except that, as the Lite variants do, the stem, the head
    /// and the first and last stages' repeats stay as the Lite0's. Lite1 is `(1.0, 1.1)`, Lite2
    /// `(1.1, 1.2)` (Tan and Le 2019; the TensorFlow `efficientnet_lite_builder`).
    pub fn efficientnet_lite(width: f32, depth: f32) -> InvertedSpec {
        let mut stages = stages(&[
            [1, 16, 1, 1, 3],
            [6, 24, 2, 2, 3],
            [6, 40, 2, 2, 5],
            [6, 80, 3, 2, 3],
            [6, 112, 3, 1, 5],
            [6, 192, 4, 2, 5],
            [6, 320, 1, 1, 3],
        ]);
        let last_stage = stages.len() - 1;
        for (index, stage) in stages.iter_mut().enumerate() {
            stage.channels = scale_channels(stage.channels, width);
            if index != 0 && index != last_stage {
                stage.repeats = scale_repeats(stage.repeats, depth);
            }
        }
        InvertedSpec {
            stem: 32,
            stages,
            last: 1280,
            padding: Padding::TfSame,
            bn_epsilon: 1e-3,
        }
    }

    /// The same network with channels scaled by `width` and repeats by `depth` (for tests).
    pub fn scaled(mut self, width: f32, depth: f32) -> InvertedSpec {
        self.stem = scale_channels(self.stem, width);
        self.last = scale_channels(self.last, width);
        for stage in &mut self.stages {
            stage.channels = scale_channels(stage.channels, width);
            stage.repeats = scale_repeats(stage.repeats, depth);
        }
        self
    }

    fn conv(&self, in_c: usize, out_c: usize, kernel: usize, stride: usize) -> ConvSpec {
        ConvSpec {
            padding: self.padding,
            activation: Activation::Relu6,
            bn_epsilon: self.bn_epsilon,
            ..ConvSpec::new(in_c, out_c, kernel, stride)
        }
    }
}

/// Expansion 1x1 (absent when the expansion is 1), depthwise kxk, linear 1x1 projection, and a
/// residual sum when shapes allow.
#[derive(Module, Debug)]
pub struct InvertedResidual {
    pub expand: Option<ConvBn>,
    pub depthwise: ConvBn,
    pub project: ConvBn,
    #[module(skip)]
    pub residual: bool,
}

impl InvertedResidual {
    fn init(
        spec: &InvertedSpec,
        in_c: usize,
        out_c: usize,
        stage: &StageSpec,
        stride: usize,
        device: &Device,
    ) -> InvertedResidual {
        let hidden = in_c * stage.expand;
        let expand =
            (stage.expand != 1).then(|| ConvBn::init(&spec.conv(in_c, hidden, 1, 1), device));
        let depthwise = ConvBn::init(
            &ConvSpec {
                groups: hidden,
                ..spec.conv(hidden, hidden, stage.kernel, stride)
            },
            device,
        );
        let project = ConvBn::init(
            &ConvSpec {
                activation: Activation::Identity,
                ..spec.conv(hidden, out_c, 1, 1)
            },
            device,
        );
        InvertedResidual {
            expand,
            depthwise,
            project,
            residual: stride == 1 && in_c == out_c,
        }
    }

    /// The block's output.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let hidden = match &self.expand {
            Some(expand) => expand.forward(x.clone()),
            None => x.clone(),
        };
        let out = self.project.forward(self.depthwise.forward(hidden));
        if self.residual {
            out + x
        } else {
            out
        }
    }
}

/// Stem, inverted-residual blocks, 1x1 head convolution.
#[derive(Module, Debug)]
pub struct InvertedResidualNet {
    pub stem: ConvBn,
    pub blocks: Vec<InvertedResidual>,
    pub last: ConvBn,
}

impl InvertedResidualNet {
    /// A freshly initialised network.
    pub fn init(spec: &InvertedSpec, device: &Device) -> InvertedResidualNet {
        let stem = ConvBn::init(&spec.conv(3, spec.stem, 3, 2), device);
        let mut in_c = spec.stem;
        let mut blocks = Vec::new();
        for stage in &spec.stages {
            for i in 0..stage.repeats {
                let stride = if i == 0 { stage.stride } else { 1 };
                blocks.push(InvertedResidual::init(
                    spec,
                    in_c,
                    stage.channels,
                    stage,
                    stride,
                    device,
                ));
                in_c = stage.channels;
            }
        }
        let last = ConvBn::init(&spec.conv(in_c, spec.last, 1, 1), device);
        InvertedResidualNet { stem, blocks, last }
    }

    /// Feature maps.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.stem.forward(x);
        let x = self.blocks.iter().fold(x, |x, block| block.forward(x));
        self.last.forward(x)
    }

    /// Channels of the feature maps.
    pub fn features(&self) -> usize {
        self.last.out_channels()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each block's depthwise channels and kernel.
    fn depthwise_layers(spec: &InvertedSpec) -> Vec<(usize, usize)> {
        let mut in_c = spec.stem;
        let mut layers = Vec::new();
        for stage in &spec.stages {
            for _ in 0..stage.repeats {
                layers.push((in_c * stage.expand, stage.kernel));
                in_c = stage.channels;
            }
        }
        layers
    }

    #[test]
    fn lite_variants_have_the_published_blocks() {
        let kernels = [
            3, 3, 3, 3, 5, 5, 5, 3, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 5, 5, 3,
        ];
        let published = [
            (
                Arch::EfficientNetLite1,
                [
                    32, 96, 144, 144, 144, 240, 240, 240, 480, 480, 480, 480, 672, 672, 672, 672,
                    1152, 1152, 1152, 1152, 1152,
                ],
                320,
            ),
            (
                Arch::EfficientNetLite2,
                [
                    32, 96, 144, 144, 144, 288, 288, 288, 528, 528, 528, 528, 720, 720, 720, 720,
                    1248, 1248, 1248, 1248, 1248,
                ],
                352,
            ),
        ];
        for (arch, channels, last_input) in published {
            let spec = InvertedSpec::efficientnet_lite_variant(arch);
            let expected: Vec<_> = channels.into_iter().zip(kernels).collect();
            assert_eq!(depthwise_layers(&spec), expected, "{arch}");
            assert_eq!(spec.stages.last().map(|s| s.channels), Some(last_input));
            assert_eq!((spec.stem, spec.last), (32, 1280), "{arch}");
        }
        let lite0 = depthwise_layers(&InvertedSpec::efficientnet_lite0());
        assert_eq!(lite0.len(), 16);
        assert_eq!(lite0[15], (1152, 3));
    }
}
