//! An exact int8 matrix product for aarch64 CPUs with the dot-product instructions (Armv8.2
//! `dotprod`: Cortex-A55, A76, A78AE as in Jetson Orin, the Pi 5): `sdot` multiplies four signed
//! bytes by four signed bytes and adds the four products into a 32-bit lane, so one instruction
//! does four lanes times four terms. Both operands stay signed: a product is at most 2^14 in
//! magnitude and depths are kept below 2^16, so no i32 sum overflows.
//!
//! One kernel step computes eight rows by eight columns in sixteen vector registers. Both
//! operands are packed in groups of four terms ([`quad`]): the rows in tiles of eight, so that one
//! load brings four rows' groups and `sdot`'s lane index picks a row, the columns in panels of
//! eight. The instruction is written with `asm!` (its Rust intrinsic is not stable yet).

use std::arch::aarch64::*;
use std::arch::asm;

use tract_core::internal::*;

use crate::int8::kernels::matmul::Strided;
use crate::int8::kernels::quads::quad;
use crate::int8::kernels::tile_order;
use crate::int8::kernels::KernelSet;

/// Rows of one kernel step: two vectors of four rows' groups.
const ROWS: usize = 8;
/// Columns of one kernel step: two vectors of four columns.
const COLUMNS: usize = 8;
/// Deepest product accepted: below it no sum can overflow i32.
const MAX_DEPTH: usize = 1 << 16;

/// Whether this CPU runs [`product`] (probed once, with the kernel sets).
pub fn available() -> bool {
    KernelSet::best().has_dotprod()
}

/// The left operand, `rows x depth`, in tiles of eight rows: for every group of four terms, the
/// tile's eight rows' groups side by side, zero past the last row and the last term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdotRows {
    data: Vec<i32>,
    count: usize,
    quads: usize,
}

impl SdotRows {
    /// Packs `matrix` (`rows x depth`).
    pub fn new(matrix: Strided) -> SdotRows {
        let (count, depth) = matrix.shape;
        let quads = depth.div_ceil(4);
        let mut data = vec![0i32; count.div_ceil(ROWS) * quads * ROWS];
        for (tile, packed) in data.chunks_exact_mut(quads * ROWS).enumerate() {
            let height = ROWS.min(count - tile * ROWS);
            for (q, step) in packed.chunks_exact_mut(ROWS).enumerate() {
                for (r, value) in step.iter_mut().take(height).enumerate() {
                    *value = quad(&matrix, tile * ROWS + r, q, 0, true);
                }
            }
        }
        SdotRows { data, count, quads }
    }
}

/// The right operand, `depth x columns`, in panels of eight columns: for every group of four
/// terms, the panel's eight columns' groups side by side, zero past the last column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdotColumns {
    data: Vec<i32>,
    count: usize,
    quads: usize,
}

impl SdotColumns {
    /// Packs `matrix` (`depth x columns`).
    pub fn new(matrix: Strided) -> SdotColumns {
        let (depth, count) = matrix.shape;
        let quads = depth.div_ceil(4);
        let mut data = vec![0i32; count.div_ceil(COLUMNS) * quads * COLUMNS];
        for (panel, packed) in data.chunks_exact_mut(quads * COLUMNS).enumerate() {
            let width = COLUMNS.min(count - panel * COLUMNS);
            for (q, step) in packed.chunks_exact_mut(COLUMNS).enumerate() {
                for (j, value) in step.iter_mut().take(width).enumerate() {
                    *value = quad(&matrix, panel * COLUMNS + j, q, 0, false);
                }
            }
        }
        SdotColumns { data, count, quads }
    }
}

/// `out[r * columns + c] = sum_k a(r, k) * b(k, c)`, exact, into a row-major `rows x columns`
/// slice. Fails on a CPU without the dot-product instructions (see [`available`]), on operands
/// of different depths, and on depths of `2^16` terms or more.
pub fn product(a: &SdotRows, b: &SdotColumns, out: &mut [i32]) -> TractResult<()> {
    ensure!(
        a.quads == b.quads,
        "sdot product of operands of different depths"
    );
    ensure!(a.quads * 4 < MAX_DEPTH, "sdot product deeper than 2^16");
    ensure!(
        out.len() == a.count * b.count,
        "sdot product into an output of the wrong size"
    );
    ensure!(
        available(),
        "the sdot product needs the dot-product instructions, which this CPU lacks"
    );
    // SAFETY: the CPU has the dot-product instructions, checked just above.
    unsafe { product_sdot(a, b, out) };
    Ok(())
}

