//! Small file helpers shared by the modules that read outside files.

use std::io::Read;
use std::path::{Path, PathBuf};

/// `path` with `suffix` appended to its file name (`journal.jsonl` + `.torn`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A new directory of this process under the system temporary directory, unique per call (so
/// parallel callers, such as tests, never share one): `<prefix>-<pid>-<n>`.
pub fn fresh_temp_dir(prefix: &str) -> std::io::Result<PathBuf> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Reads at most `limit` bytes of a file; a longer file (or an endless one such as a FIFO or
/// `/dev/zero`) is an `InvalidData` error instead of an unbounded read.
pub fn read_limited(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("over the {limit}-byte limit"),
        ));
    }
    Ok(bytes)
}

/// Like [`read_limited`], as UTF-8 text.
pub fn read_text_limited(path: &Path, limit: u64) -> std::io::Result<String> {
    String::from_utf8(read_limited(path, limit)?)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_within_the_limit_only() {
        let dir = crate::scratch_dir::ScratchDir::new();
        let path = dir.path().join("f");
        std::fs::write(&path, b"12345").unwrap();
        assert_eq!(read_limited(&path, 5).unwrap(), b"12345");
        assert!(read_limited(&path, 4).is_err());
        if Path::new("/dev/zero").exists() {
            assert!(read_limited(Path::new("/dev/zero"), 1024).is_err());
        }
        assert_eq!(
            with_suffix(Path::new("a/j.jsonl"), ".torn"),
            Path::new("a/j.jsonl.torn")
        );
    }
}
