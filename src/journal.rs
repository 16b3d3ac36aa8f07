//! The append-only JSON Lines journal of every classified image or frame.
//!
//! Each record is one line written with a single `write` and flushed to disk with `fdatasync`
//! before the next, so a crash or power cut can tear at most the line being written. A torn last
//! line is moved aside to `<journal>.torn` the next time the journal is opened.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::paths::with_suffix;
use crate::record::Outcome;

/// Errors opening or appending to the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot open journal {path}: {source}. Fix: pass --journal with a writable path, or create its folder")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} does not look like a dermedge journal ({reason}); it was left untouched. Fix: choose another --journal path")]
    NotAJournal { path: PathBuf, reason: String },
    #[error("journal {path} is in use by another dermedge process. Fix: stop it (systemctl stop dermedge) or pass another --journal")]
    InUse { path: PathBuf },
    #[error("cannot append to journal {path}: {source}. Earlier records are intact. Fix: free disk space or check the storage")]
    Append {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One journal line: when and from where, then the outcome's fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalRecord {
    /// UTC time, RFC 3339.
    pub time: String,
    /// Where the input came from: `file` or a camera device.
    pub source: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Longest journal line the reader accepts, in bytes.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// An open journal file.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    len: u64,
    max_bytes: Option<u64>,
}

impl Journal {
    /// Opens (or creates) the journal, repairing a torn last line left by a crash.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let open_error = |source| JournalError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(open_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(JournalError::InUse {
                    path: path.to_path_buf(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => {
                log::warn!("journal {}: cannot lock: {e}", path.display())
            }
        }
        let regular = file.metadata().map_err(open_error)?.is_file();
        let len = if regular {
            check_is_journal(&mut file, path)?;
            repair_torn_tail(&mut file, path).map_err(open_error)?
        } else {
            0
        };
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            len,
            max_bytes: None,
        })
    }

    /// Rotates the journal once it would grow past `max_bytes`: the full file is renamed to
    /// `<journal>.N` (N one above the highest present; nothing is deleted) and a new one begun.
    pub fn with_rotation(mut self, max_bytes: Option<u64>) -> Journal {
        self.max_bytes = max_bytes.filter(|m| *m > 0);
        self
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.sync_all()?;
        let next = rotated_files(&self.path)?.last().map_or(1, |(n, _)| n + 1);
        let target = rotated_path(&self.path, next);
        let fresh = self.path.with_file_name(format!(
            ".{}.new",
            self.path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("journal")
        ));
        let new_file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .truncate(false)
            .open(&fresh)?;
        std::fs::rename(&self.path, &target)?;
        std::fs::rename(&fresh, &self.path)?;
        if let Err(e) = new_file.try_lock() {
            log::warn!(
                "journal {}: cannot lock the new file: {e}",
                self.path.display()
            );
        }
        self.file = new_file;
        self.len = 0;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
                log::warn!(
                    "journal {}: cannot sync its folder: {e}",
                    self.path.display()
                );
            }
        }
        log::info!("journal rotated to {}", target.display());
        Ok(())
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record and flushes it to disk. On failure the partial line is cut off so the
    /// journal stays a sequence of whole records.
    pub fn append(&mut self, record: &JournalRecord) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(record).map_err(|e| JournalError::Append {
            path: self.path.clone(),
            source: e.into(),
        })?;
        line.push(b'\n');
        if self
            .max_bytes
            .is_some_and(|max| self.len > 0 && self.len + line.len() as u64 > max)
        {
            if let Err(e) = self.rotate() {
                log::error!(
                    "journal {}: cannot rotate ({e}); appending to the current file",
                    self.path.display()
                );
            }
        }
        let written = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += line.len() as u64;
                Ok(())
            }
            Err(source) => {
                if let Err(e) = self.file.set_len(self.len) {
                    log::error!(
                        "journal {}: cannot cut a partial record: {e}",
                        self.path.display()
                    );
                }
                Err(JournalError::Append {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// Appends the outcome for one input with the current time.
    pub fn append_outcome(&mut self, source: &str, outcome: &Outcome) -> Result<(), JournalError> {
        self.append(&JournalRecord {
            time: utc_now_rfc3339(),
            source: source.to_string(),
            outcome: outcome.clone(),
        })
    }
}

/// Refuses to touch a non-empty file that is not a dermedge journal: its first line must be a
/// journal record, or the start of one when the file holds only a torn line.
fn check_is_journal(file: &mut File, path: &Path) -> Result<(), JournalError> {
    let not_a_journal = |reason: &str| JournalError::NotAJournal {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let mut first = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| {
            BufReader::new(&mut *file)
                .take(MAX_RECORD_BYTES as u64 + 1)
                .read_until(b'\n', &mut first)
        })
        .map_err(|source| JournalError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    if first.is_empty() {
        return Ok(());
    }
    if first.last() == Some(&b'\n') {
        return serde_json::from_slice::<JournalRecord>(&first)
            .map(|_| ())
            .map_err(|_| not_a_journal("its first line is not a journal record"));
    }
    if first.len() <= MAX_RECORD_BYTES && first.starts_with(RECORD_START) {
        Ok(())
    } else {
        Err(not_a_journal("it holds no journal record"))
    }
}

/// How every serialised [`JournalRecord`] begins.
const RECORD_START: &[u8] = b"{\"time\":\"";

/// Moves a last line without its newline to `<path>.torn`, truncates it off, and returns the
/// journal's length afterwards. A last record that is whole but lacks its newline gets one.
fn repair_torn_tail(file: &mut File, path: &Path) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(len);
    }
    let mut end_of_whole = 0u64;
    let mut position = len;
    let mut chunk = vec![0u8; 64 * 1024];
    'search: while position > 0 {
        let start = position.saturating_sub(chunk.len() as u64);
        let n = (position - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk[..n])?;
        if let Some(i) = chunk[..n].iter().rposition(|b| *b == b'\n') {
            end_of_whole = start + i as u64 + 1;
            break 'search;
        }
        position = start;
    }
    let mut torn = Vec::new();
    file.seek(SeekFrom::Start(end_of_whole))?;
    Read::by_ref(file)
        .take(MAX_RECORD_BYTES as u64 + 1)
        .read_to_end(&mut torn)?;
    if torn.len() > MAX_RECORD_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("its last line is over {MAX_RECORD_BYTES} bytes; not repaired"),
        ));
    }
    if serde_json::from_slice::<JournalRecord>(&torn).is_ok() {
        file.write_all(b"\n")?;
        file.sync_data()?;
        log::warn!(
            "journal {}: the last record lacked its newline; added",
            path.display()
        );
        return Ok(len + 1);
    }
    let mut aside = OpenOptions::new()
        .append(true)
        .create(true)
        .open(with_suffix(path, ".torn"))?;
    aside.write_all(&torn)?;
    aside.write_all(b"\n")?;
    aside.sync_data()?;
    file.set_len(end_of_whole)?;
    file.sync_data()?;
    log::warn!(
        "journal {}: moved a torn last record ({} bytes) to {}.torn",
        path.display(),
        torn.len(),
        path.display()
    );
    Ok(end_of_whole)
}

