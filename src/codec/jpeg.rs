//! JPEG structure without decoding pixels: walking marker segments and entropy-coded data (to
//! split Motion-JPEG streams and to tell a whole file from a cut one), and the standard Huffman
//! tables that many UVC cameras leave out of their frames.

use std::borrow::Cow;

/// Where the next frame in a buffer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// A whole frame at `start..end`.
    Frame { start: usize, end: usize },
    /// No whole frame yet; bytes before `keep_from` can be dropped.
    NeedMore { keep_from: usize },
}

fn segment_length(buf: &[u8], at: usize) -> Option<usize> {
    let hi = *buf.get(at)? as usize;
    let lo = *buf.get(at + 1)? as usize;
    Some((hi << 8) | lo)
}

fn find_soi(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == [0xFF, 0xD8])
        .map(|i| from + i)
}

/// Finds the first whole JPEG (SOI .. EOI) in `buf`. Entropy-coded data is skipped by its byte
/// stuffing rules, so an EOI inside an embedded thumbnail or a corrupt segment does not cut a
/// frame short; a frame whose structure breaks is dropped and the scan resumes at the next SOI.
pub fn scan_frame(buf: &[u8]) -> Scan {
    let mut search_from = 0;
    loop {
        let Some(start) = find_soi(buf, search_from) else {
            return Scan::NeedMore {
                keep_from: buf.len().saturating_sub(1),
            };
        };
        match walk_segments(buf, start + 2) {
            Walk::End(end) => return Scan::Frame { start, end },
            Walk::Truncated => return Scan::NeedMore { keep_from: start },
            Walk::Broken => search_from = start + 2,
        }
    }
}

enum Walk {
    End(usize),
    Truncated,
    Broken,
}

fn walk_segments(buf: &[u8], mut at: usize) -> Walk {
    loop {
        if at >= buf.len() {
            return Walk::Truncated;
        }
        if buf[at] != 0xFF {
            return Walk::Broken;
        }
        while at < buf.len() && buf[at] == 0xFF {
            at += 1;
        }
        let Some(&marker) = buf.get(at) else {
            return Walk::Truncated;
        };
        at += 1;
        match marker {
            0xD9 => return Walk::End(at),
            0xD8 | 0x00 => return Walk::Broken,
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let Some(length) = segment_length(buf, at) else {
            return Walk::Truncated;
        };
        if length < 2 {
            return Walk::Broken;
        }
        at += length;
        if marker == 0xDA {
            match skip_entropy_coded(buf, at) {
                Some(next_marker) => at = next_marker,
                None => return Walk::Truncated,
            }
        }
    }
}

/// Returns the position of the first marker after entropy-coded data starting at `at`.
fn skip_entropy_coded(buf: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let offset = buf.get(at..)?.iter().position(|b| *b == 0xFF)?;
        at += offset;
        match buf.get(at + 1)? {
            0x00 | 0xD0..=0xD7 | 0xFF => at += 1,
            _ => return Some(at),
        }
    }
}

/// Why JPEG bytes are not one whole image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JpegIncomplete {
    #[error("it does not start with a JPEG start-of-image marker")]
    NoStart,
    #[error("it ends before its end-of-image marker (cut short)")]
    Truncated,
    #[error("its marker structure is broken")]
    Broken,
}

/// Checks that `jpeg` is one whole JPEG: SOI, marker segments and scans that follow the format's
/// rules, and an EOI. Bytes after the EOI (padding some cameras add) are allowed.
pub fn check_complete(jpeg: &[u8]) -> Result<(), JpegIncomplete> {
    if jpeg.get(..2) != Some(&[0xFF, 0xD8]) {
        return Err(JpegIncomplete::NoStart);
    }
    match walk_segments(jpeg, 2) {
        Walk::End(_) => Ok(()),
        Walk::Truncated => Err(JpegIncomplete::Truncated),
        Walk::Broken => Err(JpegIncomplete::Broken),
    }
}

