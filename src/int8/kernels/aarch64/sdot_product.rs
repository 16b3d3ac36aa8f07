//! An exact int8 matrix product for aarch64, on operands packed in groups of four terms
//! ([`quad`]): the rows in tiles of eight, so that one load brings four rows' groups, the columns
//! in panels of eight. One kernel step computes eight rows by eight columns, on one of two sets of
//! instructions ([`TileInstructions`]):
//!
//! - `sdot` (Armv8.2 `dotprod`: Cortex-A55, A76, A78AE as in Jetson Orin, the Pi 5) multiplies
//!   four signed bytes by four signed bytes and adds the four products into a 32-bit lane, so one
//!   instruction does four lanes times four terms; its lane index picks a row. It is written with
//!   `asm!` (its Rust intrinsic is not stable yet).
//! - Plain NEON (every aarch64 CPU: Cortex-A53, A72) in [`super::neon_pairs`], on operands
//!   reordered into chunks of sixteen terms: `smull`/`smlal2` sum two products in 16-bit lanes,
//!   `sadalp` adds pairs of those into 32-bit lanes. Exact when one operand holds no -128 (then a
//!   product is at most 127 * 128 in magnitude and two of them fit 16 bits): the weights, which
//!   the quantizer keeps in [-127, 127]. With 7-bit weights (in [-63, 63], `dermedge-tools
//!   quantize --pointwise-weight-bits 7`) a 16-bit lane sums four products, from two chunks
//!   ([`neon_pairs::tile_fours`]); the same packing serves both.
//!
//! Both stay signed: a product is at most 2^14 in magnitude and depths are kept below 2^16, so
//! no i32 sum overflows.

use std::arch::aarch64::*;
use std::arch::asm;

use tract_core::internal::*;

use super::neon_pairs;
use super::requantize::{with_requantizer, Requantize};
use super::vectors::{transpose_4x4, Eight, LANES};
use crate::int8::grid::{OutputGrid, WEIGHT_BOUND_7_BITS};
use crate::int8::kernels::matmul::{ChannelScales, Strided, SCALE_BLOCK};
use crate::int8::kernels::quads::quad;
use crate::int8::kernels::tile_order;
use crate::int8::kernels::KernelSet;

/// Rows of one kernel step: two vectors of four rows' groups.
pub const ROWS: usize = 8;
/// Columns of one kernel step: two vectors of four columns.
pub const COLUMNS: usize = 8;
/// Halves of four rows and of four columns a tile sums, each 1 or 2: a tile at the product's
/// edge with four rows (or columns) or fewer sums one half and leaves the other zero.
pub type LiveHalves = (usize, usize);
/// Deepest product accepted: below it no sum can overflow i32.
const MAX_DEPTH: usize = 1 << 16;

/// The instructions the tiles of a product run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TileInstructions {
    /// `sdot`, on the dot-product set.
    Sdot,
    /// `smull`, `smlal` and `sadalp`, on the NEON set; one operand must hold no -128.
    NeonPairs,
}

impl TileInstructions {
    /// The name of the product's kernel on these instructions.
    pub fn kernel_name(self) -> &'static str {
        match self {
            TileInstructions::Sdot => "dermedge_arm64_sdot_i32_8x8",
            TileInstructions::NeonPairs => "dermedge_arm64_neon_pairs_i32_8x8x16",
        }
    }

    /// Whether this CPU runs these instructions (probed once, with the kernel sets).
    pub fn available(self) -> bool {
        match self {
            TileInstructions::Sdot => KernelSet::best().has_dotprod(),
            TileInstructions::NeonPairs => KernelSet::best().has_neon(),
        }
    }
}

/// The left operand, `rows x depth`, in tiles of eight rows: for every group of four terms, the
/// tile's eight rows' groups side by side, zero past the last row and the last term (for the
/// NEON pairs, reordered into chunks of sixteen terms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdotRows {
    data: Vec<i32>,
    count: usize,
    quads: usize,
    /// The tile instructions the packing is laid out for.
    instructions: TileInstructions,
    /// Whether no value is -128 (known for weights only).
    above_minimum: bool,
    /// Whether every value lies in [-63, 63] (known for weights only).
    seven_bits: bool,
}

