//! What a member's training reports: the CSV log and plot of its epochs, and a log line per epoch.

use std::path::Path;

use super::checkpoint::{write_atomically, RunFiles};
use crate::plot::{write_training_plot, EpochRow};

/// Writes the epoch rows as `log.csv` and `curves.png`.
pub(super) fn write_log(files: &RunFiles, rows: &[EpochRow]) -> anyhow::Result<()> {
    let mut text = format!("{}\n", EpochRow::CSV_HEADER);
    for row in rows {
        text.push_str(&row.csv());
        text.push('\n');
    }
    write_atomically(&files.log(), text.as_bytes())?;
    write_training_plot(&files.plot(), rows)
}

/// Remaining time from the mean duration of the fine-tuning epochs so far.
fn eta(rows: &[EpochRow], remaining_epochs: usize) -> String {
    let timed: Vec<f64> = rows
        .iter()
        .filter(|r| r.phase != "frozen")
        .map(|r| r.seconds)
        .collect();
    let per_epoch = if timed.is_empty() {
        rows.last().map_or(0.0, |r| r.seconds)
    } else {
        timed.iter().sum::<f64>() / timed.len() as f64
    };
    let minutes = (per_epoch * remaining_epochs as f64 / 60.0).round() as u64;
    format!("{}h{:02}m", minutes / 60, minutes % 60)
}

/// Logs the last of `rows`, an epoch of `epochs`, with the time left.
pub(super) fn log_epoch(dir: &Path, rows: &[EpochRow], epochs: usize) {
    let Some(row) = rows.last() else {
        return;
    };
    let average_note = row.average.map_or(String::new(), |a| {
        format!(
            " | average acc {:.3} balanced {:.3} mel {:.3}",
            a.accuracy, a.balanced_accuracy, a.melanoma_sensitivity
        )
    });
    log::info!(
        "{} epoch {}/{} [{}] train loss {:.4} acc {:.3} | val loss {:.4} acc {:.3} balanced {:.3} mel {:.3}{average_note} | {:.0} s, ETA {}",
        dir.display(),
        row.epoch,
        epochs,
        row.phase,
        row.train_loss,
        row.train_accuracy,
        row.val_loss,
        row.val_accuracy,
        row.val_balanced_accuracy,
        row.val_melanoma_sensitivity,
        row.seconds,
        eta(rows, epochs - row.epoch)
    );
}
