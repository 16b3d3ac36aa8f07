//! Depthwise kernels for x86-64 CPUs with AVX2 and FMA, on channels-last tensors
//! ([`convolve_rows`]) and on channels-first planes ([`convolve_planes`]). The input is copied,
//! zero point removed and zero-padded, into f32 planes laid out so that every tap of an output
//! sits at a fixed distance from the output's first tap; several outputs are summed at once in
//! registers and requantized on the vectors.
//!
//! The values are the portable loops': products and partial sums of integer values stay below
//! 2^24, so they are exact in f32 with or without fused multiply-adds, and the requantization
//! multiplies then adds, as the portable loops do.

use std::arch::x86_64::*;

use crate::int8::grid::OutputGrid;
use crate::int8::kernels::grouped_depthwise::{GroupedLayer, LANES};
use crate::int8::kernels::KernelSet;

/// Output positions summed at once.
const POSITIONS: usize = 4;

/// Convolves output rows `first_row..` (as many as `out` holds, positions by channels) of
/// channels-last `input`, `band_rows` output rows at a time; `false`, with nothing written,
/// for a kernel set without AVX2 and FMA or on a stride other than 1 and 2.
pub fn convolve_rows(
    set: KernelSet,
    layer: &GroupedLayer,
    input: &[i8],
    first_row: usize,
    band_rows: usize,
    out: &mut [i8],
) -> bool {
    if !set.has_avx2_fma() || !layer.fits_rows(input, out) {
        return false;
    }
    let row_len = layer.output_width() * layer.channels;
    let mut plane = Vec::new();
    for (band, out) in out.chunks_mut(band_rows.max(1) * row_len).enumerate() {
        let first = first_row + band * band_rows.max(1);
        // SAFETY: a set with AVX2 and FMA exists only on a CPU that has them, and the sizes of `input`,
        // `out` and the layer's grouped values were checked against its shape.
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
#[target_feature(enable = "avx2,fma")]
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
    let zero_point = _mm256_set1_ps(layer.input_zero_point);
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
                let bytes = if lanes == LANES {
                    _mm_loadl_epi64(source.cast())
                } else {
                    let mut tail = [0i8; LANES];
                    std::ptr::copy_nonoverlapping(source, tail.as_mut_ptr(), lanes);
                    _mm_loadl_epi64(tail.as_ptr().cast())
                };
                let values = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
                _mm256_storeu_ps(target, _mm256_sub_ps(values, zero_point));
                source = source.add(c);
                target = target.add(LANES);
            }
        }
        let weights = layer.weights.as_ptr().add(group * 9 * LANES);
        let multiplier = _mm256_loadu_ps(layer.multiplier.as_ptr().add(group * LANES));
        let offset = _mm256_loadu_ps(layer.offset.as_ptr().add(group * LANES));
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
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tap_sums<const S: usize, const P: usize>(
    rows: &[*const f32; 3],
    weights: *const f32,
    first: usize,
) -> [__m256; P] {
    let mut sums = [_mm256_setzero_ps(); P];
    for (ky, row) in rows.iter().enumerate() {
        let row = row.add(first * S * LANES);
        for kx in 0..3 {
            let weight = _mm256_loadu_ps(weights.add((ky * 3 + kx) * LANES));
            for (i, sum) in sums.iter_mut().enumerate() {
                let x = _mm256_loadu_ps(row.add((i * S + kx) * LANES));
                *sum = _mm256_fmadd_ps(weight, x, *sum);
            }
        }
    }
    sums
}

struct Quantizer {
    low: __m256,
    high: __m256,
    zero_point: __m256i,
}

impl Quantizer {
    #[target_feature(enable = "avx2,fma")]
    fn new(grid: OutputGrid) -> Quantizer {
        Quantizer {
            low: _mm256_set1_ps(grid.low),
            high: _mm256_set1_ps(grid.high),
            zero_point: _mm256_set1_epi32(i32::from(grid.zero_point)),
        }
    }

