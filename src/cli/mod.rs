//! The `dermedge` command line: argument parsing, the subcommands' output and their exit codes.

/// `println!` for read-only commands: when stdout is closed (`dermedge journal | head`), stop
/// quietly instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

/// `print!` with the same closed-stdout rule as `outln!`.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if write!(std::io::stdout(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

mod journal;
mod run;
mod serve;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use anyhow::Result;
use dermedge::bench::{run_bench, BenchOptions};
use dermedge::classify::classify_item;
use dermedge::config::RunConfig;
use dermedge::ensemble::Ensemble;
use dermedge::health::peak_rss_bytes;
use dermedge::inputs::{expand_inputs, InputItem};
use dermedge::int8::KernelSet;
use dermedge::integrity::PublicKey;
use dermedge::journal::Journal;
use dermedge::manifest::{EnsembleStatus, InputSpec, MemberOutput};
use dermedge::preprocess::{load_image_file, ImageLimits};
use dermedge::quality::{self, GateSettings};
use dermedge::record::{json_line, Outcome, DECISION_SUPPORT_NOTICE, FIXTURE_WARNING};

/// Exit code: every input was classified.
pub const EXIT_OK: u8 = 0;
/// Exit code: at least one input failed; the others were classified and journaled.
pub const EXIT_SOME_FAILED: u8 = 1;
/// Exit code: usage or configuration error (arguments, manifest, members, journal).
pub const EXIT_CONFIG: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "dermedge",
    version,
    about = "Classifies dermatoscope images with a CNN ensemble (tract) and logs the top-3 HAM10000 classes.",
    after_help = DECISION_SUPPORT_NOTICE
)]
pub(crate) struct Cli {
    /// The ensemble manifest [default: the config's `ensemble`, else models/ensemble.toml].
    #[arg(long, global = true, env = "DERMEDGE_ENSEMBLE")]
    ensemble: Option<PathBuf>,
    /// Threads for tract's matrix kernels [default: the config's `threads`, else 1].
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
    /// Refuse ensembles not signed with this ed25519 public key (a `.pub` file) [default: the
    /// config's `public_key`].
    #[arg(long, global = true, env = "DERMEDGE_PUBLIC_KEY")]
    public_key: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Classify image files or folders of them (JPEG, PNG).
    Classify(ClassifyArgs),
    /// Show the ensemble: members, input spec, precision, sizes, verified checksums, classes.
    Inspect(InspectArgs),
    /// Measure start-up, per-member and ensemble latency, and peak memory.
    Bench(BenchArgs),
    /// Run the frame quality gate on images and print what it measures (to tune `[gate]`).
    Gate(GateArgs),
    /// The device loop: capture frames, gate them, classify on trigger, journal every event.
    Run(RunArgs),
    /// The clinic page and a local HTTP API: live view, capture, photo upload, history.
    Serve(serve::ServeArgs),
    /// List V4L2 capture devices with their formats, sizes and frame rates.
    Cameras,
    /// Read a journal: filter by time and flag, export as text, JSON Lines or CSV.
    Journal(journal::JournalArgs),
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Config file with every setting (see board/dermedge.toml).
    #[arg(long, env = "DERMEDGE_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Frame source: camera[:DEVICE], folder:PATH, mjpeg:PATH or yuyv:WIDTHxHEIGHT:PATH (- is stdin).
    #[arg(long)]
    pub(crate) source: Option<String>,
    /// Trigger automatically on a steady picture (overrides the config's [trigger] mode).
    #[arg(long, conflicts_with = "every")]
    pub(crate) auto: bool,
    /// Classify every frame that passes the gate (replays).
    #[arg(long)]
    pub(crate) every: bool,
    /// The JSON Lines journal (overrides the config).
    #[arg(long, env = "DERMEDGE_JOURNAL")]
    pub(crate) journal: Option<PathBuf>,
    /// Print one JSON object per event.
    #[arg(long)]
    pub(crate) json: bool,
    /// Stop after this many frames.
    #[arg(long)]
    pub(crate) max_frames: Option<u64>,
    /// Print a health line (RSS, open descriptors, median latency) to stderr every N frames.
    #[arg(long)]
    pub(crate) stats_every: Option<u64>,
}

