//! An exact int8 matrix product for x86-64 CPUs with AVX-512 VNNI: `vpdpbusd` multiplies four
//! unsigned bytes by four signed bytes and adds the four products into a 32-bit lane, so one
//! instruction does sixteen lanes times four terms.
//!
//! The activations are made unsigned by flipping their sign bit (`x ^ 0x80 == x + 128` as an
//! unsigned byte) and the weights stay signed; `128 * sum(weights)` of each output channel is
//! subtracted at the end, so every sum is the signed product exactly: a product is at most
//! `255 * 128` in magnitude and depths are kept below `2^16`, so no i32 sum overflows.
//!
//! One kernel step computes eight rows by thirty-two columns (two vectors) from a "row" side read
//! four bytes at a time and broadcast, and a "panel" side packed in thirty-two-column panels. For
//! a channels-first output the weights are the rows and the activations the panels; for a
//! channels-last output, the other way round.

use std::arch::x86_64::*;

use tract_core::internal::*;

use crate::int8::grid::OutputGrid;
use crate::int8::kernels::matmul::{ChannelScales, Strided, SCALE_BLOCK};
use crate::int8::kernels::quads::quad;
use crate::int8::kernels::tile_order;
use crate::int8::kernels::KernelSet;

/// Rows of one kernel step.
const ROWS: usize = 8;
/// 32-bit lanes in a vector.
const LANES: usize = 16;
/// Columns of a panel: two vectors.
const PANEL: usize = 2 * LANES;
/// Deepest product accepted: below it no sum can overflow i32.
const MAX_DEPTH: usize = 1 << 16;
/// Flips the sign bit of four bytes.
const SIGN_BITS: u32 = 0x8080_8080;

/// Whether this CPU runs [`product`] (probed once, with the kernel sets).
pub fn available() -> bool {
    KernelSet::best().has_avx512_vnni()
}

/// The row side: `count` rows of `quads` four-term groups, each row contiguous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuadRows {
    data: Vec<i32>,
    count: usize,
    quads: usize,
    /// Whether the bytes are activations made unsigned (else signed weights).
    unsigned: bool,
    /// For weights: `128 * sum` of each row, subtracted from its outputs.
    corrections: Vec<i32>,
}

impl QuadRows {
    /// Signed weights, `rows x depth`.
    pub fn weights(matrix: Strided) -> QuadRows {
        let (count, depth) = matrix.shape;
        let quads = depth.div_ceil(4);
        let data = (0..count * quads)
            .map(|at| quad(&matrix, at / quads, at % quads, 0, true))
            .collect();
        let corrections = (0..count)
            .map(|r| 128 * (0..depth).map(|k| i32::from(matrix.at(r, k))).sum::<i32>())
            .collect();
        QuadRows {
            data,
            count,
            quads,
            unsigned: false,
            corrections,
        }
    }

    /// Activations, `positions x depth`, made unsigned. Contiguous rows whose depth is a
    /// multiple of four are copied four bytes at a time; contiguous columns (channels-first
    /// activations) are interleaved 32 positions at a time ([`interleave_rows_avx2`]).
    pub fn activations(matrix: Strided) -> QuadRows {
        let (count, depth) = matrix.shape;
        let quads = depth.div_ceil(4);
        let data = if matrix.strides.1 == 1 && matrix.strides.0 == depth && depth % 4 == 0 {
            matrix.values[..count * depth]
                .chunks_exact(4)
                .map(|b| {
                    (u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
                        ^ SIGN_BITS) as i32
                })
                .collect()
        } else if matrix.strides.0 == 1 {
            interleave_columns(&matrix)
        } else {
            (0..count * quads)
                .map(|at| quad(&matrix, at / quads, at % quads, SIGN_BITS, true))
                .collect()
        };
        QuadRows {
            data,
            count,
            quads,
            unsigned: true,
            corrections: vec![],
        }
    }
}

/// The panel side: `count` columns in panels of [`PANEL`], for every four-term group the
/// panel's columns side by side, zero past the last column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuadPanels {
    data: Vec<i32>,
    count: usize,
    quads: usize,
    unsigned: bool,
    /// For weights: `128 * sum` of each column, padded to whole panels.
    corrections: Vec<i32>,
}

impl QuadPanels {
    /// Signed weights, `depth x columns`.
    pub fn weights(matrix: Strided) -> QuadPanels {
        let (depth, count) = matrix.shape;
        let mut panels = QuadPanels::pack(&matrix, 0);
        panels.corrections = (0..count.div_ceil(PANEL) * PANEL)
            .map(|c| {
                if c < count {
                    128 * (0..depth).map(|k| i32::from(matrix.at(k, c))).sum::<i32>()
                } else {
                    0
                }
            })
            .collect();
        panels
    }

