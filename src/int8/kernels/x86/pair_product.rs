//! An exact int8 matrix product for x86-64 CPUs with AVX2 and no int8 dot-product
//! instructions (VNNI): both operands widened to 16 bits, so that `vpmaddwd` multiplies two
//! consecutive terms of the sum and adds them into 32 bits, sixteen columns by six rows per
//! step. tract-linalg's AVX2 int8 kernel multiplies one term at a time and ran the pointwise
//! layers slower than tract's f32 kernels on such a CPU.
//!
//! A product of two int8 values is at most 2^14 in magnitude and `vpmaddwd` adds two of them
//! into 32 bits, so every sum is exact in i32.

use std::arch::x86_64::*;

use tract_core::internal::*;

use crate::int8::kernels::matmul::Strided;
use crate::int8::kernels::tile_order;
use crate::int8::kernels::KernelSet;

/// Rows of the left operand one kernel step computes.
const ROWS: usize = 6;
/// Columns of the right operand one kernel step computes: two vectors of eight 32-bit lanes.
const COLUMNS: usize = 16;

/// Whether this CPU runs [`product`] (probed once, with the kernel sets).
pub fn available() -> bool {
    KernelSet::best().has_avx2_fma()
}

/// The left operand, `rows x depth`: each row widened to i16 and padded to an even length, so
/// that two consecutive terms read as one 32-bit value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairRows {
    data: Vec<i16>,
    rows: usize,
    pairs: usize,
}

impl PairRows {
    /// Widens `matrix` (`rows x depth`).
    pub fn new(matrix: Strided) -> PairRows {
        let (rows, depth) = matrix.shape;
        let pairs = depth.div_ceil(2);
        let mut data = vec![0i16; rows * pairs * 2];
        for (r, row) in data.chunks_exact_mut(pairs * 2).enumerate() {
            if matrix.strides.1 == 1 {
                let start = r * matrix.strides.0;
                let source = &matrix.values[start..start + depth];
                for (d, s) in row.iter_mut().zip(source) {
                    *d = i16::from(*s);
                }
            } else {
                for (k, d) in row.iter_mut().take(depth).enumerate() {
                    *d = i16::from(matrix.at(r, k));
                }
            }
        }
        PairRows { data, rows, pairs }
    }
}

/// The right operand, `depth x columns`, in panels of sixteen columns: for every pair of
/// consecutive terms, each column's two values side by side, zero-padded past the last term
/// and the last column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairColumns {
    data: Vec<i16>,
    columns: usize,
    pairs: usize,
}

impl PairColumns {
    /// Packs `matrix` (`depth x columns`).
    pub fn new(matrix: Strided) -> PairColumns {
        let (depth, columns) = matrix.shape;
        let pairs = depth.div_ceil(2);
        let panel_len = pairs * COLUMNS * 2;
        let mut data = vec![0i16; columns.div_ceil(COLUMNS) * panel_len];
        for (panel, packed) in data.chunks_exact_mut(panel_len).enumerate() {
            let first = panel * COLUMNS;
            let width = COLUMNS.min(columns - first);
            if width == COLUMNS && available() {
                if matrix.strides.1 == 1 {
                    // SAFETY: the CPU supports AVX2, checked just above.
                    unsafe { pack_panel_avx2(&matrix, first, packed) };
                    continue;
                }
                if matrix.strides.0 == 1 {
                    // SAFETY: the CPU supports AVX2, checked just above.
                    unsafe { pack_column_major_panel_avx2(&matrix, first, packed) };
                    continue;
                }
            }
            pack_steps(&matrix, first, width, 0, packed);
        }
        PairColumns {
            data,
            columns,
            pairs,
        }
    }
}