#[derive(Debug, Args)]
struct ClassifyArgs {
    /// Image files or folders (searched recursively for .jpg, .jpeg, .png).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// One JSON object per input and line instead of the table.
    #[arg(long)]
    json: bool,
    /// The JSON Lines journal every result is appended to.
    #[arg(
        long,
        env = "DERMEDGE_JOURNAL",
        default_value = "dermedge-journal.jsonl"
    )]
    journal: PathBuf,
    /// Do not write a journal.
    #[arg(long)]
    no_journal: bool,
}

#[derive(Debug, Args)]
struct InspectArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct GateArgs {
    /// Image files or folders.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Take the thresholds from this config's [gate] table (default: the built-in ones).
    #[arg(long, env = "DERMEDGE_CONFIG")]
    config: Option<PathBuf>,
    /// One JSON object per input and line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Image to run (default: a synthetic picture at the input size).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Untimed runs before measuring.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Also time every member's tract plan node by node, summed by operator.
    #[arg(long)]
    profile: bool,
    /// Write the timed input tensor (raw little-endian f32, NCHW) to this file; a member with
    /// an input of its own gets this path with `.N` added (N its index).
    #[arg(long)]
    save_input: Option<PathBuf>,
}

/// Runs the command line. `Ok` holds the exit code of a command that ran to its end; an error
/// ends the command with [`EXIT_CONFIG`].
pub fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run(_) | Command::Serve(_)) {
        set_threads(cli.threads.unwrap_or(1));
    }
    let code = match &cli.command {
        Command::Classify(args) => classify(&cli, args),
        Command::Inspect(args) => inspect(&cli, args),
        Command::Bench(args) => bench(&cli, args),
        Command::Gate(args) => gate(args),
        Command::Run(args) => run::run(&cli, args),
        Command::Serve(args) => serve::run(&cli, args),
        Command::Cameras => cameras(),
        Command::Journal(args) => journal::journal(args),
    }?;
    Ok(ExitCode::from(code))
}

/// The config file (or the defaults) with the global options and a command's `--source` and
/// `--journal` laid over it: what `run` and `serve` start from.
pub(crate) fn device_config(
    cli: &Cli,
    path: Option<&Path>,
    source: Option<&str>,
    journal: Option<&Path>,
) -> Result<RunConfig> {
    let mut config = match path {
        Some(path) => RunConfig::load(path)?,
        None => RunConfig::default(),
    };
    if let Some(e) = &cli.ensemble {
        config.ensemble = Some(e.clone());
    }
    if cli.threads.is_some() {
        config.threads = cli.threads;
    }
    if let Some(key) = &cli.public_key {
        config.public_key = Some(key.clone());
    }
    if let Some(source) = source {
        config.source = source.to_string();
    }
    if let Some(journal) = journal {
        config.journal = journal.to_path_buf();
    }
    Ok(config)
}

/// Sets tract's executor for `threads` threads.
pub(crate) fn set_threads(threads: u16) {
    if threads > 1 {
        use tract_linalg::multithread::{set_default_executor, Executor};
        set_default_executor(Executor::multithread(usize::from(threads)));
    }
}

/// The manifest used when neither `--ensemble` nor a config names one.
pub(crate) const DEFAULT_ENSEMBLE: &str = "models/ensemble.toml";

fn manifest_path(cli: &Cli) -> PathBuf {
    cli.ensemble
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ENSEMBLE))
}

/// Loads the ensemble at `manifest`, checking its signature when a public key file is given.
fn load_checked_ensemble(manifest: &Path, public_key: Option<&Path>) -> Result<Ensemble> {
    KernelSet::configured()?;
    let key = public_key.map(PublicKey::load).transpose()?;
    Ok(Ensemble::load_with(manifest, key.as_ref())?)
}

fn load_ensemble(cli: &Cli) -> Result<Ensemble> {
    load_checked_ensemble(&manifest_path(cli), cli.public_key.as_deref())
}

/// The ensemble of `run` and `serve`: the config's manifest (or the default), checked against
/// the config's public key; an untrained fixture is logged as such.
pub(crate) fn load_device_ensemble(config: &RunConfig) -> Result<Ensemble> {
    let manifest = config
        .ensemble
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ENSEMBLE));
    let ensemble = load_checked_ensemble(&manifest, config.public_key.as_deref())?;
    if ensemble.manifest.status == EnsembleStatus::UntrainedFixture {
        log::warn!("{}: {FIXTURE_WARNING}", manifest.display());
    }
    Ok(ensemble)
}

#[cfg(feature = "camera")]
fn cameras() -> Result<u8> {
    out!("{}", dermedge::capture::v4l2::describe_cameras());
    Ok(EXIT_OK)
}

