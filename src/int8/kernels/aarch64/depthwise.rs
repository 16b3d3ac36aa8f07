//! The grouped depthwise loops ([`grouped_depthwise`]) on aarch64 with NEON, which every
//! aarch64 CPU has: a group of eight channels in two vectors of four.

use std::arch::aarch64::*;

use super::requantize::{Quantizer, Requantize};
use super::vectors::Eight;
use crate::int8::grid::OutputGrid;
use crate::int8::kernels::grouped_depthwise::{self, GroupVector, GroupedLayer, LANES};
use crate::int8::kernels::triple_depthwise::TripleDepthwise;
use crate::int8::kernels::KernelSet;

impl GroupVector for Eight {
    type Grid = Quantizer;

    #[inline(always)]
    fn zero() -> Self {
        Eight::zero()
    }

    #[inline(always)]
    fn splat(value: f32) -> Self {
        Eight::splat(value)
    }

    #[inline(always)]
    unsafe fn load(at: *const f32) -> Self {
        Eight::load(at)
    }

    #[inline(always)]
    unsafe fn store(self, at: *mut f32) {
        Eight::store(self, at)
    }

    #[inline(always)]
    fn add_product(self, weight: Self, x: Self) -> Self {
        Eight::add_product(self, weight, x)
    }

    #[inline(always)]
    unsafe fn from_bytes(source: *const i8, zero_point: f32) -> Self {
        Eight::from_bytes(vld1_s8(source), vdupq_n_f32(zero_point))
    }

    #[inline(always)]
    unsafe fn from_byte_pairs(source: *const i8, zero_point: f32) -> (Self, Self) {
        let pair = vld2_s8(source);
        let zero_point = vdupq_n_f32(zero_point);
        (
            Eight::from_bytes(pair.0, zero_point),
            Eight::from_bytes(pair.1, zero_point),
        )
    }

    #[inline(always)]
    fn grid(grid: OutputGrid) -> Quantizer {
        Quantizer::new(grid)
    }

    #[inline(always)]
    unsafe fn store_quantized(
        self,
        multiplier: Self,
        offset: Self,
        grid: &Quantizer,
        target: *mut i8,
    ) {
        grid.store(self, multiplier, offset, target, LANES)
    }
}

/// [`grouped_depthwise::convolve_rows`] with NEON; `false`, with nothing written, for a set
/// other than the aarch64 ones or a shape the grouped layer refuses.
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
    // SAFETY: the sizes were checked against the layer's shape; NEON is part of every aarch64
    // target.
    unsafe { grouped_depthwise::convolve_rows::<Eight>(layer, input, first_row, band_rows, out) };
    true
}

/// [`grouped_depthwise::convolve_planes`] with NEON; `false`, with nothing written, where
/// [`convolve_rows`] would be.
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
    // SAFETY: as in `convolve_rows`.
    unsafe { grouped_depthwise::convolve_planes::<Eight>(layer, input, first, out) };
    true
}

/// [`TripleDepthwise::convolve_rows_pairs`] on the NEON set; `false`, with nothing written,
/// for another set, a shape the layer refuses or weights holding -128.
pub fn convolve_rows_pairs(
    set: KernelSet,
    layer: &TripleDepthwise,
    input: &[i8],
    first_row: usize,
    band_rows: usize,
    out: &mut [i8],
) -> bool {
    set.has_neon() && layer.convolve_rows_pairs(input, first_row, band_rows, out)
}

/// [`TripleDepthwise::convolve_planes_pairs`] on the NEON set; `false`, with nothing written,
/// where [`convolve_rows_pairs`] would be.
pub fn convolve_planes_pairs(
    set: KernelSet,
    layer: &TripleDepthwise,
    input: &[i8],
    first: usize,
    out: &mut [i8],
) -> bool {
    set.has_neon() && layer.convolve_planes_pairs(input, first, out)
}

/// [`TripleDepthwise::convolve_rows`] on the dot-product set; `false`, with nothing written, for
/// another set or a shape the layer refuses.
pub fn convolve_rows_dot(
    set: KernelSet,
    layer: &TripleDepthwise,
    input: &[i8],
    first_row: usize,
    band_rows: usize,
    out: &mut [i8],
) -> bool {
    // SAFETY: a set with the dot-product instructions exists only on a CPU that has them.
    set.has_dotprod() && unsafe { layer.convolve_rows(input, first_row, band_rows, out) }
}

/// [`TripleDepthwise::convolve_planes`] on the dot-product set; `false`, with nothing written,
/// for another set or a shape the layer refuses.
pub fn convolve_planes_dot(
    set: KernelSet,
    layer: &TripleDepthwise,
    input: &[i8],
    first: usize,
    out: &mut [i8],
) -> bool {
    // SAFETY: a set with the dot-product instructions exists only on a CPU that has them.
    set.has_dotprod() && unsafe { layer.convolve_planes(input, first, out) }
}
