//! The classification workers of `serve`: a bounded queue and a fixed number of threads that
//! share the loaded ensemble, decode, classify and journal each job, and hand the result back.
//! A full queue refuses new work at once instead of letting requests pile up.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use image::RgbImage;

use crate::ensemble::Ensemble;
use crate::journal::Journal;
use crate::preprocess::{load_image_bytes, ImageLimits};
use crate::record::{Classified, Failed, Outcome};

/// The journal shared by the workers and the camera, with its trouble counted.
pub struct Recorder {
    journal: Mutex<Option<Journal>>,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Recorder {
    /// A recorder writing to `journal` (none: results are only returned).
    pub fn new(journal: Option<Journal>) -> Recorder {
        Recorder {
            journal: Mutex::new(journal),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// Appends `outcome`; a failure is logged and counted, never fatal.
    pub fn record(&self, source: &str, outcome: &Outcome) {
        let mut journal = self.journal.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(journal) = journal.as_mut() else {
            return;
        };
        let mut last_error = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match journal.append_outcome(source, outcome) {
            Ok(()) => {
                if let Some(error) = last_error.take() {
                    log::warn!(
                        "journal {}: appending again ({error})",
                        journal.path().display()
                    );
                }
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                log::error!("{e}; the result was returned but not journaled");
                *last_error = Some(e.to_string());
            }
        }
    }

    /// Records that could not be journaled, and the current error while appending fails.
    pub fn trouble(&self) -> (u64, Option<String>) {
        (
            self.failures.load(Ordering::Relaxed),
            self.last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

/// What a job classifies.
pub enum JobInput {
    /// Encoded image bytes (an upload), decoded by the worker.
    Encoded(Vec<u8>),
    /// A decoded camera frame and the hash of its bytes as delivered.
    Frame { image: RgbImage, sha256: String },
}

/// Why a job gave no classification; the failure is journaled either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobFailure {
    /// The image could not be read (incomplete, damaged, too large, not JPEG or PNG).
    Unreadable(String),
    /// The ensemble failed on it.
    Inference(String),
}

/// A job's result.
pub type JobResult = Result<Box<Classified>, JobFailure>;

/// Where a job's result goes.
pub enum Reply {
    Channel(tokio::sync::oneshot::Sender<JobResult>),
    Callback(Box<dyn FnOnce(JobResult) + Send>),
}

struct Job {
    input: JobInput,
    /// The record's `input` field: a label, never a path taken from a request.
    label: String,
    /// The journal's `source` field.
    source: String,
    reply: Reply,
}

/// The queue is full; try again shortly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// A bounded queue in front of worker threads that share one ensemble.
pub struct ClassifyPool {
    sender: Mutex<Option<SyncSender<Job>>>,
    queued: Arc<AtomicUsize>,
    busy: Arc<AtomicUsize>,
    workers: Vec<JoinHandle<()>>,
    capacity: usize,
}

fn run_job(ensemble: &Ensemble, recorder: &Recorder, limits: &ImageLimits, job: Job) {
    let started = Instant::now();
    let decoded = match job.input {
        JobInput::Encoded(bytes) => {
            load_image_bytes(&bytes, std::path::Path::new(&job.label), limits)
                .map(|loaded| (loaded.rgb, loaded.sha256))
                .map_err(|e| JobFailure::Unreadable(e.to_string()))
        }
        JobInput::Frame { image, sha256 } => Ok((image, sha256)),
    };
    let result = decoded.and_then(|(image, sha256)| {
        ensemble
            .classify(&image)
            .map(|prediction| {
                Box::new(Classified::new(
                    job.label.clone(),
                    sha256,
                    ensemble,
                    &prediction,
                    started.elapsed().as_secs_f64() * 1e3,
                ))
            })
            .map_err(|e| JobFailure::Inference(e.to_string()))
    });
    let outcome = match &result {
        Ok(classified) => Outcome::Classified(classified.clone()),
        Err(JobFailure::Unreadable(error) | JobFailure::Inference(error)) => {
            Outcome::Failed(Failed {
                input: job.label.clone(),
                error: error.clone(),
            })
        }
    };
    recorder.record(&job.source, &outcome);
    match job.reply {
        Reply::Channel(sender) => {
            let _ = sender.send(result);
        }
        Reply::Callback(callback) => callback(result),
    }
}

fn work(
    jobs: &Mutex<Receiver<Job>>,
    ensemble: &Ensemble,
    recorder: &Recorder,
    limits: &ImageLimits,
    queued: &AtomicUsize,
    busy: &AtomicUsize,
) {
    loop {
        let job = match jobs.lock().unwrap_or_else(PoisonError::into_inner).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        queued.fetch_sub(1, Ordering::Relaxed);
        busy.fetch_add(1, Ordering::Relaxed);
        run_job(ensemble, recorder, limits, job);
        busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ClassifyPool {
    /// Starts `workers` threads behind a queue of `capacity` waiting jobs.
    pub fn start(
        workers: usize,
        capacity: usize,
        ensemble: Arc<Ensemble>,
        recorder: Arc<Recorder>,
        limits: ImageLimits,
    ) -> ClassifyPool {
        let (sender, receiver) = sync_channel::<Job>(capacity);
        let receiver = Arc::new(Mutex::new(receiver));
        let queued = Arc::new(AtomicUsize::new(0));
        let busy = Arc::new(AtomicUsize::new(0));
        let workers = (0..workers.max(1))
            .map(|i| {
                let (receiver, ensemble, recorder) = (
                    Arc::clone(&receiver),
                    Arc::clone(&ensemble),
                    Arc::clone(&recorder),
                );
                let (queued, busy) = (Arc::clone(&queued), Arc::clone(&busy));
                std::thread::Builder::new()
                    .name(format!("classify-{i}"))
                    .spawn(move || work(&receiver, &ensemble, &recorder, &limits, &queued, &busy))
                    .expect("a worker thread starts")
            })
            .collect();
        ClassifyPool {
            sender: Mutex::new(Some(sender)),
            queued,
            busy,
            workers,
            capacity,
        }
    }

    /// Queues a job, or says the queue is full.
    pub fn submit(
        &self,
        input: JobInput,
        label: String,
        source: String,
        reply: Reply,
    ) -> Result<(), Busy> {
        let sender = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(sender) = sender.as_ref() else {
            return Err(Busy);
        };
        self.queued.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            input,
            label,
            source,
            reply,
        };
        match sender.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                Err(Busy)
            }
        }
    }

    /// Jobs waiting for a worker.
    pub fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Jobs being classified now.
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Relaxed)
    }

    /// How many jobs may wait.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Worker threads.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Lets the queued jobs finish and joins the workers.
    pub fn shut_down(mut self) {
        self.sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}
