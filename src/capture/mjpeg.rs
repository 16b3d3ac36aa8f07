//! Motion-JPEG streams: splitting a byte stream into whole frames (the JPEG structure itself is
//! walked by [`crate::codec::jpeg`]).

use crate::codec::jpeg::{scan_frame, Scan};

/// Largest JPEG frame accepted from a stream, in bytes.
pub const MAX_FRAME_BYTES: usize = 32 << 20;

/// Incremental frame splitter for a byte stream (a file, a pipe, a socket). The buffer is only
/// scanned again when new bytes bring a frame end (`FF D9`), so a large frame arriving in many
/// small reads costs linear, not quadratic, time.
#[derive(Debug, Default)]
pub struct MjpegSplitter {
    buffer: Vec<u8>,
    /// Bytes discarded because they were not part of any whole frame.
    pub discarded: u64,
    rescan: bool,
}

impl MjpegSplitter {
    /// An empty splitter.
    pub fn new() -> MjpegSplitter {
        MjpegSplitter::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        let across = self.buffer.last() == Some(&0xFF) && bytes.first() == Some(&0xD9);
        if self.buffer.is_empty() || across || bytes.windows(2).any(|w| w == [0xFF, 0xD9]) {
            self.rescan = true;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// Takes the next whole frame, if the buffer holds one.
    pub fn next_frame(&mut self) -> Option<Vec<u8>> {
        if !self.rescan {
            self.drop_if_oversized();
            return None;
        }
        match scan_frame(&self.buffer) {
            Scan::Frame { start, end } => {
                self.discarded += start as u64;
                let frame = self.buffer[start..end].to_vec();
                self.buffer.drain(..end);
                Some(frame)
            }
            Scan::NeedMore { keep_from } => {
                self.discarded += keep_from as u64;
                self.buffer.drain(..keep_from);
                self.rescan = false;
                self.drop_if_oversized();
                None
            }
        }
    }

    fn drop_if_oversized(&mut self) {
        if self.buffer.len() > MAX_FRAME_BYTES {
            log::warn!("MJPEG stream: no frame end within {MAX_FRAME_BYTES} bytes; dropping them");
            self.discarded += self.buffer.len() as u64;
            self.buffer.clear();
        }
    }

    /// Bytes held that do not make a whole frame yet.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::jpeg::tests::frame;

    #[test]
    fn splits_frames_across_pushes_and_skips_junk() {
        let a = frame(&[0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD3, 0x56]);
        let b = frame(&[0x99]);
        let mut stream = b"junk".to_vec();
        stream.extend(&a);
        stream.extend(b"\x00\x01");
        stream.extend(&b);
        let mut splitter = MjpegSplitter::new();
        let mut frames = Vec::new();
        for chunk in stream.chunks(3) {
            splitter.push(chunk);
            while let Some(f) = splitter.next_frame() {
                frames.push(f);
            }
        }
        assert_eq!(frames, vec![a, b]);
        assert_eq!(splitter.discarded, 6);
        assert_eq!(splitter.pending(), 0);
    }
}
