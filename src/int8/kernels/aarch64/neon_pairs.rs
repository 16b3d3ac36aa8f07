//! The tile of [`super::sdot_product`] on plain NEON, for CPUs without the dot-product
//! instructions (Cortex-A53, A72: the Pi 3 and 4, older Jetsons): the same packed operands and
//! the same sums, eight rows by eight columns.
//!
//! For each row, its group of four terms is copied to every 32-bit lane (`dup`); `smull` and
//! `smlal` multiply two columns' groups by it for two groups of terms in turn and sum the two
//! products of each term in 16-bit lanes, and `sadalp` adds neighbouring 16-bit lanes into the
//! 32-bit sums: two per column, added at the end (`addp`). A 16-bit lane holds two products, so
//! one operand must hold no -128: then each product is at most `127 * 128` in magnitude.

use std::arch::aarch64::*;

use super::sdot_product::{COLUMNS, ROWS};

/// Rows summed at a time: one vector of four rows' groups.
const HALF: usize = 4;

/// Eight rows by eight columns over `quads` groups of four terms, as `sdot` sums them: lane `i`
/// of `tile[r][v]` is the sum of row `r` and column `4 v + i`.
///
/// # Safety
/// `rows` and `columns` point at `quads * 8` i32 values each; no value of one of them is -128.
#[target_feature(enable = "neon")]
pub unsafe fn tile(rows: *const i32, columns: *const i32, quads: usize) -> [[int32x4_t; 2]; ROWS] {
    let mut tile = [[vdupq_n_s32(0); 2]; ROWS];
    for half in 0..ROWS / HALF {
        let rows = rows.add(half * HALF);
        let mut sums = [[[vdupq_n_s32(0); 2]; 2]; HALF];
        let mut q = 0;
        while q + 2 <= quads {
            let next = Some((rows.add((q + 1) * ROWS), columns.add((q + 1) * COLUMNS)));
            pair_step(
                &mut sums,
                (rows.add(q * ROWS), columns.add(q * COLUMNS)),
                next,
            );
            q += 2;
        }
        if q < quads {
            pair_step(
                &mut sums,
                (rows.add(q * ROWS), columns.add(q * COLUMNS)),
                None,
            );
        }
        for (r, row_sums) in sums.iter().enumerate() {
            for (v, [low, high]) in row_sums.iter().enumerate() {
                tile[half * HALF + r][v] = vpaddq_s32(*low, *high);
            }
        }
    }
    tile
}

/// Adds one or two groups of four terms (`first`, then `second`) of four rows by eight columns
/// to `sums[r][v]`: `[0]` columns `4 v` and `4 v + 1`, `[1]` columns `4 v + 2` and `4 v + 3`,
/// two 32-bit lanes per column.
///
/// # Safety
/// Each pair points at four rows' and eight columns' groups; no value of one side is -128.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn pair_step(
    sums: &mut [[[int32x4_t; 2]; 2]; HALF],
    first: (*const i32, *const i32),
    second: Option<(*const i32, *const i32)>,
) {
    let load = |(rows, columns): (*const i32, *const i32)| {
        let columns = columns.cast::<i8>();
        (
            vld1q_s32(rows),
            [vld1q_s8(columns), vld1q_s8(columns.add(16))],
        )
    };
    let (rows, columns) = load(first);
    let second = second.map(load);
    for (r, row_sums) in sums.iter_mut().enumerate() {
        let row = spread_row(rows, r);
        let next_row = second.map(|(rows, _)| spread_row(rows, r));
        for (v, [low, high]) in row_sums.iter_mut().enumerate() {
            let mut low_products = vmull_s8(vget_low_s8(columns[v]), vget_low_s8(row));
            let mut high_products = vmull_high_s8(columns[v], row);
            if let (Some((_, next_columns)), Some(next_row)) = (second, next_row) {
                low_products = vmlal_s8(
                    low_products,
                    vget_low_s8(next_columns[v]),
                    vget_low_s8(next_row),
                );
                high_products = vmlal_high_s8(high_products, next_columns[v], next_row);
            }
            *low = vpadalq_s16(*low, low_products);
            *high = vpadalq_s16(*high, high_products);
        }
    }
}

/// Row `r`'s group of four terms (lane `r` of `rows`) in every 32-bit lane, as bytes.
#[target_feature(enable = "neon")]
#[inline]
fn spread_row(rows: int32x4_t, r: usize) -> int8x16_t {
    vreinterpretq_s8_s32(match r {
        0 => vdupq_laneq_s32::<0>(rows),
        1 => vdupq_laneq_s32::<1>(rows),
        2 => vdupq_laneq_s32::<2>(rows),
        _ => vdupq_laneq_s32::<3>(rows),
    })
}