/// Packs the steps from `first_pair` of the panel whose first column is `first` and which
/// holds `width` columns, one value at a time.
fn pack_steps(matrix: &Strided, first: usize, width: usize, first_pair: usize, packed: &mut [i16]) {
    let depth = matrix.shape.0;
    let steps = packed.chunks_exact_mut(COLUMNS * 2).enumerate();
    for (pair, step) in steps.skip(first_pair) {
        for (j, value) in step.chunks_exact_mut(2).take(width).enumerate() {
            for (half, v) in value.iter_mut().enumerate() {
                let k = pair * 2 + half;
                if k < depth {
                    *v = i16::from(matrix.at(k, first + j));
                }
            }
        }
    }
}

/// Packs one full panel of a matrix whose rows are contiguous: two rows' sixteen bytes are
/// widened and interleaved in four instructions.
#[target_feature(enable = "avx2")]
fn pack_panel_avx2(matrix: &Strided, first: usize, packed: &mut [i16]) {
    let depth = matrix.shape.0;
    let zeros = [0i8; COLUMNS];
    let row = |k: usize| -> &[i8] {
        if k < depth {
            let start = k * matrix.strides.0 + first;
            &matrix.values[start..start + COLUMNS]
        } else {
            &zeros
        }
    };
    for (pair, step) in packed.chunks_exact_mut(COLUMNS * 2).enumerate() {
        let (even, odd) = (row(pair * 2), row(pair * 2 + 1));
        // SAFETY: `even` and `odd` hold 16 bytes and `step` 32 i16 values; unaligned loads and
        // stores are used throughout.
        unsafe {
            let even = _mm256_cvtepi8_epi16(_mm_loadu_si128(even.as_ptr().cast()));
            let odd = _mm256_cvtepi8_epi16(_mm_loadu_si128(odd.as_ptr().cast()));
            let low = _mm256_unpacklo_epi16(even, odd);
            let high = _mm256_unpackhi_epi16(even, odd);
            let target = step.as_mut_ptr().cast::<__m256i>();
            _mm256_storeu_si256(target, _mm256_permute2x128_si256(low, high, 0x20));
            _mm256_storeu_si256(target.add(1), _mm256_permute2x128_si256(low, high, 0x31));
        }
    }
}

/// Packs one full panel of a matrix whose columns are contiguous: per sixteen terms, each
/// column's bytes are widened (eight pairs per vector) and two 8x8 transposes of the pairs
/// give the panel's steps; the last terms are copied one by one.
#[target_feature(enable = "avx2")]
fn pack_column_major_panel_avx2(matrix: &Strided, first: usize, packed: &mut [i16]) {
    let depth = matrix.shape.0;
    let column = |j: usize| &matrix.values[(first + j) * matrix.strides.1..][..depth];
    let whole = depth / 16 * 16;
    for start in (0..whole).step_by(16) {
        for half in 0..2 {
            // SAFETY: every column holds `depth` bytes, of which 16 from `start`; the eight
            // steps written hold 32 i16 values each from `start / 2 * 32`; unaligned accesses.
            unsafe {
                let rows: [__m256i; 8] = std::array::from_fn(|j| {
                    let bytes = column(half * 8 + j)[start..].as_ptr();
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(bytes.cast()))
                });
                let steps = transpose_8x8(rows);
                for (i, step) in steps.iter().enumerate() {
                    let at = (start / 2 + i) * COLUMNS * 2 + half * COLUMNS;
                    _mm256_storeu_si256(packed[at..at + COLUMNS].as_mut_ptr().cast(), *step);
                }
            }
        }
    }
    pack_steps(matrix, first, COLUMNS, whole / 2, packed);
}

