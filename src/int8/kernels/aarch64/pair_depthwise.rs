//! The depthwise layers of the aarch64 NEON set ([`TripleDepthwise`]) on the bytes themselves,
//! for CPUs without the dot product: `smull` and `smlal` sum two taps' products of eight
//! channels (or outputs) in 16-bit lanes, and `saddw` widens each pair into the 32-bit sums, so
//! nine taps take four pairs and one single tap.
//!
//! A 16-bit lane holds two products, so the weights must hold no -128 (then a product is at most
//! `128 * 127` in magnitude): [`TripleDepthwise::weights_above_minimum`]. The input keeps its
//! zero point, padding holds it, and the sums start at `-zero_point * sum(weights)`, so they are
//! the integers the portable loops sum and requantize as they do.

use std::arch::aarch64::*;
use std::arch::asm;

use super::requantize::{with_requantizer, Requantize};
use super::vectors::{Eight, LANES};
use crate::int8::kernels::triple_depthwise::{TripleDepthwise, GROUP};

/// Eight lanes' sums of nine taps, from `start`: lane `i` of `sums[v]` adds the products of
/// lane `4 v + i` of `x[t]` and `weights[t]`. Eight lanes at a time keep the nine weights, the
/// sums and the requantization's constants in registers.
#[inline(always)]
unsafe fn nine_taps(
    x: [int8x8_t; 9],
    weights: &[int8x8_t; 9],
    start: [int32x4_t; 2],
) -> [int32x4_t; 2] {
    let mut sums = start;
    let mut add = |pairs: int16x8_t| {
        sums[0] = vaddw_s16(sums[0], vget_low_s16(pairs));
        sums[1] = vaddw_high_s16(sums[1], pairs);
    };
    for pair in 0..4 {
        let (a, b) = (2 * pair, 2 * pair + 1);
        add(vmlal_s8(vmull_s8(x[a], weights[a]), x[b], weights[b]));
    }
    add(vmull_s8(x[8], weights[8]));
    sums
}

