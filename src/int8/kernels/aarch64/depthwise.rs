//! Depthwise kernels for aarch64 (NEON, which every aarch64 CPU has), on channels-last tensors
//! ([`convolve_rows`]) and on channels-first planes ([`convolve_planes`]): the layouts of the x86
//! kernels, with a group of eight channels in two vectors of four. The input is copied, zero point
//! removed and zero-padded, into f32 planes where every tap of an output sits at a fixed distance
//! from its first tap; several outputs are summed at once in registers and requantized on the
//! vectors.
//!
//! The values are the portable loops': products and partial sums of integer values stay below
//! 2^24, so they are exact in f32 with fused multiply-adds too, and the requantization
//! multiplies then adds, as the portable loops do.

use std::arch::aarch64::*;

use super::vectors::{Eight, Quantizer};
use crate::int8::kernels::grouped_depthwise::{GroupedLayer, LANES};
use crate::int8::kernels::KernelSet;

/// Output positions (channels-last) or vectors of eight outputs (planar) summed at once.
const POSITIONS: usize = 4;

/// # Safety
/// `source` points at `lanes` (at most [`LANES`]) bytes.
#[inline(always)]
unsafe fn load_bytes(source: *const i8, lanes: usize) -> int8x8_t {
    if lanes == LANES {
        vld1_s8(source)
    } else {
        let mut tail = [0i8; LANES];
        std::ptr::copy_nonoverlapping(source, tail.as_mut_ptr(), lanes);
        vld1_s8(tail.as_ptr())
    }
}

/// Convolves output rows `first_row..` (as many as `out` holds, positions by channels) of
/// channels-last `input`, `band_rows` output rows at a time; `false`, with nothing written, for
/// a set other than the aarch64 ones or a shape the grouped layer refuses.
pub fn convolve_rows(
    set: KernelSet,
    layer: &GroupedLayer,
    input: &[i8],
    first_row: usize,
    band_rows: usize,
    out: &mut [i8],
) -> bool {
    if !set.has_neon() || !layer.fits_rows(input, out) {
        return false;
    }
    let row_len = layer.output_width() * layer.channels;
    let mut plane = Vec::new();
    for (band, out) in out.chunks_mut(band_rows.max(1) * row_len).enumerate() {
        let first = first_row + band * band_rows.max(1);
        // SAFETY: the sizes of `input`, `out` and the layer's grouped values were checked
        // against its shape.
        unsafe {
            match layer.stride {
                1 => convolve_band::<1>(layer, input, first, out, &mut plane),
                _ => convolve_band::<2>(layer, input, first, out, &mut plane),
            }
        }
    }
    true
}

/// One band, a group of [`LANES`] channels at a time: the group's padded input rows into
/// `plane` (`[band input rows, width + 2, LANES]`), then the group's output rows.
///
/// # Safety
/// `input` and `out` fit the layer ([`GroupedLayer::fits_rows`]).
unsafe fn convolve_band<const S: usize>(
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
    let zero_point = vdupq_n_f32(layer.input_zero_point);
    let quantizer = Quantizer::new(layer.grid);
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
                Eight::from_bytes(load_bytes(source, lanes), zero_point).store(target);
                source = source.add(c);
                target = target.add(LANES);
            }
        }
        let weights = layer.weights.as_ptr().add(group * 9 * LANES);
        let multiplier = Eight::load(layer.multiplier.as_ptr().add(group * LANES));
        let offset = Eight::load(layer.offset.as_ptr().add(group * LANES));
        for (oy, out_row) in out.chunks_exact_mut(ow * c).enumerate() {
            let top: [*const f32; 3] =
                std::array::from_fn(|ky| plane.as_ptr().add((oy * S + ky) * pw * LANES));
            let row_start = out_row.as_mut_ptr().add(group * LANES);
            let target = |ox: usize| row_start.add(ox * c);
            let mut ox = 0;
            while ox + POSITIONS <= ow {
                let sums = tap_sums::<S, POSITIONS>(&top, weights, ox);
                for (i, sum) in sums.iter().enumerate() {
                    quantizer.store(*sum, multiplier, offset, target(ox + i), lanes);
                }
                ox += POSITIONS;
            }
            while ox < ow {
                let [sum] = tap_sums::<S, 1>(&top, weights, ox);
                quantizer.store(sum, multiplier, offset, target(ox), lanes);
                ox += 1;
            }
        }
    }
}

/// The nine-tap sums of `P` output positions from `first`, the taps of row `ky` read from
/// `rows[ky]`.
///
/// # Safety
/// Each of `rows` points at the padded row's `(first + P) * S + 2` groups; `weights` at nine.
#[inline(always)]
unsafe fn tap_sums<const S: usize, const P: usize>(
    rows: &[*const f32; 3],
    weights: *const f32,
    first: usize,
) -> [Eight; P] {
    let mut sums = [Eight::zero(); P];
    for (ky, row) in rows.iter().enumerate() {
        let row = row.add(first * S * LANES);
        for kx in 0..3 {
            let weight = Eight::load(weights.add((ky * 3 + kx) * LANES));
            for (i, sum) in sums.iter_mut().enumerate() {
                *sum = sum.add_product(weight, Eight::load(row.add((i * S + kx) * LANES)));
            }
        }
    }
    sums
}

