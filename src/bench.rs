//! `dermedge bench`: start-up, latency and memory of each member and of the whole ensemble,
//! with plain tract on the same file and input as the baseline.

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::RgbImage;
use serde::Serialize;
use tract_onnx::prelude::*;

use crate::capture::{Frame, FramePixels};
use crate::ensemble::{Ensemble, EnsembleError, InferenceError};
use crate::health::{peak_rss_bytes, TimingStats};
use crate::integrity::PublicKey;
use crate::journal::Journal;
use crate::manifest::{Flip, InputSpec};
use crate::preprocess::{load_image_file, ImageError, ImageLimits};
use crate::profile::{profile_plan, OpTime};
use crate::quality::{self, GateSettings};
use crate::record::{Classified, Outcome, Rejected};

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Ensemble(#[from] EnsembleError),
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("plain tract failed on {path}: {message}")]
    Baseline { path: PathBuf, message: String },
    #[error("cannot write the input tensor to {path}: {message}. Fix: give --save-input a writable file path")]
    SaveInput { path: PathBuf, message: String },
}

/// Figures for one member.
#[derive(Debug, Clone, Serialize)]
pub struct MemberBench {
    pub file: String,
    pub backbone: String,
    pub precision: String,
    pub file_bytes: u64,
    /// The member's input tensor shape, `1x3xHxW`.
    pub input: String,
    /// Where its preprocessed input was written (with `--save-input`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved_input: Option<PathBuf>,
    /// Parse + type + declutter + optimise, in dermedge.
    pub load_ms: f64,
    /// The same file loaded with plain tract (`model_for_path` ... `into_runnable`).
    pub tract_alone_load_ms: f64,
    /// One member run in dermedge: tract plan plus softmax and output copy.
    pub dermedge: TimingStats,
    /// The same input through the plain tract plan.
    pub tract_alone: TimingStats,
    /// dermedge median over tract-alone median.
    pub overhead_ratio: f64,
    /// Time per operator kind in the optimised plan (with `--profile`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profile: Vec<OpTime>,
}

/// The whole benchmark report.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub ensemble: String,
    pub threads: usize,
    pub input: String,
    pub image: String,
    pub members: Vec<MemberBench>,
    /// Whole-ensemble start-up: manifest, checksums, every member loaded and optimised.
    pub ensemble_load_ms: f64,
    /// Decoding the image file (when one is given).
    pub decode: Option<TimingStats>,
    /// Every member on the prepared input, then combine (members share the thread pool when
    /// there is one): the figure to set against other engines running the same members.
    pub members_and_combine: TimingStats,
    /// Resize + normalise + every member + combine, per image.
    pub per_image: TimingStats,
    /// One camera frame from capture to the journal: MJPEG decode (Huffman tables checked),
    /// quality gate, ensemble, record, journal append with fdatasync.
    pub capture_to_log: TimingStats,
    /// Size of that frame (`WIDTHxHEIGHT`, JPEG bytes).
    pub capture_frame: String,
    pub peak_rss_bytes: Option<u64>,
}

/// What to benchmark and how long.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub manifest: PathBuf,
    /// When set, the ensemble must be signed with this key, as in `classify`.
    pub public_key: Option<PathBuf>,
    pub image: Option<PathBuf>,
    pub warmup: usize,
    pub runs: usize,
    pub threads: usize,
    /// Also time every member's plan node by node.
    pub profile: bool,
    /// Write the first member's preprocessed input tensor here (raw little-endian f32, NCHW),
    /// so that other engines can be timed on exactly the same input; a member whose input
    /// differs from the first one's gets its own file, this path with `.N` added (N its index).
    pub save_input: Option<PathBuf>,
}

fn time_ms<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let started = Instant::now();
    let value = f();
    (value, started.elapsed().as_secs_f64() * 1e3)
}

/// Timings of `options.runs` calls of `run`, after `options.warmup` untimed ones.
fn timed_runs<T, E>(
    options: &BenchOptions,
    run: impl Fn() -> Result<T, E>,
) -> Result<TimingStats, E> {
    for _ in 0..options.warmup {
        run()?;
    }
    let mut samples = Vec::with_capacity(options.runs);
    for _ in 0..options.runs {
        let (result, ms) = time_ms(&run);
        result?;
        samples.push(ms);
    }
    Ok(TimingStats::from_samples(&samples))
}

