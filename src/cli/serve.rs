//! `dermedge serve`: settings from the config and the command line, then the server until
//! SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use clap::Args;
use dermedge::capture::SourceSpec;
use dermedge::config::RunConfig;
use dermedge::journal::Journal;
use dermedge::preprocess::ImageLimits;
use dermedge::serve::{read_token, serve, ServeSetup};
use dermedge::trigger::TriggerMode;

use super::{device_config, load_device_ensemble, set_threads, Cli, EXIT_OK};

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

fn settings(cli: &Cli, args: &ServeArgs) -> Result<RunConfig> {
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
    config
        .check()
        .map_err(|e| anyhow!("{e}. Fix: correct the option or the config's value"))?;
    Ok(config)
}

/// Runs the server; returns the exit code.
pub(crate) fn run(cli: &Cli, args: &ServeArgs) -> Result<u8> {
    let config = settings(cli, args)?;
    set_threads(config.threads.unwrap_or(1));
    let source = if args.no_source {
        None
    } else {
        let spec = config
            .source
            .parse::<SourceSpec>()
            .map_err(|e| anyhow!("{e}. Fix: pass --source or --no-source"))?;
        Some(spec)
    };
    let token = config
        .serve
        .token_file
        .as_deref()
        .map(read_token)
        .transpose()?;
    let ensemble = load_device_ensemble(&config)?;
    let journal = if args.no_journal {
        None
    } else {
        let journal = Journal::open(&config.journal)?.with_rotation(config.journal_max_bytes);
        Some((journal, config.journal.clone()))
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| anyhow!("cannot install signal handlers: {e}"))?;
    }
    let setup = ServeSetup {
        ensemble: Arc::new(ensemble),
        journal,
        config,
        source,
        limits: ImageLimits::default(),
        token,
    };
    serve(setup, stop, |addr, tls| {
        let scheme = if tls { "https" } else { "http" };
        eprintln!("dermedge: serving the clinic page at {scheme}://{addr}/ (Ctrl-C stops)");
    })?;
    Ok(EXIT_OK)
}