    /// Activations, `depth x positions`, made unsigned.
    pub fn activations(matrix: Strided) -> QuadPanels {
        let mut panels = QuadPanels::pack(&matrix, SIGN_BITS);
        panels.unsigned = true;
        panels
    }

    fn pack(matrix: &Strided, sign: u32) -> QuadPanels {
        let (depth, count) = matrix.shape;
        let quads = depth.div_ceil(4);
        let panel_len = quads * PANEL;
        let mut data = vec![0i32; count.div_ceil(PANEL) * panel_len];
        for (panel, packed) in data.chunks_exact_mut(panel_len).enumerate() {
            let first = panel * PANEL;
            let width = PANEL.min(count - first);
            let whole_quads = if width == PANEL && matrix.strides.1 == 1 {
                depth / 4
            } else {
                0
            };
            if whole_quads > 0 {
                // SAFETY: AVX2 is part of every CPU with AVX-512 VNNI, which a QuadPanels is
                // only built for; the rows read are within the matrix.
                unsafe { interleave_rows_avx2(matrix, first, whole_quads, sign, packed) };
            }
            for q in whole_quads..quads {
                for j in 0..width {
                    packed[q * PANEL + j] = quad(matrix, first + j, q, sign, false);
                }
            }
        }
        QuadPanels {
            data,
            count,
            quads,
            unsigned: false,
            corrections: vec![],
        }
    }
}

/// The row side's groups of `matrix` (`positions x depth`, positions contiguous) made unsigned:
/// each whole panel of [`PANEL`] positions interleaved by [`interleave_rows_avx2`] on the
/// transposed matrix, then moved to its rows; the last positions and terms one group at a time.
fn interleave_columns(matrix: &Strided) -> Vec<i32> {
    let (count, depth) = matrix.shape;
    let quads = depth.div_ceil(4);
    let mut data = vec![0i32; count * quads];
    let (columns, whole_quads) = (matrix.transposed(), depth / 4);
    let mut panel = vec![0i32; whole_quads * PANEL];
    let whole = count / PANEL * PANEL;
    for first in (0..whole).step_by(PANEL) {
        // SAFETY: AVX2 is part of every CPU with AVX-512 VNNI, which a QuadRows product is only
        // built for; the rows read are within the matrix.
        unsafe { interleave_rows_avx2(&columns, first, whole_quads, SIGN_BITS, &mut panel) };
        for (q, values) in panel.chunks_exact(PANEL).enumerate() {
            for (j, value) in values.iter().enumerate() {
                data[(first + j) * quads + q] = *value;
            }
        }
    }
    for (at, value) in data.iter_mut().enumerate() {
        let (position, q) = (at / quads, at % quads);
        if position >= whole || q >= whole_quads {
            *value = quad(matrix, position, q, SIGN_BITS, true);
        }
    }
    data
}

/// Packs the first `quads` four-term groups of the 32-column panel at column `first` of a
/// matrix whose rows are contiguous: four rows' 32 bytes are interleaved into 32 groups of four
/// in twelve instructions.
#[target_feature(enable = "avx2")]
fn interleave_rows_avx2(
    matrix: &Strided,
    first: usize,
    quads: usize,
    sign: u32,
    packed: &mut [i32],
) {
    let flip = _mm256_set1_epi32(sign as i32);
    for q in 0..quads {
        let row = |b: usize| {
            let start = (q * 4 + b) * matrix.strides.0 + first;
            &matrix.values[start..start + PANEL]
        };
        let target = &mut packed[q * PANEL..(q + 1) * PANEL];
        // SAFETY: each row slice holds 32 bytes and `target` 32 i32 values; unaligned loads and
        // stores.
        unsafe {
            let r: [__m256i; 4] = std::array::from_fn(|b| {
                _mm256_xor_si256(_mm256_loadu_si256(row(b).as_ptr().cast()), flip)
            });
            let t0 = _mm256_unpacklo_epi8(r[0], r[1]);
            let t1 = _mm256_unpackhi_epi8(r[0], r[1]);
            let t2 = _mm256_unpacklo_epi8(r[2], r[3]);
            let t3 = _mm256_unpackhi_epi8(r[2], r[3]);
            let q0 = _mm256_unpacklo_epi16(t0, t2);
            let q1 = _mm256_unpackhi_epi16(t0, t2);
            let q2 = _mm256_unpacklo_epi16(t1, t3);
            let q3 = _mm256_unpackhi_epi16(t1, t3);
            let out = target.as_mut_ptr().cast::<__m256i>();
            _mm256_storeu_si256(out, _mm256_permute2x128_si256(q0, q1, 0x20));
            _mm256_storeu_si256(out.add(1), _mm256_permute2x128_si256(q2, q3, 0x20));
            _mm256_storeu_si256(out.add(2), _mm256_permute2x128_si256(q0, q1, 0x31));
            _mm256_storeu_si256(out.add(3), _mm256_permute2x128_si256(q2, q3, 0x31));
        }
    }
}