impl SdotRows {
    /// Packs `matrix` (`rows x depth`) for `instructions`.
    pub fn new(matrix: Strided, instructions: TileInstructions) -> SdotRows {
        let (data, quads) = pack(&matrix, true, instructions);
        SdotRows {
            data,
            count: matrix.shape.0,
            quads,
            instructions,
            above_minimum: false,
            seven_bits: false,
        }
    }

    /// Packs weights (`rows x depth`) for `instructions`, noting whether the NEON pairs can
    /// take them.
    pub fn weights(matrix: Strided, instructions: TileInstructions) -> SdotRows {
        SdotRows {
            above_minimum: within(&matrix, i8::MAX),
            seven_bits: within(&matrix, WEIGHT_BOUND_7_BITS),
            ..SdotRows::new(matrix, instructions)
        }
    }

    /// Whether a product with these weights runs on `instructions`.
    pub fn runs_on(&self, instructions: TileInstructions) -> bool {
        self.instructions == instructions
            && (instructions == TileInstructions::Sdot || self.above_minimum)
    }
}

/// The right operand, `depth x columns`, in panels of eight columns: for every group of four
/// terms, the panel's eight columns' groups side by side, zero past the last column (for the
/// NEON pairs, reordered into chunks of sixteen terms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdotColumns {
    data: Vec<i32>,
    count: usize,
    quads: usize,
    /// The tile instructions the packing is laid out for.
    instructions: TileInstructions,
    /// Whether no value is -128 (known for weights only).
    above_minimum: bool,
    /// Whether every value lies in [-63, 63] (known for weights only).
    seven_bits: bool,
}

impl SdotColumns {
    /// Packs `matrix` (`depth x columns`) for `instructions`.
    pub fn new(matrix: Strided, instructions: TileInstructions) -> SdotColumns {
        let (data, quads) = pack(&matrix, false, instructions);
        SdotColumns {
            data,
            count: matrix.shape.1,
            quads,
            instructions,
            above_minimum: false,
            seven_bits: false,
        }
    }

    /// Packs weights (`depth x columns`) for `instructions`, noting whether the NEON pairs can
    /// take them.
    pub fn weights(matrix: Strided, instructions: TileInstructions) -> SdotColumns {
        SdotColumns {
            above_minimum: within(&matrix, i8::MAX),
            seven_bits: within(&matrix, WEIGHT_BOUND_7_BITS),
            ..SdotColumns::new(matrix, instructions)
        }
    }

    /// Whether a product with these weights runs on `instructions`.
    pub fn runs_on(&self, instructions: TileInstructions) -> bool {
        self.instructions == instructions
            && (instructions == TileInstructions::Sdot || self.above_minimum)
    }
}

/// `matrix` packed by eight entries for `instructions`, and its groups of four terms per
/// entry.
fn pack(
    matrix: &Strided,
    terms_along_rows: bool,
    instructions: TileInstructions,
) -> (Vec<i32>, usize) {
    let depth = if terms_along_rows {
        matrix.shape.1
    } else {
        matrix.shape.0
    };
    let (data, quads) = (pack_by_eight(matrix, terms_along_rows), depth.div_ceil(4));
    match instructions {
        TileInstructions::Sdot => (data, quads),
        TileInstructions::NeonPairs => neon_pairs::chunks_from_quads(&data, quads),
    }
}

/// Whether every value of `matrix` lies in `[-bound, bound]`.
fn within(matrix: &Strided, bound: i8) -> bool {
    let (rows, columns) = matrix.shape;
    (0..rows).all(|i| (0..columns).all(|j| matrix.at(i, j).unsigned_abs() <= bound.unsigned_abs()))
}

