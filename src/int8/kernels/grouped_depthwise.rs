//! A depthwise 3x3 layer's values grouped by [`LANES`] channels, and its loops written once over
//! the vector operations of an architecture ([`GroupVector`]: AVX2 and FMA in
//! `x86::depthwise`, NEON in `aarch64::depthwise`). The input is copied, zero point removed and
//! zero-padded, into f32 planes laid out so that every tap of an output sits at a fixed distance
//! from the output's first tap; several outputs are summed at once in registers and requantized
//! on the vectors.
//!
//! The values are the portable loops': products and partial sums of integer values stay below
//! 2^24, so they are exact in f32 with or without fused multiply-adds, and the requantization
//! multiplies then adds, as the portable loops do.

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

/// The vector operations the grouped loops need on one architecture: a value holds one group's
/// [`LANES`] f32 lanes. The loops below are written once over it, `#[inline(always)]`, so each
/// architecture compiles them inside its own target-feature entry points.
pub trait GroupVector: Copy {
    /// An output grid in the architecture's vectors.
    type Grid;
    /// Zero in every lane.
    fn zero() -> Self;
    /// `value` in every lane.
    fn splat(value: f32) -> Self;
    /// # Safety
    /// `at` points at [`LANES`] f32 values.
    unsafe fn load(at: *const f32) -> Self;
    /// # Safety
    /// `at` points at room for [`LANES`] f32 values.
    unsafe fn store(self, at: *mut f32);
    /// `self + weight * x`.
    fn add_product(self, weight: Self, x: Self) -> Self;
    /// The [`LANES`] bytes at `source` as f32, minus `zero_point`.
    ///
    /// # Safety
    /// `source` points at [`LANES`] bytes.
    unsafe fn from_bytes(source: *const i8, zero_point: f32) -> Self;
    /// The even-indexed, then the odd-indexed of the `2 * LANES` bytes at `source`, as f32 minus
    /// `zero_point`.
    ///
    /// # Safety
    /// `source` points at `2 * LANES` bytes.
    unsafe fn from_byte_pairs(source: *const i8, zero_point: f32) -> (Self, Self);
    /// `grid` in vectors.
    fn grid(grid: OutputGrid) -> Self::Grid;
    /// Stores `grid.quantize(self * multiplier + offset)` ([`OutputGrid::quantize`] lane by
    /// lane: NaN to the lowest step, rounding to the nearest, ties to even) at `target`.
    ///
    /// # Safety
    /// `target` points at room for [`LANES`] bytes.
    unsafe fn store_quantized(
        self,
        multiplier: Self,
        offset: Self,
        grid: &Self::Grid,
        target: *mut i8,
    );
}

/// Output positions (channels-last) or vectors of outputs (planar) summed at once.
const POSITIONS: usize = 4;

/// [`GroupVector::from_bytes`] on the first `lanes` bytes at `source`, the others zero.
///
/// # Safety
/// `source` points at `lanes` bytes.
#[inline(always)]
unsafe fn bytes_to_group<V: GroupVector>(source: *const i8, lanes: usize, zero_point: f32) -> V {
    if lanes == LANES {
        V::from_bytes(source, zero_point)
    } else {
        let mut tail = [0i8; LANES];
        std::ptr::copy_nonoverlapping(source, tail.as_mut_ptr(), lanes);
        V::from_bytes(tail.as_ptr(), zero_point)
    }
}

/// [`GroupVector::store_quantized`] of the first `lanes` lanes.
///
/// # Safety
/// `target` points at room for `lanes` bytes.
#[inline(always)]
unsafe fn store_lanes<V: GroupVector>(
    sum: V,
    (multiplier, offset): (V, V),
    grid: &V::Grid,
    target: *mut i8,
    lanes: usize,
) {
    if lanes == LANES {
        sum.store_quantized(multiplier, offset, grid, target);
    } else {
        let mut all = [0i8; LANES];
        sum.store_quantized(multiplier, offset, grid, all.as_mut_ptr());
        std::ptr::copy_nonoverlapping(all.as_ptr(), target, lanes);
    }
}

