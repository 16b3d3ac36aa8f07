//! A depthwise 3x3 layer laid out for instructions that sum four byte products into each 32-bit
//! lane (`sdot` on aarch64 with the dot product, `vpdpbusd` on x86-64 with AVX-512 VNNI), on the
//! bytes themselves: each lane sums one channel's three taps of one kernel row and a fourth byte
//! that meets a zero weight.
//!
//! The kernels lay every input row they read out as *triples*: for each output position, each
//! channel's three horizontal taps and a spare byte, sixteen channels (or positions) in 64 bytes.
//! Padding holds the input zero point, and the sums start at `-zero_point * sum(weights)`, so
//! they are the integers the portable loops sum, `sum(w * (x - zero_point))` with zero padding,
//! and requantize as they do.

use crate::int8::grid::OutputGrid;

/// Channels (or positions) one group of triples holds.
pub const GROUP: usize = 16;
/// Bytes of one group of triples.
pub const TRIPLES: usize = 4 * GROUP;

/// A depthwise layer's values laid out for the dot-product kernels, grouped by [`GROUP`]
/// channels.
#[derive(Debug, Clone, PartialEq)]
pub struct TripleDepthwise {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub stride: usize,
    pub input_zero_point: i8,
    /// `[groups][3 kernel rows][GROUP][4]`: a channel's three taps of a row, then 0.
    pub weights: Vec<i8>,
    /// `[channels][3 kernel rows][4][4]`: a channel's three taps of a row, then 0, four times.
    pub plane_weights: Vec<i8>,
    /// `[groups * GROUP]`: the sum of each channel's nine weights.
    pub weight_sums: Vec<i32>,
    /// `[groups * GROUP]`.
    pub multiplier: Vec<f32>,
    /// `[groups * GROUP]`.
    pub offset: Vec<f32>,
    pub grid: OutputGrid,
}

impl TripleDepthwise {
    /// `weights` is `[channels, 9]`, `multiplier` and `offset` take a channel's sum (zero point
    /// removed) to output steps; `shape` is `(channels, height, width, stride)`.
    pub fn new(
        shape: (usize, usize, usize, usize),
        weights: &[i8],
        input_zero_point: i8,
        multiplier: &[f32],
        offset: &[f32],
        grid: OutputGrid,
    ) -> TripleDepthwise {
        let (channels, height, width, stride) = shape;
        let padded = channels.div_ceil(GROUP) * GROUP;
        let weight = |c: usize, tap: usize| {
            (c < channels)
                .then(|| weights.get(c * 9 + tap).copied())
                .flatten()
                .unwrap_or(0)
        };
        let grouped = (0..padded * 12)
            .map(|at| {
                let (group, ky, lane, kx) = (
                    at / (12 * GROUP),
                    at / (4 * GROUP) % 3,
                    at / 4 % GROUP,
                    at % 4,
                );
                if kx == 3 {
                    0
                } else {
                    weight(group * GROUP + lane, ky * 3 + kx)
                }
            })
            .collect();
        let plane_weights = (0..channels * 48)
            .map(|at| {
                let (c, ky, kx) = (at / 48, at / 16 % 3, at % 4);
                if kx == 3 {
                    0
                } else {
                    weight(c, ky * 3 + kx)
                }
            })
            .collect();
        let weight_sums = (0..padded)
            .map(|c| (0..9).map(|tap| i32::from(weight(c, tap))).sum())
            .collect();
        let by_channel = |values: &[f32]| -> Vec<f32> {
            (0..padded)
                .map(|c| {
                    values
                        .get(c)
                        .copied()
                        .filter(|_| c < channels)
                        .unwrap_or(0.0)
                })
                .collect()
        };
        TripleDepthwise {
            channels,
            height,
            width,
            stride,
            input_zero_point,
            weights: grouped,
            plane_weights,
            weight_sums,
            multiplier: by_channel(multiplier),
            offset: by_channel(offset),
            grid,
        }
    }

    /// Output width.
    pub fn output_width(&self) -> usize {
        (self.width - 1) / self.stride + 1
    }

    /// Whether `out` holds whole output rows of channels-last `input`.
    pub fn fits_rows(&self, input: &[i8], out: &[i8]) -> bool {
        let row_len = self.output_width() * self.channels;
        matches!(self.stride, 1 | 2)
            && input.len() == self.height * self.width * self.channels
            && row_len != 0
            && out.len().is_multiple_of(row_len)
            && self.weights.len() == self.channels.div_ceil(GROUP) * 12 * GROUP
    }

    /// Positions of one output plane.
    pub fn output_plane_len(&self) -> usize {
        ((self.height - 1) / self.stride + 1) * self.output_width()
    }

    /// Whether `out` holds whole output planes of channels-first `input` from channel `first`.
    pub fn fits_planes(&self, input: &[i8], first: usize, out: &[i8]) -> bool {
        let plane_len = self.output_plane_len();
        matches!(self.stride, 1 | 2)
            && input.len() == self.height * self.width * self.channels
            && plane_len != 0
            && out.len().is_multiple_of(plane_len)
            && first + out.len() / plane_len <= self.channels
            && self.plane_weights.len() == self.channels * 48
    }
}
