//! The tile of [`super::sdot_product`] on plain NEON, for CPUs without the dot-product
//! instructions (Cortex-A53, A72: the Pi 3 and 4, older Jetsons): eight rows by eight columns,
//! from operands packed in *chunks* of sixteen terms ([`chunks_from_quads`]).
//!
//! A register holds one row's (or one column's) sixteen terms, so a row and a column meet
//! without broadcasts: `smull` multiplies their low eight bytes, `smlal2` adds the products of
//! the high eight, so each 16-bit lane sums two products, and `sadalp` adds neighbouring lanes
//! into the 32-bit sums of that row and column; four rows by four columns take sixteen sums,
//! reduced across their lanes (`addp`) at the end. A 16-bit lane holds two products, so one
//! operand must hold no -128: then each product is at most `127 * 128` in magnitude.

use std::arch::aarch64::*;

use super::sdot_product::{COLUMNS, ROWS};
use super::vectors::transpose_4x4;

/// Groups of four terms in one chunk.
pub const CHUNK_QUADS: usize = 4;
/// i32 values of one chunk of a block of eight entries.
const CHUNK_LEN: usize = CHUNK_QUADS * ROWS;
/// Rows (and columns) of one sub-tile.
const HALF: usize = 4;

/// The packing of [`super::sdot_product`] (for every group of four terms, eight entries' groups
/// side by side, `quads` groups per block of eight entries) reordered into chunks: for every
/// sixteen terms, each of the eight entries' sixteen terms in turn, zero past the depth. Returns
/// the data and its groups of four terms per block, rounded up to whole chunks.
pub fn chunks_from_quads(data: &[i32], quads: usize) -> (Vec<i32>, usize) {
    let chunked_quads = quads.div_ceil(CHUNK_QUADS) * CHUNK_QUADS;
    let blocks = data.len().checked_div(quads * ROWS).unwrap_or(0);
    let mut chunked = vec![0i32; blocks * chunked_quads * ROWS];
    for (block, target) in chunked.chunks_exact_mut(chunked_quads * ROWS).enumerate() {
        let source = &data[block * quads * ROWS..(block + 1) * quads * ROWS];
        for (chunk, target) in target.chunks_exact_mut(CHUNK_LEN).enumerate() {
            let first = chunk * CHUNK_QUADS;
            if first + CHUNK_QUADS <= quads {
                let groups = &source[first * ROWS..(first + CHUNK_QUADS) * ROWS];
                // SAFETY: `groups` holds four groups of eight entries, `target` room for
                // eight entries' four groups.
                unsafe { transpose_chunk(groups.as_ptr(), target.as_mut_ptr()) };
            } else {
                for q in first..quads {
                    for e in 0..ROWS {
                        target[e * CHUNK_QUADS + q - first] = source[q * ROWS + e];
                    }
                }
            }
        }
    }
    (chunked, chunked_quads)
}

/// Eight entries' four groups (`[entry][group]`) from four groups of eight entries
/// (`[group][entry]`): two 4x4 transposes of 32-bit values.
///
/// # Safety
/// `source` points at 32 i32 values, `target` at room for 32.
#[inline(always)]
unsafe fn transpose_chunk(source: *const i32, target: *mut i32) {
    for half in 0..2 {
        let v: [int32x4_t; 4] =
            std::array::from_fn(|q| vld1q_s32(source.add(q * ROWS + HALF * half)));
        for (e, entry) in transpose_4x4(v).iter().enumerate() {
            vst1q_s32(target.add((HALF * half + e) * CHUNK_QUADS), *entry);
        }
    }
}

/// Eight rows by eight columns over `quads` groups of four terms (a multiple of
/// [`CHUNK_QUADS`]) packed in chunks: lane `i` of `tile[r][v]` is the sum of row `r` and column
/// `4 v + i`.
///
/// Inlined into the loop over the tiles (NEON is part of every aarch64 target), so the sums go
/// from the registers straight to the caller's stores.
///
/// # Safety
/// `rows` and `columns` point at `quads * 8` i32 values each, packed by [`chunks_from_quads`];
/// no value of one of them is -128.
#[inline(always)]
pub unsafe fn tile(rows: *const i32, columns: *const i32, quads: usize) -> [[int32x4_t; 2]; ROWS] {
    let chunks = quads / CHUNK_QUADS;
    let mut tile = [[vdupq_n_s32(0); 2]; ROWS];
    for row_half in 0..ROWS / HALF {
        for column_half in 0..COLUMNS / HALF {
            let sums = sub_tile(
                rows.add(row_half * HALF * CHUNK_QUADS),
                columns.add(column_half * HALF * CHUNK_QUADS),
                chunks,
            );
            for (r, sum) in sums.into_iter().enumerate() {
                tile[row_half * HALF + r][column_half] = sum;
            }
        }
    }
    tile
}

/// Four rows by four columns over `chunks` chunks (each entry's sixteen terms in one
/// register, the next entry's [`CHUNK_QUADS`] i32 values on): lane `j` of `sums[i]` is the sum
/// of row `i` and column `j`.
///
/// # Safety
/// As [`tile`], for the four entries from `rows` and `columns`.
#[inline(always)]
unsafe fn sub_tile(rows: *const i32, columns: *const i32, chunks: usize) -> [int32x4_t; HALF] {
    let mut acc = [[vdupq_n_s32(0); HALF]; HALF];
    for chunk in 0..chunks {
        let load = |at: *const i32, e: usize| vld1q_s8(at.add(chunk * CHUNK_LEN + e * 4).cast());
        let r: [int8x16_t; HALF] = std::array::from_fn(|e| load(rows, e));
        let c: [int8x16_t; HALF] = std::array::from_fn(|e| load(columns, e));
        for (row, sums) in r.iter().zip(acc.iter_mut()) {
            for (column, sum) in c.iter().zip(sums.iter_mut()) {
                let pairs = vmull_s8(vget_low_s8(*row), vget_low_s8(*column));
                let pairs = vmlal_high_s8(pairs, *row, *column);
                *sum = vpadalq_s16(*sum, pairs);
            }
        }
    }
    acc.map(|[c0, c1, c2, c3]| vpaddq_s32(vpaddq_s32(c0, c1), vpaddq_s32(c2, c3)))
}
