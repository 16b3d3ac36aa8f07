//! The device's main loop behind `dermedge run`. Frames from a source go through the trigger, the
//! quality gate and the ensemble; every event is written to the caller's output and journaled. A
//! lost source is reopened with backoff, a failing disk is logged, and a stop request ends the
//! loop between frames.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use image::RgbImage;

use crate::capture::{open_source, CameraSettings, CaptureError, Frame, FrameSource, SourceSpec};
use crate::config::RunConfig;
use crate::ensemble::Ensemble;
use crate::health::HealthSample;
use crate::journal::Journal;
use crate::preprocess::ImageLimits;
use crate::quality;
use crate::record::{json_line, Classified, Failed, Outcome, Rejected, DECISION_SUPPORT_NOTICE};
use crate::trigger::{motion_thumbnail, Trigger, TriggerMode};

/// Opens (or reopens) the frame source.
pub type SourceOpener<'a> = dyn FnMut() -> Result<Box<dyn FrameSource>, CaptureError> + 'a;

/// Opens the source of a run: once at start-up, and again after every loss. A camera picked by
/// searching (`camera` without a device) is kept for the reopens.
pub struct SourceReopener<'a> {
    spec: SourceSpec,
    camera: &'a CameraSettings,
    limits: ImageLimits,
    opened_at_start: Option<Box<dyn FrameSource>>,
}

impl<'a> SourceReopener<'a> {
    /// Opens the source once, so that a wrong source is refused before the loop starts. A camera
    /// that is missing for now is not an error: the loop waits for it.
    pub fn start(
        spec: SourceSpec,
        camera: &'a CameraSettings,
        limits: ImageLimits,
    ) -> Result<SourceReopener<'a>, CaptureError> {
        let opened_at_start = match open_source(&spec, camera, &limits) {
            Ok(source) => Some(source),
            Err(e) if matches!(spec, SourceSpec::Camera(_)) && !e.is_permanent() => {
                log::warn!("{e}; waiting for the camera");
                None
            }
            Err(e) => return Err(e),
        };
        Ok(SourceReopener {
            spec,
            camera,
            limits,
            opened_at_start,
        })
    }

    /// The source opened at start-up if it is still unused, else the source opened anew.
    pub fn open(&mut self) -> Result<Box<dyn FrameSource>, CaptureError> {
        let source = match self.opened_at_start.take() {
            Some(source) => source,
            None => open_source(&self.spec, self.camera, &self.limits)?,
        };
        if self.spec == SourceSpec::Camera(None) {
            if let Some(device) = source.name().strip_prefix("camera:") {
                log::info!("using {device} from now on, also after a reconnect");
                self.spec = SourceSpec::Camera(Some(PathBuf::from(device)));
            }
        }
        Ok(source)
    }
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunStats {
    pub frames: u64,
    pub classified: u64,
    pub rejected: u64,
    pub undecodable: u64,
    /// Of the undecodable frames, those cut short (an MJPEG frame without its end, a YUYV frame
    /// of the wrong size): never classified.
    pub incomplete: u64,
    pub reconnects: u64,
    /// Frames whose classification failed, and a source that cannot work at all.
    pub failed: u64,
    pub journal_failures: u64,
    /// The journal's error while appending fails; cleared by the next append that works.
    pub journal_error: Option<String>,
    pub save_failures: u64,
    /// Health readings at the first frame and then every `stats_every` frames.
    pub health: Vec<HealthSample>,
}

/// Everything the loop works with.
pub struct RunLoop<'a> {
    pub ensemble: &'a Ensemble,
    pub journal: Option<&'a mut Journal>,
    pub config: &'a RunConfig,
    pub limits: ImageLimits,
    /// Set to end the loop (SIGTERM, SIGINT).
    pub stop: &'a AtomicBool,
    /// Set to ask for a classification (Enter, SIGUSR1).
    pub request: &'a AtomicBool,
    pub out: &'a mut dyn Write,
    /// End after this many frames (tests, soak runs).
    pub max_frames: Option<u64>,
    /// Take a health reading (memory, descriptors, latency) every this many frames, and log it.
    pub stats_every: Option<u64>,
}