/// The entries of `matrix` (its rows when the terms run along rows, else its columns) in
/// blocks of eight ([`ROWS`] = [`COLUMNS`]): for every group of four terms, the block's eight
/// entries' groups side by side, zero past the last entry and the last term. Entries whose
/// terms are consecutive bytes (an activation tensor read channels-last, a row-major weight
/// matrix) are moved sixteen bytes at a time and transposed in registers; terms whose entries
/// are consecutive (a channels-first activation tensor) four rows of eight bytes at a time,
/// interleaved in registers; the edges one group at a time.
fn pack_by_eight(matrix: &Strided, terms_along_rows: bool) -> Vec<i32> {
    let ((entries, depth), (entry_stride, term_stride)) = if terms_along_rows {
        (matrix.shape, matrix.strides)
    } else {
        (
            (matrix.shape.1, matrix.shape.0),
            (matrix.strides.1, matrix.strides.0),
        )
    };
    let quads = depth.div_ceil(4);
    let mut data = vec![0i32; entries.div_ceil(ROWS) * quads * ROWS];
    let last = |entry: usize, term: usize| entry * entry_stride + term * term_stride;
    for (block, packed) in data.chunks_exact_mut(quads * ROWS).enumerate() {
        let first = block * ROWS;
        let whole = first + ROWS <= entries;
        let mut q = 0;
        if whole && term_stride == 1 {
            while 4 * q + 16 <= depth && last(first + ROWS - 1, 4 * q + 15) < matrix.values.len() {
                // SAFETY: the eight entries' sixteen bytes from term 4q are inside `values`
                // (checked just above), and `packed` holds four groups of eight from `q`.
                unsafe {
                    transpose_quads(
                        matrix.values.as_ptr().add(last(first, 4 * q)),
                        entry_stride,
                        packed.as_mut_ptr().add(q * ROWS),
                    )
                };
                q += 4;
            }
        } else if whole && entry_stride == 1 {
            while 4 * q + 4 <= depth && last(first + ROWS - 1, 4 * q + 3) < matrix.values.len() {
                // SAFETY: the four terms' eight bytes from entry `first` are inside `values`
                // (checked just above), and `packed` holds a group of eight at `q`.
                unsafe {
                    interleave_terms(
                        matrix.values.as_ptr().add(last(first, 4 * q)),
                        term_stride,
                        packed.as_mut_ptr().add(q * ROWS),
                    )
                };
                q += 1;
            }
        }
        for (q, step) in packed.chunks_exact_mut(ROWS).enumerate().skip(q) {
            for (e, value) in step.iter_mut().take(entries - first).enumerate() {
                *value = quad(matrix, first + e, q, 0, terms_along_rows);
            }
        }
    }
    data
}

/// Four groups of eight from eight entries' sixteen consecutive bytes each, `stride` apart:
/// two 4x4 transposes of 32-bit groups.
///
/// # Safety
/// `source` points at eight runs of sixteen bytes `stride` apart; `target` at room for 32 i32.
#[inline(always)]
unsafe fn transpose_quads(source: *const i8, stride: usize, target: *mut i32) {
    for half in 0..2 {
        let v: [int32x4_t; 4] = std::array::from_fn(|e| {
            vreinterpretq_s32_s8(vld1q_s8(source.add((4 * half + e) * stride)))
        });
        for (q, group) in transpose_4x4(v).iter().enumerate() {
            vst1q_s32(target.add(q * ROWS + 4 * half), *group);
        }
    }
}