/// The sums of sixteen channels' nine taps at one output position, from `start`: the band's
/// padded rows hold sixteen channels per column, the position's corner tap at `corner` and each
/// kernel row `row_stride` bytes after the last; lane `i` of `sums[v]` is channel `4 v + i`'s.
/// In assembly: with intrinsics LLVM splits the weights into halves, runs out of registers and
/// rotates constants through `mov`s every iteration (97 instructions per position against 50
/// here).
///
/// # Safety
/// The three kernel rows' 48 bytes from `corner` are readable.
#[inline(always)]
unsafe fn sixteen_sums(
    corner: *const i8,
    row_stride: usize,
    w: &[int8x16_t; 9],
    start: [int32x4_t; 4],
) -> [int32x4_t; 4] {
    let (s0, s1, s2, s3): (int32x4_t, int32x4_t, int32x4_t, int32x4_t);
    asm!(
        "add {r1}, {r0}, {stride}",
        "add {r2}, {r1}, {stride}",
        "ldp {a:q}, {b:q}, [{r0}]",
        "smull {l:v}.8h, {a:v}.8b, {w0:v}.8b",
        "smull2 {h:v}.8h, {a:v}.16b, {w0:v}.16b",
        "smlal {l:v}.8h, {b:v}.8b, {w1:v}.8b",
        "smlal2 {h:v}.8h, {b:v}.16b, {w1:v}.16b",
        "saddw {s0:v}.4s, {t0:v}.4s, {l:v}.4h",
        "saddw2 {s1:v}.4s, {t1:v}.4s, {l:v}.8h",
        "saddw {s2:v}.4s, {t2:v}.4s, {h:v}.4h",
        "saddw2 {s3:v}.4s, {t3:v}.4s, {h:v}.8h",
        "ldr {a:q}, [{r0}, #32]",
        "ldr {b:q}, [{r1}]",
        "smull {l:v}.8h, {a:v}.8b, {w2:v}.8b",
        "smull2 {h:v}.8h, {a:v}.16b, {w2:v}.16b",
        "smlal {l:v}.8h, {b:v}.8b, {w3:v}.8b",
        "smlal2 {h:v}.8h, {b:v}.16b, {w3:v}.16b",
        "saddw {s0:v}.4s, {s0:v}.4s, {l:v}.4h",
        "saddw2 {s1:v}.4s, {s1:v}.4s, {l:v}.8h",
        "saddw {s2:v}.4s, {s2:v}.4s, {h:v}.4h",
        "saddw2 {s3:v}.4s, {s3:v}.4s, {h:v}.8h",
        "ldp {a:q}, {b:q}, [{r1}, #16]",
        "smull {l:v}.8h, {a:v}.8b, {w4:v}.8b",
        "smull2 {h:v}.8h, {a:v}.16b, {w4:v}.16b",
        "smlal {l:v}.8h, {b:v}.8b, {w5:v}.8b",
        "smlal2 {h:v}.8h, {b:v}.16b, {w5:v}.16b",
        "saddw {s0:v}.4s, {s0:v}.4s, {l:v}.4h",
        "saddw2 {s1:v}.4s, {s1:v}.4s, {l:v}.8h",
        "saddw {s2:v}.4s, {s2:v}.4s, {h:v}.4h",
        "saddw2 {s3:v}.4s, {s3:v}.4s, {h:v}.8h",
        "ldp {a:q}, {b:q}, [{r2}]",
        "smull {l:v}.8h, {a:v}.8b, {w6:v}.8b",
        "smull2 {h:v}.8h, {a:v}.16b, {w6:v}.16b",
        "smlal {l:v}.8h, {b:v}.8b, {w7:v}.8b",
        "smlal2 {h:v}.8h, {b:v}.16b, {w7:v}.16b",
        "saddw {s0:v}.4s, {s0:v}.4s, {l:v}.4h",
        "saddw2 {s1:v}.4s, {s1:v}.4s, {l:v}.8h",
        "saddw {s2:v}.4s, {s2:v}.4s, {h:v}.4h",
        "saddw2 {s3:v}.4s, {s3:v}.4s, {h:v}.8h",
        "ldr {a:q}, [{r2}, #32]",
        "smull {l:v}.8h, {a:v}.8b, {w8:v}.8b",
        "smull2 {h:v}.8h, {a:v}.16b, {w8:v}.16b",
        "saddw {s0:v}.4s, {s0:v}.4s, {l:v}.4h",
        "saddw2 {s1:v}.4s, {s1:v}.4s, {l:v}.8h",
        "saddw {s2:v}.4s, {s2:v}.4s, {h:v}.4h",
        "saddw2 {s3:v}.4s, {s3:v}.4s, {h:v}.8h",
        r0 = in(reg) corner,
        stride = in(reg) row_stride,
        r1 = out(reg) _,
        r2 = out(reg) _,
        a = out(vreg) _,
        b = out(vreg) _,
        l = out(vreg) _,
        h = out(vreg) _,
        w0 = in(vreg) w[0],
        w1 = in(vreg) w[1],
        w2 = in(vreg) w[2],
        w3 = in(vreg) w[3],
        w4 = in(vreg) w[4],
        w5 = in(vreg) w[5],
        w6 = in(vreg) w[6],
        w7 = in(vreg) w[7],
        w8 = in(vreg) w[8],
        t0 = in(vreg) start[0],
        t1 = in(vreg) start[1],
        t2 = in(vreg) start[2],
        t3 = in(vreg) start[3],
        s0 = out(vreg) s0,
        s1 = out(vreg) s1,
        s2 = out(vreg) s2,
        s3 = out(vreg) s3,
        options(pure, readonly, nostack, preserves_flags)
    );
    [s0, s1, s2, s3]
}

