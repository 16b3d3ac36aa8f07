//! The [`FloatVector`] of aarch64: four f32 lanes in one NEON vector.

use std::arch::aarch64::*;

use super::requantize::Quantizer;
use super::vectors::{Eight, LANES};
use crate::int8::grid::OutputGrid;
use crate::int8::kernels::fixed_order::{FloatLoop, FloatVector};

/// Four f32 lanes in one NEON vector.
#[derive(Clone, Copy)]
pub struct NeonLanes(float32x4_t);

// SAFETY (every unsafe block below): NEON is part of every aarch64 target; pointers are as the
// trait documents.
impl FloatVector for NeonLanes {
    const LANES: usize = 4;
    const SHARED_VECTORS: usize = 3;

    #[inline(always)]
    fn zero() -> Self {
        unsafe { NeonLanes(vdupq_n_f32(0.0)) }
    }

    #[inline(always)]
    fn splat(value: f32) -> Self {
        unsafe { NeonLanes(vdupq_n_f32(value)) }
    }

    #[inline(always)]
    unsafe fn load(at: *const f32) -> Self {
        NeonLanes(vld1q_f32(at))
    }

    #[inline(always)]
    unsafe fn store(self, at: *mut f32) {
        vst1q_f32(at, self.0)
    }

    #[inline(always)]
    fn mul_add(self, weight: Self, x: Self) -> Self {
        unsafe { NeonLanes(vfmaq_f32(self.0, weight.0, x.0)) }
    }

    #[inline(always)]
    fn add(self, other: Self) -> Self {
        unsafe { NeonLanes(vaddq_f32(self.0, other.0)) }
    }

    /// `fmaxnm` takes the number where one operand is NaN.
    #[inline(always)]
    fn max(self, other: Self) -> Self {
        unsafe { NeonLanes(vmaxnmq_f32(self.0, other.0)) }
    }

    /// `fminnm` takes the number where one operand is NaN.
    #[inline(always)]
    fn min(self, other: Self) -> Self {
        unsafe { NeonLanes(vminnmq_f32(self.0, other.0)) }
    }

    /// Sixteen values at a time on the [`Quantizer`] of the matrix and depthwise kernels.
    #[inline(always)]
    fn quantize_run(values: &[f32], scale: f32, grid: OutputGrid, out: &mut [i8]) {
        const STEP: usize = 2 * LANES;
        let len = values.len().min(out.len());
        let whole = len / STEP * STEP;
        let quantizer = Quantizer::new(grid);
        // SAFETY: NEON is part of every aarch64 target.
        let scales = unsafe { vdupq_n_f32(scale) };
        if grid.high_byte() == i16::from(i8::MAX) {
            quantize_vectors(values, &mut out[..whole], |x| {
                quantizer.scaled_bytes::<true>(x, scales)
            });
        } else {
            quantize_vectors(values, &mut out[..whole], |x| {
                quantizer.scaled_bytes::<false>(x, scales)
            });
        }
        for (o, v) in out[whole..len].iter_mut().zip(&values[whole..len]) {
            *o = grid.quantize(v * scale);
        }
    }

    /// Whole vectors of four weights, each lane broadcast from its vector, which `fmla` takes
    /// by element.
    #[inline(always)]
    fn splat_each<const C: usize>(weights: &[f32; C]) -> [Self; C] {
        if !C.is_multiple_of(4) {
            return std::array::from_fn(|c| Self::splat(weights[c]));
        }
        std::array::from_fn(|c| {
            // SAFETY: `c / 4 * 4 + 3 < C`, as C is a multiple of four.
            unsafe {
                let four = vld1q_f32(weights.as_ptr().add(c / 4 * 4));
                NeonLanes(match c % 4 {
                    0 => vdupq_laneq_f32::<0>(four),
                    1 => vdupq_laneq_f32::<1>(four),
                    2 => vdupq_laneq_f32::<2>(four),
                    _ => vdupq_laneq_f32::<3>(four),
                })
            }
        })
    }
}

/// `out[at..at + 16] = bytes(values[at..at + 16])` for every sixteen values of `out` (a
/// multiple of sixteen long, no longer than `values`).
#[inline(always)]
fn quantize_vectors(values: &[f32], out: &mut [i8], bytes: impl Fn([Eight; 2]) -> int8x16_t) {
    const STEP: usize = 2 * LANES;
    debug_assert!(out.len().is_multiple_of(STEP) && out.len() <= values.len());
    for at in (0..out.len()).step_by(STEP) {
        // SAFETY: `at + STEP <= out.len() <= values.len()`, inside both slices.
        unsafe {
            let x = values.as_ptr().add(at);
            let x = [Eight::load(x), Eight::load(x.add(LANES))];
            vst1q_s8(out.as_mut_ptr().add(at), bytes(x));
        }
    }
}

/// Runs `kernel` on NEON vectors.
pub fn run_float_neon<L: FloatLoop>(kernel: L) {
    kernel.run::<NeonLanes>()
}