/// JPEG Annex K.3 standard Huffman tables (DC/AC, luminance/chrominance): class and id, the 16
/// code-length counts, and the symbols.
const STANDARD_TABLES: [(u8, [u8; 16], &[u8]); 4] = [
    (
        0x00,
        [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
        &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
    ),
    (
        0x01,
        [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
        &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
    ),
    (
        0x10,
        [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D],
        &[
            0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51,
            0x61, 0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1,
            0x15, 0x52, 0xD1, 0xF0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0A, 0x16, 0x17, 0x18,
            0x19, 0x1A, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39,
            0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57,
            0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6A, 0x73, 0x74, 0x75,
            0x76, 0x77, 0x78, 0x79, 0x7A, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x92,
            0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7,
            0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3,
            0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8,
            0xD9, 0xDA, 0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF1, 0xF2,
            0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA,
        ],
    ),
    (
        0x11,
        [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77],
        &[
            0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07,
            0x61, 0x71, 0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xA1, 0xB1, 0xC1, 0x09,
            0x23, 0x33, 0x52, 0xF0, 0x15, 0x62, 0x72, 0xD1, 0x0A, 0x16, 0x24, 0x34, 0xE1, 0x25,
            0xF1, 0x17, 0x18, 0x19, 0x1A, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x35, 0x36, 0x37, 0x38,
            0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4A, 0x53, 0x54, 0x55, 0x56,
            0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6A, 0x73, 0x74,
            0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
            0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5,
            0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA,
            0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6,
            0xD7, 0xD8, 0xD9, 0xDA, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF2,
            0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA,
        ],
    ),
];

/// The DHT segment (marker included) holding the four standard tables.
pub fn standard_dht_segment() -> Vec<u8> {
    let body: usize = STANDARD_TABLES.iter().map(|(_, _, v)| 17 + v.len()).sum();
    let mut out = Vec::with_capacity(body + 4);
    out.extend([0xFF, 0xC4]);
    out.extend(((body + 2) as u16).to_be_bytes());
    for (class_id, counts, symbols) in STANDARD_TABLES {
        out.push(class_id);
        out.extend(counts);
        out.extend(symbols);
    }
    out
}

/// Returns the frame with the standard Huffman tables inserted before its first scan when it
/// defines none (the AVI1 / UVC convention); otherwise the frame unchanged.
pub fn with_huffman_tables(jpeg: &[u8]) -> Cow<'_, [u8]> {
    let mut at = 2;
    if jpeg.get(..2) != Some(&[0xFF, 0xD8]) {
        return Cow::Borrowed(jpeg);
    }
    while at + 4 <= jpeg.len() {
        if jpeg[at] != 0xFF {
            return Cow::Borrowed(jpeg);
        }
        let marker = jpeg[at + 1];
        match marker {
            0xC4 => return Cow::Borrowed(jpeg),
            0xDA => {
                let mut out = Vec::with_capacity(jpeg.len() + 432);
                out.extend_from_slice(&jpeg[..at]);
                out.extend(standard_dht_segment());
                out.extend_from_slice(&jpeg[at..]);
                return Cow::Owned(out);
            }
            0xFF => at += 1,
            0x01 | 0xD0..=0xD7 => at += 2,
            _ => match segment_length(jpeg, at + 2) {
                Some(length) if length >= 2 => at += 2 + length,
                _ => return Cow::Borrowed(jpeg),
            },
        }
    }
    Cow::Borrowed(jpeg)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal structurally valid JPEG: SOI, an APPn segment, SOS with entropy data, EOI.
    pub(crate) fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0xAA, 0xBB];
        f.extend([0xFF, 0xDA, 0x00, 0x03, 0x01]);
        f.extend(payload);
        f.extend([0xFF, 0xD9]);
        f
    }

    #[test]
    fn an_eoi_inside_a_segment_does_not_end_the_frame() {
        let mut f = vec![0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x06, 0xFF, 0xD9, 0xFF, 0xD8];
        f.extend([0xFF, 0xDA, 0x00, 0x02, 0x01, 0x02, 0xFF, 0xD9]);
        assert_eq!(
            scan_frame(&f),
            Scan::Frame {
                start: 0,
                end: f.len()
            }
        );
    }

    #[test]
    fn a_broken_frame_is_dropped_and_the_next_found() {
        let good = frame(&[1, 2, 3]);
        let mut stream = vec![0xFF, 0xD8, 0x12, 0x34];
        stream.extend(&good);
        assert_eq!(
            scan_frame(&stream),
            Scan::Frame {
                start: 4,
                end: stream.len()
            }
        );
        assert_eq!(
            scan_frame(&good[..good.len() - 1]),
            Scan::NeedMore { keep_from: 0 }
        );
    }

    #[test]
    fn inserts_tables_only_when_missing() {
        let f = frame(&[7]);
        let patched = with_huffman_tables(&f);
        assert!(matches!(patched, Cow::Owned(_)));
        let dht = standard_dht_segment();
        assert_eq!(dht.len(), 420);
        assert_eq!(&patched[8..8 + dht.len()], dht.as_slice());
        assert!(matches!(with_huffman_tables(&patched), Cow::Borrowed(_)));
        assert_eq!(
            scan_frame(&patched),
            Scan::Frame {
                start: 0,
                end: patched.len()
            }
        );
    }

    #[test]
    fn a_whole_jpeg_passes_and_every_cut_of_it_is_refused() {
        let whole = frame(&[0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD3, 0x56]);
        assert_eq!(check_complete(&whole), Ok(()));
        let mut padded = whole.clone();
        padded.extend([0, 0, 0]);
        assert_eq!(check_complete(&padded), Ok(()));
        for cut in 0..whole.len() {
            assert!(check_complete(&whole[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(check_complete(b"GIF89a"), Err(JpegIncomplete::NoStart));
        assert_eq!(
            check_complete(&[0xFF, 0xD8, 0x12, 0x34]),
            Err(JpegIncomplete::Broken)
        );
    }
}
