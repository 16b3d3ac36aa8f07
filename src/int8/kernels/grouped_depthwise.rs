//! A depthwise 3x3 layer's values grouped by [`LANES`] channels, for the hand-written kernels of
//! each architecture (`x86::depthwise`, `aarch64::depthwise`): both read the same layout and
//! refuse the same shapes, so that the portable loops take whatever they refuse.

use crate::int8::grid::OutputGrid;

/// Channels one group holds (one AVX2 vector, two NEON vectors of f32).
pub const LANES: usize = 8;

/// A depthwise 3x3 layer (padding 1) on an int8 tensor, its per-channel values grouped by
/// [`LANES`] channels and zero-padded to whole groups.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupedLayer {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub stride: usize,
    pub input_zero_point: f32,
    /// `[groups, 9, LANES]`.
    pub weights: Vec<f32>,
    /// `[groups * LANES]`.
    pub multiplier: Vec<f32>,
    /// `[groups * LANES]`.
    pub offset: Vec<f32>,
    pub grid: OutputGrid,
}

impl GroupedLayer {
    /// Groups `weights` (`[channels, 9]`), `multiplier` and `offset` (`[channels]`).
    pub fn new(
        shape: (usize, usize, usize, usize),
        input_zero_point: f32,
        weights: &[f32],
        multiplier: &[f32],
        offset: &[f32],
        grid: OutputGrid,
    ) -> GroupedLayer {
        let (channels, height, width, stride) = shape;
        let padded = channels.div_ceil(LANES) * LANES;
        let by_channel = |values: &[f32]| -> Vec<f32> {
            (0..padded)
                .map(|c| values.get(c).copied().unwrap_or(0.0))
                .collect()
        };
        let grouped_weights = (0..padded * 9)
            .map(|at| {
                let (group, tap, lane) = (at / (9 * LANES), at / LANES % 9, at % LANES);
                weights
                    .get((group * LANES + lane) * 9 + tap)
                    .copied()
                    .filter(|_| group * LANES + lane < channels)
                    .unwrap_or(0.0)
            })
            .collect();
        GroupedLayer {
            channels,
            height,
            width,
            stride,
            input_zero_point,
            weights: grouped_weights,
            multiplier: by_channel(multiplier),
            offset: by_channel(offset),
            grid,
        }
    }

    /// Output width.
    pub fn output_width(&self) -> usize {
        (self.width - 1) / self.stride + 1
    }

    /// Positions of one output plane.
    pub fn output_plane_len(&self) -> usize {
        ((self.height - 1) / self.stride + 1) * self.output_width()
    }

    fn fits(&self, input: &[i8]) -> bool {
        matches!(self.stride, 1 | 2)
            && input.len() == self.height * self.width * self.channels
            && self.weights.len() == self.channels.div_ceil(LANES) * 9 * LANES
    }

    /// Whether `out` holds whole output rows of channels-last `input`.
    pub fn fits_rows(&self, input: &[i8], out: &[i8]) -> bool {
        let row_len = self.output_width() * self.channels;
        self.fits(input) && row_len != 0 && out.len().is_multiple_of(row_len)
    }

    /// Whether `out` holds whole output planes of channels-first `input` from channel `first`.
    pub fn fits_planes(&self, input: &[i8], first: usize, out: &[i8]) -> bool {
        let plane_len = self.output_plane_len();
        self.fits(input)
            && plane_len != 0
            && out.len().is_multiple_of(plane_len)
            && first + out.len() / plane_len <= self.channels
    }
}