impl TripleDepthwise {
    /// Convolves output rows `first_row..` (as many as `out` holds) of channels-last `input`
    /// into channels-last `out` on NEON pairs, `band_rows` output rows at a time; `false`, with
    /// nothing written, when the sizes do not fit the layer or a weight is -128.
    pub fn convolve_rows_pairs(
        &self,
        input: &[i8],
        first_row: usize,
        band_rows: usize,
        out: &mut [i8],
    ) -> bool {
        if !self.weights_above_minimum {
            return false;
        }
        let row_len = self.output_width() * self.channels;
        with_requantizer!(self.grid, self.finite_scales, |grid| {
            self.for_each_band(input, first_row, band_rows, out, |first, out, scratch| {
                let rows = out.len() / row_len;
                let band = &mut scratch.triples;
                let len = self.band_input_rows(rows) * (self.width + 2) * GROUP;
                band.resize(band.len().max(len), 0);
                for group in 0..self.channels.div_ceil(GROUP) {
                    // SAFETY: the band fits the layer (`for_each_band`) and `band` holds its
                    // padded input rows of one group; NEON is part of every aarch64 target.
                    unsafe {
                        self.fill_band(input, first, rows, group, band);
                        self.sum_band(band, group, out, grid)
                    }
                }
            })
        })
    }

    /// Copies the input rows of the band from output row `first_row` (`rows` output rows) of
    /// channel group `group` into `band`: `[input rows][width + 2][GROUP]`, the zero point in
    /// the padding and in the lanes past the channels.
    #[target_feature(enable = "neon")]
    unsafe fn fill_band(
        &self,
        input: &[i8],
        first_row: usize,
        rows: usize,
        group: usize,
        band: &mut [i8],
    ) {
        let (w, c, pw) = (self.width, self.channels, self.width + 2);
        let lanes = GROUP.min(c - group * GROUP);
        let zero_point = vdupq_n_s8(self.input_zero_point);
        for r in 0..self.band_input_rows(rows) {
            let row = band.as_mut_ptr().add(r * pw * GROUP);
            let Some(y) = self.input_row(first_row, r) else {
                for x in 0..pw {
                    vst1q_s8(row.add(x * GROUP), zero_point);
                }
                continue;
            };
            vst1q_s8(row, zero_point);
            vst1q_s8(row.add((w + 1) * GROUP), zero_point);
            let mut source = input.as_ptr().add(y * w * c + group * GROUP);
            for x in 1..=w {
                let slot = row.add(x * GROUP);
                if lanes == GROUP {
                    vst1q_s8(slot, vld1q_s8(source));
                } else {
                    vst1q_s8(slot, zero_point);
                    std::ptr::copy_nonoverlapping(source, slot, lanes);
                }
                source = source.add(c);
            }
        }
    }