/// One group of eight from four terms' eight consecutive entries each, `stride` apart: the
/// bytes interleaved so that each entry's four terms sit together.
///
/// # Safety
/// `source` points at four runs of eight bytes `stride` apart; `target` at room for 8 i32.
#[inline(always)]
unsafe fn interleave_terms(source: *const i8, stride: usize, target: *mut i32) {
    let t: [int8x8_t; 4] = std::array::from_fn(|t| vld1_s8(source.add(t * stride)));
    let (low01, high01) = (vzip1_s8(t[0], t[1]), vzip2_s8(t[0], t[1]));
    let (low23, high23) = (vzip1_s8(t[2], t[3]), vzip2_s8(t[2], t[3]));
    let pairs = |v: int8x8_t| vreinterpret_s16_s8(v);
    let groups = [
        vzip1_s16(pairs(low01), pairs(low23)),
        vzip2_s16(pairs(low01), pairs(low23)),
        vzip1_s16(pairs(high01), pairs(high23)),
        vzip2_s16(pairs(high01), pairs(high23)),
    ];
    for (at, group) in groups.iter().enumerate() {
        vst1_s32(target.add(2 * at), vreinterpret_s32_s16(*group));
    }
}

/// `out[r * columns + c] = sum_k a(r, k) * b(k, c)`, exact, into a row-major `rows x columns`
/// slice, on `instructions`. Fails on a CPU without them (see [`TileInstructions::available`]),
/// on the NEON pairs when neither operand is weights free of -128, on operands of different
/// depths, and on depths of `2^16` terms or more.
pub fn product(
    a: &SdotRows,
    b: &SdotColumns,
    instructions: TileInstructions,
    out: &mut [i32],
) -> TractResult<()> {
    check(a, b, instructions, out.len())?;
    let columns = b.count;
    // SAFETY: the CPU has the instructions and the operands fit (checked above).
    unsafe {
        for_each_tile(a, b, instructions, |first_row, first_column, tile| {
            let width = COLUMNS.min(columns - first_column);
            for (r, sums) in tile.iter().enumerate() {
                let target = out[(first_row + r) * columns + first_column..].as_mut_ptr();
                if width == COLUMNS {
                    vst1q_s32(target, sums[0]);
                    vst1q_s32(target.add(4), sums[1]);
                } else {
                    let mut values = [0i32; COLUMNS];
                    vst1q_s32(values.as_mut_ptr(), sums[0]);
                    vst1q_s32(values.as_mut_ptr().add(4), sums[1]);
                    std::ptr::copy_nonoverlapping(values.as_ptr(), target, width);
                }
            }
        })
    };
    Ok(())
}

/// [`product`] requantized as it leaves the registers: `out[r * columns + c] =
/// grid(sum * multiplier[i] + offset[i])` with `i = r` (`scales_per_row`) or `i = c`, the
/// values [`crate::int8::kernels::matmul::Requantize`] writes.
pub fn product_requantized(
    a: &SdotRows,
    b: &SdotColumns,
    instructions: TileInstructions,
    (scales, scales_per_row): (&ChannelScales, bool),
    grid: OutputGrid,
    out: &mut [i8],
) -> TractResult<()> {
    check(a, b, instructions, out.len())?;
    let scaled = if scales_per_row { a.count } else { b.count };
    ensure!(
        scales.channels() == scaled,
        "requantized product with scales of the wrong size"
    );
    const { assert!(SCALE_BLOCK.is_multiple_of(LANES)) };
    let (multiplier, offset) = scales.padded();
    let (multiplier, offset) = (multiplier.as_ptr(), offset.as_ptr());
    let columns = b.count;
    let out = out.as_mut_ptr();
    // SAFETY: the CPU has the instructions and the operands fit (checked above); every target
    // is the start of a row's `width` values in `out`, and the scales are padded to whole
    // vectors, one per row or per column (checked above).
    with_requantizer!(grid, scales.finite(), |quantizer| unsafe {
        for_each_tile(a, b, instructions, |first_row, first_column, tile| {
            // Copies: the constants stay in registers while the stores go out.
            let (out, columns, quantizer) = (out, columns, quantizer);
            let (multiplier, offset) = (multiplier, offset);
            let width = COLUMNS.min(columns - first_column);
            let column_scales = (!scales_per_row).then(|| {
                (
                    Eight::load(multiplier.add(first_column)),
                    Eight::load(offset.add(first_column)),
                )
            });
            let mut target = out.add(first_row * columns + first_column);
            for (r, sums) in tile.iter().enumerate() {
                let row = first_row + r;
                let (m, b) = column_scales.unwrap_or_else(|| {
                    (
                        Eight::splat(*multiplier.add(row)),
                        Eight::splat(*offset.add(row)),
                    )
                });
                quantizer.store(Eight::from_sums(*sums), m, b, target, width);
                target = target.wrapping_add(columns);
            }
        })
    });
    Ok(())
}

