//! Depthwise 3x3 convolution (padding 1, stride 1 or 2) of int8 tensors: the layer's values
//! prepared once, and its loops, portable and per architecture.
//!
//! Products and sums run in f32 on integer values (`|w| <= 127`, `|x - zero point| <= 255`,
//! nine taps), which is exact and vectorizes on every x86-64 CPU; on aarch64 they run on the
//! bytes, to the same integers: with `sdot` on the dot-product set, with `smull`/`smlal` pairs
//! on the NEON set (f32 where a weight is -128).

#[cfg(target_arch = "aarch64")]
use super::aarch64::depthwise as arch;
use super::general_depthwise::{DepthwiseGeometry, GeneralDepthwiseLayer};
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use super::grouped_depthwise::GroupedLayer;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use super::triple_depthwise::TripleDepthwise;
#[cfg(target_arch = "x86_64")]
use super::x86::depthwise as arch;
use super::{KernelSet, VectorLoop};
use crate::int8::grid::OutputGrid;

/// The lanes of the channels-last kernel.
pub const LANES: usize = 16;
/// Channels-first input planes up to this many positions run channels-last, larger ones plane
/// by plane; layers of up to this many output positions run faster on channels-last tensors.
pub const CHANNELS_LAST_MAX_POSITIONS: usize = 300;
/// Output rows a channels-last band computes: its padded input rows stay in the cache.
pub const BAND_ROWS: usize = 8;
/// Channels the channels-last kernel sums at a time.
const CHANNEL_BLOCK: usize = 64;

/// A depthwise layer's weights, requantization and geometry, laid out for its kernels.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthwiseLayer {
    pub channels: usize,
    pub stride: usize,
    pub height: usize,
    pub width: usize,
    /// `[9, channels]`.
    tap_weights: Vec<f32>,
    input_zero_point: f32,
    multiplier: Vec<f32>,
    offset: Vec<f32>,
    grid: OutputGrid,
    /// The same layer for the portable loops over channels-first planes.
    general: GeneralDepthwiseLayer,
    /// The layer for the AVX2 and NEON kernels.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    grouped: GroupedLayer,
    /// The layer for the dot-product kernels (aarch64 `sdot`, x86-64 AVX-512 VNNI).
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    triples: TripleDepthwise,
}

impl DepthwiseLayer {
    /// `weights` is `[channels, 9]`; `multiplier` and `offset` take a channel's sum of products
    /// (zero point removed) to output steps; `shape` is `(channels, height, width, stride)`.
    /// `None` for an empty plane.
    pub fn new(
        shape: (usize, usize, usize, usize),
        weights: &[i8],
        input_zero_point: i8,
        multiplier: Vec<f32>,
        offset: Vec<f32>,
        grid: OutputGrid,
    ) -> Option<DepthwiseLayer> {
        let (channels, height, width, stride) = shape;
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        let triples =
            TripleDepthwise::new(shape, weights, input_zero_point, &multiplier, &offset, grid);
        let geometry = DepthwiseGeometry {
            channels,
            height,
            width,
            kernel: 3,
            stride,
            padding: [1; 4],
        };
        let general = GeneralDepthwiseLayer::new(
            geometry,
            weights,
            input_zero_point,
            multiplier.clone(),
            offset.clone(),
            grid,
        )?;
        let input_zero_point = f32::from(input_zero_point);
        Some(DepthwiseLayer {
            general,
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            triples,
            channels,
            stride,
            height,
            width,
            tap_weights: (0..9 * channels)
                .map(|at| f32::from(weights[(at % channels) * 9 + at / channels]))
                .collect(),
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            grouped: GroupedLayer::new(
                shape,
                input_zero_point,
                &weights.iter().map(|w| f32::from(*w)).collect::<Vec<_>>(),
                &multiplier,
                &offset,
                grid,
            ),
            input_zero_point,
            multiplier,
            offset,
            grid,
        })
    }

    /// Output height and width.
    pub fn output_size(&self) -> (usize, usize) {
        output_size(self.height, self.width, self.stride)
    }

    /// Convolves channels `first..` of channels-first `input` into `out` (as many as it holds).
    pub fn convolve_planes(&self, set: KernelSet, input: &[i8], first: usize, out: &mut [i8]) {
        let channels_last = self.height * self.width <= CHANNELS_LAST_MAX_POSITIONS;
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        if !channels_last && arch::convolve_planes_dot(set, &self.triples, input, first, out) {
            return;
        }
        #[cfg(target_arch = "aarch64")]
        if !channels_last && arch::convolve_planes_pairs(set, &self.triples, input, first, out) {
            return;
        }
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        if !channels_last && arch::convolve_planes(set, &self.grouped, input, first, out) {
            return;
        }
        self.general.convolve_planes(set, input, first, out)
    }

