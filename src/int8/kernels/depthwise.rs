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
/// Outputs the planar kernel sums at a time.
const PLANAR_BLOCK: usize = 64;
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
    /// `[channels, 9]`.
    weights: Vec<f32>,
    /// `[9, channels]`.
    tap_weights: Vec<f32>,
    input_zero_point: f32,
    multiplier: Vec<f32>,
    offset: Vec<f32>,
    grid: OutputGrid,
    /// The same layer for the loop over channels side by side (small planes, portable).
    lanes: GeneralDepthwiseLayer,
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
        let float_weights: Vec<f32> = weights.iter().map(|w| f32::from(*w)).collect();
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
        let lanes = GeneralDepthwiseLayer::new(
            geometry,
            weights,
            input_zero_point,
            multiplier.clone(),
            offset.clone(),
            grid,
        )?;
        let input_zero_point = f32::from(input_zero_point);
        Some(DepthwiseLayer {
            lanes,
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
                &float_weights,
                &multiplier,
                &offset,
                grid,
            ),
            weights: float_weights,
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
        if channels_last {
            return self.lanes.convolve_planes(set, input, first, out);
        }
        set.run(Planar(PlanesTask {
            layer: self,
            input,
            first,
            out,
        }))
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

    /// Convolves one channel at a time over a flattened padded plane.
    #[inline(always)]
    fn run_planar(&self, input: &[i8], first: usize, out: &mut [i8]) {
        let (h, w, s) = (self.height, self.width, self.stride);
        let (oh, ow) = output_size(h, w, s);
        let pw = w + 2;
        // Zero-padded planes in f32. With stride 2 the padded rows are split into an even-row
        // plane and an odd-row plane, and each row into its even then its odd columns, so that
        // every tap of every output reads one contiguous run.
        let even = pw.div_ceil(2);
        let plane_rows = if s == 1 { h + 2 } else { oh + 2 };
        let odd_plane = plane_rows * pw;
        let row_start = |padded_row: usize| match s {
            1 => padded_row * pw,
            _ => (padded_row % 2) * odd_plane + (padded_row / 2) * pw,
        };
        // Whole blocks of outputs, and spare values so the last block's taps stay in bounds.
        let n = (oh * pw).div_ceil(PLANAR_BLOCK) * PLANAR_BLOCK;
        let mut padded = vec![0f32; 2 * odd_plane + pw + PLANAR_BLOCK];
        let mut rows = vec![0i8; n];
        let zero_point = self.input_zero_point;
        for (at, c) in (first..first + out.len() / (oh * ow)).enumerate() {
            let plane = &input[c * h * w..(c + 1) * h * w];
            for y in 0..h {
                let start = row_start(y + 1);
                let row = &mut padded[start..start + pw];
                let src = &plane[y * w..(y + 1) * w];
                if s == 1 {
                    for (d, x) in row[1..=w].iter_mut().zip(src) {
                        *d = f32::from(*x) - zero_point;
                    }
                } else {
                    // Input column x is padded column x + 1: even x go to the odd half.
                    let (evens, odds) = row.split_at_mut(even);
                    let pairs = src.chunks_exact(2);
                    if let [last] = pairs.remainder() {
                        odds[w / 2] = f32::from(*last) - zero_point;
                    }
                    for ((pair, o), e) in pairs.zip(odds.iter_mut()).zip(&mut evens[1..]) {
                        *o = f32::from(pair[0]) - zero_point;
                        *e = f32::from(pair[1]) - zero_point;
                    }
                }
            }
            let taps: [f32; 9] = std::array::from_fn(|i| self.weights[c * 9 + i]);
            let (m, b) = (self.multiplier[c], self.offset[c]);
            // Position `oy * pw + ox` of `rows` is output (oy, ox); the columns past `ow`
            // of each row are discarded.
            let tap_rows: [&[f32]; 9] = std::array::from_fn(|tap| {
                let (ky, kx) = (tap / 3, tap % 3);
                let column = match (s, kx) {
                    (1, _) => kx,
                    (_, 0) => 0,
                    (_, 1) => even,
                    _ => 1,
                };
                let start = row_start(ky) + column;
                &padded[start..start + n]
            });
            // Fixed-size blocks summed in a local array: the loop vectorizes whatever the
            // compiler knows of the slices' aliasing.
            for (start, block) in rows.chunks_exact_mut(PLANAR_BLOCK).enumerate() {
                let start = start * PLANAR_BLOCK;
                let mut sums = [0f32; PLANAR_BLOCK];
                for (tap, row) in tap_rows.iter().enumerate() {
                    if let Ok(row) =
                        <&[f32; PLANAR_BLOCK]>::try_from(&row[start..start + PLANAR_BLOCK])
                    {
                        for lane in 0..PLANAR_BLOCK {
                            sums[lane] += taps[tap] * row[lane];
                        }
                    }
                }
                for (o, sum) in block.iter_mut().zip(&sums) {
                    *o = self.grid.quantize(sum * m + b);
                }
            }
            let out = &mut out[at * oh * ow..(at + 1) * oh * ow];
            for (row, o) in rows.chunks(pw).zip(out.chunks_mut(ow)) {
                o.copy_from_slice(&row[..ow]);
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

/// Channels `first..` of a channels-first tensor, for the loops below.
struct PlanesTask<'a> {
    layer: &'a DepthwiseLayer,
    input: &'a [i8],
    first: usize,
    out: &'a mut [i8],
}

/// [`DepthwiseLayer::run_planar`], compiled per vector width.
struct Planar<'a>(PlanesTask<'a>);

impl VectorLoop for Planar<'_> {
    #[inline(always)]
    fn run(self) {
        let t = self.0;
        t.layer.run_planar(t.input, t.first, t.out)
    }
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
