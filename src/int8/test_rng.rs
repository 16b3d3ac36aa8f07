//! Deterministic pseudo-random values and reference products for the int8 op tests.

use crate::int8::grid::OutputGrid;
use crate::int8::kernels::matmul::Strided;

/// A xorshift generator.
pub struct TestRng(pub u64);

impl TestRng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn i8s(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| self.next() as i8).collect()
    }

    /// Uniform in `[low, high)`.
    pub fn f32_in(&mut self, low: f32, high: f32) -> f32 {
        low + (high - low) * (self.next() % 1_000_000) as f32 / 1e6
    }

    /// Counts the places where `ours` and `reference` differ, asserting they never differ by
    /// more than one step.
    pub fn steps_apart(ours: &[i8], reference: &[i8]) -> usize {
        assert_eq!(ours.len(), reference.len());
        ours.iter()
            .zip(reference)
            .filter(|(a, b)| {
                let gap = (i32::from(**a) - i32::from(**b)).abs();
                assert!(gap <= 1, "{a} against {b}");
                gap == 1
            })
            .count()
    }
}

/// The exact integer product of two int8 matrices.
pub fn direct_product(a: &Strided, b: &Strided) -> Vec<i32> {
    let (rows, depth) = a.shape;
    let columns = b.shape.1;
    (0..rows * columns)
        .map(|at| {
            let (r, c) = (at / columns, at % columns);
            (0..depth)
                .map(|k| i32::from(a.at(r, k)) * i32::from(b.at(k, c)))
                .sum()
        })
        .collect()
}

/// Calls `check(a, b)` for random operands of each `(rows, depth, columns)` shape: random and
/// extreme (-128 and 127) values, each operand row-major and column-major.
pub fn for_each_operand_pair(
    rng: &mut TestRng,
    shapes: &[(usize, usize, usize)],
    mut check: impl FnMut(Strided, Strided),
) {
    for &(rows, depth, columns) in shapes {
        for extreme in [false, true] {
            let mut left = rng.i8s(rows * depth);
            let mut right = rng.i8s(depth * columns);
            if extreme {
                for v in left.iter_mut().chain(right.iter_mut()) {
                    *v = if *v < 0 { -128 } else { 127 };
                }
            }
            for left_row_major in [true, false] {
                for right_row_major in [true, false] {
                    let a = Strided {
                        values: &left,
                        shape: (rows, depth),
                        strides: if left_row_major {
                            (depth, 1)
                        } else {
                            (1, rows)
                        },
                    };
                    let b = Strided {
                        values: &right,
                        shape: (depth, columns),
                        strides: if right_row_major {
                            (columns, 1)
                        } else {
                            (1, depth)
                        },
                    };
                    check(a, b);
                }
            }
        }
    }
}

/// A random requantization of a row-major `sums` with `columns` columns, scales per row or
/// per column, on a grid of the whole i8 range, one clipped at zero or one clipped to ReLU6:
/// `(multiplier, offset, grid, expected)`, `expected` from the portable [`OutputGrid::quantize`].
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
pub fn random_requantization(
    rng: &mut TestRng,
    sums: &[i32],
    columns: usize,
    scales_per_row: bool,
) -> (Vec<f32>, Vec<f32>, OutputGrid, Vec<i8>) {
    let scaled = if scales_per_row {
        sums.len() / columns
    } else {
        columns
    };
    let multiplier: Vec<f32> = (0..scaled).map(|_| rng.f32_in(1e-4, 1e-2)).collect();
    let offset: Vec<f32> = (0..scaled).map(|_| rng.f32_in(-40.0, 40.0)).collect();
    let (clip_low, clip_high) = match rng.next() % 3 {
        0 => (f32::NEG_INFINITY, f32::INFINITY),
        1 => (0.0, f32::INFINITY),
        _ => (0.0, 6.0),
    };
    let grid = OutputGrid::new(rng.f32_in(5.0, 50.0), rng.next() as u8, clip_low, clip_high);
    let expected = sums
        .iter()
        .enumerate()
        .map(|(at, sum)| {
            let i = if scales_per_row {
                at / columns
            } else {
                at % columns
            };
            grid.quantize(*sum as f32 * multiplier[i] + offset[i])
        })
        .collect();
    (multiplier, offset, grid, expected)
}