/// The 8x8 transpose of 32-bit lanes: lane `j` of output `i` is lane `i` of input `j`.
#[target_feature(enable = "avx2")]
fn transpose_8x8(r: [__m256i; 8]) -> [__m256i; 8] {
    let t = [
        _mm256_unpacklo_epi32(r[0], r[1]),
        _mm256_unpackhi_epi32(r[0], r[1]),
        _mm256_unpacklo_epi32(r[2], r[3]),
        _mm256_unpackhi_epi32(r[2], r[3]),
        _mm256_unpacklo_epi32(r[4], r[5]),
        _mm256_unpackhi_epi32(r[4], r[5]),
        _mm256_unpacklo_epi32(r[6], r[7]),
        _mm256_unpackhi_epi32(r[6], r[7]),
    ];
    let u = [
        _mm256_unpacklo_epi64(t[0], t[2]),
        _mm256_unpackhi_epi64(t[0], t[2]),
        _mm256_unpacklo_epi64(t[1], t[3]),
        _mm256_unpackhi_epi64(t[1], t[3]),
        _mm256_unpacklo_epi64(t[4], t[6]),
        _mm256_unpackhi_epi64(t[4], t[6]),
        _mm256_unpacklo_epi64(t[5], t[7]),
        _mm256_unpackhi_epi64(t[5], t[7]),
    ];
    [
        _mm256_permute2x128_si256(u[0], u[4], 0x20),
        _mm256_permute2x128_si256(u[1], u[5], 0x20),
        _mm256_permute2x128_si256(u[2], u[6], 0x20),
        _mm256_permute2x128_si256(u[3], u[7], 0x20),
        _mm256_permute2x128_si256(u[0], u[4], 0x31),
        _mm256_permute2x128_si256(u[1], u[5], 0x31),
        _mm256_permute2x128_si256(u[2], u[6], 0x31),
        _mm256_permute2x128_si256(u[3], u[7], 0x31),
    ]
}

/// `out[r * columns + c] = sum_k a(r, k) * b(k, c)`, exact, into a row-major `rows x columns`
/// slice. Fails on a CPU without AVX2 (see [`available`]) and on operands of different depths.
pub fn product(a: &PairRows, b: &PairColumns, out: &mut [i32]) -> TractResult<()> {
    ensure!(
        a.pairs == b.pairs,
        "pair product of operands of different depths"
    );
    ensure!(
        out.len() == a.rows * b.columns,
        "pair product into an output of the wrong size"
    );
    ensure!(
        available(),
        "the pair product needs AVX2, which this CPU lacks"
    );
    // SAFETY: the CPU supports AVX2, checked just above.
    unsafe {
        if b.columns == 1 {
            matrix_vector_avx2(a, b, out)
        } else {
            product_avx2(a, b, out)
        }
    };
    Ok(())
}

/// The product by a one-column right operand: one dot product per row, sixteen terms per step.
#[target_feature(enable = "avx2")]
fn matrix_vector_avx2(a: &PairRows, b: &PairColumns, out: &mut [i32]) {
    let depth = a.pairs * 2;
    let column: Vec<i16> = b
        .data
        .chunks_exact(COLUMNS * 2)
        .flat_map(|step| [step[0], step[1]])
        .collect();
    let whole = depth / 16 * 16;
    for (row, o) in a.data.chunks_exact(depth).zip(out.iter_mut()) {
        let mut sums = _mm256_setzero_si256();
        for (x, w) in column[..whole].chunks_exact(16).zip(row.chunks_exact(16)) {
            // SAFETY: both chunks hold sixteen i16 values; unaligned loads.
            let (x, w) = unsafe {
                (
                    _mm256_loadu_si256(x.as_ptr().cast()),
                    _mm256_loadu_si256(w.as_ptr().cast()),
                )
            };
            sums = _mm256_add_epi32(sums, _mm256_madd_epi16(x, w));
        }
        let mut lanes = [0i32; 8];
        // SAFETY: `lanes` holds eight i32 values; unaligned store.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), sums) };
        let tail: i32 = column[whole..]
            .iter()
            .zip(&row[whole..])
            .map(|(x, w)| i32::from(*x) * i32::from(*w))
            .sum();
        *o = lanes.iter().sum::<i32>() + tail;
    }
}

