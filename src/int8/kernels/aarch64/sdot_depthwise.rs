//! The depthwise layers of the aarch64 dot-product set ([`TripleDepthwise`]): `sdot` sums a
//! channel's three taps of a kernel row in each 32-bit lane, so sixteen outputs take three
//! instructions per four.

use std::arch::aarch64::*;
use std::arch::asm;

use super::requantize::{with_requantizer, Requantize};
use super::vectors::{Eight, LANES};
use crate::int8::kernels::triple_depthwise::{Scratch, TripleDepthwise, GROUP, TRIPLES};

impl TripleDepthwise {
    /// Convolves output rows `first_row..` (as many as `out` holds) of channels-last `input`
    /// into channels-last `out`, `band_rows` output rows at a time; `false`, with nothing
    /// written, when the sizes do not fit the layer.
    ///
    /// # Safety
    /// The CPU has the dot-product instructions.
    pub unsafe fn convolve_rows(
        &self,
        input: &[i8],
        first_row: usize,
        band_rows: usize,
        out: &mut [i8],
    ) -> bool {
        with_requantizer!(self.grid, self.finite_scales, |grid| {
            self.for_each_band(input, first_row, band_rows, out, |first, out, scratch| {
                // SAFETY: the band fits the layer and the scratch its sizes; the CPU has the
                // instructions.
                unsafe { self.convolve_band(input, first, out, scratch, grid) }
            })
        })
    }

    #[target_feature(enable = "neon,dotprod")]
    unsafe fn convolve_band<Q: Requantize>(
        &self,
        input: &[i8],
        first_row: usize,
        out: &mut [i8],
        scratch: &mut Scratch,
        grid: Q,
    ) {
        let (c, ow) = (self.channels, self.output_width());
        let input_rows = self.band_input_rows(out.len() / (ow * c));
        let Scratch {
            triples,
            padded_row,
        } = scratch;
        for group in 0..c.div_ceil(GROUP) {
            let lanes = GROUP.min(c - group * GROUP);
            for r in 0..input_rows {
                let y = self.input_row(first_row, r);
                let row = &mut triples[r * ow * TRIPLES..(r + 1) * ow * TRIPLES];
                self.fill_triples(input, y, group, lanes, padded_row, row);
            }
            for half in 0..lanes.div_ceil(LANES) {
                let half_lanes = LANES.min(lanes - half * LANES);
                self.sum_half(triples, (group, half), half_lanes, &grid, out);
            }
        }
    }

    /// Sums and requantizes the outputs of `half` (0 or 1: eight channels, two `sdot` vectors)
    /// of channel group `group` for the band's rows, from their triples.
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn sum_half<Q: Requantize>(
        &self,
        triples: &[i8],
        (group, half): (usize, usize),
        lanes: usize,
        grid: &Q,
        out: &mut [i8],
    ) {
        let (c, s, ow) = (self.channels, self.stride, self.output_width());
        let at = group * GROUP + half * LANES;
        let weights: [[int8x16_t; 2]; 3] = std::array::from_fn(|ky| {
            std::array::from_fn(|v| {
                let vector = (group * 3 + ky) * 4 + 2 * half + v;
                vld1q_s8(self.weights.as_ptr().add(vector * 16))
            })
        });
        let start =
            [0, 4].map(|lane| start_sums(&self.weight_sums[at + lane..], self.input_zero_point));
        let multiplier = Eight::load(self.multiplier.as_ptr().add(at));
        let offset = Eight::load(self.offset.as_ptr().add(at));
        for (oy, out_row) in out.chunks_exact_mut(ow * c).enumerate() {
            let kernel_rows: [*const i8; 3] = std::array::from_fn(|ky| {
                triples
                    .as_ptr()
                    .add((oy * s + ky) * ow * TRIPLES + half * TRIPLES / 2)
            });
            let mut target = out_row.as_mut_ptr().add(at);
            for ox in 0..ow {
                let mut sums = start;
                for (ky, row) in kernel_rows.iter().enumerate() {
                    let x = row.add(ox * TRIPLES);
                    for (v, sum) in sums.iter_mut().enumerate() {
                        *sum = sdot(*sum, vld1q_s8(x.add(16 * v)), weights[ky][v]);
                    }
                }
                grid.store(Eight::from_sums(sums), multiplier, offset, target, lanes);
                target = target.add(c);
            }
        }
    }