/// A deterministic, lesion-like test picture (a dark blob on skin tones) for runs without an image.
pub fn synthetic_image(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let dx = x as f32 / width as f32 - 0.5;
        let dy = y as f32 / height as f32 - 0.5;
        let r = (dx * dx + dy * dy).sqrt();
        let shade = (r * 2.0).min(1.0);
        image::Rgb([
            (120.0 + 110.0 * shade) as u8,
            (70.0 + 100.0 * shade) as u8,
            (50.0 + 90.0 * shade) as u8,
        ])
    })
}

fn plain_tract_plan(path: &Path, height: u32, width: u32) -> TractResult<Arc<TypedSimplePlan>> {
    tract_onnx::onnx()
        .model_for_path(path)?
        .with_input_fact(0, f32::fact([1, 3, height as usize, width as usize]).into())?
        .into_optimized()?
        .into_runnable()
}

/// Size of the simulated camera frame.
pub const CAPTURE_FRAME: (u32, u32) = (640, 480);

fn time_capture_to_log(
    ensemble: &Ensemble,
    image: &RgbImage,
    options: &BenchOptions,
) -> Result<(TimingStats, String), BenchError> {
    let io_error = |e: std::io::Error| BenchError::Baseline {
        path: std::env::temp_dir(),
        message: e.to_string(),
    };
    let (w, h) = CAPTURE_FRAME;
    let frame_image = image::imageops::resize(image, w, h, image::imageops::FilterType::Triangle);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&frame_image)
        .map_err(|e| BenchError::Baseline {
            path: PathBuf::from("capture frame"),
            message: e.to_string(),
        })?;
    let frame = Frame {
        origin: "bench#1".into(),
        pixels: FramePixels::Encoded(jpeg),
    };
    let journal_dir = crate::paths::fresh_temp_dir("dermedge-bench").map_err(io_error)?;
    let journal_path = journal_dir.join("bench-journal.jsonl");
    let mut journal = Journal::open(&journal_path).map_err(|e| BenchError::Baseline {
        path: journal_path.clone(),
        message: e.to_string(),
    })?;
    let limits = ImageLimits::default();
    let gate = GateSettings::default();
    let mut samples = Vec::with_capacity(options.runs);
    for run in 0..options.warmup + options.runs {
        let started = Instant::now();
        let rgb = frame.to_rgb(&limits).map_err(|e| BenchError::Baseline {
            path: PathBuf::from("capture frame"),
            message: e.to_string(),
        })?;
        let verdict = quality::check(&rgb, &gate);
        let prediction = ensemble.classify(&rgb)?;
        let record = Classified::new(
            frame.origin.clone(),
            frame.sha256(),
            ensemble,
            &prediction,
            0.0,
        );
        let outcome = if verdict.accepted() {
            Outcome::Classified(Box::new(record))
        } else {
            Outcome::Rejected(Rejected {
                input: frame.origin.clone(),
                sha256: frame.sha256(),
                reasons: verdict.reasons,
                measures: verdict.measures,
            })
        };
        journal
            .append_outcome("bench", &outcome)
            .map_err(|e| BenchError::Baseline {
                path: journal_path.clone(),
                message: e.to_string(),
            })?;
        if run >= options.warmup {
            samples.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    drop(journal);
    let _ = std::fs::remove_dir_all(&journal_dir);
    let bytes = match &frame.pixels {
        FramePixels::Encoded(b) => b.len(),
        FramePixels::Yuyv { data, .. } => data.len(),
    };
    let described = format!("{w}x{h} MJPEG, {bytes} bytes");
    Ok((TimingStats::from_samples(&samples), described))
}

fn save_tensor(input: &TValue, path: &Path) -> Result<(), BenchError> {
    let fail = |message: String| BenchError::SaveInput {
        path: path.to_path_buf(),
        message,
    };
    let view = input
        .to_plain_array_view::<f32>()
        .map_err(|e| fail(format!("{e:#}")))?;
    let bytes: Vec<u8> = view.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).map_err(|e| fail(e.to_string()))
}