#[target_feature(enable = "avx2")]
fn product_avx2(a: &PairRows, b: &PairColumns, out: &mut [i32]) {
    let (rows, columns, pairs) = (a.rows, b.columns, a.pairs);
    let zero_row = vec![0i16; pairs * 2];
    let panel_len = pairs * COLUMNS * 2;
    let tiles = tile_order(
        rows.div_ceil(ROWS),
        b.data.len() / panel_len,
        a.data.len() > b.data.len(),
    );
    for (row_tile, panel) in tiles {
        let packed = &b.data[panel * panel_len..(panel + 1) * panel_len];
        let (first_row, first_column) = (row_tile * ROWS, panel * COLUMNS);
        let (height, width) = (
            ROWS.min(rows - first_row),
            COLUMNS.min(columns - first_column),
        );
        let row_starts: [*const i32; ROWS] = std::array::from_fn(|i| {
            let row = if i < height {
                &a.data[(first_row + i) * pairs * 2..(first_row + i + 1) * pairs * 2]
            } else {
                &zero_row[..]
            };
            row.as_ptr().cast::<i32>()
        });
        // SAFETY: every row start points at `pairs` i32 values (two i16 each), and
        // `packed` holds `pairs` steps of two vectors.
        let tile = unsafe {
            if width <= COLUMNS / 2 {
                tile_avx2::<1>(row_starts, packed, pairs)
            } else {
                tile_avx2::<2>(row_starts, packed, pairs)
            }
        };
        if height == ROWS && width == COLUMNS {
            for (i, vectors) in tile.iter().enumerate() {
                let target = &mut out[(first_row + i) * columns + first_column..][..COLUMNS];
                // SAFETY: `target` holds sixteen i32 values; unaligned stores.
                unsafe {
                    _mm256_storeu_si256(target.as_mut_ptr().cast(), vectors[0]);
                    _mm256_storeu_si256(target.as_mut_ptr().add(8).cast(), vectors[1]);
                }
            }
        } else {
            for (i, vectors) in tile.iter().take(height).enumerate() {
                let mut values = [0i32; COLUMNS];
                // SAFETY: `values` holds sixteen i32 values; unaligned stores.
                unsafe {
                    _mm256_storeu_si256(values.as_mut_ptr().cast(), vectors[0]);
                    _mm256_storeu_si256(values.as_mut_ptr().add(8).cast(), vectors[1]);
                }
                let start = (first_row + i) * columns + first_column;
                out[start..start + width].copy_from_slice(&values[..width]);
            }
        }
    }
}

/// Six rows by the first `V` eight-column vectors of a panel (`V` is 1 or 2), kept in up to
/// twelve vector registers; the tile's other columns are zero.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn tile_avx2<const V: usize>(
    rows: [*const i32; ROWS],
    packed: &[i16],
    pairs: usize,
) -> [[__m256i; 2]; ROWS] {
    let mut acc = [[_mm256_setzero_si256(); 2]; ROWS];
    let mut b = packed.as_ptr().cast::<__m256i>();
    for pair in 0..pairs {
        let columns: [__m256i; V] = std::array::from_fn(|v| _mm256_loadu_si256(b.add(v)));
        b = b.add(2);
        for (row, acc) in rows.iter().zip(acc.iter_mut()) {
            let a = _mm256_set1_epi32(row.add(pair).read_unaligned());
            for (acc, column) in acc.iter_mut().zip(&columns) {
                *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(a, *column));
            }
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::int8::test_rng::{direct_product, for_each_operand_pair, TestRng};

    /// Every combination of row-major and column-major operands, sizes off the 6x16 tile and
    /// odd depths, and the extreme values -128 and 127, give the direct integer product.
    #[test]
    fn matches_the_direct_product() {
        if !available() {
            eprintln!("no AVX2 on this CPU: the pair product is not used here");
            return;
        }
        let shapes = [
            (1, 1, 1),
            (6, 2, 16),
            (7, 3, 17),
            (13, 96, 40),
            (40, 161, 5),
            (9, 70, 24),
            (50, 37, 1),
        ];
        for_each_operand_pair(&mut TestRng(0x9e37_79b9_7f4a_7c15), &shapes, |a, b| {
            let mut out = vec![0i32; a.shape.0 * b.shape.1];
            product(&PairRows::new(a), &PairColumns::new(b), &mut out).unwrap();
            assert_eq!(out, direct_product(&a, &b), "{:?} x {:?}", a.shape, b.shape);
        });
    }
}
