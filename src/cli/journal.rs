//! `dermedge journal`: read a journal (and its rotated files), filter it, export it.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use clap::{Args, ValueEnum};
use dermedge::history::{csv_row, text_line, FlagFilter, RecordFilter, CSV_HEADER};
use dermedge::journal::{read_journal, rotated_files};

use super::{EXIT_OK, EXIT_SOME_FAILED};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ExportFormat {
    /// One readable line per record.
    Text,
    /// The records as JSON Lines.
    Json,
    /// A CSV table, one row per record.
    Csv,
}

#[derive(Debug, Args)]
pub(crate) struct JournalArgs {
    /// The journal file.
    #[arg(default_value = "dermedge-journal.jsonl", env = "DERMEDGE_JOURNAL")]
    pub(crate) path: PathBuf,
    #[arg(long, value_enum, default_value_t = ExportFormat::Text)]
    pub(crate) format: ExportFormat,
    /// Only records at or after this UTC time (RFC 3339, or a prefix such as 2026-11-25).
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// Only records before this UTC time (same forms as --since).
    #[arg(long)]
    pub(crate) until: Option<String>,
    /// Only records of this kind.
    #[arg(long, value_enum)]
    pub(crate) flag: Option<FlagFilter>,
    /// Read the rotated files (`<journal>.1`, `.2`, ...) first, oldest first.
    #[arg(long)]
    pub(crate) all: bool,
}

fn files(path: &Path, all: bool) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if all {
        files.extend(rotated_files(path)?.into_iter().map(|(_, p)| p));
    }
    if path.exists() || files.is_empty() {
        files.push(path.to_path_buf());
    }
    Ok(files)
}

/// Runs `dermedge journal`; returns the exit code.
pub(crate) fn journal(args: &JournalArgs) -> Result<u8> {
    let filter = RecordFilter {
        since: args.since.clone(),
        until: args.until.clone(),
        flag: args.flag,
    };
    filter.check().map_err(anyhow::Error::msg)?;
    let paths = files(&args.path, args.all).map_err(|e| {
        anyhow!(
            "cannot list the folder of {}: {e}. Fix: check the path and its permissions",
            args.path.display()
        )
    })?;
    if args.format == ExportFormat::Csv {
        outln!("{CSV_HEADER}");
    }
    let (mut shown, mut bad) = (0usize, 0usize);
    for path in paths {
        let records = read_journal(&path).map_err(|e| {
            anyhow!(
                "cannot read journal {}: {e}. Fix: pass the journal's path (see `journal` in the config)",
                path.display()
            )
        })?;
        for record in records {
            match record {
                Ok(record) if filter.matches(&record) => {
                    shown += 1;
                    match args.format {
                        ExportFormat::Text => outln!("{}", text_line(&record)),
                        ExportFormat::Json => {
                            outln!("{}", serde_json::to_string(&record).unwrap_or_default())
                        }
                        ExportFormat::Csv => outln!("{}", csv_row(&record)),
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    bad += 1;
                    eprintln!("dermedge: skipped unreadable record {e}");
                }
            }
        }
    }
    if args.format == ExportFormat::Text {
        eprintln!("{shown} records shown, {bad} unreadable");
    }
    Ok(if bad > 0 { EXIT_SOME_FAILED } else { EXIT_OK })
}