    /// Convolves output rows `first_row..` (as many as `out` holds) of channels-last `input`
    /// into channels-last `out`.
    pub fn convolve_rows(&self, set: KernelSet, input: &[i8], first_row: usize, out: &mut [i8]) {
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        if arch::convolve_rows_dot(set, &self.triples, input, first_row, BAND_ROWS, out) {
            return;
        }
        #[cfg(target_arch = "aarch64")]
        if arch::convolve_rows_pairs(set, &self.triples, input, first_row, BAND_ROWS, out) {
            return;
        }
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        if arch::convolve_rows(set, &self.grouped, input, first_row, BAND_ROWS, out) {
            return;
        }
        set.run(ChannelsLastRows {
            layer: self,
            input,
            first_row,
            out,
        })
    }

    /// Convolves output rows `first_row..` (as many as `out` holds) of channels-last `input`
    /// into channels-last `out`: per band of [`BAND_ROWS`] output rows, the band's input rows
    /// are copied into a zero-padded f32 buffer, and every output position sums nine taps over
    /// its channels, [`CHANNEL_BLOCK`] at a time.
    #[inline(always)]
    fn run_channels_last_rows(&self, input: &[i8], first_row: usize, out: &mut [i8]) {
        let (h, w, s, c) = (self.height, self.width, self.stride, self.channels);
        let (_, ow) = output_size(h, w, s);
        let rows = out.len() / (ow * c);
        let (pw, zero_point, grid) = (w + 2, self.input_zero_point, self.grid);
        let mut padded = vec![0f32; ((BAND_ROWS - 1) * s + 3) * pw * c];
        for band in (0..rows).step_by(BAND_ROWS) {
            let band_rows = BAND_ROWS.min(rows - band);
            let top = (first_row + band) * s;
            for (r, row) in padded
                .chunks_exact_mut(pw * c)
                .take((band_rows - 1) * s + 3)
                .enumerate()
            {
                let Some(y) = (top + r).checked_sub(1).filter(|y| *y < h) else {
                    row.fill(0.0);
                    continue;
                };
                let (left, rest) = row.split_at_mut(c);
                let (inside, right) = rest.split_at_mut(w * c);
                left.fill(0.0);
                right.fill(0.0);
                let source = &input[y * w * c..(y + 1) * w * c];
                for (d, v) in inside.iter_mut().zip(source) {
                    *d = f32::from(*v) - zero_point;
                }
            }
            for by in 0..band_rows {
                let out_row = &mut out[(band + by) * ow * c..(band + by + 1) * ow * c];
                for (ox, position) in out_row.chunks_exact_mut(c).enumerate() {
                    let tap_at: [usize; 9] =
                        std::array::from_fn(|tap| ((by * s + tap / 3) * pw + ox * s + tap % 3) * c);
                    for start in (0..c).step_by(CHANNEL_BLOCK) {
                        let len = CHANNEL_BLOCK.min(c - start);
                        let x = |tap: usize| &padded[tap_at[tap] + start..][..len];
                        let weights = |tap: usize| &self.tap_weights[tap * c + start..][..len];
                        let sums = match nine_taps::<CHANNEL_BLOCK>(x, weights) {
                            Some(sums) => sums,
                            None => {
                                let mut sums = [0f32; CHANNEL_BLOCK];
                                for tap in 0..9 {
                                    for ((sum, x), weight) in
                                        sums.iter_mut().zip(x(tap)).zip(weights(tap))
                                    {
                                        *sum += weight * x;
                                    }
                                }
                                sums
                            }
                        };
                        let scales = self.multiplier[start..start + len]
                            .iter()
                            .zip(&self.offset[start..start + len]);
                        for ((o, sum), (m, b)) in position[start..start + len]
                            .iter_mut()
                            .zip(&sums)
                            .zip(scales)
                        {
                            *o = grid.quantize(sum * m + b);
                        }
                    }
                }
            }
        }
    }
}

/// `sum over taps t of weights(t)[i] * inputs(t)[i]` for `i < N`, accumulated in registers;
/// `None` unless every slice holds exactly `N` values.
#[inline(always)]
fn nine_taps<'a, const N: usize>(
    inputs: impl Fn(usize) -> &'a [f32],
    weights: impl Fn(usize) -> &'a [f32],
) -> Option<[f32; N]> {
    let mut sums = [0f32; N];
    for tap in 0..9 {
        let inputs = <&[f32; N]>::try_from(inputs(tap)).ok()?;
        let weights = <&[f32; N]>::try_from(weights(tap)).ok()?;
        for lane in 0..N {
            sums[lane] += weights[lane] * inputs[lane];
        }
    }
    Some(sums)
}

/// Output height and width of a 3x3, padding 1 convolution.
pub fn output_size(height: usize, width: usize, stride: usize) -> (usize, usize) {
    ((height - 1) / stride + 1, (width - 1) / stride + 1)
}

/// [`DepthwiseLayer::run_channels_last_rows`], compiled per vector width.
struct ChannelsLastRows<'a> {
    layer: &'a DepthwiseLayer,
    input: &'a [i8],
    first_row: usize,
    out: &'a mut [i8],
}

impl VectorLoop for ChannelsLastRows<'_> {
    #[inline(always)]
    fn run(self) {
        self.layer
            .run_channels_last_rows(self.input, self.first_row, self.out)
    }
}
