//! [`OutputGrid::quantize`] on NEON vectors: eight i32 sums (as f32) times a multiplier plus an
//! offset, rounded and clamped to bytes, in general ([`Quantizer`]) and by the saturating
//! narrowings alone where the grid spans the whole byte range ([`SaturatingQuantizer`]), one of
//! the two chosen once per layer call ([`with_requantizer!`]).

use std::arch::aarch64::*;

use super::vectors::{Eight, LANES};
use crate::int8::grid::OutputGrid;

/// [`OutputGrid::quantize`] on vectors.
#[derive(Clone, Copy)]
pub struct Quantizer {
    low: float32x4_t,
    /// `high + zero_point`, in every lane.
    high_byte: int16x8_t,
    zero_point: int16x8_t,
}

impl Quantizer {
    /// The quantizer of `grid`.
    #[inline]
    pub fn new(grid: OutputGrid) -> Quantizer {
        let zero_point = i16::from(grid.zero_point);
        // SAFETY: NEON is part of every aarch64 target.
        unsafe {
            Quantizer {
                low: vdupq_n_f32(grid.low),
                high_byte: vdupq_n_s16(grid.high_byte()),
                zero_point: vdupq_n_s16(zero_point),
            }
        }
    }

    /// `round(max(sum * multiplier + offset, low))` for four lanes: NaN goes to the lowest step
    /// (`fmaxnm` takes the number), rounding is to the nearest, ties to even (`fcvtns`,
    /// saturating).
    #[inline(always)]
    fn rounded_above_low(
        &self,
        sum: float32x4_t,
        multiplier: float32x4_t,
        offset: float32x4_t,
    ) -> int32x4_t {
        // SAFETY: NEON is part of every aarch64 target.
        unsafe {
            let steps = vaddq_f32(vmulq_f32(sum, multiplier), offset);
            vcvtnq_s32_f32(vmaxnmq_f32(steps, self.low))
        }
    }

    /// Eight quantized lanes. The grid's `low` and `high` are whole steps, so clamping to
    /// `high` after rounding gives what clamping before it does; the result lies in
    /// `[low + zero_point, high + zero_point]`, inside the i8 range.
    #[inline(always)]
    pub fn bytes(&self, sum: Eight, multiplier: Eight, offset: Eight) -> int8x8_t {
        let low = self.rounded_above_low(sum.0, multiplier.0, offset.0);
        let high = self.rounded_above_low(sum.1, multiplier.1, offset.1);
        // SAFETY: NEON is part of every aarch64 target.
        unsafe {
            let words = vcombine_s16(vqmovn_s32(low), vqmovn_s32(high));
            let shifted = vminq_s16(vqaddq_s16(words, self.zero_point), self.high_byte);
            vmovn_s16(shifted)
        }
    }

    /// Sixteen quantized lanes of `x * scale` (no offset), as [`Quantizer::bytes`] gives them
    /// with a zero offset. With `TOP` (the grid's `high + zero_point` is 127) the saturating
    /// narrowing clamps above, without `smin`.
    #[inline(always)]
    pub fn scaled_bytes<const TOP: bool>(&self, x: [Eight; 2], scale: float32x4_t) -> int8x16_t {
        // SAFETY: NEON is part of every aarch64 target.
        unsafe {
            let round = |v: float32x4_t| vcvtnq_s32_f32(vmaxnmq_f32(vmulq_f32(v, scale), self.low));
            let shifted = |e: Eight| {
                vqaddq_s16(
                    vcombine_s16(vqmovn_s32(round(e.0)), vqmovn_s32(round(e.1))),
                    self.zero_point,
                )
            };
            if TOP {
                return vcombine_s8(vqmovn_s16(shifted(x[0])), vqmovn_s16(shifted(x[1])));
            }
            let words = |e: Eight| vminq_s16(shifted(e), self.high_byte);
            vcombine_s8(vmovn_s16(words(x[0])), vmovn_s16(words(x[1])))
        }
    }
}