/// `out[r * columns + c] = sum_k a(r, k) * b(k, c)`, exact, into a row-major `rows x columns`
/// slice; one side holds the weights, the other the activations. Fails on a CPU without AVX-512
/// VNNI (see [`available`]), on operands of different depths or of the same kind, and on depths
/// of `2^16` terms or more.
pub fn product(a: &QuadRows, b: &QuadPanels, out: &mut [i32]) -> TractResult<()> {
    check(a, b, out.len())?;
    // SAFETY: the CPU supports AVX-512 F, BW and VNNI, and the operands fit (checked above).
    unsafe { product_avx512(a, b, out) };
    Ok(())
}

/// [`product`] requantized as it leaves the registers: `out[r * columns + c] =
/// grid(sum * multiplier[i] + offset[i])` with `i = r` (`scales_per_row`) or `i = c`, the
/// values [`crate::int8::kernels::matmul::Requantize`] writes.
pub fn product_requantized(
    a: &QuadRows,
    b: &QuadPanels,
    (scales, scales_per_row): (&ChannelScales, bool),
    grid: OutputGrid,
    out: &mut [i8],
) -> TractResult<()> {
    check(a, b, out.len())?;
    let scaled = if scales_per_row { a.count } else { b.count };
    ensure!(
        scales.channels() == scaled,
        "requantized product with scales of the wrong size"
    );
    const { assert!(SCALE_BLOCK.is_multiple_of(PANEL)) };
    // SAFETY: as in `product`; the scales are padded to whole panels.
    unsafe { product_requantized_avx512(a, b, (scales, scales_per_row), grid, out) };
    Ok(())
}

fn check(a: &QuadRows, b: &QuadPanels, out_len: usize) -> TractResult<()> {
    ensure!(
        a.quads == b.quads,
        "quad product of operands of different depths"
    );
    ensure!(
        a.unsigned != b.unsigned,
        "quad product of two operands of the same kind"
    );
    ensure!(a.quads * 4 < MAX_DEPTH, "quad product deeper than 2^16");
    ensure!(
        out_len == a.count * b.count,
        "quad product into an output of the wrong size"
    );
    ensure!(
        available(),
        "the quad product needs AVX-512 VNNI, which this CPU lacks"
    );
    Ok(())
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn product_avx512(a: &QuadRows, b: &QuadPanels, out: &mut [i32]) {
    let columns = b.count;
    for_each_tile(a, b, |first_row, first_column, tile| {
        let width = PANEL.min(columns - first_column);
        for (i, vectors) in tile.iter().enumerate() {
            let start = (first_row + i) * columns + first_column;
            let mut values = [0i32; PANEL];
            let target = if width == PANEL {
                &mut out[start..start + PANEL]
            } else {
                &mut values[..]
            };
            // SAFETY: `target` holds 32 i32 values; unaligned stores.
            unsafe {
                _mm512_storeu_si512(target.as_mut_ptr().cast(), vectors[0]);
                _mm512_storeu_si512(target.as_mut_ptr().add(LANES).cast(), vectors[1]);
            }
            if width < PANEL {
                out[start..start + width].copy_from_slice(&values[..width]);
            }
        }
    })
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn product_requantized_avx512(
    a: &QuadRows,
    b: &QuadPanels,
    (scales, scales_per_row): (&ChannelScales, bool),
    grid: OutputGrid,
    out: &mut [i8],
) {
    let (multiplier, offset) = scales.padded();
    let columns = b.count;
    let low = _mm512_set1_ps(grid.low);
    let high = _mm512_set1_ps(grid.high);
    let zero_point = _mm512_set1_epi32(i32::from(grid.zero_point));
    for_each_tile(a, b, |first_row, first_column, tile| {
        let width = PANEL.min(columns - first_column);
        // SAFETY: the scales are padded to whole panels; unaligned loads.
        let column_scales: [(__m512, __m512); 2] = std::array::from_fn(|v| unsafe {
            let at = (first_column + v * LANES).min(multiplier.len() - LANES);
            (
                _mm512_loadu_ps(multiplier[at..].as_ptr()),
                _mm512_loadu_ps(offset[at..].as_ptr()),
            )
        });
        for (i, vectors) in tile.iter().enumerate() {
            let row = first_row + i;
            let start = row * columns + first_column;
            let mut bytes = [0i8; PANEL];
            let target = if width == PANEL {
                &mut out[start..start + PANEL]
            } else {
                &mut bytes[..]
            };
            let row_scales = scales_per_row
                .then(|| (_mm512_set1_ps(multiplier[row]), _mm512_set1_ps(offset[row])));
            for (v, sums) in vectors.iter().enumerate() {
                let (m, b) = row_scales.unwrap_or(column_scales[v]);
                // OutputGrid::quantize on sixteen lanes: `max` returns its second operand for
                // a NaN first one, so NaN goes to the lowest step; the conversion rounds to the
                // nearest, ties to even.
                let steps = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(*sums), m), b);
                let clamped = _mm512_min_ps(_mm512_max_ps(steps, low), high);
                let values = _mm512_add_epi32(_mm512_cvtps_epi32(clamped), zero_point);
                // SAFETY: `target` holds sixteen bytes from `v * LANES`; unaligned store.
                unsafe {
                    _mm_storeu_si128(
                        target[v * LANES..].as_mut_ptr().cast(),
                        _mm512_cvtsepi32_epi8(values),
                    )
                };
            }
            if width < PANEL {
                out[start..start + width].copy_from_slice(&bytes[..width]);
            }
        }
    })
}