#[target_feature(enable = "neon,dotprod")]
fn product_sdot(a: &SdotRows, b: &SdotColumns, out: &mut [i32]) {
    let (rows, columns, quads) = (a.count, b.count, a.quads);
    let tiles = tile_order(
        rows.div_ceil(ROWS),
        columns.div_ceil(COLUMNS),
        a.data.len() > b.data.len(),
    );
    for (row_tile, panel) in tiles {
        let packed_rows = &a.data[row_tile * quads * ROWS..(row_tile + 1) * quads * ROWS];
        let packed_columns = &b.data[panel * quads * COLUMNS..(panel + 1) * quads * COLUMNS];
        // SAFETY: both slices hold `quads` steps of eight i32 values.
        let tile = unsafe { tile_sdot(packed_rows.as_ptr(), packed_columns.as_ptr(), quads) };
        let (first_row, first_column) = (row_tile * ROWS, panel * COLUMNS);
        let height = ROWS.min(rows - first_row);
        let width = COLUMNS.min(columns - first_column);
        for (r, vectors) in tile.iter().take(height).enumerate() {
            let mut values = [0i32; COLUMNS];
            // SAFETY: `values` holds eight i32 values.
            unsafe {
                vst1q_s32(values.as_mut_ptr(), vectors[0]);
                vst1q_s32(values.as_mut_ptr().add(4), vectors[1]);
            }
            let start = (first_row + r) * columns + first_column;
            out[start..start + width].copy_from_slice(&values[..width]);
        }
    }
}

/// `acc + sdot(columns, rows[LANE])`: lane `i` of the result adds the dot product of bytes
/// `4i .. 4i + 4` of `columns` with bytes `4 LANE .. 4 LANE + 4` of `rows`.
#[target_feature(enable = "neon,dotprod")]
#[inline]
fn sdot<const LANE: i32>(mut acc: int32x4_t, columns: int8x16_t, rows: int8x16_t) -> int32x4_t {
    // SAFETY: `sdot` reads and writes registers only; the CPU has it (target feature).
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {columns:v}.16b, {rows:v}.4b[{lane}]",
            acc = inout(vreg) acc,
            columns = in(vreg) columns,
            rows = in(vreg) rows,
            lane = const LANE,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// Eight rows by eight columns over `quads` groups of four terms, in sixteen registers.
///
/// # Safety
/// `rows` and `columns` point at `quads * 8` i32 values each.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn tile_sdot(rows: *const i32, columns: *const i32, quads: usize) -> [[int32x4_t; 2]; ROWS] {
    let mut acc = [[vdupq_n_s32(0); 2]; ROWS];
    for q in 0..quads {
        let (r, c) = (
            rows.add(q * ROWS).cast::<i8>(),
            columns.add(q * COLUMNS).cast::<i8>(),
        );
        let low_rows = vld1q_s8(r);
        let high_rows = vld1q_s8(r.add(16));
        let cs = [vld1q_s8(c), vld1q_s8(c.add(16))];
        for (v, column) in cs.iter().enumerate() {
            acc[0][v] = sdot::<0>(acc[0][v], *column, low_rows);
            acc[1][v] = sdot::<1>(acc[1][v], *column, low_rows);
            acc[2][v] = sdot::<2>(acc[2][v], *column, low_rows);
            acc[3][v] = sdot::<3>(acc[3][v], *column, low_rows);
            acc[4][v] = sdot::<0>(acc[4][v], *column, high_rows);
            acc[5][v] = sdot::<1>(acc[5][v], *column, high_rows);
            acc[6][v] = sdot::<2>(acc[6][v], *column, high_rows);
            acc[7][v] = sdot::<3>(acc[7][v], *column, high_rows);
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::int8::test_rng::{direct_product, for_each_operand_pair, TestRng};

    /// Row- and column-major operands, sizes off the 8x8 tile, depths off a multiple of four,
    /// and the extreme values -128 and 127, give the direct integer product.
    #[test]
    fn matches_the_direct_product() {
        if !available() {
            eprintln!("no dot-product instructions on this CPU: the sdot product is not used here");
            return;
        }
        let shapes = [
            (1, 1, 1),
            (8, 4, 8),
            (9, 3, 17),
            (13, 96, 40),
            (40, 161, 5),
            (50, 37, 1),
            (3, 1280, 20),
        ];
        for_each_operand_pair(&mut TestRng(0x6a09_e667_f3bc_c908), &shapes, |a, b| {
            let mut out = vec![0i32; a.shape.0 * b.shape.1];
            product(&SdotRows::new(a), &SdotColumns::new(b), &mut out).unwrap();
            assert_eq!(out, direct_product(&a, &b), "{:?} x {:?}", a.shape, b.shape);
        });
    }
}