/// `<journal>.N`.
pub fn rotated_path(path: &Path, n: u64) -> PathBuf {
    with_suffix(path, &format!(".{n}"))
}

/// The rotated files of a journal, oldest (lowest N) first.
pub fn rotated_files(path: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(base) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{base}.");
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let n: u64 = name.strip_prefix(&prefix)?.parse().ok()?;
            Some((n, rotated_path(path, n)))
        })
        .collect();
    found.sort();
    Ok(found)
}

/// Reads every record of a journal file in order. A line that does not parse (or is over
/// [`MAX_RECORD_BYTES`]) becomes an error naming the file and line.
pub fn read_journal(path: &Path) -> std::io::Result<Vec<Result<JournalRecord, String>>> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut records = Vec::new();
    let mut line = Vec::new();
    let mut number = 0usize;
    loop {
        line.clear();
        number += 1;
        let read = reader
            .by_ref()
            .take(MAX_RECORD_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if read == 0 {
            break;
        }
        if line.last() != Some(&b'\n') && line.len() > MAX_RECORD_BYTES {
            let mut rest = Vec::new();
            while reader
                .by_ref()
                .take(MAX_RECORD_BYTES as u64)
                .read_until(b'\n', &mut rest)?
                > 0
            {
                if rest.last() == Some(&b'\n') {
                    break;
                }
                rest.clear();
            }
            records.push(Err(format!(
                "{}:{number}: record longer than {MAX_RECORD_BYTES} bytes",
                path.display()
            )));
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        records.push(
            serde_json::from_str(text.trim_end())
                .map_err(|e| format!("{}:{number}: {e}", path.display())),
        );
    }
    Ok(records)
}

/// The current UTC time as RFC 3339 with milliseconds.
pub fn utc_now_rfc3339() -> String {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339_from_unix_millis(since_epoch.as_millis() as i64)
}

/// Formats milliseconds since the Unix epoch as RFC 3339 UTC.
pub fn rfc3339_from_unix_millis(millis: i64) -> String {
    let seconds = millis.div_euclid(1000);
    let ms = millis.rem_euclid(1000);
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Failed;

    fn record(input: &str) -> JournalRecord {
        JournalRecord {
            time: "2026-01-01T00:00:00.000Z".into(),
            source: "file".into(),
            outcome: Outcome::Failed(Failed {
                input: input.into(),
                error: "e".into(),
            }),
        }
    }

    #[test]
    fn formats_known_dates() {
        assert_eq!(rfc3339_from_unix_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_from_unix_millis(951_782_400_123),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            rfc3339_from_unix_millis(1_795_651_199_999),
            "2026-11-25T23:59:59.999Z"
        );
    }

    #[test]
    fn appends_and_repairs_a_torn_tail() {
        let dir = crate::scratch_dir::ScratchDir::new();
        let path = dir.path().join("j.jsonl");
        let mut journal = Journal::open(&path).unwrap();
        journal.append(&record("a")).unwrap();
        journal.append(&record("b")).unwrap();
        drop(journal);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"time":"2026-01-01T0"#).unwrap();
        drop(f);

        let mut journal = Journal::open(&path).unwrap();
        journal.append(&record("c")).unwrap();
        let records = read_journal(&path).unwrap();
        let inputs: Vec<String> = records
            .into_iter()
            .map(|r| r.unwrap().outcome.input().to_string())
            .collect();
        assert_eq!(inputs, vec!["a", "b", "c"]);
        let torn = std::fs::read_to_string(dir.path().join("j.jsonl.torn")).unwrap();
        assert_eq!(torn, "{\"time\":\"2026-01-01T0\n");
    }

    #[test]
    fn rotation_by_size_loses_nothing_and_keeps_order() {
        let dir = crate::scratch_dir::ScratchDir::new();
        let path = dir.path().join("j.jsonl");
        let mut journal = Journal::open(&path).unwrap().with_rotation(Some(300));
        for i in 0..40 {
            journal.append(&record(&format!("frame-{i}"))).unwrap();
        }
        let rotated = rotated_files(&path).unwrap();
        assert!(rotated.len() >= 5, "{rotated:?}");
        let mut inputs = Vec::new();
        for file in rotated.iter().map(|(_, p)| p.clone()).chain([path.clone()]) {
            assert!(std::fs::metadata(&file).unwrap().len() <= 300);
            for r in read_journal(&file).unwrap() {
                inputs.push(r.unwrap().outcome.input().to_string());
            }
        }
        let expected: Vec<String> = (0..40).map(|i| format!("frame-{i}")).collect();
        assert_eq!(inputs, expected);
    }

    #[test]
    fn reader_reports_bad_and_overlong_lines_and_reads_on() {
        let dir = crate::scratch_dir::ScratchDir::new();
        let path = dir.path().join("j.jsonl");
        let good = serde_json::to_string(&record("ok")).unwrap();
        let long = "x".repeat(MAX_RECORD_BYTES + 10);
        std::fs::write(&path, format!("{good}\nnot json\n{long}\n{good}\n")).unwrap();
        let records = read_journal(&path).unwrap();
        assert_eq!(records.len(), 4);
        assert!(records[0].is_ok() && records[3].is_ok());
        assert!(records[1].as_ref().unwrap_err().contains("j.jsonl:2"));
        assert!(records[2].as_ref().unwrap_err().contains("longer than"));
    }

    #[test]
    fn a_journal_that_is_only_a_torn_line_becomes_empty() {
        let dir = crate::scratch_dir::ScratchDir::new();
        let path = dir.path().join("j.jsonl");
        std::fs::write(&path, b"{\"time\":\"2026-").unwrap();
        let journal = Journal::open(&path).unwrap();
        assert_eq!(journal.len, 0);
        assert_eq!(std::fs::read(&path).unwrap(), b"");
    }

    #[test]
    fn other_files_are_refused_and_left_untouched() {
        let dir = crate::scratch_dir::ScratchDir::new();
        for (name, content) in [
            (
                "scan.jpg",
                &b"\xFF\xD8\xFF\xE0 binary image data without newline"[..],
            ),
            ("notes.txt", b"patient notes\nsecond line"),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            let err = Journal::open(&path).unwrap_err().to_string();
            assert!(
                err.contains("does not look like a dermedge journal"),
                "{err}"
            );
            assert_eq!(std::fs::read(&path).unwrap(), content);
        }
    }

    #[test]
    fn a_whole_last_record_without_newline_is_kept_and_a_second_writer_is_refused() {
        let dir = crate::scratch_dir::ScratchDir::new();
        let path = dir.path().join("j.jsonl");
        let line = serde_json::to_string(&record("a")).unwrap();
        std::fs::write(&path, &line).unwrap();
        let mut journal = Journal::open(&path).unwrap();
        assert!(matches!(
            Journal::open(&path),
            Err(JournalError::InUse { .. })
        ));
        journal.append(&record("b")).unwrap();
        let inputs: Vec<String> = read_journal(&path)
            .unwrap()
            .into_iter()
            .map(|r| r.unwrap().outcome.input().to_string())
            .collect();
        assert_eq!(inputs, vec!["a", "b"]);
        assert!(!dir.path().join("j.jsonl.torn").exists());
    }
}