    /// Convolves channels `first..` (as many as `out` holds, plane after plane) of
    /// channels-first `input`; `false`, with nothing written, when the sizes do not fit the
    /// layer. Each input row of a channel is laid out as triples, one per output position
    /// (four positions per vector), and sixteen outputs of a row take three `sdot` per four.
    ///
    /// # Safety
    /// The CPU has the dot-product instructions.
    pub unsafe fn convolve_planes(&self, input: &[i8], first: usize, out: &mut [i8]) -> bool {
        with_requantizer!(self.grid, self.finite_scales, |grid| {
            self.for_each_plane(input, first, out, |channel, plane, out, scratch| {
                // SAFETY: the plane fits the layer and the scratch its sizes; the CPU has the
                // instructions.
                unsafe { self.convolve_plane(channel, plane, scratch, out, grid) }
            })
        })
    }

    /// One channel's plane. The padded row holds the zero point at columns 0 and `width + 1`;
    /// its bytes past them reach only outputs past the row's end, which are not stored.
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn convolve_plane<Q: Requantize>(
        &self,
        channel: usize,
        plane: &[i8],
        scratch: &mut Scratch,
        out: &mut [i8],
        grid: Q,
    ) {
        let (w, s, ow) = (self.width, self.stride, self.output_width());
        let row_len = self.plane_row_len();
        let Scratch {
            triples,
            padded_row,
        } = scratch;
        for r in 0..self.height + 2 {
            let zero_point = self.input_zero_point;
            if (1..=self.height).contains(&r) {
                padded_row[0] = zero_point;
                padded_row[1..=w].copy_from_slice(&plane[(r - 1) * w..r * w]);
                padded_row[w + 1] = zero_point;
            } else {
                padded_row[..w + 2].fill(zero_point);
            }
            let row = triples.as_mut_ptr().add(r * row_len);
            let source = padded_row.as_ptr();
            for block in 0..ow.div_ceil(GROUP) {
                let ox = block * GROUP;
                let (left, middle, right) = if s == 1 {
                    let at = source.add(ox);
                    (vld1q_s8(at), vld1q_s8(at.add(1)), vld1q_s8(at.add(2)))
                } else {
                    let pairs = vld2q_s8(source.add(2 * ox));
                    (pairs.0, pairs.1, vld2q_s8(source.add(2 * ox + 2)).0)
                };
                store_triples(left, middle, right, row.add(block * TRIPLES));
            }
        }
        let weights: [int8x16_t; 3] = std::array::from_fn(|ky| {
            vld1q_s8(self.plane_weights.as_ptr().add((channel * 3 + ky) * 16))
        });
        let start = vdupq_n_s32(-i32::from(self.input_zero_point) * self.weight_sums[channel]);
        let multiplier = Eight::splat(self.multiplier[channel]);
        let offset = Eight::splat(self.offset[channel]);
        for (oy, out_row) in out.chunks_exact_mut(ow).enumerate() {
            let kernel_rows: [*const i8; 3] =
                std::array::from_fn(|ky| triples.as_ptr().add((oy * s + ky) * row_len));
            for block in 0..ow.div_ceil(GROUP) {
                let mut sums = [start; 4];
                for (ky, row) in kernel_rows.iter().enumerate() {
                    let x = row.add(block * TRIPLES);
                    for (v, sum) in sums.iter_mut().enumerate() {
                        *sum = sdot(*sum, vld1q_s8(x.add(16 * v)), weights[ky]);
                    }
                }
                let ox = block * GROUP;
                let lanes = GROUP.min(ow - ox);
                let target = out_row.as_mut_ptr().add(ox);
                let low = Eight::from_sums([sums[0], sums[1]]);
                grid.store(low, multiplier, offset, target, lanes.min(LANES));
                if lanes > LANES {
                    let high = Eight::from_sums([sums[2], sums[3]]);
                    grid.store(high, multiplier, offset, target.add(LANES), lanes - LANES);
                }
            }
        }
    }