/// Convolves output rows `first_row..` (as many as `out` holds, positions by channels) of
/// channels-last `input`, `band_rows` output rows at a time: per band and group of [`LANES`]
/// channels, the group's zero-padded input rows go into a plane `[band input rows, width + 2,
/// LANES]`, where every tap of an output sits at a fixed distance from its first tap, and four
/// output positions are summed at once.
///
/// # Safety
/// `input` and `out` fit the layer ([`GroupedLayer::fits_rows`]); the CPU runs `V`.
#[inline(always)]
pub unsafe fn convolve_rows<V: GroupVector>(
    layer: &GroupedLayer,
    input: &[i8],
    first_row: usize,
    band_rows: usize,
    out: &mut [i8],
) {
    let row_len = layer.output_width() * layer.channels;
    let mut plane = Vec::new();
    for (band, out) in out.chunks_mut(band_rows.max(1) * row_len).enumerate() {
        let first = first_row + band * band_rows.max(1);
        match layer.stride {
            1 => convolve_band::<V, 1>(layer, input, first, out, &mut plane),
            _ => convolve_band::<V, 2>(layer, input, first, out, &mut plane),
        }
    }
}

#[inline(always)]
unsafe fn convolve_band<V: GroupVector, const S: usize>(
    layer: &GroupedLayer,
    input: &[i8],
    first_row: usize,
    out: &mut [i8],
    plane: &mut Vec<f32>,
) {
    let (c, h, w) = (layer.channels, layer.height, layer.width);
    let (ow, pw) = (layer.output_width(), w + 2);
    let rows = out.len() / (ow * c);
    let input_rows = (rows - 1) * S + 3;
    if plane.len() < input_rows * pw * LANES {
        plane.resize(input_rows * pw * LANES, 0.0);
    }
    let grid = V::grid(layer.grid);
    for group in 0..c.div_ceil(LANES) {
        let lanes = LANES.min(c - group * LANES);
        for r in 0..input_rows {
            let row = &mut plane[r * pw * LANES..(r + 1) * pw * LANES];
            let Some(y) = (first_row * S + r).checked_sub(1).filter(|y| *y < h) else {
                row.fill(0.0);
                continue;
            };
            row[..LANES].fill(0.0);
            row[(pw - 1) * LANES..].fill(0.0);
            let mut source = input.as_ptr().add(y * w * c + group * LANES);
            let mut target = row.as_mut_ptr().add(LANES);
            for _ in 0..w {
                bytes_to_group::<V>(source, lanes, layer.input_zero_point).store(target);
                source = source.add(c);
                target = target.add(LANES);
            }
        }
        let weights = layer.weights.as_ptr().add(group * 9 * LANES);
        let scales = (
            V::load(layer.multiplier.as_ptr().add(group * LANES)),
            V::load(layer.offset.as_ptr().add(group * LANES)),
        );
        for (oy, out_row) in out.chunks_exact_mut(ow * c).enumerate() {
            let top: [*const f32; 3] =
                std::array::from_fn(|ky| plane.as_ptr().add((oy * S + ky) * pw * LANES));
            let row_start = out_row.as_mut_ptr().add(group * LANES);
            let target = |ox: usize| row_start.add(ox * c);
            let mut ox = 0;
            while ox + POSITIONS <= ow {
                let sums = tap_sums::<V, S, POSITIONS>(&top, weights, ox);
                for (i, sum) in sums.into_iter().enumerate() {
                    store_lanes(sum, scales, &grid, target(ox + i), lanes);
                }
                ox += POSITIONS;
            }
            while ox < ow {
                let [sum] = tap_sums::<V, S, 1>(&top, weights, ox);
                store_lanes(sum, scales, &grid, target(ox), lanes);
                ox += 1;
            }
        }
    }
}

/// The nine-tap sums of `P` output positions from `first`, the taps of row `ky` read from
/// `rows[ky]`.
#[inline(always)]
unsafe fn tap_sums<V: GroupVector, const S: usize, const P: usize>(
    rows: &[*const f32; 3],
    weights: *const f32,
    first: usize,
) -> [V; P] {
    let mut sums = [V::zero(); P];
    for (ky, row) in rows.iter().enumerate() {
        let row = row.add(first * S * LANES);
        for kx in 0..3 {
            let weight = V::load(weights.add((ky * 3 + kx) * LANES));
            for (i, sum) in sums.iter_mut().enumerate() {
                *sum = sum.add_product(weight, V::load(row.add((i * S + kx) * LANES)));
            }
        }
    }
    sums
}

