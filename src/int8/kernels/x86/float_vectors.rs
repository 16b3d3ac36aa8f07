//! [`FloatVector`]s of x86-64: sixteen lanes with AVX-512 F, eight with AVX2 and FMA, and the
//! entry points that compile a [`FloatLoop`] for each.

use std::arch::x86_64::*;

use crate::int8::kernels::fixed_order::{FloatLoop, FloatVector};

/// Sixteen f32 lanes in one AVX-512 vector.
#[derive(Clone, Copy)]
pub struct Avx512Lanes(__m512);

/// Eight f32 lanes in one AVX vector.
#[derive(Clone, Copy)]
pub struct Avx2Lanes(__m256);

// SAFETY (every unsafe block below): the methods are only called from loops compiled inside
// this file's entry points, which run only on a CPU with the vector's instructions; pointers
// are as the trait documents.
impl FloatVector for Avx512Lanes {
    const LANES: usize = 16;
    const SHARED_VECTORS: usize = 2;

    #[inline(always)]
    fn zero() -> Self {
        unsafe { Avx512Lanes(_mm512_setzero_ps()) }
    }

    #[inline(always)]
    fn splat(value: f32) -> Self {
        unsafe { Avx512Lanes(_mm512_set1_ps(value)) }
    }

    #[inline(always)]
    unsafe fn load(at: *const f32) -> Self {
        Avx512Lanes(_mm512_loadu_ps(at))
    }

    #[inline(always)]
    unsafe fn store(self, at: *mut f32) {
        _mm512_storeu_ps(at, self.0)
    }

    #[inline(always)]
    fn mul_add(self, weight: Self, x: Self) -> Self {
        unsafe { Avx512Lanes(_mm512_fmadd_ps(weight.0, x.0, self.0)) }
    }

    #[inline(always)]
    fn add(self, other: Self) -> Self {
        unsafe { Avx512Lanes(_mm512_add_ps(self.0, other.0)) }
    }

    /// `max` returns its second operand where either is NaN.
    #[inline(always)]
    fn max(self, other: Self) -> Self {
        unsafe { Avx512Lanes(_mm512_max_ps(self.0, other.0)) }
    }

    /// `min` returns its second operand where either is NaN.
    #[inline(always)]
    fn min(self, other: Self) -> Self {
        unsafe { Avx512Lanes(_mm512_min_ps(self.0, other.0)) }
    }
}

impl FloatVector for Avx2Lanes {
    const LANES: usize = 8;
    const SHARED_VECTORS: usize = 1;

    #[inline(always)]
    fn zero() -> Self {
        unsafe { Avx2Lanes(_mm256_setzero_ps()) }
    }

    #[inline(always)]
    fn splat(value: f32) -> Self {
        unsafe { Avx2Lanes(_mm256_set1_ps(value)) }
    }

    #[inline(always)]
    unsafe fn load(at: *const f32) -> Self {
        Avx2Lanes(_mm256_loadu_ps(at))
    }

    #[inline(always)]
    unsafe fn store(self, at: *mut f32) {
        _mm256_storeu_ps(at, self.0)
    }

    #[inline(always)]
    fn mul_add(self, weight: Self, x: Self) -> Self {
        unsafe { Avx2Lanes(_mm256_fmadd_ps(weight.0, x.0, self.0)) }
    }

    #[inline(always)]
    fn add(self, other: Self) -> Self {
        unsafe { Avx2Lanes(_mm256_add_ps(self.0, other.0)) }
    }

    /// `max` returns its second operand where either is NaN.
    #[inline(always)]
    fn max(self, other: Self) -> Self {
        unsafe { Avx2Lanes(_mm256_max_ps(self.0, other.0)) }
    }

    /// `min` returns its second operand where either is NaN.
    #[inline(always)]
    fn min(self, other: Self) -> Self {
        unsafe { Avx2Lanes(_mm256_min_ps(self.0, other.0)) }
    }
}

/// # Safety
/// The CPU must have AVX-512 F and BW, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
pub unsafe fn run_float_avx512<L: FloatLoop>(kernel: L) {
    kernel.run::<Avx512Lanes>()
}

/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn run_float_avx2<L: FloatLoop>(kernel: L) {
    kernel.run::<Avx2Lanes>()
}