    /// Stores the first `lanes` of `grid.quantize(sum * multiplier + offset)` at `target`
    /// ([`OutputGrid::quantize`] on vectors: NaN goes to the lowest step, rounding is to the
    /// nearest, ties to even).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn store(
        &self,
        sum: __m256,
        multiplier: __m256,
        offset: __m256,
        target: *mut i8,
        lanes: usize,
    ) {
        let steps = _mm256_add_ps(_mm256_mul_ps(sum, multiplier), offset);
        let clamped = _mm256_min_ps(_mm256_max_ps(steps, self.low), self.high);
        let values = _mm256_add_epi32(_mm256_cvtps_epi32(clamped), self.zero_point);
        let words = _mm_packs_epi32(
            _mm256_castsi256_si128(values),
            _mm256_extracti128_si256(values, 1),
        );
        let bytes = _mm_packs_epi16(words, words);
        if lanes == LANES {
            _mm_storel_epi64(target.cast(), bytes);
        } else {
            let mut all = [0i8; LANES];
            _mm_storel_epi64(all.as_mut_ptr().cast(), bytes);
            std::ptr::copy_nonoverlapping(all.as_ptr(), target, lanes);
        }
    }
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
    if !set.has_avx2_fma() || !layer.fits_planes(input, first, out) {
        return false;
    }
    let (h, w, plane_len) = (layer.height, layer.width, layer.output_plane_len());
    let mut padded = vec![0f32; (h + 2) * (w + 2) + LANES];
    for (at, out) in out.chunks_exact_mut(plane_len).enumerate() {
        let channel = first + at;
        let plane = &input[channel * h * w..(channel + 1) * h * w];
        // SAFETY: a set with AVX2 and FMA exists only on a CPU that has them; `plane` and `out` have the
        // layer's input and output plane sizes, and `padded` its padded plane's.
        unsafe {
            match layer.stride {
                1 => convolve_plane::<1>(layer, channel, plane, &mut padded, out),
                _ => convolve_plane::<2>(layer, channel, plane, &mut padded, out),
            }
        }
    }
    true
}

#[target_feature(enable = "avx2,fma")]
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
    let zero_point = _mm256_set1_ps(layer.input_zero_point);
    let convert =
        |bytes: __m128i| _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)), zero_point);
    let even_then_odd = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    for (y, source) in plane.chunks_exact(w).enumerate() {
        let row = &mut padded[(y + 1) * pw..(y + 2) * pw];
        let mut x = 0;
        if S == 1 {
            while x + LANES <= w {
                let bytes = _mm_loadl_epi64(source.as_ptr().add(x).cast());
                _mm256_storeu_ps(row.as_mut_ptr().add(x + 1), convert(bytes));
                x += LANES;
            }
            for (d, v) in row[x + 1..=w].iter_mut().zip(&source[x..]) {
                *d = f32::from(*v) - layer.input_zero_point;
            }
        } else {
            // Input column x is padded column x + 1: even x go to the odd half.
            let (even_half, odd_half) = row.split_at_mut(evens);
            while x + 2 * LANES <= w {
                let bytes = _mm_shuffle_epi8(
                    _mm_loadu_si128(source.as_ptr().add(x).cast()),
                    even_then_odd,
                );
                _mm256_storeu_ps(odd_half.as_mut_ptr().add(x / 2), convert(bytes));
                _mm256_storeu_ps(
                    even_half.as_mut_ptr().add(x / 2 + 1),
                    convert(_mm_srli_si128(bytes, 8)),
                );
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
    let weights: [__m256; 9] =
        std::array::from_fn(|tap| _mm256_set1_ps(layer.weights[(group * 9 + tap) * LANES + lane]));
    let multiplier = _mm256_set1_ps(layer.multiplier[channel]);
    let offset = _mm256_set1_ps(layer.offset[channel]);
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
            let mut sums = [_mm256_setzero_ps(); POSITIONS];
            for (tap, weight) in taps.iter().zip(&weights) {
                for (i, sum) in sums.iter_mut().enumerate() {
                    let x = _mm256_loadu_ps(tap.add(ox + i * LANES));
                    *sum = _mm256_fmadd_ps(*weight, x, *sum);
                }
            }
            for (i, sum) in sums.iter().enumerate() {
                let target = out_row.as_mut_ptr().add(ox + i * LANES);
                quantizer.store(*sum, multiplier, offset, target, LANES);
            }
            ox += POSITIONS * LANES;
        }
        while ox < ow {
            let mut sum = _mm256_setzero_ps();
            for (tap, weight) in taps.iter().zip(&weights) {
                sum = _mm256_fmadd_ps(*weight, _mm256_loadu_ps(tap.add(ox)), sum);
            }
            let lanes = LANES.min(ow - ox);
            quantizer.store(sum, multiplier, offset, out_row.as_mut_ptr().add(ox), lanes);
            ox += LANES;
        }
    }
}
