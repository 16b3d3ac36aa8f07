//! The tile of [`super::sdot_product`] on plain NEON, for CPUs without the dot-product
//! instructions (Cortex-A53, A72: the Pi 3 and 4, older Jetsons): eight rows by eight columns,
//! from operands packed in *chunks* of sixteen terms ([`chunks_from_quads`]).
//!
//! A register holds one row's (or one column's) sixteen terms, so a row and a column meet
//! without broadcasts: `smull` multiplies their low eight bytes, `smlal2` adds the products of
//! the high eight, so each 16-bit lane sums two products, and `sadalp` adds neighbouring lanes
//! into the 32-bit sums of that row and column; four rows by four columns take sixteen sums,
//! reduced across their lanes (`addp`) at the end. A 16-bit lane holds two products, so one
//! operand must hold no -128: then each product is at most `127 * 128` in magnitude; it holds
//! four when one operand is 7-bit weights ([`tile_fours`]: at most `63 * 128` each).

use std::arch::aarch64::*;
use std::arch::asm;

use super::sdot_product::{LiveHalves, ROWS};
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
/// `4 v + i`. Only the first `live.0` halves of four rows and `live.1` halves of four columns
/// are summed (the others stay zero): a last tile of four rows or columns does half the work.
///
/// Inlined into the loop over the tiles (NEON is part of every aarch64 target), so the sums go
/// from the registers straight to the caller's stores.
///
/// # Safety
/// `rows` and `columns` point at `quads * 8` i32 values each, packed by [`chunks_from_quads`];
/// no value of one of them is -128.
#[inline(always)]
pub unsafe fn tile(
    rows: *const i32,
    columns: *const i32,
    quads: usize,
    live: LiveHalves,
) -> [[int32x4_t; 2]; ROWS] {
    let chunks = quads / CHUNK_QUADS;
    let mut tile = [[vdupq_n_s32(0); 2]; ROWS];
    for row_half in 0..live.0 {
        for column_half in 0..live.1 {
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

/// [`tile`] for operands of which one holds 7-bit values (in [-63, 63]): a product is then at
/// most `63 * 128` in magnitude and a 16-bit lane sums four of them, from two chunks, before
/// `sadalp` widens it ([`sub_tile_fours`]); an odd last chunk goes through [`sub_tile`].
///
/// # Safety
/// As [`tile`], with every value of one operand in [-63, 63].
#[inline(always)]
pub unsafe fn tile_fours(
    rows: *const i32,
    columns: *const i32,
    quads: usize,
    live: LiveHalves,
) -> [[int32x4_t; 2]; ROWS] {
    let chunks = quads / CHUNK_QUADS;
    let last = chunks / 2 * 2;
    let mut tile = [[vdupq_n_s32(0); 2]; ROWS];
    for row_half in 0..live.0 {
        for column_half in 0..live.1 {
            let rows = rows.add(row_half * HALF * CHUNK_QUADS);
            let columns = columns.add(column_half * HALF * CHUNK_QUADS);
            let mut sums = sub_tile_fours(rows, columns, chunks / 2);
            if last < chunks {
                let at = last * CHUNK_LEN;
                let tail = sub_tile(rows.add(at), columns.add(at), 1);
                for (sum, tail) in sums.iter_mut().zip(tail) {
                    *sum = vaddq_s32(*sum, tail);
                }
            }
            for (r, sum) in sums.into_iter().enumerate() {
                tile[row_half * HALF + r][column_half] = sum;
            }
        }
    }
    tile
}

/// One column of [`fours_step`] as assembly text: each row's two chunks (`v0`-`v3` and
/// `v4`-`v7`) times the column's two (registers `$first` and `$second`), four products per
/// 16-bit lane in `v12`-`v15`, widened into the rows' sums (registers `$s0`-`$s3`) by `$widen`.
#[rustfmt::skip]
macro_rules! fours_column {
    ($widen:literal, $first:literal, $second:literal, [$s0:literal, $s1:literal, $s2:literal, $s3:literal]) => {
        concat!(
            "smull v12.8h, v0.8b, v", $first, ".8b\n",
            "smull v13.8h, v1.8b, v", $first, ".8b\n",
            "smull v14.8h, v2.8b, v", $first, ".8b\n",
            "smull v15.8h, v3.8b, v", $first, ".8b\n",
            "smlal2 v12.8h, v0.16b, v", $first, ".16b\n",
            "smlal2 v13.8h, v1.16b, v", $first, ".16b\n",
            "smlal2 v14.8h, v2.16b, v", $first, ".16b\n",
            "smlal2 v15.8h, v3.16b, v", $first, ".16b\n",
            "smlal v12.8h, v4.8b, v", $second, ".8b\n",
            "smlal v13.8h, v5.8b, v", $second, ".8b\n",
            "smlal v14.8h, v6.8b, v", $second, ".8b\n",
            "smlal v15.8h, v7.8b, v", $second, ".8b\n",
            "smlal2 v12.8h, v4.16b, v", $second, ".16b\n",
            "smlal2 v13.8h, v5.16b, v", $second, ".16b\n",
            "smlal2 v14.8h, v6.16b, v", $second, ".16b\n",
            "smlal2 v15.8h, v7.16b, v", $second, ".16b\n",
            $widen, " v", $s0, ".4s, v12.8h\n",
            $widen, " v", $s1, ".4s, v13.8h\n",
            $widen, " v", $s2, ".4s, v14.8h\n",
            $widen, " v", $s3, ".4s, v15.8h\n",
        )
    };
}

/// One step of [`sub_tile_fours`] as assembly text: two chunks of the four rows times two of
/// the four columns, each pair of 16-bit products widened into the sums by `$widen` (`saddlp`
/// sets them on the first step, `sadalp` adds to them after).
macro_rules! fours_step {
    ($widen:literal) => {
        concat!(
            "ldp q0, q1, [{rows}]\n",
            "ldp q2, q3, [{rows}, #32]\n",
            "ldp q4, q5, [{rows}, #128]\n",
            "ldp q6, q7, [{rows}, #160]\n",
            "add {rows}, {rows}, #256\n",
            "ldp q8, q9, [{columns}]\n",
            "ldp q10, q11, [{columns}, #128]\n",
            fours_column!($widen, "8", "10", ["16", "20", "24", "28"]),
            fours_column!($widen, "9", "11", ["17", "21", "25", "29"]),
            "ldp q8, q9, [{columns}, #32]\n",
            "ldp q10, q11, [{columns}, #160]\n",
            "add {columns}, {columns}, #256\n",
            fours_column!($widen, "8", "10", ["18", "22", "26", "30"]),
            fours_column!($widen, "9", "11", ["19", "23", "27", "31"]),
        )
    };
}

/// Four rows by four columns over `2 * pairs` chunks with four products per 16-bit lane (two
/// chunks' `smull`/`smlal2`/`smlal`/`smlal2`, then `saddlp` on the first step, `sadalp` after):
/// lane `j` of `sums[i]` is the sum of row `i` and column `j`. In assembly, since the sixteen sums, two chunks of the four rows, two
/// of two columns and four 16-bit temporaries take all 32 vector registers: 92 instructions per
/// 512 products, against 108 for two chunks of [`sub_tile`].
///
/// # Safety
/// As [`tile_fours`], for the four entries from `rows` and `columns`.
#[inline(always)]
unsafe fn sub_tile_fours(rows: *const i32, columns: *const i32, pairs: usize) -> [int32x4_t; HALF] {
    let mut sums = [vdupq_n_s32(0); HALF];
    // SAFETY: the loop reads `pairs` steps of two chunks (256 bytes) from each pointer, which
    // the caller guarantees; it writes registers only.
    asm!(
        "cbz {pairs}, 3f",
        fours_step!("saddlp"),
        "subs {pairs}, {pairs}, #1",
        "b.eq 2f",
        "1:",
        fours_step!("sadalp"),
        "subs {pairs}, {pairs}, #1",
        "b.ne 1b",
        "b 2f",
        "3:",
        "movi v16.4s, #0",
        "movi v17.4s, #0",
        "movi v18.4s, #0",
        "movi v19.4s, #0",
        "movi v20.4s, #0",
        "movi v21.4s, #0",
        "movi v22.4s, #0",
        "movi v23.4s, #0",
        "movi v24.4s, #0",
        "movi v25.4s, #0",
        "movi v26.4s, #0",
        "movi v27.4s, #0",
        "movi v28.4s, #0",
        "movi v29.4s, #0",
        "movi v30.4s, #0",
        "movi v31.4s, #0",
        "2:",
        "addp v16.4s, v16.4s, v17.4s",
        "addp v18.4s, v18.4s, v19.4s",
        "addp v16.4s, v16.4s, v18.4s",
        "addp v20.4s, v20.4s, v21.4s",
        "addp v22.4s, v22.4s, v23.4s",
        "addp v20.4s, v20.4s, v22.4s",
        "addp v24.4s, v24.4s, v25.4s",
        "addp v26.4s, v26.4s, v27.4s",
        "addp v24.4s, v24.4s, v26.4s",
        "addp v28.4s, v28.4s, v29.4s",
        "addp v30.4s, v30.4s, v31.4s",
        "addp v28.4s, v28.4s, v30.4s",
        rows = inout(reg) rows => _,
        columns = inout(reg) columns => _,
        pairs = inout(reg) pairs => _,
        lateout("v16") sums[0], lateout("v20") sums[1], lateout("v24") sums[2], lateout("v28") sums[3],
        out("v0") _, out("v1") _, out("v2") _, out("v3") _, out("v4") _, out("v5") _, out("v6") _, out("v7") _, out("v8") _, out("v9") _, out("v10") _, out("v11") _, out("v12") _, out("v13") _, out("v14") _, out("v15") _, out("v17") _, out("v18") _, out("v19") _, out("v21") _, out("v22") _, out("v23") _, out("v25") _, out("v26") _, out("v27") _, out("v29") _, out("v30") _, out("v31") _,
        options(nostack, readonly),
    );
    sums
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
