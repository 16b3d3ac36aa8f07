//! A depthwise 3x3 stride-2 layer padded only after its input (TensorFlow's "same" padding, as
//! EfficientNet-Lite exports it: `[0, 0, 1, 1]` or less) on the 3x3 kernels of `depthwise`,
//! which pad one value on every side. With a leading row and column of the zero point added to
//! the input, output `(oy + 1, ox + 1)` of the padded-by-one layer reads input rows and columns
//! `2 oy ..= 2 oy + 2` with the same zero padding after them: output `(oy, ox)` of this layer.
//! The padded-by-one layer's first output row and column are computed and discarded.

use super::depthwise::{output_size, DepthwiseLayer};
use super::general_depthwise::DepthwiseGeometry;
use super::KernelSet;
use crate::int8::grid::OutputGrid;

/// A 3x3 stride-2 depthwise layer padded after its input, on the 3x3 kernels.
#[derive(Debug, Clone, PartialEq)]
pub struct ShiftedDepthwise {
    pub geometry: DepthwiseGeometry,
    output: (usize, usize),
    input_zero_point: i8,
    /// The layer on the input with a leading row and column.
    padded_by_one: DepthwiseLayer,
}

impl ShiftedDepthwise {
    /// The layer of `geometry` (arguments as [`DepthwiseLayer::new`]'s); `None` unless its
    /// kernel is 3x3, its stride 2, and its padding nothing before and at most one after.
    pub fn new(
        geometry: DepthwiseGeometry,
        weights: &[i8],
        input_zero_point: i8,
        multiplier: Vec<f32>,
        offset: Vec<f32>,
        grid: OutputGrid,
    ) -> Option<ShiftedDepthwise> {
        let g = geometry;
        let [top, left, bottom, right] = g.padding;
        let fits = g.kernel == 3 && g.stride == 2 && top == 0 && left == 0;
        if !(fits && bottom <= 1 && right <= 1) {
            return None;
        }
        let output = g.output_size()?;
        let (shifted_height, shifted_width) = output_size(g.height + 1, g.width + 1, 2);
        if output.0 + 1 > shifted_height || output.1 + 1 > shifted_width {
            return None;
        }
        let padded_by_one = DepthwiseLayer::new(
            (g.channels, g.height + 1, g.width + 1, 2),
            weights,
            input_zero_point,
            multiplier,
            offset,
            grid,
        )?;
        Some(ShiftedDepthwise {
            geometry,
            output,
            input_zero_point,
            padded_by_one,
        })
    }

    /// Output height and width.
    pub fn output_size(&self) -> (usize, usize) {
        self.output
    }

    /// Channels-first `input` with a leading row and column of the zero point on every plane:
    /// the input of [`convolve_planes`](Self::convolve_planes).
    pub fn shifted_input(&self, input: &[i8]) -> Vec<i8> {
        let (h, w) = (self.geometry.height, self.geometry.width);
        let mut shifted = vec![self.input_zero_point; self.geometry.channels * (h + 1) * (w + 1)];
        for (plane, target) in input
            .chunks_exact(h * w)
            .zip(shifted.chunks_exact_mut((h + 1) * (w + 1)))
        {
            for (row, target) in plane
                .chunks_exact(w)
                .zip(target.chunks_exact_mut(w + 1).skip(1))
            {
                target[1..].copy_from_slice(row);
            }
        }
        shifted
    }

    /// Convolves channels `first..` of `shifted` (from [`shifted_input`](Self::shifted_input))
    /// into channels-first `out` (as many channels as it holds).
    pub fn convolve_planes(&self, set: KernelSet, shifted: &[i8], first: usize, out: &mut [i8]) {
        let (oh, ow) = self.output;
        let (sh, sw) = self.padded_by_one.output_size();
        let channels = out.len() / (oh * ow);
        let mut wide = vec![0i8; channels * sh * sw];
        self.padded_by_one
            .convolve_planes(set, shifted, first, &mut wide);
        for (plane, target) in wide
            .chunks_exact(sh * sw)
            .zip(out.chunks_exact_mut(oh * ow))
        {
            for (row, target) in plane
                .chunks_exact(sw)
                .skip(1)
                .zip(target.chunks_exact_mut(ow))
            {
                target.copy_from_slice(&row[1..=ow]);
            }
        }
    }
}
