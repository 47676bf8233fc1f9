//! A headless Chromium driven over WebDriver (chromedriver), for the pages the engine serves
//! (the call page of issue 18). The W3C WebDriver protocol is JSON over HTTP: this speaks the
//! four commands the tests use (new session, navigate, execute script, delete session) with
//! `reqwest`, no client crate.
//!
//! Chromium and chromedriver: `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian packages
//! `chromium`, `chromium-driver`; `CHROMIUM`, `CHROMEDRIVER` override). When they are missing
//! the test skips with a message, under CI it fails.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

pub struct Browser {
    driver: tokio::process::Child,
    /// chromedriver's process group: Chromium and its helpers are in it too.
    group: Option<u32>,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

fn tool(env: &str, default: &str) -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var(env).unwrap_or_else(|_| default.to_owned()));
    p.exists().then_some(p)
}

impl Browser {
    /// A fresh headless Chromium with fake camera and microphone (granted without asking), or
    /// `None` (skipped) when Chromium or chromedriver is not installed outside CI.
    pub async fn launch() -> Option<Browser> {
        let (Some(chromium), Some(chromedriver)) = (
            tool("CHROMIUM", "/usr/bin/chromium"),
            tool("CHROMEDRIVER", "/usr/bin/chromedriver"),
        ) else {
            if super::under_ci() {
                panic!(
                    "chromium and chromedriver are required under CI (apt-get install chromium chromium-driver)"
                );
            }
            eprintln!(
                "skipped: chromium or chromedriver not installed (apt-get install chromium chromium-driver)"
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let driver = tokio::process::Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            // A group of its own, so the browsers it starts end with it (see Drop).
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let group = driver.id();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let ready = super::wait_for("chromedriver ready", Duration::from_secs(20), || {
            let http = http.clone();
            let url = format!("{base}/status");
            async move {
                let v: Value = http.get(url).send().await.ok()?.json().await.ok()?;
                v["value"]["ready"].as_bool().filter(|r| *r)
            }
        })
        .await;
        assert!(ready);
        let profile = tempfile::tempdir().expect("a profile dir");
        let args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--use-fake-ui-for-media-stream".into(),
            "--use-fake-device-for-media-stream".into(),
            "--disable-background-networking".into(),
            "--no-first-run".into(),
            // Host candidates as addresses (not mDNS names the engine cannot resolve) and the
            // engine's loopback candidates usable.
            "--disable-features=WebRtcHideLocalIpsWithMdns".into(),
            "--allow-loopback-in-peer-connection".into(),
            "--lang=en-US".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let v: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("new session JSON");
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_owned();
        Some(Browser {
            driver,
            group,
            base,
            session,
            http,
            _profile: profile,
        })
    }

    async fn command(&self, path: &str, body: Value) -> Value {
        let v: Value = self
            .http
            .post(format!("{}/session/{}/{path}", self.base, self.session))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"));
        if v["value"]["error"].is_string() {
            panic!("WebDriver {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.command("url", json!({"url": url})).await;
    }

    /// Clicks the element `css` as a user would (a click that counts as user activation,
    /// which `getDisplayMedia` needs).
    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.command(&format!("element/{id}/click"), json!({}))
            .await;
    }

    /// The WebDriver id of the element `css`.
    async fn element(&self, css: &str) -> String {
        let el = self
            .command("element", json!({"using": "css selector", "value": css}))
            .await;
        el.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {el}"))
            .to_owned()
    }

    /// Runs `script` (a function body: `return …`) in the page; its value.
    pub async fn eval(&self, script: &str) -> Value {
        self.command("execute/sync", json!({"script": script, "args": []}))
            .await
    }

    /// A PNG of the page as shown now (the console's screenshots: test artifacts and docs).
    pub async fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine as _;
        let v: Value = self
            .http
            .get(format!("{}/session/{}/screenshot", self.base, self.session))
            .send()
            .await
            .expect("WebDriver screenshot")
            .json()
            .await
            .expect("WebDriver screenshot JSON");
        let png = base64::engine::general_purpose::STANDARD
            .decode(
                v["value"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no screenshot: {v}")),
            )
            .expect("screenshot base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot folder");
        }
        std::fs::write(path, png).expect("write screenshot");
    }

    /// Sets the window's size (screenshots of a desktop layout).
    pub async fn window_size(&self, width: u32, height: u32) {
        self.command("window/rect", json!({"width": width, "height": height}))
            .await;
    }

    /// Types `text` into the element `css` (as keystrokes).
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.command(&format!("element/{id}/clear"), json!({}))
            .await;
        self.command(&format!("element/{id}/value"), json!({"text": text}))
            .await;
    }

    /// Ends the session (Chromium exits) and chromedriver.
    pub async fn close(mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
        let _ = self.driver.kill().await;
    }
}

/// A test that fails before `close` would leave Chromium running (its parent chromedriver is
/// killed on drop, Chromium is not): the whole process group goes instead.
impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self
            .group
            .and_then(|g| rustix::process::Pid::from_raw(g as i32))
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}
