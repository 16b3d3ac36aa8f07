//! A four-layer CNN, small enough to train on burn-ndarray in CI.

use burn::prelude::*;

use super::layers::{ConvBn, ConvSpec};
use super::scale_channels;

/// Channels of the four stride-2 layers at width 1.
const CHANNELS: [usize; 4] = [16, 32, 64, 96];

/// Four stride-2 3x3 ConvBn+ReLU layers.
#[derive(Module, Debug)]
pub struct TinyCnn {
    pub layers: Vec<ConvBn>,
}

impl TinyCnn {
    /// A freshly initialised network.
    pub fn init(width: f32, device: &Device) -> TinyCnn {
        let mut in_channels = 3;
        let layers = CHANNELS
            .iter()
            .map(|&c| {
                let out = scale_channels(c, width);
                let layer = ConvBn::init(&ConvSpec::new(in_channels, out, 3, 2), device);
                in_channels = out;
                layer
            })
            .collect();
        TinyCnn { layers }
    }

    /// Feature maps.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.layers.iter().fold(x, |x, layer| layer.forward(x))
    }

    /// Channels of the feature maps.
    pub fn features(&self) -> usize {
        self.layers.last().map(ConvBn::out_channels).unwrap_or(3)
    }
}
