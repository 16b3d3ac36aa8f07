//! `dermedge serve` over real HTTP on loopback, with a real client (ureq): the page, every API
//! route, every error status, a full queue, the live view from a folder source, time limits and
//! TLS. Every server listens on 127.0.0.1 with a port the OS picks.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::*;

/// A running `dermedge serve`, stopped with SIGTERM when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `dermedge --ensemble MANIFEST serve --listen 127.0.0.1:0 ARGS` and waits until it
    /// says where it listens.
    pub fn start(manifest: &Path, args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dermedge"))
            .arg("--ensemble")
            .arg(manifest)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("DERMEDGE_JOURNAL")
            .env_remove("DERMEDGE_CONFIG")
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (sender, receiver) = std::sync::mpsc::channel();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::clone(&stderr);
        std::thread::spawn(move || {
            while let Some(Ok(line)) = lines.next() {
                if let Some(rest) = line.split("serving the clinic page at ").nth(1) {
                    let _ = sender.send(rest.split(' ').next().unwrap_or("").to_string());
                }
                log.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        let base = receiver
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the server did not start:\n{}", stderr.lock().unwrap()));
        Server {
            child,
            base: base.trim_end_matches('/').to_string(),
            stderr,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client that returns every status as a response.
pub fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// Status, headers and body of a response.
pub struct Reply {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

fn reply(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
    let mut response = response.unwrap();
    Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.body_mut().read_to_vec().unwrap_or_default(),
    }
}

pub fn get(server: &Server, path: &str, token: Option<&str>) -> Reply {
    let mut request = client().get(server.url(path));
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    reply(request.call())
}

pub fn post(
    server: &Server,
    path: &str,
    content_type: &str,
    body: &[u8],
    token: Option<&str>,
) -> Reply {
    let mut request = client()
        .post(server.url(path))
        .header("Content-Type", content_type);
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    reply(request.send(body))
}

/// A `multipart/form-data` body with one file field.
pub fn form(field: &str, filename: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "dermedgetestboundary7MA4YWxk";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nleft forearm\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n\
         Content-Type: image/jpeg\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn sample() -> (PathBuf, Vec<u8>) {
    let path = sample_images()[0].clone();
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

/// Polls `GET /api/v1/camera` until `ready` holds (or 20 s pass) and returns the last status.
fn camera_status_when(server: &Server, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = get(server, "/api/v1/camera", None).json();
        if ready(&status) || Instant::now() > deadline {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a server on a folder source with the fixture ensemble, a config and a journal.
fn start_on_folder(
    fx: &Fixture,
    config: &Path,
    folder: &Path,
    journal: &Path,
    extra: &[&str],
) -> Server {
    let source = format!("folder:{}", folder.display());
    let mut args = vec![
        "--config",
        config.to_str().unwrap(),
        "--source",
        &source,
        "--journal",
        journal.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Server::start(&fx.manifest, &args)
}

fn error_of(reply: &Reply) -> String {
    reply.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn the_page_and_health_are_served_with_a_strict_content_policy() {
    let fx = Fixture::new();
    let server = Server::start(
        &fx.manifest,
        &[
            "--no-source",
            "--journal",
            fx.path("j.jsonl").to_str().unwrap(),
        ],
    );
    let page = get(&server, "/", None);
    assert_eq!(page.status, 200);
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.contains("Decision support for a clinician, not a diagnosis"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no outside resources"
    );
    for asset in ["/app.js", "/style.css", "/icon.svg"] {
        let reply = get(&server, asset, None);
        assert_eq!(reply.status, 200, "{asset}");
        let text = String::from_utf8_lossy(&reply.body)
            .replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "{asset} loads nothing from outside"
        );
    }
    let health = get(&server, "/api/v1/health", None);
    assert_eq!(health.status, 200);
    let body = health.json();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["ensemble"]["status"], "untrained-fixture");
    let malignant = malignant_codes(&fx.manifest);
    assert!(!malignant.is_empty());
    assert_eq!(body["ensemble"]["malignant_classes"], json!(malignant));
    assert_eq!(body["queue"]["depth"], 0);
    assert!(body["queue"]["capacity"].as_u64().unwrap() > 0);
    assert!(body["camera"].is_null());
    assert!(body["uptime_s"].as_f64().unwrap() >= 0.0);
    assert_eq!(health.header("cache-control").as_deref(), Some("no-store"));
    let missing = get(&server, "/api/v1/nothing", None);
    assert_eq!(missing.status, 404);
    assert!(error_of(&missing).contains("no such API route"));
}

#[test]
fn an_uploaded_photo_is_classified_journaled_and_listed() {
    let fx = Fixture::new();
    let journal = fx.path("journal.jsonl");
    let server = Server::start(
        &fx.manifest,
        &["--no-source", "--journal", journal.to_str().unwrap()],
    );
    let (path, bytes) = sample();

    let raw = post(&server, "/api/v1/classify", "image/jpeg", &bytes, None);
    assert_eq!(raw.status, 200, "{}", String::from_utf8_lossy(&raw.body));
    let record = raw.json();
    assert_eq!(record["sha256"], sha256_of(&path));
    assert_eq!(record["top"].as_array().unwrap().len(), 3);
    for entry in record["top"].as_array().unwrap() {
        assert!(entry["class"].is_string() && entry["probability"].is_number());
    }
    assert!(record["flags"]["malignant_probability"].is_number());
    assert!(record["notice"]
        .as_str()
        .unwrap()
        .contains("not a diagnosis"));
    assert_eq!(record["input"], "upload");

    let (kind, body) = form("image", "../../mole 7.jpg", &bytes);
    let multipart = post(&server, "/api/v1/classify", &kind, &body, None);
    assert_eq!(
        multipart.status,
        200,
        "{}",
        String::from_utf8_lossy(&multipart.body)
    );
    assert_eq!(multipart.json()["input"], "upload:mole 7.jpg");
    assert_eq!(
        multipart.json()["top"],
        record["top"],
        "the same image, the same result"
    );

    let listed = get(&server, "/api/v1/records?limit=1", None);
    assert_eq!(listed.status, 200);
    let listed = listed.json();
    assert_eq!(listed["total"], 2);
    assert_eq!(listed["records"].as_array().unwrap().len(), 1);
    assert_eq!(listed["records"][0]["input"], "upload:mole 7.jpg");
    assert_eq!(listed["records"][0]["source"], "serve:upload");
    let journaled = std::fs::read_to_string(&journal).unwrap();
    assert_eq!(journaled.lines().count(), 2);

    let csv = get(&server, "/api/v1/records/export?format=csv", None);
    assert_eq!(csv.status, 200);
    assert!(csv
        .header("content-disposition")
        .unwrap()
        .contains("dermedge-journal.csv"));
    let text = String::from_utf8_lossy(&csv.body);
    assert!(
        text.starts_with("time,source,input,status,sha256"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 3);
    let jsonl = get(
        &server,
        "/api/v1/records/export?format=jsonl&flag=failed",
        None,
    );
    assert_eq!(jsonl.status, 200);
    assert!(jsonl.body.is_empty(), "no failed records yet");
    let bad_filter = get(&server, "/api/v1/records?since=yesterday", None);
    assert_eq!(bad_filter.status, 400);
    assert!(error_of(&bad_filter).contains("is not a UTC time"));
}

#[test]
fn bad_requests_get_the_status_that_fits_and_a_json_error() {
    let fx = Fixture::new();
    let journal = fx.path("journal.jsonl");
    let server = Server::start(
        &fx.manifest,
        &[
            "--no-source",
            "--journal",
            journal.to_str().unwrap(),
            "--max-body-bytes",
            "100000",
        ],
    );
    let (_, bytes) = sample();
    let cases: Vec<(&str, String, Vec<u8>, u16, &str)> = vec![
        (
            "text",
            "text/plain".into(),
            b"hello".to_vec(),
            415,
            "is not an image",
        ),
        (
            "no type",
            String::new(),
            bytes.clone(),
            415,
            "is not an image",
        ),
        ("empty", "image/jpeg".into(), Vec::new(), 400, "is empty"),
        (
            "no field",
            form("photo", "a.jpg", &bytes).0,
            form("photo", "a.jpg", &bytes).1,
            400,
            "no field `image`",
        ),
        (
            "cut",
            "image/jpeg".into(),
            bytes[..bytes.len() / 2].to_vec(),
            422,
            "is incomplete",
        ),
        (
            "noise",
            "image/png".into(),
            vec![7u8; 3000],
            422,
            "not a JPEG or PNG",
        ),
        (
            "too large",
            "image/jpeg".into(),
            vec![0xFFu8; 150_000],
            413,
            "over the 100000-byte limit",
        ),
        (
            "too large form",
            form("image", "big.jpg", &[1u8; 150_000]).0,
            form("image", "big.jpg", &[1u8; 150_000]).1,
            413,
            "over the 100000-byte limit",
        ),
    ];
    for (name, kind, body, status, message) in cases {
        let reply = post(&server, "/api/v1/classify", &kind, &body, None);
        assert_eq!(
            reply.status,
            status,
            "{name}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        let error = error_of(&reply);
        assert!(error.contains(message), "{name}: {error}");
    }
    let failed = get(&server, "/api/v1/records?flag=failed", None).json();
    assert_eq!(
        failed["total"], 2,
        "the cut and the noise image are journaled as failed"
    );
    let capture = post(&server, "/api/v1/capture", "application/json", b"", None);
    assert_eq!(capture.status, 409, "no source: nothing to capture");
}

#[test]
fn a_token_guards_the_api_and_an_open_address_needs_one() {
    let fx = Fixture::new();
    let token_file = fx.path("token");
    std::fs::write(&token_file, "s3cret-device-token-0123456789\n").unwrap();
    let server = Server::start(
        &fx.manifest,
        &[
            "--no-source",
            "--no-journal",
            "--token-file",
            token_file.to_str().unwrap(),
        ],
    );
    assert_eq!(
        get(&server, "/", None).status,
        200,
        "the page itself asks for the token"
    );
    for token in [
        None,
        Some("wrong-token-wrong-token"),
        Some("s3cret-device-token-012345678"),
    ] {
        let reply = get(&server, "/api/v1/health", token);
        assert_eq!(reply.status, 401, "{token:?}");
        assert_eq!(reply.header("www-authenticate").as_deref(), Some("Bearer"));
        assert!(error_of(&reply).contains("Authorization: Bearer"));
    }
    let ok = get(
        &server,
        "/api/v1/health",
        Some("s3cret-device-token-0123456789"),
    );
    assert_eq!(ok.status, 200);

    let open = Command::new(env!("CARGO_BIN_EXE_dermedge"))
        .arg("--ensemble")
        .arg(&fx.manifest)
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--no-source",
            "--no-journal",
        ])
        .output()
        .unwrap();
    assert_eq!(open.status.code(), Some(2));
    assert!(
        stderr(&open).contains("without a token") && stderr(&open).contains("--token-file"),
        "{}",
        stderr(&open)
    );

    std::fs::write(&token_file, "short\n").unwrap();
    let weak = Command::new(env!("CARGO_BIN_EXE_dermedge"))
        .arg("--ensemble")
        .arg(&fx.manifest)
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--no-source",
            "--no-journal",
            "--token-file",
        ])
        .arg(&token_file)
        .output()
        .unwrap();
    assert_eq!(weak.status.code(), Some(2));
    assert!(stderr(&weak).contains("at least 16"), "{}", stderr(&weak));
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/ensemble.toml");
    let server = Server::start(
        &manifest,
        &[
            "--no-source",
            "--no-journal",
            "--workers",
            "1",
            "--queue",
            "1",
        ],
    );
    let (_, bytes) = sample();
    let clients = 12;
    let barrier = Arc::new(Barrier::new(clients));
    let statuses: Vec<(u16, Option<String>, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let (barrier, bytes, server) = (Arc::clone(&barrier), &bytes, &server);
                scope.spawn(move || {
                    barrier.wait();
                    let reply = post(server, "/api/v1/classify", "image/jpeg", bytes, None);
                    (
                        reply.status,
                        reply.header("retry-after"),
                        error_of_or_empty(&reply),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = statuses.iter().filter(|s| s.0 == 200).count();
    let busy: Vec<_> = statuses.iter().filter(|s| s.0 == 503).collect();
    assert_eq!(ok + busy.len(), clients, "{statuses:?}");
    // At least the first request is served; a second only when the worker has taken it off the
    // queue before the others arrive, which a loaded machine does not promise.
    assert!(ok >= 1, "{statuses:?}");
    assert!(
        !busy.is_empty(),
        "12 requests at once on 1 worker and 1 queue slot: {statuses:?}"
    );
    for (_, retry_after, error) in busy {
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert!(error.contains("busy"), "{error}");
    }
    let health = get(&server, "/api/v1/health", None).json();
    assert_eq!(health["queue"]["depth"], 0);
}

fn error_of_or_empty(reply: &Reply) -> String {
    serde_json::from_slice::<Value>(&reply.body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn replay_config(fx: &Fixture) -> PathBuf {
    let config = fx.path("serve.toml");
    std::fs::write(&config, "[replay]\nfps = 20.0\nloop = true\n").unwrap();
    config
}

#[test]
fn the_live_view_shows_the_gate_and_capture_classifies_the_current_frame() {
    let fx = Fixture::new();
    let config = replay_config(&fx);
    let journal = fx.path("journal.jsonl");
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/samples");
    let server = start_on_folder(&fx, &config, &samples, &journal, &[]);
    let status = camera_status_when(&server, |s| s["frame"].is_object());
    assert_eq!(status["state"]["state"], "live", "{status}");
    assert_eq!(status["frame"]["gate"], "sharp", "{status}");
    let frame = get(&server, "/api/v1/frame", None);
    assert_eq!(frame.status, 200);
    assert!(frame.body.starts_with(&[0xFF, 0xD8]));

    let captured = post(&server, "/api/v1/capture", "application/json", b"", None);
    assert_eq!(
        captured.status,
        200,
        "{}",
        String::from_utf8_lossy(&captured.body)
    );
    let record = captured.json();
    assert!(record["input"]
        .as_str()
        .unwrap()
        .contains("models/samples/ISIC_"));
    assert_eq!(record["top"].as_array().unwrap().len(), 3);
    let journaled = get(&server, "/api/v1/records", None).json();
    assert_eq!(journaled["records"][0]["sha256"], record["sha256"]);
    assert_eq!(
        journaled["records"][0]["source"],
        format!("folder:{}", samples.display())
    );

    let mut stream = TcpStream::connect(server.base.trim_start_matches("http://")).unwrap();
    stream
        .write_all(b"GET /api/v1/preview HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 8192];
    while seen.len() < 40_000 && count(&seen, b"--dermedgeframe") < 3 {
        let n = stream.read(&mut buffer).unwrap();
        assert!(n > 0, "the preview stream ended");
        seen.extend_from_slice(&buffer[..n]);
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(
        text.contains("multipart/x-mixed-replace; boundary=dermedgeframe"),
        "{text:.300}"
    );
    assert!(text.contains("Content-Type: image/jpeg") && text.contains("X-Gate: sharp"));
    assert!(
        count(&seen, &[0xFF, 0xD8, 0xFF]) >= 2,
        "whole JPEG frames follow each other"
    );
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

#[test]
fn a_refused_frame_and_a_missing_camera_are_clear_errors() {
    let fx = Fixture::new();
    let config = replay_config(&fx);
    let blank = fx.path("blank");
    std::fs::create_dir(&blank).unwrap();
    image::RgbImage::from_pixel(200, 150, image::Rgb([128, 128, 128]))
        .save(blank.join("grey.png"))
        .unwrap();
    let journal = fx.path("journal.jsonl");
    let server = start_on_folder(&fx, &config, &blank, &journal, &[]);
    let status = camera_status_when(&server, |s| s["frame"].is_object());
    assert!(status["frame"].is_object(), "no frame arrived: {status}");
    let refused = post(&server, "/api/v1/capture", "application/json", b"", None);
    assert_eq!(refused.status, 422);
    let body = refused.json();
    assert!(
        error_of(&refused).contains("quality gate refused"),
        "{body}"
    );
    assert_eq!(body["gate"], "blank view");
    assert!(body["reasons"][0]
        .as_str()
        .unwrap()
        .contains("place the dermatoscope"));
    let rejected = get(&server, "/api/v1/records?flag=rejected", None).json();
    assert_eq!(rejected["total"], 1, "the refusal is journaled");
    drop(server);

    let gone = Server::start(
        &fx.manifest,
        &["--source", "camera:/dev/no-such-camera", "--no-journal"],
    );
    let status = camera_status_when(&gone, |s| s["state"]["state"] != "starting");
    assert_eq!(status["state"]["state"], "gone", "{status}");
    let capture = post(&gone, "/api/v1/capture", "application/json", b"", None);
    assert_eq!(capture.status, 503);
    assert!(capture.header("retry-after").is_some());
    assert!(error_of(&capture).contains("camera is not delivering frames"));
    assert_eq!(
        get(&gone, "/api/v1/health", None).json()["camera"]["state"]["state"],
        "gone"
    );
}

#[test]
fn a_request_that_stalls_is_cut_off_with_408() {
    let fx = Fixture::new();
    let config = fx.path("serve.toml");
    std::fs::write(&config, "[serve]\nrequest_timeout_ms = 700\n").unwrap();
    let server = Server::start(
        &fx.manifest,
        &[
            "--config",
            config.to_str().unwrap(),
            "--no-source",
            "--no-journal",
        ],
    );
    let mut stream = TcpStream::connect(server.base.trim_start_matches("http://")).unwrap();
    stream
        .write_all(
            b"POST /api/v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n\
              Content-Length: 5000\r\n\r\n\xFF\xD8\xFF",
        )
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut response = String::new();
    let _ = BufReader::new(&stream).read_line(&mut response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(server);
}

#[test]
fn tls_serves_https_with_the_given_certificate() {
    let fx = Fixture::new();
    let (cert, key) = (fx.path("cert.pem"), fx.path("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the TLS test needs the openssl command");
    assert!(made.status.success(), "{}", stderr(&made));
    let server = Server::start(
        &fx.manifest,
        &[
            "--no-source",
            "--no-journal",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(
        server.base.starts_with("https://127.0.0.1:"),
        "{}",
        server.base
    );
    let pem = std::fs::read(&cert).unwrap();
    let roots: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)))
                .build(),
        )
        .build()
        .into();
    let mut health = agent.get(server.url("/api/v1/health")).call().unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert!(health.headers().get("strict-transport-security").is_some());
    assert_eq!(
        serde_json::from_slice::<Value>(&health.body_mut().read_to_vec().unwrap()).unwrap()
            ["status"],
        "ok"
    );
    let plain = client()
        .get(server.url("/api/v1/health").replace("https://", "http://"))
        .call();
    assert!(
        plain.is_err() || plain.unwrap().status().as_u16() != 200,
        "no plain HTTP on the TLS port"
    );
    assert!(server.log().contains("https://127.0.0.1:"));
}

#[test]
fn automatic_capture_classifies_a_steady_view_once() {
    let fx = Fixture::new();
    let config = fx.path("serve.toml");
    std::fs::write(
        &config,
        "[replay]\nfps = 20.0\nloop = true\n[trigger]\nsteady_frames = 3\nmin_interval_ms = 0\n",
    )
    .unwrap();
    let steady = fx.path("steady");
    std::fs::create_dir(&steady).unwrap();
    let (path, _) = sample();
    std::fs::copy(&path, steady.join("lesion.jpg")).unwrap();
    let journal = fx.path("journal.jsonl");
    let server = start_on_folder(&fx, &config, &steady, &journal, &["--auto"]);
    let status = camera_status_when(&server, |s| s["automatic"].is_object());
    assert_eq!(status["trigger"], "auto", "{status}");
    assert_eq!(status["automatic"]["sequence"], 1, "{status}");
    let record = &status["automatic"]["record"];
    assert_eq!(record["sha256"], sha256_of(&path));
    assert_eq!(record["top"].as_array().unwrap().len(), 3);
    std::thread::sleep(Duration::from_millis(800));
    let later = get(&server, "/api/v1/camera", None).json();
    assert!(later["frames"].as_u64().unwrap() > status["frames"].as_u64().unwrap());
    assert_eq!(
        later["automatic"]["sequence"], 1,
        "a view that does not move is classified once"
    );
    let journaled = get(&server, "/api/v1/records", None).json();
    assert_eq!(journaled["total"], 1);
    assert_eq!(journaled["records"][0]["sha256"], record["sha256"]);
}
