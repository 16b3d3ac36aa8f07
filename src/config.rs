//! The device configuration file (`--config`, TOML): every setting of `dermedge run`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::capture::CameraSettings;
use crate::quality::GateSettings;
use crate::trigger::TriggerSettings;

/// Largest config file accepted, in bytes.
pub const MAX_CONFIG_BYTES: u64 = 256 * 1024;

/// Errors reading a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}. Fix: pass --config with the path of a dermedge.toml (see board/dermedge.toml)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path} is over {MAX_CONFIG_BYTES} bytes. Fix: point --config at a real dermedge.toml")]
    TooLarge { path: PathBuf },
    #[error("config {path} is not valid: {message}. Fix: correct it (board/dermedge.toml lists every setting)")]
    Parse { path: PathBuf, message: String },
}

/// Replay pacing for file and folder sources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplaySettings {
    /// Frames per second; 0 reads as fast as frames are processed.
    pub fps: f32,
    /// Start a folder again from its first image when it ends.
    #[serde(rename = "loop")]
    pub repeat: bool,
}

impl Default for ReplaySettings {
    fn default() -> Self {
        ReplaySettings {
            fps: 0.0,
            repeat: false,
        }
    }
}

/// `dermedge serve`: where it listens and how much work it takes on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeSettings {
    /// `HOST:PORT`; a non-loopback address needs `token_file`.
    pub listen: String,
    /// A file holding the bearer token every API call must carry.
    pub token_file: Option<PathBuf>,
    /// PEM certificate chain and private key: serve HTTPS instead of HTTP.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Largest request body (an uploaded photo), in bytes.
    pub max_body_bytes: u64,
    /// Classification worker threads sharing the ensemble.
    pub workers: usize,
    /// Classifications that may wait for a worker; more are refused with 503.
    pub queue: usize,
    /// Longest time for one request, body included (the preview stream excepted).
    pub request_timeout_ms: u64,
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            listen: "127.0.0.1:8080".into(),
            token_file: None,
            tls_cert: None,
            tls_key: None,
            max_body_bytes: 20 << 20,
            workers: 1,
            queue: 4,
            request_timeout_ms: 30_000,
        }
    }
}

/// Reconnection after a lost source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectSettings {
    pub initial_ms: u64,
    pub max_ms: u64,
}

impl Default for ReconnectSettings {
    fn default() -> Self {
        ReconnectSettings {
            initial_ms: 500,
            max_ms: 10_000,
        }
    }
}

/// Everything `dermedge run` reads from its config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// The ensemble manifest.
    pub ensemble: Option<PathBuf>,
    /// Threads for tract's matrix kernels.
    pub threads: Option<u16>,
    /// Refuse ensembles not signed with this ed25519 public key (a `.pub` file).
    pub public_key: Option<PathBuf>,
    /// `camera[:DEVICE]`, `folder:PATH`, `mjpeg:PATH` or `yuyv:WxH:PATH`.
    pub source: String,
    /// The JSON Lines journal.
    pub journal: PathBuf,
    /// Rotate the journal past this size (renamed to `<journal>.N`; nothing is deleted).
    pub journal_max_bytes: Option<u64>,
    /// Save each classified frame's image in `frames_dir` (off by default: patient privacy).
    pub save_frames: bool,
    /// Where saved frames go.
    pub frames_dir: PathBuf,
    /// Print one JSON object per event instead of readable lines.
    pub json: bool,
    pub camera: CameraSettings,
    pub reconnect: ReconnectSettings,
    pub trigger: TriggerSettings,
    pub gate: GateSettings,
    pub replay: ReplaySettings,
    pub serve: ServeSettings,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            ensemble: None,
            threads: None,
            public_key: None,
            source: "camera".into(),
            journal: PathBuf::from("dermedge-journal.jsonl"),
            journal_max_bytes: None,
            save_frames: false,
            frames_dir: PathBuf::from("frames"),
            json: false,
            camera: CameraSettings::default(),
            reconnect: ReconnectSettings::default(),
            trigger: TriggerSettings::default(),
            gate: GateSettings::default(),
            replay: ReplaySettings::default(),
            serve: ServeSettings::default(),
        }
    }
}

