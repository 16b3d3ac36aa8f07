//! The channels-last depthwise kernel for x86-64 CPUs with AVX2 and FMA. Each band of input
//! rows is copied, zero point removed and zero-padded, into f32 planes of eight channels (one
//! vector per position), so that every tap of an output sits at a fixed distance from the
//! output's first tap; four output positions are summed at once and requantized on the vectors.
//!
//! The values are the portable loop's: products and partial sums of integer values stay below
//! 2^24, so they are exact in f32 with or without fused multiply-adds, and the requantization
//! multiplies then adds, as the portable loop does.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::requant::OutputGrid;

/// Channels one vector holds.
pub const LANES: usize = 8;
/// Output positions summed at once.
const POSITIONS: usize = 4;

/// Whether this CPU runs [`convolve_rows`].
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A depthwise 3x3 layer (padding 1) on a channels-last int8 tensor, its per-channel values
/// grouped by [`LANES`] channels and zero-padded to whole groups.
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

    fn output_width(&self) -> usize {
        (self.width - 1) / self.stride + 1
    }
}

/// Convolves output rows `first_row..` (as many as `out` holds, positions by channels) of
/// channels-last `input`, `band_rows` output rows at a time; `false`, with nothing written,
/// on a CPU without AVX2 and FMA (see [`available`]) or on a stride other than 1 and 2.
pub fn convolve_rows(
    layer: &GroupedLayer,
    input: &[i8],
    first_row: usize,
    band_rows: usize,
    out: &mut [i8],
) -> bool {
    let (c, h, w) = (layer.channels, layer.height, layer.width);
    let row_len = layer.output_width() * c;
    if !available()
        || !matches!(layer.stride, 1 | 2)
        || input.len() != h * w * c
        || row_len == 0
        || !out.len().is_multiple_of(row_len)
        || layer.weights.len() != c.div_ceil(LANES) * 9 * LANES
    {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let mut plane = Vec::new();
        for (band, out) in out.chunks_mut(band_rows.max(1) * row_len).enumerate() {
            let first = first_row + band * band_rows.max(1);
            // SAFETY: the CPU supports AVX2 and FMA, checked above, and the sizes of `input`,
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
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// One band, a group of [`LANES`] channels at a time: the group's padded input rows into
/// `plane` (`[band input rows, width + 2, LANES]`), then the group's output rows.
#[cfg(target_arch = "x86_64")]
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
    let quantizer = Quantizer {
        low: _mm256_set1_ps(layer.grid.low),
        high: _mm256_set1_ps(layer.grid.high),
        zero_point: _mm256_set1_epi32(i32::from(layer.grid.zero_point)),
    };
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
#[cfg(target_arch = "x86_64")]
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

#[cfg(target_arch = "x86_64")]
struct Quantizer {
    low: __m256,
    high: __m256,
    zero_point: __m256i,
}

#[cfg(target_arch = "x86_64")]
impl Quantizer {
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
