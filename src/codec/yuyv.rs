//! YUYV (YUY2, 4:2:2) to RGB, BT.601 limited range, the encoding UVC cameras send.

use image::RgbImage;

/// Why a YUYV buffer could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YuyvError {
    #[error("YUYV frame of {width}x{height} needs an even, non-zero width and a non-zero height")]
    BadSize { width: u32, height: u32 },
    #[error("YUYV frame of {width}x{height} needs {expected} bytes, got {actual}")]
    WrongLength {
        width: u32,
        height: u32,
        expected: usize,
        actual: usize,
    },
}

/// Copies rows of `width * 2` bytes out of a buffer whose rows are `stride` bytes apart (drivers
/// may pad rows); `None` when the buffer is too short.
pub fn unpad_rows(data: &[u8], width: u32, height: u32, stride: usize) -> Option<Vec<u8>> {
    let row = width as usize * 2;
    if height == 0 {
        return None;
    }
    if stride <= row {
        return data.get(..row * height as usize).map(<[u8]>::to_vec);
    }
    let needed = stride.checked_mul(height as usize - 1)?.checked_add(row)?;
    if data.len() < needed {
        return None;
    }
    Some(
        (0..height as usize)
            .flat_map(|y| &data[y * stride..y * stride + row])
            .copied()
            .collect(),
    )
}

/// Bytes in one YUYV frame of this size.
pub fn yuyv_frame_len(width: u32, height: u32) -> usize {
    width as usize * height as usize * 2
}

fn clamp_u8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// Converts one YUYV frame to RGB with integer BT.601 (limited range) coefficients.
pub fn yuyv_to_rgb(data: &[u8], width: u32, height: u32) -> Result<RgbImage, YuyvError> {
    if width == 0 || height == 0 || !width.is_multiple_of(2) {
        return Err(YuyvError::BadSize { width, height });
    }
    let expected = yuyv_frame_len(width, height);
    if data.len() != expected {
        return Err(YuyvError::WrongLength {
            width,
            height,
            expected,
            actual: data.len(),
        });
    }
    let mut rgb = Vec::with_capacity(width as usize * height as usize * 3);
    for quad in data.chunks_exact(4) {
        let u = i32::from(quad[1]) - 128;
        let v = i32::from(quad[3]) - 128;
        for y in [quad[0], quad[2]] {
            let c = 298 * (i32::from(y) - 16);
            rgb.push(clamp_u8((c + 409 * v + 128) >> 8));
            rgb.push(clamp_u8((c - 100 * u - 208 * v + 128) >> 8));
            rgb.push(clamp_u8((c + 516 * u + 128) >> 8));
        }
    }
    RgbImage::from_raw(width, height, rgb).ok_or(YuyvError::BadSize { width, height })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_reference_colours() {
        // Limited-range white, black and pure red (Y 81, U 90, V 240).
        let data = [235, 128, 16, 128, 81, 90, 81, 240];
        let rgb = yuyv_to_rgb(&data, 4, 1).unwrap();
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(rgb.get_pixel(1, 0).0, [0, 0, 0]);
        let red = rgb.get_pixel(2, 0).0;
        assert!(red[0] >= 250 && red[1] <= 3 && red[2] <= 3, "{red:?}");
    }

    #[test]
    fn removes_row_padding() {
        let padded = [1, 2, 3, 4, 0, 0, 5, 6, 7, 8, 0, 0];
        assert_eq!(
            unpad_rows(&padded, 2, 2, 6),
            Some(vec![1, 2, 3, 4, 5, 6, 7, 8])
        );
        assert_eq!(unpad_rows(&padded[..8], 2, 2, 6), None);
        assert_eq!(unpad_rows(&[9; 8], 2, 2, 4), Some(vec![9; 8]));
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(matches!(
            yuyv_to_rgb(&[0; 6], 3, 1),
            Err(YuyvError::BadSize { .. })
        ));
        assert!(matches!(
            yuyv_to_rgb(&[0; 6], 2, 2),
            Err(YuyvError::WrongLength { expected: 8, .. })
        ));
    }
}