/// Sleeps up to `duration`, returning early (true) when `stop` is set.
pub(crate) fn sleep_unless_stopped(stop: &AtomicBool, duration: Duration) -> bool {
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
    stop.load(Ordering::Relaxed)
}

/// Logs at most once per `every`.
struct Throttled {
    last: Option<Instant>,
    every: Duration,
}

impl Throttled {
    fn ready(&mut self, now: Instant) -> bool {
        let ready = self
            .last
            .is_none_or(|l| now.saturating_duration_since(l) >= self.every);
        if ready {
            self.last = Some(now);
        }
        ready
    }
}

impl RunLoop<'_> {
    /// Runs until the source ends (without `replay.loop`), `max_frames` is reached, or `stop`.
    pub fn run(&mut self, open: &mut SourceOpener) -> RunStats {
        let mut stats = RunStats::default();
        let mut trigger = Trigger::new(self.config.trigger.clone());
        let mut source: Option<Box<dyn FrameSource>> = None;
        let mut backoff = Duration::from_millis(self.config.reconnect.initial_ms);
        let max_backoff = Duration::from_millis(
            self.config
                .reconnect
                .max_ms
                .max(self.config.reconnect.initial_ms),
        );
        let frame_period = (self.config.replay.fps > 0.0)
            .then(|| Duration::from_secs_f32(1.0 / self.config.replay.fps));
        let mut quiet = Throttled {
            last: None,
            every: Duration::from_secs(5),
        };
        let mut window = Vec::new();
        let mut frames_this_pass = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            if self.max_frames.is_some_and(|m| stats.frames >= m) {
                break;
            }
            let current = match source.as_mut() {
                Some(s) => s,
                None => match open() {
                    Ok(s) => {
                        log::info!("capturing from {}", s.name());
                        backoff = Duration::from_millis(self.config.reconnect.initial_ms);
                        source.insert(s)
                    }
                    Err(e) if e.is_permanent() => {
                        log::error!("{e}");
                        stats.failed += 1;
                        break;
                    }
                    Err(e) => {
                        log::warn!("{e}; retrying in {} ms", backoff.as_millis());
                        if sleep_unless_stopped(self.stop, backoff) {
                            break;
                        }
                        backoff = (backoff * 2).min(max_backoff);
                        continue;
                    }
                },
            };
            let tick = Instant::now();
            match current.next_frame() {
                Ok(Some(frame)) => {
                    stats.frames += 1;
                    let name = current.name();
                    let classified = stats.classified;
                    let started = Instant::now();
                    self.handle_frame(&frame, &name, &mut trigger, &mut stats, &mut quiet);
                    frames_this_pass += 1;
                    if stats.classified > classified && self.stats_every.is_some() {
                        window.push(started.elapsed().as_secs_f64() * 1e3);
                    }
                    if let Some(every) = self.stats_every.filter(|e| *e > 0) {
                        if stats.frames == 1 || stats.frames % every == 0 {
                            let sample = HealthSample::now(stats.frames, &mut window)
                                .with_journal(stats.journal_failures, stats.journal_error.clone());
                            log::info!(
                                "health {}",
                                serde_json::to_string(&sample).unwrap_or_default()
                            );
                            stats.health.push(sample);
                        }
                    }
                }
                Ok(None) => {
                    log::info!("{} ended after {} frames", current.name(), stats.frames);
                    source = None;
                    if !self.config.replay.repeat {
                        break;
                    }
                    if frames_this_pass == 0 {
                        log::error!("the source delivered no frame in a whole pass; stopping the replay loop");
                        break;
                    }
                    frames_this_pass = 0;
                }
                Err(e) => {
                    log::warn!("{e}; reopening in {} ms", backoff.as_millis());
                    source = None;
                    stats.reconnects += 1;
                    if sleep_unless_stopped(self.stop, backoff) {
                        break;
                    }
                    backoff = (backoff * 2).min(max_backoff);
                }
            }
            if let Some(period) = frame_period {
                if sleep_unless_stopped(self.stop, period.saturating_sub(tick.elapsed())) {
                    break;
                }
            }
        }
        stats
    }

    fn handle_frame(
        &mut self,
        frame: &Frame,
        source: &str,
        trigger: &mut Trigger,
        stats: &mut RunStats,
        quiet: &mut Throttled,
    ) {
        let requested = self.request.swap(false, Ordering::Relaxed);
        if trigger.mode() == TriggerMode::Manual && !requested {
            return;
        }
        let started = Instant::now();
        let image = match frame.to_rgb(&self.limits) {
            Ok(image) => image,
            Err(e) => {
                stats.undecodable += 1;
                if e.is_incomplete() {
                    stats.incomplete += 1;
                }
                if requested || trigger.mode() == TriggerMode::Every {
                    self.emit_failure(frame, e.to_string(), source, stats);
                } else if quiet.ready(started) {
                    log::warn!("undecodable frame: {e}");
                }
                return;
            }
        };
        if !trigger.wants(motion_thumbnail(&image), started, requested) {
            return;
        }
        let verdict = quality::check(&image, &self.config.gate);
        if !verdict.accepted() {
            stats.rejected += 1;
            let rejected = Outcome::Rejected(Rejected {
                input: frame.origin.clone(),
                sha256: frame.sha256(),
                reasons: verdict.reasons,
                measures: verdict.measures,
            });
            if trigger.mode() == TriggerMode::Auto {
                if quiet.ready(started) {
                    log::warn!("frame rejected: {}", rejected.summary());
                }
            } else {
                self.emit(&rejected, source, stats);
            }
            return;
        }
        trigger.fired(started);
        match self.ensemble.classify(&image) {
            Ok(prediction) => {
                stats.classified += 1;
                let sha256 = frame.sha256();
                let record = Classified::new(
                    frame.origin.clone(),
                    sha256.clone(),
                    self.ensemble,
                    &prediction,
                    started.elapsed().as_secs_f64() * 1e3,
                );
                self.save_frame(frame, &image, &sha256, stats);
                self.emit(&Outcome::Classified(Box::new(record)), source, stats);
            }
            Err(e) => {
                stats.failed += 1;
                self.emit_failure(frame, e.to_string(), source, stats);
            }
        }
    }

    fn emit_failure(&mut self, frame: &Frame, error: String, source: &str, stats: &mut RunStats) {
        let failed = Outcome::Failed(Failed {
            input: frame.origin.clone(),
            error,
        });
        self.emit(&failed, source, stats);
    }

    fn emit(&mut self, outcome: &Outcome, source: &str, stats: &mut RunStats) {
        let line = if self.config.json {
            json_line(outcome)
        } else {
            match outcome {
                Outcome::Classified(c) => {
                    format!("{}{DECISION_SUPPORT_NOTICE}\n", c.to_text(self.ensemble))
                }
                other => other.summary(),
            }
        };
        if let Err(e) = writeln!(self.out, "{line}").and_then(|()| self.out.flush()) {
            log::error!("cannot write results to stdout: {e}");
        }
        if let Some(journal) = self.journal.as_deref_mut() {
            match journal.append_outcome(source, outcome) {
                Ok(()) => {
                    if let Some(error) = stats.journal_error.take() {
                        log::warn!(
                            "journal {}: appending again after {} record(s) could not be journaled ({error})",
                            journal.path().display(),
                            stats.journal_failures
                        );
                    }
                }
                Err(e) => {
                    stats.journal_failures += 1;
                    log::error!("{e}; the result above was printed but not journaled");
                    stats.journal_error = Some(e.to_string());
                }
            }
        }
    }

    fn save_frame(&mut self, frame: &Frame, image: &RgbImage, sha256: &str, stats: &mut RunStats) {
        if !self.config.save_frames {
            return;
        }
        let (bytes, extension) = match frame.file_for_saving(image) {
            Ok(file) => file,
            Err(e) => {
                stats.save_failures += 1;
                log::error!("cannot encode frame {} for saving: {e}", frame.origin);
                return;
            }
        };
        let dir = &self.config.frames_dir;
        let path: PathBuf = dir.join(format!("{sha256}.{extension}"));
        let partial = dir.join(format!(".{sha256}.partial"));
        let written = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&partial, bytes))
            .and_then(|()| std::fs::rename(&partial, &path));
        if let Err(e) = written {
            stats.save_failures += 1;
            let _ = std::fs::remove_file(&partial);
            log::error!("cannot save frame {}: {e}", path.display());
        }
    }
}