fn check(
    a: &SdotRows,
    b: &SdotColumns,
    instructions: TileInstructions,
    out_len: usize,
) -> TractResult<()> {
    ensure!(
        a.instructions == instructions && b.instructions == instructions,
        "the {instructions:?} product of operands packed for another tile"
    );
    ensure!(
        a.quads == b.quads,
        "sdot product of operands of different depths"
    );
    ensure!(a.quads * 4 < MAX_DEPTH, "sdot product deeper than 2^16");
    ensure!(
        out_len == a.count * b.count,
        "sdot product into an output of the wrong size"
    );
    ensure!(
        instructions.available(),
        "the {instructions:?} product needs instructions this CPU lacks"
    );
    ensure!(
        instructions != TileInstructions::NeonPairs || a.above_minimum || b.above_minimum,
        "the NEON pair product needs one operand free of -128"
    );
    Ok(())
}

/// Calls `store(first_row, first_column, sums)` for every tile of the product, with the sums
/// of the tile's rows inside the matrix (eight vectors pairs, fewer on the last row tile),
/// computed on `instructions` (on the NEON pairs, four products per 16-bit lane when one operand
/// is weights within 7 bits).
///
/// # Safety
/// The CPU has the instructions, and `a` and `b` have the same depth.
unsafe fn for_each_tile(
    a: &SdotRows,
    b: &SdotColumns,
    instructions: TileInstructions,
    store: impl FnMut(usize, usize, &[[int32x4_t; 2]]),
) {
    match instructions {
        // SAFETY (both): the CPU has the instructions; each tile's operands hold `quads` steps
        // of eight i32 values.
        TileInstructions::Sdot => tiles(
            a,
            b,
            |r, c, q, live| unsafe {
                match live {
                    (2, 2) => tile_sdot::<2, 2>(r, c, q),
                    (2, _) => tile_sdot::<2, 1>(r, c, q),
                    (_, 2) => tile_sdot::<1, 2>(r, c, q),
                    _ => tile_sdot::<1, 1>(r, c, q),
                }
            },
            store,
        ),
        TileInstructions::NeonPairs if a.seven_bits || b.seven_bits => tiles(
            a,
            b,
            |r, c, q, live| unsafe { neon_pairs::tile_fours(r, c, q, live) },
            store,
        ),
        TileInstructions::NeonPairs => tiles(
            a,
            b,
            |r, c, q, live| unsafe { neon_pairs::tile(r, c, q, live) },
            store,
        ),
    }
}

