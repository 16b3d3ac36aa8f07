//! The live view of `serve`: a thread that reads the frame source (reopening it with backoff),
//! runs the quality gate on every frame, keeps the latest one (with a JPEG for the preview), and,
//! with the `auto` or `every` trigger, sends frames to the classification pool on its own.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use image::RgbImage;
use serde::Serialize;

use super::pool::{ClassifyPool, JobFailure, JobInput, JobResult, Reply};
use crate::capture::{open_source, Frame, FramePixels, SourceSpec};
use crate::codec::jpeg::with_huffman_tables;
use crate::config::RunConfig;
use crate::device_loop::sleep_unless_stopped;
use crate::preprocess::ImageLimits;
use crate::quality::{self, GateVerdict};
use crate::record::Outcome;
use crate::trigger::{motion_thumbnail, Trigger, TriggerMode};

/// Widest preview frame sent to browsers.
const PREVIEW_WIDTH: u32 = 640;

/// The most recent frame and what the gate said of it.
pub struct LatestFrame {
    pub number: u64,
    pub origin: String,
    pub sha256: String,
    pub image: RgbImage,
    /// The frame as JPEG, at most [`PREVIEW_WIDTH`] wide.
    pub preview: Vec<u8>,
    pub verdict: GateVerdict,
    pub at: Instant,
}

/// Where the source stands, for the page and the health check.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum CameraState {
    /// Opening the source for the first time.
    Starting,
    /// Frames are arriving.
    Live,
    /// The source cannot be opened or stopped delivering; being retried.
    Gone { detail: String },
    /// A finite source (a folder, a file) has been read to its end.
    Ended,
}

/// The shared live view.
pub struct CameraFeed {
    pub source_name: String,
    pub trigger_mode: TriggerMode,
    latest: Mutex<Option<Arc<LatestFrame>>>,
    state: Mutex<CameraState>,
    frames: AtomicU64,
    automatic: Mutex<Option<(u64, Outcome)>>,
    automatic_count: AtomicU64,
    /// Tells preview streams that a new frame is in.
    pub updates: tokio::sync::watch::Sender<u64>,
}

impl CameraFeed {
    fn new(source_name: String, trigger_mode: TriggerMode) -> CameraFeed {
        CameraFeed {
            source_name,
            trigger_mode,
            latest: Mutex::new(None),
            state: Mutex::new(CameraState::Starting),
            frames: AtomicU64::new(0),
            automatic: Mutex::new(None),
            automatic_count: AtomicU64::new(0),
            updates: tokio::sync::watch::channel(0).0,
        }
    }

    /// The latest frame, if any arrived.
    pub fn latest(&self) -> Option<Arc<LatestFrame>> {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The source's state.
    pub fn state(&self) -> CameraState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Frames read so far.
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// The latest automatic capture's result and its sequence number.
    pub fn automatic(&self) -> Option<(u64, Outcome)> {
        self.automatic
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_state(&self, state: CameraState) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state;
    }

    fn store_automatic(&self, outcome: Outcome) {
        let n = self.automatic_count.fetch_add(1, Ordering::Relaxed) + 1;
        *self
            .automatic
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((n, outcome));
    }
}

/// The preview JPEG of a frame: a small JPEG as delivered, else the decoded frame re-encoded.
fn preview_jpeg(frame: &Frame, image: &RgbImage) -> Vec<u8> {
    if let FramePixels::Encoded(bytes) = &frame.pixels {
        let is_jpeg = bytes.starts_with(&[0xFF, 0xD8]);
        if is_jpeg && image.width() <= PREVIEW_WIDTH {
            return with_huffman_tables(bytes).into_owned();
        }
    }
    let small;
    let view = if image.width() > PREVIEW_WIDTH {
        let height = (image.height() * PREVIEW_WIDTH / image.width()).max(1);
        small = image::imageops::resize(
            image,
            PREVIEW_WIDTH,
            height,
            image::imageops::FilterType::Triangle,
        );
        &small
    } else {
        image
    };
    let mut out = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80);
    if let Err(e) = view.write_with_encoder(encoder) {
        log::warn!("preview: cannot encode a frame as JPEG: {e}");
    }
    out
}

/// Starts the capture thread; it ends when `stop` is set.
pub fn start(
    spec: SourceSpec,
    config: RunConfig,
    limits: ImageLimits,
    pool: Arc<ClassifyPool>,
    stop: Arc<AtomicBool>,
) -> (Arc<CameraFeed>, std::thread::JoinHandle<()>) {
    let feed = Arc::new(CameraFeed::new(config.source.clone(), config.trigger.mode));
    let thread_feed = Arc::clone(&feed);
    let handle = std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || capture_loop(spec, &config, &limits, &pool, &thread_feed, &stop))
        .expect("the capture thread starts");
    (feed, handle)
}