/// Calls `store(first_row, first_column, sums)` for every tile of the product, the weights'
/// corrections subtracted, with the sums of the tile's rows inside the matrix.
#[inline(always)]
fn for_each_tile(
    a: &QuadRows,
    b: &QuadPanels,
    mut store: impl FnMut(usize, usize, &[[__m512i; 2]]),
) {
    if a.unsigned {
        // SAFETY: callers run on a CPU with AVX-512 F, BW and VNNI (see `check`).
        unsafe { tiles_avx512::<true>(a, b, &mut store) }
    } else {
        // SAFETY: as above.
        unsafe { tiles_avx512::<false>(a, b, &mut store) }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
fn tiles_avx512<const ROWS_UNSIGNED: bool>(
    a: &QuadRows,
    b: &QuadPanels,
    store: &mut impl FnMut(usize, usize, &[[__m512i; 2]]),
) {
    let (rows, columns, quads) = (a.count, b.count, a.quads);
    let zero_row = vec![0i32; quads];
    let panel_len = quads * PANEL;
    let tiles = tile_order(
        rows.div_ceil(ROWS),
        columns.div_ceil(PANEL),
        a.data.len() > b.data.len(),
    );
    for (row_tile, panel) in tiles {
        let packed = &b.data[panel * panel_len..(panel + 1) * panel_len];
        let (first_row, first_column) = (row_tile * ROWS, panel * PANEL);
        let (height, width) = (
            ROWS.min(rows - first_row),
            PANEL.min(columns - first_column),
        );
        let row_starts: [*const i32; ROWS] = std::array::from_fn(|i| {
            if i < height {
                a.data[(first_row + i) * quads..].as_ptr()
            } else {
                zero_row.as_ptr()
            }
        });
        // SAFETY: every row start points at `quads` i32 values, and `packed` holds `quads`
        // steps of two vectors.
        let mut tile = unsafe {
            if width <= LANES {
                tile_avx512::<1, ROWS_UNSIGNED>(row_starts, packed, quads)
            } else {
                tile_avx512::<2, ROWS_UNSIGNED>(row_starts, packed, quads)
            }
        };
        if ROWS_UNSIGNED {
            let corrections = &b.corrections[first_column..first_column + PANEL];
            for vectors in tile.iter_mut() {
                for (v, vector) in vectors.iter_mut().enumerate() {
                    // SAFETY: `corrections` holds 32 i32 values; unaligned load.
                    let c = unsafe { _mm512_loadu_si512(corrections[v * LANES..].as_ptr().cast()) };
                    *vector = _mm512_sub_epi32(*vector, c);
                }
            }
        } else {
            for (r, vectors) in tile.iter_mut().take(height).enumerate() {
                let c = _mm512_set1_epi32(a.corrections[first_row + r]);
                for vector in vectors.iter_mut() {
                    *vector = _mm512_sub_epi32(*vector, c);
                }
            }
        }
        store(first_row, first_column, &tile[..height]);
    }
}

/// Eight rows by the first `V` sixteen-column vectors of a panel (`V` is 1 or 2), kept in up to
/// sixteen vector registers; the tile's other columns are zero. `ROWS_UNSIGNED` says which side
/// holds the unsigned activations.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn tile_avx512<const V: usize, const ROWS_UNSIGNED: bool>(
    rows: [*const i32; ROWS],
    packed: &[i32],
    quads: usize,
) -> [[__m512i; 2]; ROWS] {
    let mut acc = [[_mm512_setzero_si512(); 2]; ROWS];
    let mut b = packed.as_ptr();
    for q in 0..quads {
        let columns: [__m512i; V] =
            std::array::from_fn(|v| _mm512_loadu_si512(b.add(v * LANES).cast()));
        b = b.add(PANEL);
        for (row, acc) in rows.iter().zip(acc.iter_mut()) {
            let a = _mm512_set1_epi32(row.add(q).read_unaligned());
            for (acc, column) in acc.iter_mut().zip(&columns) {
                *acc = if ROWS_UNSIGNED {
                    _mm512_dpbusd_epi32(*acc, a, *column)
                } else {
                    _mm512_dpbusd_epi32(*acc, *column, a)
                };
            }
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::int8::test_rng::{
        direct_product, for_each_operand_pair, random_requantization, TestRng,
    };

    /// Weights on either side, row- and column-major operands, sizes off the 8x32 tile, depths
    /// off a multiple of four, and the extreme values -128 and 127, give the direct product.
    #[test]
    fn matches_the_direct_product() {
        if !available() {
            eprintln!("no AVX-512 VNNI on this CPU: the quad product is not used here");
            return;
        }
        let shapes = [
            (1, 1, 1),
            (8, 4, 32),
            (9, 3, 33),
            (13, 96, 40),
            (40, 161, 5),
            (17, 70, 64),
            (50, 37, 1),
            (3, 1280, 70),
        ];
        for_each_operand_pair(&mut TestRng(0x2545_f491_4f6c_dd1d), &shapes, |a, b| {
            let expected = direct_product(&a, &b);
            let (rows, depth, columns) = (a.shape.0, a.shape.1, b.shape.1);
            let mut out = vec![0i32; rows * columns];
            product(&QuadRows::weights(a), &QuadPanels::activations(b), &mut out).unwrap();
            assert_eq!(out, expected, "weights left {rows}x{depth}x{columns}");
            out.fill(0);
            product(&QuadRows::activations(a), &QuadPanels::weights(b), &mut out).unwrap();
            assert_eq!(out, expected, "weights right {rows}x{depth}x{columns}");
        });
    }

    /// Requantized in the registers, the product gives the portable requantization of the
    /// direct product, weights on either side and scales per row and per column.
    #[test]
    fn requantizes_as_the_portable_loop() {
        if !available() {
            eprintln!("no AVX-512 VNNI on this CPU: the quad product is not used here");
            return;
        }
        let shapes = [(8, 16, 32), (9, 24, 17), (24, 96, 70), (7, 1280, 1)];
        let mut scale_rng = TestRng(0x510e_527f_ade6_82d1);
        for_each_operand_pair(&mut TestRng(0x9b05_688c_2b3e_6c1f), &shapes, |a, b| {
            let sums = direct_product(&a, &b);
            let columns = b.shape.1;
            for scales_per_row in [true, false] {
                let (multiplier, offset, grid, expected) =
                    random_requantization(&mut scale_rng, &sums, columns, scales_per_row);
                let scales = ChannelScales::new(multiplier, offset).unwrap();
                let scales = (&scales, scales_per_row);
                let mut out = vec![0i8; sums.len()];
                let (left, right) = (QuadRows::weights(a), QuadPanels::activations(b));
                product_requantized(&left, &right, scales, grid, &mut out).unwrap();
                assert_eq!(
                    out, expected,
                    "weights left {:?}, per row {scales_per_row}",
                    a.shape
                );
                let (left, right) = (QuadRows::activations(a), QuadPanels::weights(b));
                product_requantized(&left, &right, scales, grid, &mut out).unwrap();
                assert_eq!(
                    out, expected,
                    "weights right {:?}, per row {scales_per_row}",
                    a.shape
                );
            }
        });
    }

    #[test]
    fn refuses_two_operands_of_the_same_kind() {
        if !available() {
            return;
        }
        let values = [1i8; 16];
        let a = QuadRows::weights(Strided::row_major(&values, 4, 4));
        let b = QuadPanels::weights(Strided::row_major(&values, 4, 4));
        let error = product(&a, &b, &mut [0; 16]).unwrap_err().to_string();
        assert!(error.contains("same kind"), "{error}");
    }
}
