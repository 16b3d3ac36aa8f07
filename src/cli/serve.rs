//! `dermedge serve`: settings from the config and the command line, then the server until
//! SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Args;

use super::{
    config_error, device_config, load_checked_ensemble, set_threads, Cli, DEFAULT_ENSEMBLE, EXIT_OK,
};
use crate::capture::SourceSpec;
use crate::config::RunConfig;
use crate::journal::Journal;
use crate::manifest::EnsembleStatus;
use crate::preprocess::ImageLimits;
use crate::record::FIXTURE_WARNING;
use crate::serve::{read_token, serve, ServeSetup};
use crate::trigger::TriggerMode;

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Config file with every setting, `[serve]` included (see board/dermedge.toml).
    #[arg(long, env = "DERMEDGE_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on, HOST:PORT [default: the config's, else 127.0.0.1:8080]. Any address
    /// other than loopback needs --token-file.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// A file holding the bearer token every API call must carry.
    #[arg(long, env = "DERMEDGE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// PEM certificate chain: serve HTTPS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Frame source for the live view: camera[:DEVICE], folder:PATH, mjpeg:PATH, yuyv:WxH:PATH.
    #[arg(long, conflicts_with = "no_source")]
    source: Option<String>,
    /// No live view: uploads only.
    #[arg(long)]
    no_source: bool,
    /// Classify on a steady picture without pressing Capture.
    #[arg(long)]
    auto: bool,
    /// The JSON Lines journal (overrides the config).
    #[arg(long, env = "DERMEDGE_JOURNAL")]
    journal: Option<PathBuf>,
    /// Keep no journal (and no history).
    #[arg(long)]
    no_journal: bool,
    /// Classification worker threads.
    #[arg(long)]
    workers: Option<usize>,
    /// Classifications that may wait; more are refused with 503.
    #[arg(long)]
    queue: Option<usize>,
    /// Largest uploaded image, in bytes.
    #[arg(long)]
    max_body_bytes: Option<u64>,
}

fn settings(cli: &Cli, args: &ServeArgs) -> Result<RunConfig, u8> {
    let mut config = device_config(
        cli,
        args.config.as_deref(),
        args.source.as_deref(),
        args.journal.as_deref(),
    )?;
    if args.auto {
        config.trigger.mode = TriggerMode::Auto;
    }
    let serve = &mut config.serve;
    if let Some(listen) = args.listen {
        serve.listen = listen.to_string();
    }
    if args.token_file.is_some() {
        serve.token_file = args.token_file.clone();
    }
    if args.tls_cert.is_some() {
        serve.tls_cert = args.tls_cert.clone();
        serve.tls_key = args.tls_key.clone();
    }
    if let Some(workers) = args.workers {
        serve.workers = workers;
    }
    if let Some(queue) = args.queue {
        serve.queue = queue;
    }
    if let Some(bytes) = args.max_body_bytes {
        serve.max_body_bytes = bytes;
    }
    config.check().map_err(|e| {
        config_error(format!(
            "{e}. Fix: correct the option or the config's value"
        ))
    })?;
    Ok(config)
}

/// Runs the server; returns the exit code.
pub(crate) fn run(cli: &Cli, args: &ServeArgs) -> u8 {
    let config = match settings(cli, args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    set_threads(config.threads.unwrap_or(1));
    let source = if args.no_source {
        None
    } else {
        match config.source.parse::<SourceSpec>() {
            Ok(spec) => Some(spec),
            Err(e) => return config_error(format!("{e}. Fix: pass --source or --no-source")),
        }
    };
    let token = match &config.serve.token_file {
        Some(path) => match read_token(path) {
            Ok(token) => Some(token),
            Err(e) => return config_error(e),
        },
        None => None,
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
    let journal = if args.no_journal {
        None
    } else {
        match Journal::open(&config.journal) {
            Ok(j) => Some((
                j.with_rotation(config.journal_max_bytes),
                config.journal.clone(),
            )),
            Err(e) => return config_error(e),
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            return config_error(format!("cannot install signal handlers: {e}"));
        }
    }
    let setup = ServeSetup {
        ensemble: Arc::new(ensemble),
        journal,
        config,
        source,
        limits: ImageLimits::default(),
        token,
    };
    let served = serve(setup, stop, |addr, tls| {
        let scheme = if tls { "https" } else { "http" };
        eprintln!("dermedge: serving the clinic page at {scheme}://{addr}/ (Ctrl-C stops)");
    });
    match served {
        Ok(()) => EXIT_OK,
        Err(e) => config_error(e),
    }
}
