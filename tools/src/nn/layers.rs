//! Convolution + BatchNorm + activation, the unit every backbone is built from.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::{relu, relu6};
use serde::{Deserialize, Serialize};

/// The activation after a convolution's BatchNorm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    Identity,
    Relu,
    Relu6,
}

impl Activation {
    /// Applies the activation.
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::Identity => x,
            Activation::Relu => relu(x),
            Activation::Relu6 => relu6(x),
        }
    }
}

/// How a convolution pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Padding {
    /// `kernel / 2` on every side (PyTorch, torchvision).
    Symmetric,
    /// TensorFlow "same" padding as computed for sizes divisible by the stride (the
    /// EfficientNet-Lite checkpoints' static padding): `kernel - stride` split, the extra pixel
    /// at the bottom and right.
    TfSame,
}

/// `(top, left, bottom, right)` TensorFlow-"same" padding for a kernel and stride.
pub fn tf_same_pads(kernel: usize, stride: usize) -> [usize; 4] {
    let total = kernel.saturating_sub(stride);
    let before = total / 2;
    let after = total - before;
    [before, before, after, after]
}

/// The shape of one convolution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub groups: usize,
    pub padding: Padding,
    pub activation: Activation,
    pub bn_epsilon: f64,
}

impl ConvSpec {
    /// A dense (groups = 1) convolution with symmetric padding and ReLU.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize, stride: usize) -> ConvSpec {
        ConvSpec {
            in_channels,
            out_channels,
            kernel,
            stride,
            groups: 1,
            padding: Padding::Symmetric,
            activation: Activation::Relu,
            bn_epsilon: 1e-5,
        }
    }

    /// `(top, left, bottom, right)` padding.
    pub fn pads(&self) -> [usize; 4] {
        match self.padding {
            Padding::Symmetric => [self.kernel / 2; 4],
            Padding::TfSame => tf_same_pads(self.kernel, self.stride),
        }
    }
}

/// A bias-free convolution, its BatchNorm and an activation.
#[derive(Module, Debug)]
pub struct ConvBn {
    pub conv: Conv2d,
    pub bn: BatchNorm,
    #[module(skip)]
    pub activation: Activation,
    #[module(skip)]
    pub pads: [usize; 4],
}

impl ConvBn {
    /// A freshly initialised layer.
    pub fn init(spec: &ConvSpec, device: &Device) -> ConvBn {
        let [top, left, bottom, right] = spec.pads();
        let conv = Conv2dConfig::new(
            [spec.in_channels, spec.out_channels],
            [spec.kernel, spec.kernel],
        )
        .with_stride([spec.stride, spec.stride])
        .with_groups(spec.groups)
        .with_padding(PaddingConfig2d::Explicit(top, left, bottom, right))
        .with_bias(false)
        .init(device);
        let bn = BatchNormConfig::new(spec.out_channels)
            .with_epsilon(spec.bn_epsilon)
            .init(device);
        ConvBn {
            conv,
            bn,
            activation: spec.activation,
            pads: spec.pads(),
        }
    }

    /// Convolution, BatchNorm, activation.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.activation.apply(self.bn.forward(self.conv.forward(x)))
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.conv.weight.shape()[0]
    }
}
