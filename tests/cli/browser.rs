//! The clinic page in a real browser: headless Chromium driven over WebDriver (chromedriver) by
//! this test, against `dermedge serve` with the shipped ensemble and the sample images as the live
//! source. It uploads the melanoma sample, waits for the result card and the referral banner, and
//! saves screenshots at a phone's size (390x844) and the board display's (800x480).
//!
//! Needs Debian's `chromium` and `chromium-driver`; without them the test says SKIPPED, unless
//! DERMEDGE_BROWSER_TESTS=required (CI), where their absence fails it. Screenshots go to the
//! test's target folder, or to $DERMEDGE_SCREENSHOTS (`scripts/screenshots.sh` writes docs/).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64_decode::decode;
use serde_json::{json, Value};

use crate::serve::{client, Server};

/// Stops chromedriver when dropped.
struct Driver {
    child: Child,
    base: String,
    session: Option<String>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(session) = &self.session {
            let _ = client()
                .delete(format!("{}/session/{session}", self.base))
                .call();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let agent = client();
        let response = match (method, body) {
            ("GET", _) => agent.get(&url).call(),
            ("DELETE", _) => agent.delete(&url).call(),
            (_, body) => agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body.unwrap_or(json!({})).to_string().as_bytes()),
        };
        let mut response = response.unwrap();
        let text = response.body_mut().read_to_string().unwrap();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(
            response.status().is_success(),
            "WebDriver {method} {path}: {text}"
        );
        value["value"].clone()
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let session = self.session.as_deref().unwrap();
        self.call(method, &format!("/session/{session}{path}"), body)
    }

    fn element(&self, css: &str) -> String {
        let found = self.session_call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        found["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn script(&self, script: &str) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    fn wait_for(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let value = self.script(script);
            if value.as_bool() != Some(false) && !value.is_null() {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sets the viewport to `width` x `height` (a phone when narrow) and saves a screenshot.
    fn screenshot(&self, width: u32, height: u32, path: &Path) {
        self.session_call(
            "POST",
            "/goog/cdp/execute",
            Some(
                json!({"cmd": "Emulation.setDeviceMetricsOverride", "params": {
                    "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600
                }}),
            ),
        );
        self.script("document.getElementById('result').scrollIntoView({block: 'start'})");
        std::thread::sleep(Duration::from_millis(500));
        let png = self.session_call("GET", "/screenshot", None);
        let bytes = decode(png.as_str().unwrap());
        assert!(bytes.starts_with(b"\x89PNG"));
        std::fs::write(path, bytes).unwrap();
    }
}

/// Standard base64, for the screenshots WebDriver returns.
mod base64_decode {
    pub fn decode(text: &str) -> Vec<u8> {
        let value = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => 0,
        };
        let clean: Vec<u8> = text
            .bytes()
            .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
            .collect();
        let mut out = Vec::with_capacity(clean.len() * 3 / 4);
        for chunk in clean.chunks(4) {
            let v: Vec<u32> = chunk.iter().map(|&c| u32::from(value(c))).collect();
            let n = v
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, x)| acc | (x << (18 - 6 * i)));
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.extend_from_slice(&bytes[..chunk.len().saturating_sub(1)]);
        }
        out
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_driver() -> Option<Driver> {
    let required = std::env::var("DERMEDGE_BROWSER_TESTS").is_ok_and(|v| v == "required");
    let present = ["/usr/bin/chromium", "/usr/bin/chromedriver"]
        .iter()
        .all(|p| Path::new(p).exists());
    if !present {
        assert!(
            !required,
            "DERMEDGE_BROWSER_TESTS=required but chromium or chromedriver is missing: apt-get install chromium chromium-driver"
        );
        eprintln!("SKIPPED: the browser test needs Debian's chromium and chromium-driver");
        return None;
    }
    let port = free_port();
    let child = Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut driver = Driver {
        child,
        base: format!("http://127.0.0.1:{port}"),
        session: None,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while client()
        .get(format!("{}/status", driver.base))
        .call()
        .is_err()
    {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let profile = crate::scratch_dir::ScratchDir::new();
    let created = driver.call(
        "POST",
        "/session",
        Some(json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                    format!("--user-data-dir={}", profile.path().display()),
                    "--window-size=390,844"
                ]
            }
        }}})),
    );
    driver.session = Some(created["sessionId"].as_str().unwrap().to_string());
    std::mem::forget(profile);
    Some(driver)
}

#[test]
fn the_page_classifies_an_uploaded_photo_and_shows_the_referral_banner() {
    let Some(driver) = start_driver() else {
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fx = crate::util::Fixture::new();
    let config = fx.path("serve.toml");
    std::fs::write(&config, "[replay]\nfps = 4.0\nloop = true\n").unwrap();
    let server = Server::start(
        &root.join("models/ensemble.toml"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--source",
            &format!("folder:{}", root.join("models/samples").display()),
            "--journal",
            fx.path("journal.jsonl").to_str().unwrap(),
        ],
    );
    driver.session_call(
        "POST",
        "/url",
        Some(json!({"url": format!("{}/", server.base)})),
    );
    driver.wait_for(
        "the live view",
        "return document.getElementById('gate').textContent === 'sharp'",
    );
    let melanoma = root.join("models/samples/ISIC_0025964.jpg");
    let input = driver.element("#photo");
    driver.session_call(
        "POST",
        &format!("/element/{input}/value"),
        Some(json!({"text": melanoma.display().to_string()})),
    );
    let send = driver.element("#send");
    driver.session_call("POST", &format!("/element/{send}/click"), None);
    let shown = driver.wait_for(
        "the result card",
        "const card = document.getElementById('result'); \
         return !card.hidden && document.querySelectorAll('#top li').length === 3 \
             && document.getElementById('r-hash').textContent.length === 64 \
             && document.getElementById('r-hash').textContent",
    );
    assert_eq!(
        shown.as_str(),
        Some(crate::util::sha256_of(&melanoma).as_str())
    );
    let banner = driver.script(
        "const b = document.getElementById('refer'); \
         return [!b.hidden, b.getBoundingClientRect().height > 0, b.textContent]",
    );
    assert_eq!(banner[0], true, "{banner}");
    assert_eq!(banner[1], true, "{banner}");
    assert!(banner[2].as_str().unwrap().contains("Referral suggested"));
    let malignant = crate::util::malignant_codes(&root.join("models/ensemble.toml"));
    assert!(
        banner[2]
            .as_str()
            .unwrap()
            .contains(&format!("({})", malignant.join(" + "))),
        "the banner names the manifest's malignant classes: {banner}"
    );
    let model = driver.script("return document.getElementById('r-model').textContent");
    assert!(
        model.as_str().unwrap().starts_with("dermedge-ham10000@"),
        "{model}"
    );
    driver.wait_for(
        "the history",
        "return document.querySelectorAll('#records li').length >= 1",
    );

    let out = std::env::var_os("DERMEDGE_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&out).unwrap();
    driver.screenshot(390, 844, &out.join("serve-phone.png"));
    driver.screenshot(800, 480, &out.join("serve-display.png"));
    eprintln!("screenshots in {}", out.display());
}