/// The input tensor shape of `spec`, `1x3xHxW`.
fn tensor_shape(spec: &InputSpec) -> String {
    format!("1x3x{}x{}", spec.height, spec.width)
}

/// `path` with `.index` appended to its file name.
fn numbered(path: &Path, index: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{index}"));
    PathBuf::from(name)
}

/// Runs the benchmark.
pub fn run_bench(options: &BenchOptions) -> Result<BenchReport, BenchError> {
    let key = options
        .public_key
        .as_deref()
        .map(PublicKey::load)
        .transpose()
        .map_err(EnsembleError::from)?;
    let (ensemble, ensemble_load_ms) =
        time_ms(|| Ensemble::load_with(&options.manifest, key.as_ref()));
    let ensemble = ensemble?;
    let first = ensemble.input_spec(0).clone();
    let limits = ImageLimits::default();

    let (image, decode) = match &options.image {
        Some(path) => {
            let samples: Vec<f64> = (0..options.runs.max(1))
                .map(|_| time_ms(|| load_image_file(path, &limits)).1)
                .collect();
            let image = load_image_file(path, &limits)?.rgb;
            (image, Some(TimingStats::from_samples(&samples)))
        }
        None => (synthetic_image(first.width, first.height), None),
    };
    let temperature = ensemble.manifest.decision.temperature.unwrap_or(1.0);

    let mut members = Vec::new();
    for (index, member) in ensemble.members.iter().enumerate() {
        let spec = ensemble.input_spec(index);
        let input = ensemble.input_for(index, &image);
        let saved_input = match &options.save_input {
            Some(path) if index > 0 && spec == &first => Some(path.clone()),
            Some(path) => {
                let path = if index == 0 {
                    path.clone()
                } else {
                    numbered(path, index)
                };
                save_tensor(&input, &path)?;
                Some(path)
            }
            None => None,
        };
        let baseline_error = |e: TractError| BenchError::Baseline {
            path: member.path.clone(),
            message: format!("{e:#}"),
        };
        let (plan, tract_alone_load_ms) =
            time_ms(|| plain_tract_plan(&member.path, spec.height, spec.width));
        let plan = plan.map_err(baseline_error)?;
        for _ in 0..options.warmup {
            member.probabilities(&input, temperature)?;
            plan.run(tvec!(input.clone())).map_err(baseline_error)?;
        }
        let mut ours = Vec::with_capacity(options.runs);
        let mut alone = Vec::with_capacity(options.runs);
        for _ in 0..options.runs {
            let (result, ms) = time_ms(|| member.probabilities(&input, temperature));
            result?;
            ours.push(ms);
            let (result, ms) = time_ms(|| plan.run(tvec!(input.clone())));
            result.map_err(baseline_error)?;
            alone.push(ms);
        }
        let dermedge = TimingStats::from_samples(&ours);
        let tract_alone = TimingStats::from_samples(&alone);
        let profile = if options.profile {
            profile_plan(member.plan(), &input, options.runs).map_err(baseline_error)?
        } else {
            Vec::new()
        };
        members.push(MemberBench {
            file: member.spec.file.display().to_string(),
            backbone: member.spec.backbone.clone(),
            precision: member.spec.precision.clone(),
            file_bytes: member.file_bytes,
            input: tensor_shape(spec),
            saved_input,
            load_ms: member.load_ms,
            tract_alone_load_ms,
            dermedge,
            tract_alone,
            overhead_ratio: dermedge.median_ms / tract_alone.median_ms,
            profile,
        });
    }

    let views = ensemble.views_with(&image, &[Flip::None]);
    let members_and_combine = timed_runs(options, || ensemble.predict(&views))?;
    let per_image = timed_runs(options, || ensemble.classify(&image))?;

    let (capture_to_log, capture_frame) = time_capture_to_log(&ensemble, &image, options)?;

    Ok(BenchReport {
        ensemble: ensemble.manifest.id(),
        threads: options.threads,
        input: ensemble
            .input_specs()
            .iter()
            .map(tensor_shape)
            .collect::<Vec<_>>()
            .join(" + "),
        image: options
            .image
            .as_ref()
            .map_or("synthetic".into(), |p| p.display().to_string()),
        members,
        ensemble_load_ms,
        decode,
        members_and_combine,
        per_image,
        capture_to_log,
        capture_frame,
        peak_rss_bytes: peak_rss_bytes(),
    })
}

