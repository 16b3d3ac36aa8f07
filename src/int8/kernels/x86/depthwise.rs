//! The grouped depthwise loops ([`grouped_depthwise`]) on x86-64 CPUs with AVX2 and FMA: a group
//! of eight channels in one 256-bit vector.

use std::arch::x86_64::*;

pub use super::vnni_depthwise::{convolve_planes_dot, convolve_rows_dot};
use crate::int8::grid::OutputGrid;
use crate::int8::kernels::grouped_depthwise::{self, GroupVector, GroupedLayer};
use crate::int8::kernels::KernelSet;

/// Eight f32 lanes in one AVX vector.
#[derive(Clone, Copy)]
struct Avx2Group(__m256);

/// An output grid in AVX vectors.
struct Avx2Grid {
    low: __m256,
    high: __m256,
    zero_point: __m256i,
}

// SAFETY (every unsafe block below): the methods are only called from the loops of
// `grouped_depthwise`, compiled inside this file's `avx2,fma` entry points, which run only on a
// CPU with AVX2 and FMA; pointers are as the trait documents.
impl GroupVector for Avx2Group {
    type Grid = Avx2Grid;

    #[inline(always)]
    fn zero() -> Self {
        unsafe { Avx2Group(_mm256_setzero_ps()) }
    }

    #[inline(always)]
    fn splat(value: f32) -> Self {
        unsafe { Avx2Group(_mm256_set1_ps(value)) }
    }

    #[inline(always)]
    unsafe fn load(at: *const f32) -> Self {
        Avx2Group(_mm256_loadu_ps(at))
    }

    #[inline(always)]
    unsafe fn store(self, at: *mut f32) {
        _mm256_storeu_ps(at, self.0)
    }

    #[inline(always)]
    fn add_product(self, weight: Self, x: Self) -> Self {
        unsafe { Avx2Group(_mm256_fmadd_ps(weight.0, x.0, self.0)) }
    }

    #[inline(always)]
    unsafe fn from_bytes(source: *const i8, zero_point: f32) -> Self {
        bytes_to_f32(_mm_loadl_epi64(source.cast()), zero_point)
    }

    #[inline(always)]
    unsafe fn from_byte_pairs(source: *const i8, zero_point: f32) -> (Self, Self) {
        let even_then_odd = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
        let bytes = _mm_shuffle_epi8(_mm_loadu_si128(source.cast()), even_then_odd);
        (
            bytes_to_f32(bytes, zero_point),
            bytes_to_f32(_mm_srli_si128(bytes, 8), zero_point),
        )
    }

    #[inline(always)]
    fn grid(grid: OutputGrid) -> Avx2Grid {
        unsafe {
            Avx2Grid {
                low: _mm256_set1_ps(grid.low),
                high: _mm256_set1_ps(grid.high),
                zero_point: _mm256_set1_epi32(i32::from(grid.zero_point)),
            }
        }
    }

    /// `max` returns its second operand for a NaN first one: NaN goes to `low`.
    #[inline(always)]
    unsafe fn store_quantized(
        self,
        multiplier: Self,
        offset: Self,
        grid: &Avx2Grid,
        target: *mut i8,
    ) {
        let steps = _mm256_add_ps(_mm256_mul_ps(self.0, multiplier.0), offset.0);
        let clamped = _mm256_min_ps(_mm256_max_ps(steps, grid.low), grid.high);
        let values = _mm256_add_epi32(_mm256_cvtps_epi32(clamped), grid.zero_point);
        let words = _mm_packs_epi32(
            _mm256_castsi256_si128(values),
            _mm256_extracti128_si256(values, 1),
        );
        _mm_storel_epi64(target.cast(), _mm_packs_epi16(words, words));
    }
}

/// The low eight bytes of `bytes` as f32, minus `zero_point`.
#[inline(always)]
unsafe fn bytes_to_f32(bytes: __m128i, zero_point: f32) -> Avx2Group {
    let values = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
    Avx2Group(_mm256_sub_ps(values, _mm256_set1_ps(zero_point)))
}

/// [`grouped_depthwise::convolve_rows`] with AVX2 and FMA; `false`, with nothing written, for a
/// kernel set without them or a shape the grouped layer refuses.
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
    // SAFETY: a set with AVX2 and FMA exists only on a CPU that has them; the sizes were
    // checked against the layer's shape.
    unsafe { rows_avx2(layer, input, first_row, band_rows, out) };
    true
}

#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2(
    layer: &GroupedLayer,
    input: &[i8],
    first_row: usize,
    band_rows: usize,
    out: &mut [i8],
) {
    grouped_depthwise::convolve_rows::<Avx2Group>(layer, input, first_row, band_rows, out)
}

/// [`grouped_depthwise::convolve_planes`] with AVX2 and FMA; `false`, with nothing written,
/// where [`convolve_rows`] would be.
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
    // SAFETY: as in `convolve_rows`.
    unsafe { planes_avx2(layer, input, first, out) };
    true
}

#[target_feature(enable = "avx2,fma")]
unsafe fn planes_avx2(layer: &GroupedLayer, input: &[i8], first: usize, out: &mut [i8]) {
    grouped_depthwise::convolve_planes::<Avx2Group>(layer, input, first, out)
}