/// Convolves channels `first..` (as many as `out` holds, plane after plane) of channels-first
/// `input`: each channel's plane is copied, zero point removed, into a zero-padded f32 plane,
/// its rows split into even then odd columns at stride 2, so that each tap of consecutive
/// outputs reads consecutive values; 32 outputs of a row are summed at once. `false`, with
/// nothing written, where [`convolve_rows`] would be.
pub fn convolve_planes(
    set: KernelSet,
    layer: &GroupedLayer,
    input: &[i8],
    first: usize,
    out: &mut [i8],
) -> bool {
    if !set.has_neon() || !layer.fits_planes(input, first, out) {
        return false;
    }
    let (h, w, plane_len) = (layer.height, layer.width, layer.output_plane_len());
    let mut padded = vec![0f32; (h + 2) * (w + 2) + LANES];
    for (at, out) in out.chunks_exact_mut(plane_len).enumerate() {
        let channel = first + at;
        let plane = &input[channel * h * w..(channel + 1) * h * w];
        // SAFETY: `plane` and `out` have the layer's input and output plane sizes, and `padded`
        // its padded plane's with a vector to spare.
        unsafe {
            match layer.stride {
                1 => convolve_plane::<1>(layer, channel, plane, &mut padded, out),
                _ => convolve_plane::<2>(layer, channel, plane, &mut padded, out),
            }
        }
    }
    true
}

/// # Safety
/// `plane` holds the layer's input plane, `out` its output plane, `padded` its padded plane
/// and [`LANES`] values more.
unsafe fn convolve_plane<const S: usize>(
    layer: &GroupedLayer,
    channel: usize,
    plane: &[i8],
    padded: &mut [f32],
    out: &mut [i8],
) {
    let w = layer.width;
    let (ow, pw) = (layer.output_width(), w + 2);
    let evens = pw.div_ceil(2);
    let zero_point = vdupq_n_f32(layer.input_zero_point);
    for (y, source) in plane.chunks_exact(w).enumerate() {
        let row = &mut padded[(y + 1) * pw..(y + 2) * pw];
        let mut x = 0;
        if S == 1 {
            while x + LANES <= w {
                let bytes = vld1_s8(source.as_ptr().add(x));
                Eight::from_bytes(bytes, zero_point).store(row.as_mut_ptr().add(x + 1));
                x += LANES;
            }
            for (d, v) in row[x + 1..=w].iter_mut().zip(&source[x..]) {
                *d = f32::from(*v) - layer.input_zero_point;
            }
        } else {
            // Input column x is padded column x + 1: even x go to the odd half.
            let (even_half, odd_half) = row.split_at_mut(evens);
            while x + 2 * LANES <= w {
                let pair = vld2_s8(source.as_ptr().add(x));
                Eight::from_bytes(pair.0, zero_point).store(odd_half.as_mut_ptr().add(x / 2));
                Eight::from_bytes(pair.1, zero_point).store(even_half.as_mut_ptr().add(x / 2 + 1));
                x += 2 * LANES;
            }
            for (x, v) in source.iter().enumerate().skip(x) {
                let value = f32::from(*v) - layer.input_zero_point;
                if x % 2 == 0 {
                    odd_half[x / 2] = value;
                } else {
                    even_half[x / 2 + 1] = value;
                }
            }
        }
    }
    let (group, lane) = (channel / LANES, channel % LANES);
    let weights: [Eight; 9] =
        std::array::from_fn(|tap| Eight::splat(layer.weights[(group * 9 + tap) * LANES + lane]));
    let multiplier = Eight::splat(layer.multiplier[channel]);
    let offset = Eight::splat(layer.offset[channel]);
    let quantizer = Quantizer::new(layer.grid);
    let tap_columns: [usize; 3] = if S == 1 { [0, 1, 2] } else { [0, evens, 1] };
    for (oy, out_row) in out.chunks_exact_mut(ow).enumerate() {
        let taps: [*const f32; 9] = std::array::from_fn(|tap| {
            padded
                .as_ptr()
                .add((oy * S + tap / 3) * pw + tap_columns[tap % 3])
        });
        let mut ox = 0;
        while ox + POSITIONS * LANES <= ow {
            let mut sums = [Eight::zero(); POSITIONS];
            for (tap, weight) in taps.iter().zip(&weights) {
                for (i, sum) in sums.iter_mut().enumerate() {
                    *sum = sum.add_product(*weight, Eight::load(tap.add(ox + i * LANES)));
                }
            }
            for (i, sum) in sums.iter().enumerate() {
                let target = out_row.as_mut_ptr().add(ox + i * LANES);
                quantizer.store(*sum, multiplier, offset, target, LANES);
            }
            ox += POSITIONS * LANES;
        }
        while ox < ow {
            let mut sum = Eight::zero();
            for (tap, weight) in taps.iter().zip(&weights) {
                sum = sum.add_product(*weight, Eight::load(tap.add(ox)));
            }
            let lanes = LANES.min(ow - ox);
            quantizer.store(sum, multiplier, offset, out_row.as_mut_ptr().add(ox), lanes);
            ox += LANES;
        }
    }
}
