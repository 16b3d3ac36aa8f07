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

use std::cell::RefCell;

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
    /// Whether no weight is -128 (then two products fit a 16-bit lane).
    pub weights_above_minimum: bool,
    /// `[groups * GROUP]`.
    pub multiplier: Vec<f32>,
    /// `[groups * GROUP]`.
    pub offset: Vec<f32>,
    /// Whether every multiplier and offset is finite.
    pub finite_scales: bool,
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
            weights_above_minimum: weights.iter().all(|w| *w != i8::MIN),
            multiplier: by_channel(multiplier),
            offset: by_channel(offset),
            finite_scales: multiplier.iter().chain(offset).all(|v| v.is_finite()),
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

    /// Input rows that `output_rows` output rows read.
    pub fn band_input_rows(&self, output_rows: usize) -> usize {
        (output_rows - 1) * self.stride + 3
    }

    /// The input row that row `r` of the input rows of a band from output row `first_row`
    /// stands for; `None` in the padding.
    pub fn input_row(&self, first_row: usize, r: usize) -> Option<usize> {
        (first_row * self.stride + r)
            .checked_sub(1)
            .filter(|y| *y < self.height)
    }

    /// Runs `band` on output rows `first_row..` (as many as `out` holds) of channels-last
    /// `input`, `band_rows` rows at a time: `band(first row, its rows of out, scratch)`, with
    /// the scratch sized for the band's channels-last triples and padded row. `false`, with
    /// nothing run, when the sizes do not fit the layer.
    pub fn for_each_band(
        &self,
        input: &[i8],
        first_row: usize,
        band_rows: usize,
        out: &mut [i8],
        mut band: impl FnMut(usize, &mut [i8], &mut Scratch),
    ) -> bool {
        if !self.fits_rows(input, out) {
            return false;
        }
        let band_rows = band_rows.max(1);
        let row_len = self.output_width() * self.channels;
        with_scratch(|scratch| {
            for (at, out) in out.chunks_mut(band_rows * row_len).enumerate() {
                let input_rows = self.band_input_rows(out.len() / row_len);
                scratch.size(
                    input_rows * self.output_width() * TRIPLES,
                    (self.width + 2) * GROUP,
                );
                band(first_row + at * band_rows, out, scratch);
            }
        });
        true
    }

    /// Runs `plane` on channels `first..` (as many as `out` holds, plane after plane) of
    /// channels-first `input`: `plane(channel, its input plane, its output plane, scratch)`,
    /// with the scratch sized for a plane's triples (`(height + 2)` rows of
    /// [`TripleDepthwise::plane_row_len`] bytes) and a padded row. `false`, with nothing run,
    /// when the sizes do not fit the layer.
    pub fn for_each_plane(
        &self,
        input: &[i8],
        first: usize,
        out: &mut [i8],
        mut plane: impl FnMut(usize, &[i8], &mut [i8], &mut Scratch),
    ) -> bool {
        if !self.fits_planes(input, first, out) {
            return false;
        }
        let (h, w) = (self.height, self.width);
        let row_blocks = self.output_width().div_ceil(GROUP);
        with_scratch(|scratch| {
            scratch.size(
                (h + 2) * self.plane_row_len(),
                2 * row_blocks * GROUP + 2 * GROUP + 2,
            );
            for (at, out) in out.chunks_exact_mut(self.output_plane_len()).enumerate() {
                let channel = first + at;
                plane(
                    channel,
                    &input[channel * h * w..(channel + 1) * h * w],
                    out,
                    scratch,
                );
            }
        });
        true
    }

    /// Bytes of one input row of a plane laid out as triples, a group of output positions per
    /// [`TRIPLES`].
    pub fn plane_row_len(&self) -> usize {
        self.output_width().div_ceil(GROUP) * TRIPLES
    }
}

/// Buffers the dot-product kernels lay triples out in, kept per thread.
#[derive(Debug, Default)]
pub struct Scratch {
    /// Input rows laid out as triples.
    pub triples: Vec<i8>,
    /// One input row with its padding.
    pub padded_row: Vec<i8>,
}

impl Scratch {
    fn size(&mut self, triples: usize, padded_row: usize) {
        self.triples.resize(triples, 0);
        self.padded_row.resize(padded_row, 0);
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// Runs `work` on this thread's scratch (on fresh buffers if it is in use).
fn with_scratch<R>(work: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => work(&mut scratch),
        Err(_) => work(&mut Scratch::default()),
    })
}
