//! Eight f32 lanes in two NEON vectors and a 4x4 transpose of 32-bit lanes: building blocks of
//! the aarch64 depthwise and matrix kernels (their requantization is in [`super::requantize`]).

use std::arch::aarch64::*;

/// Lanes of an [`Eight`].
pub const LANES: usize = 8;

/// Eight f32 lanes in two NEON vectors: lanes 0-3, then 4-7.
#[derive(Clone, Copy)]
pub struct Eight(pub(super) float32x4_t, pub(super) float32x4_t);

impl Eight {
    /// Eight zeros.
    #[inline(always)]
    pub fn zero() -> Eight {
        Eight::splat(0.0)
    }

    /// `value` in every lane.
    #[inline(always)]
    pub fn splat(value: f32) -> Eight {
        // SAFETY: NEON is part of every aarch64 target.
        unsafe { Eight(vdupq_n_f32(value), vdupq_n_f32(value)) }
    }

    /// # Safety
    /// `at` points at eight f32 values.
    #[inline(always)]
    pub unsafe fn load(at: *const f32) -> Eight {
        Eight(vld1q_f32(at), vld1q_f32(at.add(4)))
    }

    /// # Safety
    /// `at` points at room for eight f32 values.
    #[inline(always)]
    pub unsafe fn store(self, at: *mut f32) {
        vst1q_f32(at, self.0);
        vst1q_f32(at.add(4), self.1);
    }

    /// Eight bytes as f32, minus `zero_point`.
    #[inline(always)]
    pub fn from_bytes(bytes: int8x8_t, zero_point: float32x4_t) -> Eight {
        // SAFETY: NEON is part of every aarch64 target.
        unsafe {
            let words = vmovl_s8(bytes);
            let convert = |w: int32x4_t| vsubq_f32(vcvtq_f32_s32(w), zero_point);
            Eight(
                convert(vmovl_s16(vget_low_s16(words))),
                convert(vmovl_high_s16(words)),
            )
        }
    }

    /// `self + weight * x`.
    #[inline(always)]
    pub fn add_product(self, weight: Eight, x: Eight) -> Eight {
        // SAFETY: NEON is part of every aarch64 target.
        unsafe {
            Eight(
                vfmaq_f32(self.0, weight.0, x.0),
                vfmaq_f32(self.1, weight.1, x.1),
            )
        }
    }

    /// Eight i32 values as f32 (rounded to the nearest, as `as f32` does).
    #[inline(always)]
    pub fn from_sums(sums: [int32x4_t; 2]) -> Eight {
        // SAFETY: NEON is part of every aarch64 target.
        unsafe { Eight(vcvtq_f32_s32(sums[0]), vcvtq_f32_s32(sums[1])) }
    }
}

/// The 4x4 transpose of four vectors of 32-bit values: lane `j` of vector `i` of the result is
/// lane `i` of vector `j`.
#[inline(always)]
pub fn transpose_4x4(v: [int32x4_t; 4]) -> [int32x4_t; 4] {
    // SAFETY: NEON is part of every aarch64 target.
    unsafe {
        let (t0, t1) = (vtrn1q_s32(v[0], v[1]), vtrn2q_s32(v[0], v[1]));
        let (t2, t3) = (vtrn1q_s32(v[2], v[3]), vtrn2q_s32(v[2], v[3]));
        let wide = |t: int32x4_t| vreinterpretq_s64_s32(t);
        let narrow = |t: int64x2_t| vreinterpretq_s32_s64(t);
        [
            narrow(vtrn1q_s64(wide(t0), wide(t2))),
            narrow(vtrn1q_s64(wide(t1), wide(t3))),
            narrow(vtrn2q_s64(wide(t0), wide(t2))),
            narrow(vtrn2q_s64(wide(t1), wide(t3))),
        ]
    }
}
