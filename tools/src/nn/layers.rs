//! Convolution + BatchNorm + activation, the unit every backbone is built from.

use burn::module::{Param, RunningState};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::batch_norm::batch_norm;
use super::clipped_relu::clipped_relu;
use super::native_conv::{depthwise_conv2d, pointwise_conv2d};
use super::Normalisation;

/// The activation after a convolution's BatchNorm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    Identity,
    Relu,
    Relu6,
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
        let [channels, per_group, _, _] = self.conv.weight.dims();
        let depthwise = self.conv.groups == channels && per_group == 1 && channels > 1;
        let plain = self.conv.dilation == [1, 1] && self.conv.stride[0] == self.conv.stride[1];
        let pointwise = self.conv.groups == 1
            && self.conv.kernel_size == [1, 1]
            && self.conv.stride == [1, 1]
            && self.conv.dilation == [1, 1]
            && self.conv.bias.is_none()
            && self.pads == [0; 4];
        let convolved = if depthwise && plain {
            depthwise_conv2d(x, self.conv.weight.val(), self.conv.stride[0], self.pads)
        } else if pointwise {
            pointwise_conv2d(x, self.conv.weight.val())
        } else {
            self.conv.forward(x)
        };
        let normalised = batch_norm(&self.bn, convolved);
        match self.activation {
            Activation::Identity => normalised,
            Activation::Relu => clipped_relu(normalised, f64::INFINITY),
            Activation::Relu6 => clipped_relu(normalised, 6.0),
        }
    }

    /// This RGB input layer rewritten for inputs normalised by `to` instead of `from`.
    ///
    /// With `x_from = x_to * s_to / s_from + (m_to - m_from) / s_from` per channel, the weights
    /// scale by `s_to / s_from` and the constant the shift adds to each output channel moves into
    /// the BatchNorm running mean.
    pub fn renormalised(
        mut self,
        from: Normalisation,
        to: Normalisation,
    ) -> anyhow::Result<ConvBn> {
        let [out, inputs, kh, kw] = self.conv.weight.shape().dims();
        anyhow::ensure!(
            inputs == 3 && self.conv.groups == 1,
            "only a dense RGB input layer can absorb a normalisation; this one takes {inputs} channels in {} groups",
            self.conv.groups
        );
        let device = self.conv.weight.device();
        let weight = host_values(self.conv.weight.val());
        let running_mean = host_values(self.bn.running_mean.value());
        let kernel = kh * kw;
        let mut scaled = Vec::with_capacity(weight.len());
        let mut moved_mean = running_mean;
        for (filter, mean) in weight.chunks_exact(inputs * kernel).zip(&mut moved_mean) {
            for (c, taps) in filter.chunks_exact(kernel).enumerate() {
                let scale = to.std[c] / from.std[c];
                let shift = (to.mean[c] - from.mean[c]) / from.std[c];
                scaled.extend(taps.iter().map(|w| w * scale));
                *mean -= taps.iter().sum::<f32>() * shift;
            }
        }
        self.conv.weight = Param::from_tensor(Tensor::from_data(
            TensorData::new(scaled, [out, inputs, kh, kw]),
            &device,
        ));
        self.bn.running_mean = RunningState::new(Tensor::from_data(
            TensorData::new(moved_mean, [out]),
            &device,
        ));
        Ok(self)
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.conv.weight.shape()[0]
    }
}

/// A tensor's values on the host, row-major.
pub fn host_values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data_as::<f32>()
        .as_slice::<f32>()
        .map(<[f32]>::to_vec)
        .unwrap_or_default()
}