fn capture_loop(
    spec: SourceSpec,
    config: &RunConfig,
    limits: &ImageLimits,
    pool: &ClassifyPool,
    feed: &Arc<CameraFeed>,
    stop: &AtomicBool,
) {
    let initial = Duration::from_millis(config.reconnect.initial_ms);
    let max_backoff =
        Duration::from_millis(config.reconnect.max_ms.max(config.reconnect.initial_ms));
    let is_camera = matches!(spec, SourceSpec::Camera(_));
    let fps = if config.replay.fps > 0.0 {
        config.replay.fps.min(30.0)
    } else {
        5.0
    };
    let replay_period = (!is_camera).then(|| Duration::from_secs_f32(1.0 / fps));
    let mut trigger = Trigger::new(config.trigger.clone());
    let mut backoff = initial;
    while !stop.load(Ordering::Relaxed) {
        let mut source = match open_source(&spec, &config.camera, limits) {
            Ok(source) => {
                log::info!("serve: capturing from {}", source.name());
                backoff = initial;
                source
            }
            Err(e) => {
                let permanent = e.is_permanent();
                log::warn!("{e}");
                feed.set_state(CameraState::Gone {
                    detail: e.to_string(),
                });
                if permanent || sleep_unless_stopped(stop, backoff) {
                    return;
                }
                backoff = (backoff * 2).min(max_backoff);
                continue;
            }
        };
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let tick = Instant::now();
            match source.next_frame() {
                Ok(Some(frame)) => {
                    feed.set_state(CameraState::Live);
                    handle_frame(&frame, config, limits, pool, feed, &mut trigger);
                }
                Ok(None) if config.replay.repeat => break,
                Ok(None) => {
                    feed.set_state(CameraState::Ended);
                    while !sleep_unless_stopped(stop, Duration::from_millis(200)) {}
                    return;
                }
                Err(e) => {
                    log::warn!("{e}");
                    feed.set_state(CameraState::Gone {
                        detail: e.to_string(),
                    });
                    if sleep_unless_stopped(stop, backoff) {
                        return;
                    }
                    break;
                }
            }
            if let Some(period) = replay_period {
                if sleep_unless_stopped(stop, period.saturating_sub(tick.elapsed())) {
                    return;
                }
            }
        }
    }
}

fn handle_frame(
    frame: &Frame,
    config: &RunConfig,
    limits: &ImageLimits,
    pool: &ClassifyPool,
    feed: &Arc<CameraFeed>,
    trigger: &mut Trigger,
) {
    let image = match frame.to_rgb(limits) {
        Ok(image) => image,
        Err(e) => {
            log::debug!("serve: undecodable frame: {e}");
            return;
        }
    };
    let now = Instant::now();
    let verdict = quality::check(&image, &config.gate);
    let number = feed.frames.fetch_add(1, Ordering::Relaxed) + 1;
    let automatic = matches!(trigger.mode(), TriggerMode::Auto | TriggerMode::Every)
        && trigger.wants(motion_thumbnail(&image), now, false)
        && verdict.accepted();
    let latest = Arc::new(LatestFrame {
        number,
        origin: frame.origin.clone(),
        sha256: frame.sha256(),
        preview: preview_jpeg(frame, &image),
        image,
        verdict,
        at: now,
    });
    *feed.latest.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&latest));
    feed.updates.send_replace(number);
    if automatic {
        let done_feed = Arc::clone(feed);
        let origin = latest.origin.clone();
        let submitted = pool.submit(
            JobInput::Frame {
                image: latest.image.clone(),
                sha256: latest.sha256.clone(),
            },
            latest.origin.clone(),
            feed.source_name.clone(),
            Reply::Callback(Box::new(move |result: JobResult| {
                let outcome = match result {
                    Ok(classified) => Outcome::Classified(classified),
                    Err(JobFailure::Unreadable(error) | JobFailure::Inference(error)) => {
                        Outcome::Failed(crate::record::Failed {
                            input: origin,
                            error,
                        })
                    }
                };
                done_feed.store_automatic(outcome);
            })),
        );
        if submitted.is_ok() {
            trigger.fired(now);
        } else {
            log::debug!("serve: automatic capture skipped, the classification queue is full");
        }
    }
}
