//! `dermedge serve`: the clinic page and a versioned local HTTP API over the device loop's pieces,
//! in one process: the loaded ensemble, the frame source with its quality gate and trigger, and
//! the journal.
//!
//! Classification runs on a bounded pool of worker threads that share the ensemble (`pool`),
//! never on the async executor; the source has a thread of its own (`camera`); `api` holds the
//! routes and their errors, `page` the embedded page, `tls` the optional HTTPS listener.

mod api;
mod camera;
mod page;
mod pool;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::capture::SourceSpec;
use crate::config::RunConfig;
use crate::ensemble::Ensemble;
use crate::journal::Journal;
use crate::preprocess::ImageLimits;

pub use pool::{Busy, ClassifyPool, JobFailure, JobInput, JobResult, Recorder, Reply};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("refusing to listen on {addr} without a token: anyone on that network could use the API. Fix: pass --token-file FILE (a file holding a long random token), or listen on 127.0.0.1")]
    OpenWithoutToken { addr: SocketAddr },
    #[error("cannot read the token file {path}: {reason}. Fix: write one line of at least 16 characters to it")]
    Token { path: PathBuf, reason: String },
    #[error("cannot listen on {addr}: {source}. Fix: choose a free port with --listen HOST:PORT")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot use the TLS certificate {cert} and key {key}: {reason}. Fix: pass a PEM certificate chain and its PEM private key")]
    Tls {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("cannot start the server: {0}")]
    Runtime(std::io::Error),
}

/// Everything `serve` works with, loaded and checked by the caller.
pub struct ServeSetup {
    pub ensemble: Arc<Ensemble>,
    /// The journal every result is appended to, and its path for the history.
    pub journal: Option<(Journal, PathBuf)>,
    /// Gate, trigger, camera, reconnect, replay and serve settings.
    pub config: RunConfig,
    /// The live source, or none (uploads only).
    pub source: Option<SourceSpec>,
    pub limits: ImageLimits,
    /// The bearer token every API call must carry, if any.
    pub token: Option<String>,
}

/// Reads a token file: one line, at least 16 characters.
pub fn read_token(path: &std::path::Path) -> Result<String, ServeError> {
    let error = |reason: String| ServeError::Token {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    let token = text.trim();
    if token.len() < 16 || token.contains(char::is_whitespace) {
        return Err(error(format!(
            "it holds {} characters; a token is one word of at least 16",
            token.len()
        )));
    }
    Ok(token.to_string())
}

/// What the page and the health check show of the server.
pub struct ServerInfo {
    pub started: Instant,
    pub listen: SocketAddr,
}

/// Runs the server until `stop` is set; `ready` gets the address it listens on.
pub fn serve(
    setup: ServeSetup,
    stop: Arc<AtomicBool>,
    ready: impl FnOnce(SocketAddr, bool),
) -> Result<(), ServeError> {
    let settings = setup.config.serve.clone();
    let addr: SocketAddr = settings.listen.parse().map_err(|_| ServeError::Bind {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("`{}` is not HOST:PORT", settings.listen),
        ),
    })?;
    if !addr.ip().is_loopback() && setup.token.is_none() {
        return Err(ServeError::OpenWithoutToken { addr });
    }
    let tls = match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
        _ => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("serve-io")
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(addr))
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(ServeError::Runtime)?;

    let (journal, journal_path) = match setup.journal {
        Some((journal, path)) => (Some(journal), Some(path)),
        None => (None, None),
    };
    let recorder = Arc::new(Recorder::new(journal));
    let pool = Arc::new(ClassifyPool::start(
        settings.workers,
        settings.queue,
        Arc::clone(&setup.ensemble),
        Arc::clone(&recorder),
        setup.limits,
    ));
    let (camera, capture_thread) = match setup.source {
        Some(spec) => {
            let (feed, handle) = camera::start(
                spec,
                setup.config.clone(),
                setup.limits,
                Arc::clone(&pool),
                Arc::clone(&stop),
            );
            (Some(feed), Some(handle))
        }
        None => (None, None),
    };
    let state = Arc::new(api::AppState {
        ensemble: setup.ensemble,
        pool: Arc::clone(&pool),
        recorder,
        camera,
        journal_path,
        token: setup.token,
        info: ServerInfo {
            started: Instant::now(),
            listen: local,
        },
        max_body_bytes: usize::try_from(settings.max_body_bytes).unwrap_or(usize::MAX),
    });
    let router = api::router(
        state,
        Duration::from_millis(settings.request_timeout_ms),
        tls.is_some(),
    );
    ready(local, tls.is_some());
    let stopped = {
        let stop = Arc::clone(&stop);
        async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let served = runtime.block_on(async move {
        match tls {
            Some(acceptor) => {
                axum::serve(tls::TlsListener::new(listener, acceptor)?, router)
                    .with_graceful_shutdown(stopped)
                    .await
            }
            None => {
                axum::serve(listener, router)
                    .with_graceful_shutdown(stopped)
                    .await
            }
        }
    });
    stop.store(true, Ordering::Relaxed);
    runtime.shutdown_timeout(Duration::from_secs(2));
    if let Some(handle) = capture_thread {
        let _ = handle.join();
    }
    if let Ok(pool) = Arc::try_unwrap(pool) {
        pool.shut_down();
    }
    served.map_err(ServeError::Runtime)
}