impl RunConfig {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<RunConfig, ConfigError> {
        let read_error = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        if std::fs::metadata(path).map_err(read_error)?.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        let text = crate::paths::read_text_limited(path, MAX_CONFIG_BYTES).map_err(read_error)?;
        let config: RunConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.check().map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    /// Checks values that parse but cannot work; the message names the key.
    pub fn check(&self) -> Result<(), String> {
        let finite_non_negative = |key: &str, v: f32| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(format!("{key} = {v} must be a finite number >= 0"))
            }
        };
        if !(self.replay.fps == 0.0
            || (self.replay.fps.is_finite() && (0.01..=1000.0).contains(&self.replay.fps)))
        {
            return Err(format!(
                "[replay] fps = {} must be 0 (as fast as possible) or 0.01 to 1000",
                self.replay.fps
            ));
        }
        if self.reconnect.initial_ms < 10 || self.reconnect.max_ms < self.reconnect.initial_ms {
            return Err(
                "[reconnect] initial_ms must be at least 10 and max_ms at least initial_ms".into(),
            );
        }
        finite_non_negative("[trigger] motion_threshold", self.trigger.motion_threshold)?;
        let g = &self.gate;
        for (key, v) in [
            ("min_focus", g.min_focus),
            ("min_brightness", g.min_brightness),
            ("max_brightness", g.max_brightness),
            ("max_clipped", g.max_clipped),
            ("min_contrast", g.min_contrast),
            ("min_skin", g.min_skin),
        ] {
            finite_non_negative(&format!("[gate] {key}"), v)?;
        }
        if g.min_brightness >= g.max_brightness {
            return Err("[gate] min_brightness must be below max_brightness".into());
        }
        if self.camera.width == 0 || self.camera.height == 0 || self.camera.buffers == 0 {
            return Err("[camera] width, height and buffers must be above 0".into());
        }
        if self.threads.is_some_and(|t| t == 0 || t > 256) {
            return Err("threads must be 1 to 256".into());
        }
        let s = &self.serve;
        if s.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "[serve] listen = \"{}\" is not HOST:PORT with an IP address (e.g. 127.0.0.1:8080)",
                s.listen
            ));
        }
        if s.tls_cert.is_some() != s.tls_key.is_some() {
            return Err("[serve] tls_cert and tls_key go together: set both or neither".into());
        }
        if !(1..=64).contains(&s.workers) || s.queue > 1024 {
            return Err("[serve] workers must be 1 to 64 and queue 0 to 1024".into());
        }
        if s.max_body_bytes < 1024 || s.request_timeout_ms < 100 {
            return Err(
                "[serve] max_body_bytes must be at least 1024 and request_timeout_ms at least 100"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_and_sets_every_section() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("board/dermedge.toml");
        let config = RunConfig::load(&path).unwrap();
        assert!(config.source.starts_with("camera"));
        assert!(!config.save_frames);
        let text = std::fs::read_to_string(&path).unwrap();
        for table in [
            "[camera]",
            "[reconnect]",
            "[trigger]",
            "[gate]",
            "[replay]",
            "[serve]",
        ] {
            assert!(text.contains(table), "{table} missing from the example");
        }
    }

    #[test]
    fn values_that_cannot_work_are_errors_naming_the_key() {
        let dir = crate::scratch_dir::ScratchDir::new();
        let path = dir.path().join("c.toml");
        for (text, key) in [
            ("[replay]\nfps = 1e-30\n", "[replay] fps"),
            ("[reconnect]\ninitial_ms = 0\n", "[reconnect]"),
            (
                "[gate]\nmin_brightness = 200.0\nmax_brightness = 100.0\n",
                "min_brightness",
            ),
            ("[trigger]\nmotion_threshold = nan\n", "motion_threshold"),
            ("threads = 0\n", "threads"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = RunConfig::load(&path).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("Fix:"), "{text}: {err}");
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        let dir = crate::scratch_dir::ScratchDir::new();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[gate]\nmin_fokus = 3.0\n").unwrap();
        let err = RunConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("min_fokus") && err.contains("Fix:"), "{err}");
    }
}