#[cfg(not(feature = "camera"))]
fn cameras() -> Result<u8> {
    anyhow::bail!("this dermedge was built without camera support. Fix: build with `cargo build --release --features camera` (needs libclang-dev)")
}

fn classify(cli: &Cli, args: &ClassifyArgs) -> Result<u8> {
    let ensemble = load_ensemble(cli)?;
    let mut journal = if args.no_journal {
        None
    } else {
        Some(Journal::open(&args.journal)?)
    };
    let limits = ImageLimits::default();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if !args.json {
        let _ = writeln!(
            out,
            "ensemble {}  ({})",
            ensemble.manifest.id(),
            manifest_path(cli).display()
        );
        if ensemble.manifest.status == EnsembleStatus::UntrainedFixture {
            let _ = writeln!(out, "{FIXTURE_WARNING}");
        }
        let _ = writeln!(out);
    }
    let (mut classified, mut failed, mut journal_failures) = (0usize, 0usize, 0usize);
    for item in expand_inputs(&args.inputs) {
        let outcome = classify_item(&ensemble, &item, &limits);
        if let Some(journal) = journal.as_mut() {
            if let Err(e) = journal.append_outcome("file", &outcome) {
                eprintln!("dermedge: {e}");
                journal_failures += 1;
            }
        }
        match &outcome {
            Outcome::Classified(c) => {
                classified += 1;
                let _ = if args.json {
                    writeln!(out, "{}", json_line(&outcome))
                } else {
                    writeln!(out, "{}", c.to_text(&ensemble))
                };
            }
            Outcome::Failed(_) | Outcome::Rejected(_) => {
                failed += 1;
                if args.json {
                    let _ = writeln!(out, "{}", json_line(&outcome));
                } else {
                    eprintln!("error: {}", outcome.summary());
                }
            }
        }
        let _ = out.flush();
    }
    if !args.json {
        let rss = peak_rss_bytes().map_or(String::new(), |b| {
            format!(", peak RSS {:.1} MiB", b as f64 / (1 << 20) as f64)
        });
        let journaled = journal.as_ref().map_or("no journal".to_string(), |j| {
            format!("journal {}", j.path().display())
        });
        let _ = writeln!(
            out,
            "{classified} classified, {failed} failed ({journaled}{rss})"
        );
        let _ = writeln!(out, "{DECISION_SUPPORT_NOTICE}");
    }
    Ok(if failed > 0 || journal_failures > 0 {
        EXIT_SOME_FAILED
    } else {
        EXIT_OK
    })
}

#[derive(Serialize)]
struct MemberInfo<'a> {
    file: String,
    backbone: &'a str,
    precision: &'a str,
    output: MemberOutput,
    weight: f32,
    bytes: u64,
    sha256: &'a str,
    checksum_verified: bool,
    load_ms: f64,
    /// The member's own input spec, when it differs from the manifest's `[input]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<&'a InputSpec>,
}

/// One line describing an input spec, as `inspect` prints it.
fn describe_input(i: &InputSpec) -> String {
    format!(
        "1x3x{}x{} (NCHW f32), resize {:?}, channels {:?}, mean {:?}, std {:?}, colour constancy {:?}",
        i.height, i.width, i.resize, i.channel_order, i.mean, i.std, i.colour_constancy
    )
}

/// The int8 kernel set the members run on (checked when the ensemble was loaded).
fn kernel_set_name() -> &'static str {
    KernelSet::configured().map_or("none", |set| set.name())
}