    /// Sums and requantizes channel group `group` of the band's output rows (`out`) from its
    /// padded input rows: a whole group of sixteen channels at a time ([`sixteen_sums`]), a
    /// smaller group eight channels at a time.
    #[target_feature(enable = "neon")]
    unsafe fn sum_band<Q: Requantize>(&self, band: &[i8], group: usize, out: &mut [i8], grid: Q) {
        let (c, s, ow, pw) = (
            self.channels,
            self.stride,
            self.output_width(),
            self.width + 2,
        );
        let lanes = GROUP.min(c - group * GROUP);
        let rows: [int8x16x4_t; 3] = std::array::from_fn(|ky| {
            vld4q_s8(self.weights.as_ptr().add((group * 3 + ky) * 4 * GROUP))
        });
        let taps: [int8x16_t; 9] = [
            rows[0].0, rows[0].1, rows[0].2, rows[1].0, rows[1].1, rows[1].2, rows[2].0, rows[2].1,
            rows[2].2,
        ];
        let offsets: [usize; 9] = std::array::from_fn(|tap| (tap / 3 * pw + tap % 3) * GROUP);
        if lanes == GROUP {
            return self.sum_band_group(band, group, out, &taps, grid);
        }
        for half in 0..lanes.div_ceil(LANES) {
            let at = group * GROUP + half * LANES;
            let half_lanes = LANES.min(lanes - half * LANES);
            let weights = taps.map(|tap| match half {
                0 => vget_low_s8(tap),
                _ => vget_high_s8(tap),
            });
            let start: [int32x4_t; 2] = std::array::from_fn(|v| {
                let sums = vld1q_s32(self.weight_sums.as_ptr().add(at + 4 * v));
                vmulq_n_s32(sums, -i32::from(self.input_zero_point))
            });
            let multiplier = Eight::load(self.multiplier.as_ptr().add(at));
            let offset = Eight::load(self.offset.as_ptr().add(at));
            for (oy, out_row) in out.chunks_exact_mut(ow * c).enumerate() {
                let mut corner = band.as_ptr().add(oy * s * pw * GROUP + half * LANES);
                let mut target = out_row.as_mut_ptr().add(at);
                for _ in 0..ow {
                    let x = offsets.map(|tap| vld1_s8(corner.add(tap)));
                    let sums = Eight::from_sums(nine_taps(x, &weights, start));
                    grid.store(sums, multiplier, offset, target, half_lanes);
                    corner = corner.add(s * GROUP);
                    target = target.add(c);
                }
            }
        }
    }

    /// [`TripleDepthwise::sum_band`] for a whole group of sixteen channels, all at a time
    /// ([`sixteen_sums`]).
    #[target_feature(enable = "neon")]
    unsafe fn sum_band_group<Q: Requantize>(
        &self,
        band: &[i8],
        group: usize,
        out: &mut [i8],
        taps: &[int8x16_t; 9],
        grid: Q,
    ) {
        let (c, s, ow, pw) = (
            self.channels,
            self.stride,
            self.output_width(),
            self.width + 2,
        );
        let at = group * GROUP;
        let start: [int32x4_t; 4] = std::array::from_fn(|v| {
            let sums = vld1q_s32(self.weight_sums.as_ptr().add(at + 4 * v));
            vmulq_n_s32(sums, -i32::from(self.input_zero_point))
        });
        let multiplier = [0, LANES].map(|h| Eight::load(self.multiplier.as_ptr().add(at + h)));
        let offset = [0, LANES].map(|h| Eight::load(self.offset.as_ptr().add(at + h)));
        for (oy, out_row) in out.chunks_exact_mut(ow * c).enumerate() {
            let mut corner = band.as_ptr().add(oy * s * pw * GROUP);
            let mut target = out_row.as_mut_ptr().add(at);
            for _ in 0..ow {
                let sums = sixteen_sums(corner, pw * GROUP, taps, start);
                for h in 0..2 {
                    let eight = Eight::from_sums([sums[2 * h], sums[2 * h + 1]]);
                    grid.store(
                        eight,
                        multiplier[h],
                        offset[h],
                        target.add(h * LANES),
                        LANES,
                    );
                }
                corner = corner.add(s * GROUP);
                target = target.add(c);
            }
        }
    }

    /// Convolves channels `first..` (as many as `out` holds, plane after plane) of
    /// channels-first `input` on NEON pairs, eight outputs of a row at a time; `false`, with
    /// nothing written, when the sizes do not fit the layer or a weight is -128.
    pub fn convolve_planes_pairs(&self, input: &[i8], first: usize, out: &mut [i8]) -> bool {
        if !self.weights_above_minimum {
            return false;
        }
        let len = (self.height + 2) * (self.width + 2) + 2 * GROUP;
        with_requantizer!(self.grid, self.finite_scales, |grid| {
            self.for_each_plane(input, first, out, |channel, plane, out, scratch| {
                let padded = &mut scratch.triples;
                padded.resize(padded.len().max(len), 0);
                let padded = &mut padded[..len];
                // SAFETY: the plane fits the layer (`for_each_plane`) and `padded` holds its
                // padded rows with room for a vector past the last; NEON is part of every
                // aarch64 target.
                unsafe { self.convolve_plane_pairs(channel, plane, padded, out, grid) }
            })
        })
    }