/// Eight i32 sums (as f32) to bytes, `grid(sum * multiplier + offset)` as
/// [`OutputGrid::quantize`] has it.
pub trait Requantize: Copy {
    /// Eight quantized lanes.
    fn bytes(&self, sum: Eight, multiplier: Eight, offset: Eight) -> int8x8_t;

    /// Stores the first `lanes` of the eight quantized lanes at `target`.
    ///
    /// # Safety
    /// `target` points at room for `lanes` bytes.
    #[inline(always)]
    unsafe fn store(
        &self,
        sum: Eight,
        multiplier: Eight,
        offset: Eight,
        target: *mut i8,
        lanes: usize,
    ) {
        let bytes = self.bytes(sum, multiplier, offset);
        if lanes == LANES {
            vst1_s8(target, bytes);
        } else {
            let mut all = [0i8; LANES];
            vst1_s8(all.as_mut_ptr(), bytes);
            std::ptr::copy_nonoverlapping(all.as_ptr(), target, lanes);
        }
    }
}

impl Requantize for Quantizer {
    #[inline(always)]
    fn bytes(&self, sum: Eight, multiplier: Eight, offset: Eight) -> int8x8_t {
        Quantizer::bytes(self, sum, multiplier, offset)
    }
}

/// [`Quantizer`] on a grid of the whole i8 range (`low + zero_point = -128`, `high +
/// zero_point = 127`: every unclipped or ReLU-clipped layer calibrated below its clip) for
/// finite scales, so that `sum * multiplier + offset` is never NaN: rounding (`fcvtns`) and the
/// saturating narrowings alone clamp, without `fmaxnm` and `smin` (12 instructions per eight
/// lanes, against 15).
#[derive(Clone, Copy)]
pub struct SaturatingQuantizer {
    zero_point: int16x8_t,
}

impl Requantize for SaturatingQuantizer {
    #[inline(always)]
    fn bytes(&self, sum: Eight, multiplier: Eight, offset: Eight) -> int8x8_t {
        // SAFETY: NEON is part of every aarch64 target.
        unsafe {
            let round = |s, m, o| vcvtnq_s32_f32(vaddq_f32(vmulq_f32(s, m), o));
            let low = round(sum.0, multiplier.0, offset.0);
            let high = round(sum.1, multiplier.1, offset.1);
            let words = vcombine_s16(vqmovn_s32(low), vqmovn_s32(high));
            vqmovn_s16(vqaddq_s16(words, self.zero_point))
        }
    }
}

/// The requantizer of a layer on `grid` whose multipliers and offsets are all finite when
/// `finite_scales`: [`SaturatingQuantizer`] where it gives the same bytes, else [`Quantizer`].
pub enum Requantizer {
    /// A grid of the whole i8 range, finite scales.
    Saturating(SaturatingQuantizer),
    /// Any other grid or scales.
    General(Quantizer),
}

impl Requantizer {
    /// See [`Requantizer`].
    #[inline]
    pub fn choose(grid: OutputGrid, finite_scales: bool) -> Requantizer {
        if finite_scales && grid.is_whole_range() {
            // SAFETY: NEON is part of every aarch64 target.
            let zero_point = unsafe { vdupq_n_s16(i16::from(grid.zero_point)) };
            Requantizer::Saturating(SaturatingQuantizer { zero_point })
        } else {
            Requantizer::General(Quantizer::new(grid))
        }
    }
}

/// Evaluates `$body` with `$q` bound to the [`Requantize`] that [`Requantizer::choose`] picks
/// for `$grid` and `$finite`, so that the loops in `$body` are compiled once per kind and
/// choose none inside.
macro_rules! with_requantizer {
    ($grid:expr, $finite:expr, |$q:ident| $body:expr) => {
        match $crate::int8::kernels::aarch64::requantize::Requantizer::choose($grid, $finite) {
            $crate::int8::kernels::aarch64::requantize::Requantizer::Saturating($q) => $body,
            $crate::int8::kernels::aarch64::requantize::Requantizer::General($q) => $body,
        }
    };
}
pub(crate) use with_requantizer;
