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

/// Remaining time from the median duration of the last three fine-tuning epochs (the last epoch
/// when none is fine-tuning yet): recent enough to follow a faster build or machine, robust to
/// one epoch that shared the cores.
fn eta(rows: &[EpochRow], remaining_epochs: usize) -> String {
    let mut recent: Vec<f64> = rows
        .iter()
        .filter(|r| r.phase != "frozen")
        .rev()
        .take(3)
        .map(|r| r.seconds)
        .collect();
    recent.sort_by(f64::total_cmp);
    let per_epoch = match recent.get(recent.len() / 2) {
        Some(&median) => median,
        None => rows.last().map_or(0.0, |r| r.seconds),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(epoch: usize, phase: &str, seconds: f64) -> EpochRow {
        EpochRow {
            epoch,
            phase: phase.into(),
            seconds,
            ..EpochRow::default()
        }
    }

    #[test]
    fn eta_follows_the_recent_fine_tuning_epochs() {
        let frozen = [row(1, "frozen", 95.0)];
        assert_eq!(eta(&frozen, 10), "0h16m");
        let rows = [
            row(1, "frozen", 95.0),
            row(2, "fine-tune", 9796.0),
            row(3, "fine-tune", 6766.0),
            row(4, "fine-tune", 1689.0),
            row(5, "fine-tune", 3628.0),
            row(6, "fine-tune", 504.0),
        ];
        assert_eq!(eta(&rows, 12), "5h38m");
        let rows = [rows.as_slice(), &[row(7, "fine-tune", 510.0)]].concat();
        assert_eq!(eta(&rows, 11), "1h34m");
    }
}
