//! Process health for long runs: resident memory, open file descriptors, and the timing
//! summaries that health readings and benchmarks report.

use serde::Serialize;

/// A `/proc/self/status` memory field (`VmRSS`, `VmHWM`) in bytes, where the OS reports it.
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| {
        l.strip_prefix(field)
            .is_some_and(|rest| rest.starts_with(':'))
    })?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Current resident set size (VmRSS), in bytes.
pub fn current_rss_bytes() -> Option<u64> {
    status_bytes("VmRSS")
}

/// Peak resident set size of this process (VmHWM), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    status_bytes("VmHWM")
}

/// Number of open file descriptors, where the OS lists them.
pub fn open_fds() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count())
}

/// Minimum, median and 95th percentile of a series of timings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TimingStats {
    pub runs: usize,
    pub min_ms: f64,
    pub median_ms: f64,
    pub p95_ms: f64,
}

impl TimingStats {
    /// Summarises `samples` (milliseconds); all zero when empty.
    pub fn from_samples(samples: &[f64]) -> TimingStats {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| {
            if sorted.is_empty() {
                0.0
            } else {
                sorted[((sorted.len() - 1) as f64 * q).round() as usize]
            }
        };
        TimingStats {
            runs: sorted.len(),
            min_ms: at(0.0),
            median_ms: at(0.5),
            p95_ms: at(0.95),
        }
    }
}

/// One health reading during a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthSample {
    pub frames: u64,
    pub rss_bytes: Option<u64>,
    pub open_fds: Option<usize>,
    /// Median capture-to-record time of the frames classified since the previous sample.
    pub median_ms: Option<f64>,
    /// Records the journal could not take so far in the run.
    pub journal_failures: u64,
    /// The journal's error while appending fails (a full or read-only disk); `None` when the
    /// last append worked.
    pub journal_error: Option<String>,
}

impl HealthSample {
    /// Reads the process's health now; `window` holds recent per-frame times.
    pub fn now(frames: u64, window: &mut Vec<f64>) -> HealthSample {
        let median_ms = (!window.is_empty()).then(|| TimingStats::from_samples(window).median_ms);
        window.clear();
        HealthSample {
            frames,
            rss_bytes: current_rss_bytes(),
            open_fds: open_fds(),
            median_ms,
            journal_failures: 0,
            journal_error: None,
        }
    }

    /// The sample with the journal's state.
    pub fn with_journal(mut self, failures: u64, error: Option<String>) -> HealthSample {
        self.journal_failures = failures;
        self.journal_error = error;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        if cfg!(target_os = "linux") {
            assert!(current_rss_bytes().unwrap() > 0);
            let held: Vec<std::fs::File> = (0..32)
                .map(|_| std::fs::File::open("/proc/self/status").unwrap())
                .collect();
            assert!(open_fds().unwrap() >= held.len() + 3);
        }
        let mut window = vec![3.0, 1.0, 2.0];
        let sample = HealthSample::now(7, &mut window);
        assert_eq!(sample.median_ms, Some(2.0));
        assert!(window.is_empty());
    }
}