/// [`for_each_tile`] with each tile's sums from `tile(rows, columns, quads, live)`, `live` the
/// halves of the tile inside the product.
///
/// # Safety
/// `a` and `b` have the same depth.
#[inline(always)]
unsafe fn tiles(
    a: &SdotRows,
    b: &SdotColumns,
    tile: impl Fn(*const i32, *const i32, usize, LiveHalves) -> [[int32x4_t; 2]; ROWS],
    mut store: impl FnMut(usize, usize, &[[int32x4_t; 2]]),
) {
    let (rows, columns, quads) = (a.count, b.count, a.quads);
    let tiles = tile_order(
        rows.div_ceil(ROWS),
        columns.div_ceil(COLUMNS),
        a.data.len() > b.data.len(),
    );
    for (row_tile, panel) in tiles {
        let packed_rows = &a.data[row_tile * quads * ROWS..(row_tile + 1) * quads * ROWS];
        let packed_columns = &b.data[panel * quads * COLUMNS..(panel + 1) * quads * COLUMNS];
        let (first_row, first_column) = (row_tile * ROWS, panel * COLUMNS);
        let halves = |left: usize| if left <= ROWS / 2 { 1 } else { 2 };
        let live = (halves(rows - first_row), halves(columns - first_column));
        let sums = tile(packed_rows.as_ptr(), packed_columns.as_ptr(), quads, live);
        store(first_row, first_column, &sums[..ROWS.min(rows - first_row)]);
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

/// Eight rows by eight columns over `quads` groups of four terms, in sixteen registers; only
/// the first `ROW_HALVES` halves of four rows and `COLUMN_HALVES` of four columns are summed
/// (the others stay zero).
///
/// # Safety
/// `rows` and `columns` point at `quads * 8` i32 values each.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn tile_sdot<const ROW_HALVES: usize, const COLUMN_HALVES: usize>(
    rows: *const i32,
    columns: *const i32,
    quads: usize,
) -> [[int32x4_t; 2]; ROWS] {
    let mut acc = [[vdupq_n_s32(0); 2]; ROWS];
    let step = |acc: &mut _, q: usize| {
        quad_step::<ROW_HALVES, COLUMN_HALVES>(acc, rows.add(q * ROWS), columns.add(q * COLUMNS))
    };
    let mut q = 0;
    while q + 2 <= quads {
        step(&mut acc, q);
        step(&mut acc, q + 1);
        q += 2;
    }
    if q < quads {
        step(&mut acc, q);
    }
    acc
}

/// One group of four terms of [`tile_sdot`].
///
/// # Safety
/// `rows` and `columns` point at eight i32 values each.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn quad_step<const ROW_HALVES: usize, const COLUMN_HALVES: usize>(
    acc: &mut [[int32x4_t; 2]; ROWS],
    rows: *const i32,
    columns: *const i32,
) {
    let (r, c) = (rows.cast::<i8>(), columns.cast::<i8>());
    let low_rows = vld1q_s8(r);
    for v in 0..COLUMN_HALVES {
        let column = vld1q_s8(c.add(16 * v));
        acc[0][v] = sdot::<0>(acc[0][v], column, low_rows);
        acc[1][v] = sdot::<1>(acc[1][v], column, low_rows);
        acc[2][v] = sdot::<2>(acc[2][v], column, low_rows);
        acc[3][v] = sdot::<3>(acc[3][v], column, low_rows);
        if ROW_HALVES == 2 {
            let high_rows = vld1q_s8(r.add(16));
            acc[4][v] = sdot::<0>(acc[4][v], column, high_rows);
            acc[5][v] = sdot::<1>(acc[5][v], column, high_rows);
            acc[6][v] = sdot::<2>(acc[6][v], column, high_rows);
            acc[7][v] = sdot::<3>(acc[7][v], column, high_rows);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::int8::test_rng::{
        direct_product, for_each_operand_pair, random_requantization, TestRng,
    };

    /// The instruction sets this CPU runs.
    fn available_sets() -> Vec<TileInstructions> {
        [TileInstructions::Sdot, TileInstructions::NeonPairs]
            .into_iter()
            .filter(|set| set.available())
            .collect()
    }

    /// `values` clamped to `[-bound, bound]`: weights as the quantizer makes them (8 bits:
    /// 127, 7 bits: 63).
    fn as_weights(matrix: &Strided, bound: i8) -> Vec<i8> {
        matrix
            .values
            .iter()
            .map(|v| (*v).clamp(-bound, bound))
            .collect()
    }

    /// The operands of a product on `set`, with 8-bit weights (no -128) on the left
    /// (`weights_left`) or on the right, and the direct product they must give.
    fn operands(
        a: Strided,
        b: Strided,
        set: TileInstructions,
        weights_left: bool,
        check: impl FnOnce(SdotRows, SdotColumns, Vec<i32>),
    ) {
        bounded_operands(a, b, set, (weights_left, i8::MAX), check)
    }

    /// [`operands`] with weights in `[-bound, bound]`.
    fn bounded_operands(
        a: Strided,
        b: Strided,
        set: TileInstructions,
        (weights_left, bound): (bool, i8),
        check: impl FnOnce(SdotRows, SdotColumns, Vec<i32>),
    ) {
        if set == TileInstructions::Sdot {
            return check(
                SdotRows::new(a, set),
                SdotColumns::new(b, set),
                direct_product(&a, &b),
            );
        }
        if weights_left {
            let values = as_weights(&a, bound);
            let a = Strided {
                values: &values,
                ..a
            };
            check(
                SdotRows::weights(a, set),
                SdotColumns::new(b, set),
                direct_product(&a, &b),
            )
        } else {
            let values = as_weights(&b, bound);
            let b = Strided {
                values: &values,
                ..b
            };
            check(
                SdotRows::new(a, set),
                SdotColumns::weights(b, set),
                direct_product(&a, &b),
            )
        }
    }

    /// Row- and column-major operands, sizes off the 8x8 tile (last tiles of one to seven rows
    /// or columns: those of four or fewer sum half a tile), depths off a multiple of four
    /// and of eight, and the extreme values (-128 and 127; -127 on the NEON pairs' weights
    /// side, whose two products in a 16-bit lane then reach 32512) give the direct integer
    /// product on every instruction set this CPU runs.
    #[test]
    fn matches_the_direct_product() {
        let shapes = [
            (1, 1, 1),
            (8, 4, 8),
            (9, 3, 17),
            (13, 96, 40),
            (40, 161, 5),
            (50, 37, 1),
            (3, 1280, 20),
            (12, 24, 12),
            (20, 48, 28),
        ];
        for set in available_sets() {
            for weights_left in [true, false] {
                let mut rng = TestRng(0x6a09_e667_f3bc_c908);
                for_each_operand_pair(&mut rng, &shapes, |a, b| {
                    operands(a, b, set, weights_left, |a, b, expected| {
                        let mut out = vec![0i32; expected.len()];
                        product(&a, &b, set, &mut out).unwrap();
                        assert_eq!(out, expected, "{set:?} {:?} x {:?}", a.count, b.count);
                    })
                });
            }
        }
    }

    /// With 7-bit weights the NEON pairs sum four products per 16-bit lane: the direct product
    /// still, for odd and even chunk counts, with random and extreme values, and where every
    /// lane reaches its largest sum (`4 * 63 * 128` and `4 * 63 * 127`).
    #[test]
    fn seven_bit_weights_match_the_direct_product_on_the_neon_pairs() {
        let set = TileInstructions::NeonPairs;
        if !set.available() {
            return;
        }
        let shapes = [
            (8, 16, 8),
            (9, 17, 13),
            (13, 40, 9),
            (16, 96, 24),
            (3, 161, 20),
            (12, 64, 28),
        ];
        for weights_left in [true, false] {
            let mut rng = TestRng(0x510e_527f_ade6_82d1);
            for_each_operand_pair(&mut rng, &shapes, |a, b| {
                bounded_operands(a, b, set, (weights_left, 63), |a, b, expected| {
                    assert!(a.seven_bits || b.seven_bits);
                    let mut out = vec![0i32; expected.len()];
                    product(&a, &b, set, &mut out).unwrap();
                    assert_eq!(out, expected, "{:?} x {:?}", a.count, b.count);
                })
            });
        }
        for (activation, weight) in [(-128i8, -63i8), (127, 63), (-128, 63)] {
            let (rows, depth, columns) = (8, 64, 8);
            let activations = vec![activation; rows * depth];
            let weights = vec![weight; depth * columns];
            let a = Strided::row_major(&activations, rows, depth);
            let b = Strided::row_major(&weights, depth, columns);
            let mut out = vec![0i32; rows * columns];
            let weights = SdotColumns::weights(b, set);
            product(&SdotRows::new(a, set), &weights, set, &mut out).unwrap();
            let expected = depth as i32 * i32::from(activation) * i32::from(weight);
            assert!(
                out.iter().all(|v| *v == expected),
                "{activation} x {weight}"
            );
        }
    }

    /// The NEON pairs refuse operands of which neither is weights free of -128, with an error.
    #[test]
    fn neon_pairs_refuse_two_operands_that_may_hold_the_minimum() {
        let values = [-128i8; 16];
        let a = Strided::row_major(&values, 4, 4);
        let mut out = vec![0i32; 16];
        let neon = TileInstructions::NeonPairs;
        let error = product(
            &SdotRows::new(a, neon),
            &SdotColumns::new(a, neon),
            neon,
            &mut out,
        )
        .unwrap_err();
        assert!(error.to_string().contains("-128"), "{error}");
        assert!(!SdotRows::weights(a, neon).above_minimum);
    }

    /// Requantized in the registers, the product gives the portable requantization of the
    /// direct product, with scales per row and per column, on every instruction set.
    #[test]
    fn requantizes_as_the_portable_loop() {
        let shapes = [(8, 16, 8), (9, 24, 17), (24, 96, 30), (7, 1280, 1)];
        for set in available_sets() {
            let mut rng = TestRng(0xbb67_ae85_84ca_a73b);
            let mut scale_rng = TestRng(0x3c6e_f372_fe94_f82b);
            for_each_operand_pair(&mut rng, &shapes, |a, b| {
                for scales_per_row in [true, false] {
                    operands(a, b, set, scales_per_row, |a, b, sums| {
                        let columns = b.count;
                        let (multiplier, offset, grid, expected) =
                            random_requantization(&mut scale_rng, &sums, columns, scales_per_row);
                        let mut out = vec![0i8; sums.len()];
                        let scales = ChannelScales::new(multiplier, offset).unwrap();
                        let scales = (&scales, scales_per_row);
                        product_requantized(&a, &b, set, scales, grid, &mut out).unwrap();
                        assert_eq!(out, expected, "{set:?}, per row {scales_per_row}");
                    });
                }
            });
        }
    }

    /// Non-finite scales (a corrupt model's) on a grid of the whole i8 range leave the
    /// saturating path: NaN goes to the lowest step, infinities to the ends, as the portable
    /// loop has them.
    #[test]
    fn non_finite_scales_requantize_as_the_portable_loop() {
        let grid = OutputGrid::new(10.0, 128, f32::NEG_INFINITY, f32::INFINITY);
        let (rows, depth, columns) = (8, 16, 8);
        let mut rng = TestRng(0xa54f_f53a_5f1d_36f1);
        let a = rng.i8s(rows * depth);
        let b = rng.i8s(depth * columns);
        let (a, b) = (
            Strided::row_major(&a, rows, depth),
            Strided::row_major(&b, depth, columns),
        );
        for set in available_sets() {
            operands(a, b, set, true, |a, b, sums| {
                let mut multiplier = vec![0.01f32; rows];
                let mut offset = vec![3.0f32; rows];
                (multiplier[0], offset[1], offset[2]) =
                    (f32::NAN, f32::INFINITY, f32::NEG_INFINITY);
                let expected: Vec<i8> = sums
                    .iter()
                    .enumerate()
                    .map(|(at, sum)| {
                        let r = at / columns;
                        grid.quantize(*sum as f32 * multiplier[r] + offset[r])
                    })
                    .collect();
                assert_eq!(expected[0], i8::MIN);
                let scales = ChannelScales::new(multiplier, offset).unwrap();
                assert!(!scales.finite());
                let mut out = vec![0i8; sums.len()];
                product_requantized(&a, &b, set, (&scales, true), grid, &mut out).unwrap();
                assert_eq!(out, expected, "{set:?}");
            });
        }
    }
}
