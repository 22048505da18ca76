//! `Browser`: a real headless Chromium driven over WebDriver (chromedriver on 127.0.0.1), with a
//! small client written on reqwest. Every wait polls the page against one deadline.
//!
//! When Chromium is not installed the browser tests are skipped with a message, unless `CI` is set:
//! there a missing browser fails them (`.ci/run` installs `chromium` and `chromium-driver`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    profile: tempfile::TempDir,
}

impl Browser {
    /// A fresh headless Chromium, or `None` (with a printed reason) when there is none and this is
    /// not CI.
    pub fn start(test: &str) -> Option<Browser> {
        let present =
            std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
        if !present {
            assert!(
                std::env::var_os("CI").is_none_or(|v| v.is_empty()),
                "{test}: {CHROMIUM} or {CHROMEDRIVER} is missing under CI (`.ci/run` installs them with apt-get)"
            );
            eprintln!(
                "skipping {test}: no headless Chromium ({CHROMIUM}, {CHROMEDRIVER}); install it with `apt-get install chromium chromium-driver`"
            );
            return None;
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // reqwest's rustls has no default crypto provider in wanx's build (ring is installed at
        // start-up, as `wanx` does).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            client,
            runtime,
            profile,
        };
        browser.wait_ready();
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    format!("--user-data-dir={}", browser.profile.path().display()),
                ],
            },
        } } });
        let session = browser.call(reqwest::Method::POST, "/session", Some(caps));
        session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {session}"))
            .clone_into(&mut browser.session);
        Some(browser)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = self.runtime.block_on(async {
                let r = self
                    .client
                    .get(format!("{}/status", self.base))
                    .send()
                    .await
                    .ok()?;
                let v: Value = r.json().await.ok()?;
                v["value"]["ready"].as_bool()
            });
            if ready == Some(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        self.runtime.block_on(async {
            let mut request = self.client.request(method, &url);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request
                .send()
                .await
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            let value: Value = response.json().await.unwrap();
            assert!(
                !value["value"]["error"].is_string(),
                "WebDriver {path}: {}",
                value["value"]
            );
            value["value"].clone()
        })
    }

    pub fn open(&self, url: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/session/{}/url", self.session),
            Some(json!({ "url": url })),
        );
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page and returns its value.
    pub fn eval(&self, script: &str, args: &Value) -> Value {
        self.call(
            reqwest::Method::POST,
            &format!("/session/{}/execute/sync", self.session),
            Some(json!({ "script": script, "args": args.clone() })),
        )
    }

    /// Polls `script` until it returns a truthy value, or panics at `deadline` saying `what`.
    #[track_caller]
    pub fn wait_until(&self, what: &str, deadline: Instant, script: &str, args: &Value) -> Value {
        loop {
            let value = self.eval(script, args);
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the page shows:\n{}",
                self.eval(
                    "return document.body ? document.body.innerText.slice(0, 3000) : ''",
                    &json!([])
                )
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        use base64_decode::decode;
        let value = self.call(
            reqwest::Method::GET,
            &format!("/session/{}/screenshot", self.session),
            None,
        );
        decode(value.as_str().expect("a base64 screenshot"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let url = format!("{}/session/{}", self.base, self.session);
            let _ = self
                .runtime
                .block_on(async { self.client.delete(&url).send().await });
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (the screenshot's encoding), decoded without another dependency.
mod base64_decode {
    pub fn decode(text: &str) -> Vec<u8> {
        let value = |c: u8| -> u32 {
            match c {
                b'A'..=b'Z' => u32::from(c - b'A'),
                b'a'..=b'z' => u32::from(c - b'a') + 26,
                b'0'..=b'9' => u32::from(c - b'0') + 52,
                b'+' => 62,
                b'/' => 63,
                _ => panic!("not base64: {c}"),
            }
        };
        let bytes: Vec<u8> = text
            .bytes()
            .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
            .collect();
        let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
        for chunk in bytes.chunks(4) {
            let mut acc = 0u32;
            for (i, c) in chunk.iter().enumerate() {
                acc |= value(*c) << (18 - 6 * i);
            }
            let n = chunk.len() * 6 / 8;
            for i in 0..n {
                out.push((acc >> (16 - 8 * i)) as u8);
            }
        }
        out
    }
}
