//! Four consecutive terms of an int8 sum packed as one 32-bit value: the unit of the
//! dot-product instructions (x86 `vpdpbusd`, Arm `sdot`), which multiply four bytes by four bytes
//! and add the products into a 32-bit lane.

use super::matmul::Strided;

/// The four terms `k = 4q .. 4q + 4` of entry `i` of `matrix` (its row `i` when the terms run
/// along rows, else its column `i`), as little-endian bytes with `sign` XORed in; terms past the
/// depth are zero before the XOR.
#[inline(always)]
pub fn quad(matrix: &Strided, i: usize, q: usize, sign: u32, terms_along_rows: bool) -> i32 {
    let (depth, start, stride) = if terms_along_rows {
        (
            matrix.shape.1,
            i * matrix.strides.0 + 4 * q * matrix.strides.1,
            matrix.strides.1,
        )
    } else {
        (
            matrix.shape.0,
            i * matrix.strides.1 + 4 * q * matrix.strides.0,
            matrix.strides.0,
        )
    };
    let count = depth.saturating_sub(4 * q).min(4);
    let bytes = if stride == 1 && count == 4 {
        let b = &matrix.values[start..start + 4];
        [b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8]
    } else {
        let mut bytes = [0u8; 4];
        for (t, byte) in bytes.iter_mut().enumerate().take(count) {
            *byte = matrix.values[start + t * stride] as u8;
        }
        bytes
    };
    (u32::from_le_bytes(bytes) ^ sign) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_rows_and_columns_with_zero_past_the_depth() {
        let values: Vec<i8> = (1..=10).collect();
        let rows = Strided::row_major(&values, 2, 5);
        assert_eq!(quad(&rows, 1, 0, 0, true), i32::from_le_bytes([6, 7, 8, 9]));
        assert_eq!(
            quad(&rows, 1, 1, 0, true),
            i32::from_le_bytes([10, 0, 0, 0])
        );
        let columns = rows.transposed();
        assert_eq!(
            quad(&columns, 0, 1, 0, false),
            i32::from_le_bytes([5, 0, 0, 0])
        );
        assert_eq!(
            quad(&columns, 1, 0, 0x8080_8080, false),
            i32::from_le_bytes([6 ^ 0x80, 7 ^ 0x80, 8 ^ 0x80, 9 ^ 0x80])
        );
    }
}