/// Convolves channels `first..` (as many as `out` holds, plane after plane) of channels-first
/// `input`: each channel's plane is copied, zero point removed, into a zero-padded f32 plane,
/// its rows split into even then odd columns at stride 2, so that each tap of consecutive
/// outputs reads consecutive values; `4 * LANES` outputs of a row are summed at once.
///
/// # Safety
/// `input` and `out` fit the layer ([`GroupedLayer::fits_planes`]); the CPU runs `V`.
#[inline(always)]
pub unsafe fn convolve_planes<V: GroupVector>(
    layer: &GroupedLayer,
    input: &[i8],
    first: usize,
    out: &mut [i8],
) {
    let (h, w, plane_len) = (layer.height, layer.width, layer.output_plane_len());
    let mut padded = vec![0f32; (h + 2) * (w + 2) + LANES];
    for (at, out) in out.chunks_exact_mut(plane_len).enumerate() {
        let channel = first + at;
        let plane = &input[channel * h * w..(channel + 1) * h * w];
        match layer.stride {
            1 => convolve_plane::<V, 1>(layer, channel, plane, &mut padded, out),
            _ => convolve_plane::<V, 2>(layer, channel, plane, &mut padded, out),
        }
    }
}

#[inline(always)]
unsafe fn convolve_plane<V: GroupVector, const S: usize>(
    layer: &GroupedLayer,
    channel: usize,
    plane: &[i8],
    padded: &mut [f32],
    out: &mut [i8],
) {
    let (w, zero_point) = (layer.width, layer.input_zero_point);
    let (ow, pw) = (layer.output_width(), w + 2);
    let evens = pw.div_ceil(2);
    for (y, source) in plane.chunks_exact(w).enumerate() {
        let row = &mut padded[(y + 1) * pw..(y + 2) * pw];
        let mut x = 0;
        if S == 1 {
            while x + LANES <= w {
                V::from_bytes(source.as_ptr().add(x), zero_point)
                    .store(row.as_mut_ptr().add(x + 1));
                x += LANES;
            }
            for (d, v) in row[x + 1..=w].iter_mut().zip(&source[x..]) {
                *d = f32::from(*v) - zero_point;
            }
        } else {
            // Input column x is padded column x + 1: even x go to the odd half.
            let (even_half, odd_half) = row.split_at_mut(evens);
            while x + 2 * LANES <= w {
                let (even_x, odd_x) = V::from_byte_pairs(source.as_ptr().add(x), zero_point);
                even_x.store(odd_half.as_mut_ptr().add(x / 2));
                odd_x.store(even_half.as_mut_ptr().add(x / 2 + 1));
                x += 2 * LANES;
            }
            for (x, v) in source.iter().enumerate().skip(x) {
                let value = f32::from(*v) - zero_point;
                if x % 2 == 0 {
                    odd_half[x / 2] = value;
                } else {
                    even_half[x / 2 + 1] = value;
                }
            }
        }
    }
    let (group, lane) = (channel / LANES, channel % LANES);
    let weights: [V; 9] =
        std::array::from_fn(|tap| V::splat(layer.weights[(group * 9 + tap) * LANES + lane]));
    let scales = (
        V::splat(layer.multiplier[channel]),
        V::splat(layer.offset[channel]),
    );
    let grid = V::grid(layer.grid);
    let tap_columns: [usize; 3] = if S == 1 { [0, 1, 2] } else { [0, evens, 1] };
    for (oy, out_row) in out.chunks_exact_mut(ow).enumerate() {
        let taps: [*const f32; 9] = std::array::from_fn(|tap| {
            padded
                .as_ptr()
                .add((oy * S + tap / 3) * pw + tap_columns[tap % 3])
        });
        let mut ox = 0;
        while ox + POSITIONS * LANES <= ow {
            let mut sums = [V::zero(); POSITIONS];
            for (tap, weight) in taps.iter().zip(&weights) {
                for (i, sum) in sums.iter_mut().enumerate() {
                    *sum = sum.add_product(*weight, V::load(tap.add(ox + i * LANES)));
                }
            }
            for (i, sum) in sums.into_iter().enumerate() {
                let target = out_row.as_mut_ptr().add(ox + i * LANES);
                sum.store_quantized(scales.0, scales.1, &grid, target);
            }
            ox += POSITIONS * LANES;
        }
        while ox < ow {
            let mut sum = V::zero();
            for (tap, weight) in taps.iter().zip(&weights) {
                sum = sum.add_product(*weight, V::load(tap.add(ox)));
            }
            let lanes = LANES.min(ow - ox);
            store_lanes(sum, scales, &grid, out_row.as_mut_ptr().add(ox), lanes);
            ox += LANES;
        }
    }
}
