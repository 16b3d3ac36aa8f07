//! `dermedge run`: settings from the config and the command line, signals and the terminal,
//! then the library's device loop, its summary and the exit code.

use std::io::{BufRead, IsTerminal};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Result};
use dermedge::capture::SourceSpec;
use dermedge::config::RunConfig;
use dermedge::device_loop::{RunLoop, RunStats, SourceReopener};
use dermedge::journal::Journal;
use dermedge::preprocess::ImageLimits;
use dermedge::trigger::TriggerMode;

use super::{
    device_config, load_device_ensemble, set_threads, Cli, RunArgs, EXIT_OK, EXIT_SOME_FAILED,
};

fn settings(cli: &Cli, args: &RunArgs) -> Result<RunConfig> {
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
pub(crate) fn run(cli: &Cli, args: &RunArgs) -> Result<u8> {
    let config = settings(cli, args)?;
    set_threads(config.threads.unwrap_or(1));
    let spec: SourceSpec = config
        .source
        .parse()
        .map_err(|e| anyhow!("{e}. Fix: set `source` in the config or pass --source"))?;
    let ensemble = load_device_ensemble(&config)?;
    let mut journal = Journal::open(&config.journal)?.with_rotation(config.journal_max_bytes);
    let limits = ImageLimits::default();
    let reads_stdin = spec.reads_stdin();
    let mut source = SourceReopener::start(spec, &config.camera, limits)?;
    let stop = Arc::new(AtomicBool::new(false));
    let request = Arc::new(AtomicBool::new(false));
    install_signals(&stop, &request).map_err(|e| anyhow!("cannot install signal handlers: {e}"))?;
    if config.trigger.mode == TriggerMode::Manual && !reads_stdin && std::io::stdin().is_terminal()
    {
        eprintln!(
            "dermedge: press Enter (or send SIGUSR1) to classify the current frame; Ctrl-C stops."
        );
        watch_terminal(Arc::clone(&request));
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let stats = RunLoop {
        ensemble: &ensemble,
        journal: Some(&mut journal),
        config: &config,
        limits,
        stop: &stop,
        request: &request,
        out: &mut out,
        max_frames: args.max_frames,
        stats_every: args.stats_every,
    }
    .run(&mut || source.open());
    print_summary(&stats);
    Ok(
        if stats.journal_failures > 0 || stats.save_failures > 0 || stats.failed > 0 {
            EXIT_SOME_FAILED
        } else {
            EXIT_OK
        },
    )
}

/// The health readings and the counts of the run, on stderr.
fn print_summary(stats: &RunStats) {
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
}