impl BenchReport {
    /// A readable table of the report.
    pub fn to_text(&self) -> String {
        let stats =
            |s: &TimingStats| format!("{:>8.2} {:>8.2} {:>8.2}", s.min_ms, s.median_ms, s.p95_ms);
        let mut out = format!(
            "ensemble {}  input {}  image {}  threads {}\n\n",
            self.ensemble, self.input, self.image, self.threads
        );
        out.push_str(&format!(
            "{:<28} {:>9} {:>9} {:>9} | {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} | {:>6}\n",
            "member",
            "MiB",
            "load ms",
            "tract ld",
            "min",
            "median",
            "p95",
            "t.min",
            "t.median",
            "t.p95",
            "ratio"
        ));
        for m in &self.members {
            out.push_str(&format!(
                "{:<28} {:>9.2} {:>9.1} {:>9.1} | {} | {} | {:>6.3}\n",
                format!("{} {}", m.backbone, m.precision),
                m.file_bytes as f64 / (1 << 20) as f64,
                m.load_ms,
                m.tract_alone_load_ms,
                stats(&m.dermedge),
                stats(&m.tract_alone),
                m.overhead_ratio
            ));
        }
        out.push_str("(min/median/p95 in ms over the runs; t.* is plain tract on the same file and input; ratio = median / t.median)\n\n");
        for m in self.members.iter().filter(|m| !m.profile.is_empty()) {
            let total: f64 = m.profile.iter().map(|p| p.ms_per_run).sum();
            out.push_str(&format!(
                "profile of {} ({} {}): {total:.2} ms per run in plan nodes\n",
                m.file, m.backbone, m.precision
            ));
            for p in &m.profile {
                out.push_str(&format!(
                    "  {:<32} {:>4} nodes {:>9.3} ms {:>5.1}%\n",
                    p.op,
                    p.nodes,
                    p.ms_per_run,
                    100.0 * p.ms_per_run / total.max(f64::MIN_POSITIVE)
                ));
            }
            out.push('\n');
        }
        out.push_str(&format!(
            "ensemble start-up (manifest, checksums, all members): {:.1} ms\n",
            self.ensemble_load_ms
        ));
        if let Some(decode) = &self.decode {
            out.push_str(&format!(
                "image decode   min/median/p95 ms {}\n",
                stats(decode)
            ));
        }
        out.push_str(&format!(
            "members+combine min/median/p95 ms {}  ({} runs on the prepared input)\n",
            stats(&self.members_and_combine),
            self.members_and_combine.runs
        ));
        out.push_str(&format!(
            "ensemble/image min/median/p95 ms {}  ({} runs: resize, normalise, every member, combine)\n",
            stats(&self.per_image),
            self.per_image.runs
        ));
        out.push_str(&format!(
            "capture-to-log min/median/p95 ms {}  ({}: decode, gate, ensemble, journal append + fdatasync)\n",
            stats(&self.capture_to_log),
            self.capture_frame
        ));
        if let Some(rss) = self.peak_rss_bytes {
            out.push_str(&format!(
                "peak RSS {:.1} MiB\n",
                rss as f64 / (1 << 20) as f64
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_pick_order_statistics() {
        let samples: Vec<f64> = (1..=21).rev().map(f64::from).collect();
        let s = TimingStats::from_samples(&samples);
        assert_eq!(
            (s.runs, s.min_ms, s.median_ms, s.p95_ms),
            (21, 1.0, 11.0, 20.0)
        );
        assert_eq!(TimingStats::from_samples(&[]).runs, 0);
    }

    #[test]
    fn reads_peak_rss_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_bytes().unwrap() > 1 << 20);
        }
    }
}