    /// One channel's plane: its rows padded with the zero point (at stride 2, each row's even
    /// padded columns, then its odd ones), so that each tap of sixteen consecutive outputs
    /// reads sixteen consecutive bytes; bytes past a row reach only outputs past its end, which
    /// are not stored.
    #[target_feature(enable = "neon")]
    unsafe fn convolve_plane_pairs<Q: Requantize>(
        &self,
        channel: usize,
        plane: &[i8],
        padded: &mut [i8],
        out: &mut [i8],
        grid: Q,
    ) {
        let (w, s, ow, pw) = (self.width, self.stride, self.output_width(), self.width + 2);
        let zero_point = self.input_zero_point;
        let evens = pw.div_ceil(2);
        padded.fill(zero_point);
        for (y, source) in plane.chunks_exact(w).enumerate() {
            let row = &mut padded[(y + 1) * pw..(y + 2) * pw];
            if s == 1 {
                row[1..=w].copy_from_slice(source);
            } else {
                // Input column x is padded column x + 1: even x go to the odd half.
                let (even_half, odd_half) = row.split_at_mut(evens);
                let mut x = 0;
                while x + 2 * GROUP <= w {
                    let pair = vld2q_s8(source.as_ptr().add(x));
                    vst1q_s8(odd_half.as_mut_ptr().add(x / 2), pair.0);
                    vst1q_s8(even_half.as_mut_ptr().add(x / 2 + 1), pair.1);
                    x += 2 * GROUP;
                }
                let mut half_vector = |x: usize| {
                    let pair = vld2_s8(source.as_ptr().add(x));
                    vst1_s8(odd_half.as_mut_ptr().add(x / 2), pair.0);
                    vst1_s8(even_half.as_mut_ptr().add(x / 2 + 1), pair.1);
                };
                while x + GROUP <= w {
                    half_vector(x);
                    x += GROUP;
                }
                if x < w && w >= GROUP {
                    // The last sixteen columns from an even one, some written again.
                    let last = (w - GROUP) & !1;
                    half_vector(last);
                    x = last + GROUP;
                }
                for (x, v) in source.iter().enumerate().skip(x) {
                    if x % 2 == 0 {
                        odd_half[x / 2] = *v;
                    } else {
                        even_half[x / 2 + 1] = *v;
                    }
                }
            }
        }
        let weights: [int8x8_t; 9] = std::array::from_fn(|tap| {
            vdup_n_s8(self.plane_weights[channel * 48 + tap / 3 * 16 + tap % 3])
        });
        let start = [vdupq_n_s32(-i32::from(zero_point) * self.weight_sums[channel]); 2];
        let multiplier = Eight::splat(self.multiplier[channel]);
        let offset = Eight::splat(self.offset[channel]);
        let columns: [usize; 3] = if s == 1 { [0, 1, 2] } else { [0, evens, 1] };
        for (oy, out_row) in out.chunks_exact_mut(ow).enumerate() {
            let taps: [*const i8; 9] = std::array::from_fn(|tap| {
                padded
                    .as_ptr()
                    .add((oy * s + tap / 3) * pw + columns[tap % 3])
            });
            for ox in (0..ow).step_by(LANES) {
                let x = taps.map(|tap| vld1_s8(tap.add(ox)));
                let sums = Eight::from_sums(nine_taps(x, &weights, start));
                let target = out_row.as_mut_ptr().add(ox);
                grid.store(sums, multiplier, offset, target, LANES.min(ow - ox));
            }
        }
    }
}