    /// Lays out input row `y` (padding where `None`) of channel group `group` as triples: for
    /// each output column `ox`, the channels' bytes at input columns `ox * stride - 1 ..= ox *
    /// stride + 1`, four channels per vector. Bytes of channels past `lanes` are left as they
    /// were: they meet zero weights.
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn fill_triples(
        &self,
        input: &[i8],
        y: Option<usize>,
        group: usize,
        lanes: usize,
        padded_row: &mut [i8],
        target: &mut [i8],
    ) {
        let (w, c) = (self.width, self.channels);
        let Some(y) = y else {
            padded_row.fill(self.input_zero_point);
            return self.store_row_triples(padded_row, target);
        };
        padded_row[..GROUP].fill(self.input_zero_point);
        padded_row[(w + 1) * GROUP..(w + 2) * GROUP].fill(self.input_zero_point);
        for x in 0..w {
            let source = input.as_ptr().add((y * w + x) * c + group * GROUP);
            let slot = padded_row.as_mut_ptr().add((x + 1) * GROUP);
            if lanes == GROUP {
                vst1q_s8(slot, vld1q_s8(source));
            } else {
                std::ptr::copy_nonoverlapping(source, slot, lanes);
            }
        }
        self.store_row_triples(padded_row, target);
    }

    /// Lays out a padded channels-last row (`width + 2` slots of [`GROUP`] channels) as
    /// triples, one per output column.
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn store_row_triples(&self, padded_row: &[i8], target: &mut [i8]) {
        let column = |x: usize| vld1q_s8(padded_row.as_ptr().add(x * GROUP));
        for ox in 0..self.output_width() {
            let x = ox * self.stride;
            let slot = target.as_mut_ptr().add(ox * TRIPLES);
            store_triples(column(x), column(x + 1), column(x + 2), slot);
        }
    }
}

/// `-zero_point * sum(weights)` for the four channels whose weight sums start `sums`.
///
/// # Safety
/// `sums` holds at least four values.
#[inline(always)]
unsafe fn start_sums(sums: &[i32], zero_point: i8) -> int32x4_t {
    vmulq_n_s32(vld1q_s32(sums.as_ptr()), -i32::from(zero_point))
}

/// Stores the sixteen lanes of `left`, `middle` and `right` as triples: lane `i`'s three bytes,
/// then a fourth byte (which meets a zero weight), four lanes per 16 bytes at `target`.
///
/// # Safety
/// `target` points at room for 64 bytes.
#[inline(always)]
unsafe fn store_triples(left: int8x16_t, middle: int8x16_t, right: int8x16_t, target: *mut i8) {
    let pairs = [vzip1q_s8(left, middle), vzip2q_s8(left, middle)];
    let rights = [vzip1q_s8(right, right), vzip2q_s8(right, right)];
    for half in 0..2 {
        let (pair, right) = (
            vreinterpretq_s16_s8(pairs[half]),
            vreinterpretq_s16_s8(rights[half]),
        );
        vst1q_s8(
            target.add(32 * half),
            vreinterpretq_s8_s16(vzip1q_s16(pair, right)),
        );
        vst1q_s8(
            target.add(32 * half + 16),
            vreinterpretq_s8_s16(vzip2q_s16(pair, right)),
        );
    }
}

/// `acc + sdot(x, weights)`: lane `i` adds the dot product of bytes `4i .. 4i + 4` of `x` and
/// of `weights`.
#[target_feature(enable = "neon,dotprod")]
#[inline]
fn sdot(mut acc: int32x4_t, x: int8x16_t, weights: int8x16_t) -> int32x4_t {
    // SAFETY: `sdot` reads and writes registers only; the CPU has it (target feature).
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {x:v}.16b, {weights:v}.16b",
            acc = inout(vreg) acc,
            x = in(vreg) x,
            weights = in(vreg) weights,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}
