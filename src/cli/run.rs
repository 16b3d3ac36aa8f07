//! `dermedge run`: settings from the config and the command line, signals, then the loop.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{
    config_error, device_config, load_checked_ensemble, set_threads, Cli, RunArgs,
    DEFAULT_ENSEMBLE, EXIT_OK, EXIT_SOME_FAILED,
};
use crate::capture::{open_source, SourceSpec};
use crate::config::RunConfig;
use crate::journal::Journal;
use crate::manifest::EnsembleStatus;
use crate::preprocess::ImageLimits;
use crate::record::FIXTURE_WARNING;
use crate::run::RunLoop;
use crate::trigger::TriggerMode;

fn settings(cli: &Cli, args: &RunArgs) -> Result<RunConfig, u8> {
    let mut config = device_config(
        cli,
        args.config.as_deref(),
        args.source.as_deref(),
        args.journal.as_deref(),
    )?;
    if args.auto {
        config.trigger.mode = TriggerMode::Auto;
    }
    if args.every {
        config.trigger.mode = TriggerMode::Every;
    }
    config.json |= args.json;
    Ok(config)
}

/// Registers SIGTERM and SIGINT to set `stop`, and SIGUSR1 to set `request`.
fn install_signals(stop: &Arc<AtomicBool>, request: &Arc<AtomicBool>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
    for signal in [SIGTERM, SIGINT] {
        // A second stop signal exits at once (a read blocked on a stalled pipe cannot see the
        // flag); every record already written is on disk.
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(stop))?;
        signal_hook::flag::register(signal, Arc::clone(stop))?;
    }
    signal_hook::flag::register(SIGUSR1, Arc::clone(request))?;
    Ok(())
}

/// Each line typed on a terminal asks for a classification.
fn watch_terminal(request: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if line.is_err() {
                break;
            }
            request.store(true, Ordering::Relaxed);
        }
    });
}

/// Runs the device loop; returns the exit code.
pub(crate) fn run(cli: &Cli, args: &RunArgs) -> u8 {
    let config = match settings(cli, args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    set_threads(config.threads.unwrap_or(1));
    let spec: SourceSpec = match config.source.parse() {
        Ok(spec) => spec,
        Err(e) => {
            return config_error(format!(
                "{e}. Fix: set `source` in the config or pass --source"
            ))
        }
    };
    let manifest = config
        .ensemble
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ENSEMBLE));
    let ensemble = match load_checked_ensemble(&manifest, config.public_key.as_deref()) {
        Ok(e) => e,
        Err(code) => return code,
    };
    if ensemble.manifest.status == EnsembleStatus::UntrainedFixture {
        log::warn!("{}: {FIXTURE_WARNING}", manifest.display());
    }
    let mut journal = match Journal::open(&config.journal) {
        Ok(j) => j.with_rotation(config.journal_max_bytes),
        Err(e) => return config_error(e),
    };
    let limits = ImageLimits::default();
    let first = open_source(&spec, &config.camera, &limits);
    let mut pending = match first {
        Ok(source) => Some(source),
        Err(e) if matches!(spec, SourceSpec::Camera(_)) && !e.is_permanent() => {
            log::warn!("{e}; waiting for the camera");
            None
        }
        Err(e) => return config_error(e),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let request = Arc::new(AtomicBool::new(false));
    if let Err(e) = install_signals(&stop, &request) {
        return config_error(format!("cannot install signal handlers: {e}"));
    }
    let reads_stdin = matches!(&spec, SourceSpec::Mjpeg(p) | SourceSpec::Yuyv { path: p, .. } if p.as_os_str() == "-");
    if config.trigger.mode == TriggerMode::Manual && !reads_stdin && std::io::stdin().is_terminal()
    {
        eprintln!(
            "dermedge: press Enter (or send SIGUSR1) to classify the current frame; Ctrl-C stops."
        );
        watch_terminal(Arc::clone(&request));
    }
    let mut spec = spec;
    let mut open = || {
        let source = pending
            .take()
            .map_or_else(|| open_source(&spec, &config.camera, &limits), Ok)?;
        if spec == SourceSpec::Camera(None) {
            if let Some(device) = source.name().strip_prefix("camera:") {
                log::info!("using {device} from now on, also after a reconnect");
                spec = SourceSpec::Camera(Some(PathBuf::from(device)));
            }
        }
        Ok(source)
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut run_loop = RunLoop {
        ensemble: &ensemble,
        journal: Some(&mut journal),
        config: &config,
        limits,
        stop: &stop,
        request: &request,
        out: &mut out,
        max_frames: args.max_frames,
        stats_every: args.stats_every,
    };
    let stats = run_loop.run(&mut open);
    for sample in &stats.health {
        eprintln!(
            "health {}",
            serde_json::to_string(sample).unwrap_or_default()
        );
    }
    eprintln!(
        "dermedge: {} frames, {} classified, {} rejected by the gate, {} undecodable ({} cut short), {} failed, {} reconnects, {} journal failures, {} frames not saved",
        stats.frames,
        stats.classified,
        stats.rejected,
        stats.undecodable,
        stats.incomplete,
        stats.failed,
        stats.reconnects,
        stats.journal_failures,
        stats.save_failures
    );
    if stats.journal_failures > 0 || stats.save_failures > 0 || stats.failed > 0 {
        EXIT_SOME_FAILED
    } else {
        EXIT_OK
    }
}