fn inspect(cli: &Cli, args: &InspectArgs) -> Result<u8> {
    let ensemble = load_ensemble(cli)?;
    let m = &ensemble.manifest;
    let members: Vec<MemberInfo> = ensemble
        .members
        .iter()
        .map(|member| MemberInfo {
            file: member.path.display().to_string(),
            backbone: &member.spec.backbone,
            precision: &member.spec.precision,
            output: member.spec.output,
            weight: member.spec.weight,
            bytes: member.file_bytes,
            sha256: &member.spec.sha256,
            checksum_verified: true,
            load_ms: member.load_ms,
            input: member.spec.input.as_ref().filter(|own| **own != m.input),
        })
        .collect();
    if args.json {
        let value = serde_json::json!({
            "manifest": manifest_path(cli).display().to_string(),
            "ensemble": m.id(),
            "status": m.status,
            "description": m.description,
            "input": m.input,
            "classes": m.classes,
            "decision": m.decision,
            "members": members,
            "int8_kernels": kernel_set_name(),
        });
        outln!("{}", json_line(&value));
        return Ok(EXIT_OK);
    }
    outln!("ensemble  {}  ({})", m.id(), manifest_path(cli).display());
    outln!(
        "status    {}",
        match m.status {
            EnsembleStatus::Trained => "trained".to_string(),
            EnsembleStatus::UntrainedFixture => FIXTURE_WARNING.to_string(),
        }
    );
    if !m.description.is_empty() {
        outln!("about     {}", m.description);
    }
    outln!("input     {}", describe_input(&m.input));
    outln!("classes   {}", m.classes.len());
    for (index, c) in m.classes.iter().enumerate() {
        let kind = if c.malignant { "malignant" } else { "benign" };
        outln!("  {index}  {:<6} {:<10} {}", c.code, kind, c.name);
    }
    outln!("int8 kernels: {}", kernel_set_name());
    outln!("members   {}", members.len());
    for member in &members {
        outln!(
            "  {}  {} {} {:?}, weight {}, {:.2} MiB, sha256 {} verified, loaded + optimised in {:.0} ms",
            member.file,
            member.backbone,
            member.precision,
            member.output,
            member.weight,
            member.bytes as f64 / (1 << 20) as f64,
            member.sha256,
            member.load_ms
        );
        if let Some(input) = member.input {
            outln!("      its own input {}", describe_input(input));
        }
    }
    let d = &m.decision;
    outln!(
        "decision  temperature {}, referral threshold {}, uncertainty entropy {}, logit adjustment {}",
        d.temperature.map_or("1 (unset)".into(), |t| t.to_string()),
        d.referral_threshold
            .map_or("unset".into(), |t| t.to_string()),
        d.uncertainty_entropy
            .map_or("unset".into(), |t| t.to_string()),
        d.logit_adjustment
            .map_or("unset".into(), |t| t.to_string())
    );
    outln!("{DECISION_SUPPORT_NOTICE}");
    Ok(EXIT_OK)
}

fn bench(cli: &Cli, args: &BenchArgs) -> Result<u8> {
    let options = BenchOptions {
        public_key: cli.public_key.clone(),
        manifest: manifest_path(cli),
        image: args.image.clone(),
        warmup: args.warmup,
        runs: args.runs as usize,
        threads: usize::from(cli.threads.unwrap_or(1)),
        profile: args.profile,
        save_input: args.save_input.clone(),
    };
    let report = run_bench(&options)?;
    if args.json {
        outln!("{}", json_line(&report));
    } else {
        out!("{}", report.to_text());
    }
    Ok(EXIT_OK)
}

fn gate(args: &GateArgs) -> Result<u8> {
    let settings = match &args.config {
        Some(path) => RunConfig::load(path)?.gate,
        None => GateSettings::default(),
    };
    let limits = ImageLimits::default();
    let (mut accepted, mut rejected, mut failed) = (0usize, 0usize, 0usize);
    for item in expand_inputs(&args.inputs) {
        let path = match item {
            InputItem::Image(path) => path,
            InputItem::Unreadable { input, error } => {
                eprintln!("error: {}: {error}", input.display());
                failed += 1;
                continue;
            }
        };
        let verdict = match load_image_file(&path, &limits) {
            Ok(image) => quality::check(&image.rgb, &settings),
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
                continue;
            }
        };
        if verdict.accepted() {
            accepted += 1;
        } else {
            rejected += 1;
        }
        if args.json {
            let value = serde_json::json!({"input": path.display().to_string(), "accepted": verdict.accepted(), "measures": verdict.measures, "reasons": verdict.reasons});
            outln!("{}", json_line(&value));
        } else {
            let m = &verdict.measures;
            outln!(
                "{}  focus {:.1}  brightness {:.0}  clipped {:.3}  contrast {:.1}  skin {:.2}  {}",
                path.display(),
                m.focus,
                m.brightness,
                m.clipped,
                m.contrast,
                m.skin,
                if verdict.accepted() {
                    "ok".to_string()
                } else {
                    verdict.reasons.join("; ")
                }
            );
        }
    }
    if !args.json {
        outln!("{accepted} accepted, {rejected} rejected, {failed} unreadable");
    }
    Ok(if failed > 0 {
        EXIT_SOME_FAILED
    } else {
        EXIT_OK
    })
}
