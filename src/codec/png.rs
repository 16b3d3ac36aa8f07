//! PNG structure without decoding pixels: every chunk's length and CRC, up to the IEND chunk,
//! so that a file cut short or damaged in transit is refused instead of decoded in part.

/// The eight bytes every PNG file starts with.
const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

/// Why PNG bytes are not one whole image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PngIncomplete {
    #[error("it does not start with the PNG signature")]
    NoSignature,
    #[error("it ends inside chunk {chunk} at byte {at} (cut short)")]
    Truncated { chunk: usize, at: usize },
    #[error("chunk {chunk} ({kind}) fails its CRC check (damaged)")]
    BadCrc { chunk: usize, kind: String },
    #[error("it has no IEND chunk (cut short)")]
    NoEnd,
}

/// Checks that `png` is one whole PNG: the signature, chunks whose CRCs match, and an IEND
/// chunk. Bytes after IEND are allowed, as decoders ignore them.
pub fn check_complete(png: &[u8]) -> Result<(), PngIncomplete> {
    if png.get(..8) != Some(&SIGNATURE) {
        return Err(PngIncomplete::NoSignature);
    }
    let mut at = 8;
    let mut chunk = 0;
    while at < png.len() {
        chunk += 1;
        let truncated = PngIncomplete::Truncated { chunk, at };
        let Some(header) = png.get(at..at + 8) else {
            return Err(truncated);
        };
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let kind_and_data = at + 4..at + 8 + length;
        let Some(crc_bytes) = png.get(kind_and_data.end..kind_and_data.end + 4) else {
            return Err(truncated);
        };
        let stored = u32::from_be_bytes([crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]);
        if crc32fast::hash(&png[kind_and_data]) != stored {
            return Err(PngIncomplete::BadCrc {
                chunk,
                kind: String::from_utf8_lossy(&header[4..8]).into_owned(),
            });
        }
        if &header[4..8] == b"IEND" {
            return Ok(());
        }
        at += 12 + length;
    }
    Err(PngIncomplete::NoEnd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png() -> Vec<u8> {
        let image =
            image::RgbImage::from_fn(9, 7, |x, y| image::Rgb([x as u8 * 20, y as u8 * 30, 7]));
        let mut bytes = Vec::new();
        image
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .unwrap();
        bytes
    }

    #[test]
    fn a_whole_png_passes_and_every_cut_of_it_is_refused() {
        let whole = png();
        assert_eq!(check_complete(&whole), Ok(()));
        for cut in 0..whole.len() {
            assert!(check_complete(&whole[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(
            check_complete(&whole[..whole.len() - 12]),
            Err(PngIncomplete::NoEnd)
        );
        assert_eq!(
            check_complete(b"\xFF\xD8\xFF"),
            Err(PngIncomplete::NoSignature)
        );
    }

    #[test]
    fn a_flipped_bit_fails_the_crc() {
        let mut damaged = png();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0x10;
        assert!(
            matches!(check_complete(&damaged), Err(PngIncomplete::BadCrc { .. })),
            "{:?}",
            check_complete(&damaged)
        );
    }
}
