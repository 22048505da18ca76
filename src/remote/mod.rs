//! `RemoteCache`: a cache shared by a team or a CI fleet, on Bazel's HTTP remote-caching protocol
//! (`GET`/`PUT` on `{base}/ac/{key}` and `{base}/cas/{sha256}`), so it runs on servers people
//! already have: nginx or Apache with WebDAV, bazel-remote, anything that speaks it.
//!
//! An image goes to `/cas/` under the SHA-256 of its bytes (what Bazel servers index and verify by;
//! `.wanx/blobs` keeps naming it by blake3). A wanx key's entry goes to `/ac/` under
//! [`action_key`], a REAPI `ActionResult` listing the images in index order ([`RemoteEntry`]).
//!
//! Nothing from the remote is trusted: an entry must decode and hold the task's `n` images, and every
//! blob must have the size, SHA-256 and blake3 the entry names and be a whole PNG, JPEG or WebP
//! before it enters `.wanx/blobs` (so before it can reach the tree). A lie, a truncation or junk is
//! a miss and one warning naming the task. A remote that is down, slow or refuses writes costs one
//! warning and the build goes on with the local cache only: every request has a connect and a total
//! timeout (a timed-out request is not repeated), requests refused by a connection fault, a 429 or a
//! 5xx are retried twice with backoff (every request here is idempotent: a `PUT` of content-addressed
//! bytes or of a key's entry), and at most [`CONCURRENCY`] requests are in flight. Credentials travel only in the `Authorization` header, in a type that
//! never prints itself.
//!
//! The planner looks up (`/ac/`) only the tasks it would otherwise generate, so a build with
//! nothing to generate makes no request; `build` fetches their blobs before deciding, `plan` only
//! looks. Uploads run on their own thread while the build goes on ([`Uploader`]).

pub mod action_result;

use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::executor::secret::ApiKey;
use crate::project::manifest::Manifest;
use crate::remote::action_result::{RemoteEntry, RemoteImage};
use crate::store::blob_store::BlobStore;
use crate::term::printer::Printer;

/// Requests in flight at once, per build.
pub const CONCURRENCY: usize = 16;
/// Attempts per idempotent request (the first and two retries).
const ATTEMPTS: u32 = 3;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Entries and images larger than this are refused unread (a wanx image is a few MB).
const MAX_BLOB: u64 = 64 << 20;

/// How a command uses the remote cache; set by the command, not on the command line.
#[derive(Clone, Copy, Debug, Default)]
pub enum RemoteUse {
    /// Not at all (`wanx explain`, the watch's narrowing).
    #[default]
    Off,
    /// Look entries up, download nothing (`wanx plan`, `--dry-run`).
    Lookup(Printer),
    /// Look up, and download what is found into `.wanx/` before deciding (`wanx build`).
    Fetch(Printer),
}

/// The remote cache's settings after the manifest, the command line and the environment.
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    /// Without a trailing `/`.
    pub base: String,
    pub upload: bool,
    credentials: Option<Credentials>,
}

#[derive(Clone, Debug)]
enum Credentials {
    Bearer(ApiKey),
    Basic { user: String, password: ApiKey },
}

impl RemoteConfig {
    /// `--remote-cache` (or `WANX_REMOTE_CACHE`) over `[cache] remote`; `None` when neither is set.
    pub fn resolve(
        manifest: &Manifest,
        url: Option<&str>,
        read_only: bool,
    ) -> Result<Option<RemoteConfig>> {
        let Some(url) = url
            .or(manifest.cache.remote.as_deref())
            .map(str::trim)
            .filter(|u| !u.is_empty())
        else {
            return Ok(None);
        };
        let base = validate_url(url)?;
        let credentials = manifest
            .cache
            .remote_credentials_env
            .as_deref()
            .and_then(|var| std::env::var(var).ok())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .map(|v| match v.split_once(':') {
                Some((user, password)) => Credentials::Basic {
                    user: user.to_owned(),
                    password: ApiKey::new(password),
                },
                None => Credentials::Bearer(ApiKey::new(v)),
            });
        Ok(Some(RemoteConfig {
            base,
            upload: !read_only && manifest.cache.remote_upload.unwrap_or(true),
            credentials,
        }))
    }
}

/// An `http(s)://host[:port][/prefix]` URL without credentials in it, its trailing `/` removed.
fn validate_url(url: &str) -> Result<String> {
    let usage = |why: &str| {
        Error::Usage {
        message: format!("the remote cache URL `{url}` {why}"),
        hint: Some(
            "write it as `http://host:port/prefix`; put credentials in the variable named by `[cache] remote_credentials_env`"
                .to_owned(),
        ),
    }
    };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| usage("is not an http:// or https:// URL"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        // Shown in warnings and errors: a secret must not be part of it.
        return Err(Error::Usage {
            message: "the remote cache URL holds credentials".to_owned(),
            hint: Some(
                "put them in an environment variable and name it in `[cache] remote_credentials_env`"
                    .to_owned(),
            ),
        });
    }
    if authority.is_empty() || rest.contains(['?', '#']) {
        return Err(usage("has no host, or has a query"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// The `/ac/` name of a wanx key: the SHA-256 of `wanx-remote-cache-v1\n` and the key's hex. A
/// 64-hex digest, as Bazel servers require, and one no Bazel action can share.
pub fn action_key(key_hex: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"wanx-remote-cache-v1\n");
    h.update(key_hex.as_bytes());
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// One task the local cache cannot supply.
pub struct Wanted {
    pub task: String,
    /// The wanx key, hex.
    pub key: String,
    pub n: u32,
}

/// A remote cache for one command: its settings and what it has learned (down, refusing writes).
#[derive(Clone)]
pub struct RemoteCache {
    inner: Arc<Inner>,
}

struct Inner {
    config: RemoteConfig,
    printer: Printer,
    /// A request failed after its retries: no more requests.
    down: AtomicBool,
    /// The server refused a write: no more uploads.
    refused: AtomicBool,
    requests: AtomicUsize,
}

/// Why a request did not get an answer to act on.
enum Fault {
    /// Connection refused or reset, a timeout, a 5xx after retries: the remote is unusable.
    Down(String),
    /// An answer that is neither found nor missing (401, 403, 405, …).
    Status(u16),
}

impl RemoteCache {
    pub fn new(config: RemoteConfig, printer: Printer) -> RemoteCache {
        RemoteCache {
            inner: Arc::new(Inner {
                config,
                printer,
                down: AtomicBool::new(false),
                refused: AtomicBool::new(false),
                requests: AtomicUsize::new(0),
            }),
        }
    }

    pub fn base(&self) -> &str {
        &self.inner.config.base
    }

    pub fn uploads(&self) -> bool {
        self.inner.config.upload
    }

    /// The entries the remote holds for `wanted`, in order. With `fetch_into`, an entry is returned
    /// only once all its images are verified and in that blob store. Blocks; runs on its own thread.
    pub fn lookup(
        &self,
        wanted: &[Wanted],
        fetch_into: Option<&BlobStore>,
    ) -> Vec<Option<RemoteEntry>> {
        if wanted.is_empty() || self.is_down() {
            return wanted.iter().map(|_| None).collect();
        }
        block_on(|| async {
            let http = self.http();
            futures_util::stream::iter(wanted)
                .map(|w| self.lookup_one(&http, w, fetch_into))
                .buffered(CONCURRENCY)
                .collect()
                .await
        })
    }

    async fn lookup_one(
        &self,
        http: &reqwest::Client,
        w: &Wanted,
        fetch_into: Option<&BlobStore>,
    ) -> Option<RemoteEntry> {
        let url = format!("{}/ac/{}", self.base(), action_key(&w.key));
        let bytes = match self.get(http, &url).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return None,
            Err(fault) => {
                self.fault(&fault, "read");
                return None;
            }
        };
        let entry = match RemoteEntry::decode(&bytes) {
            Ok(e) if e.images.len() == w.n as usize => e,
            Ok(e) => {
                self.unusable(&w.task, &format!("{} images for {}", e.images.len(), w.n));
                return None;
            }
            Err(why) => {
                self.unusable(&w.task, &why);
                return None;
            }
        };
        if let Some(blobs) = fetch_into {
            for image in &entry.images {
                match self.fetch_blob(http, image, blobs).await {
                    Ok(()) => {}
                    Err(Some(fault)) => {
                        self.fault(&fault, "read");
                        return None;
                    }
                    Err(None) => return None,
                }
            }
        }
        Some(entry)
    }

    /// Downloads one image into `blobs`, checking it on the way. `Err(None)`: the blob is missing
    /// or not what the entry says (warned here); `Err(Some(_))`: the remote failed.
    async fn fetch_blob(
        &self,
        http: &reqwest::Client,
        image: &RemoteImage,
        blobs: &BlobStore,
    ) -> std::result::Result<(), Option<Fault>> {
        if blobs.contains(&image.blake3) {
            return Ok(());
        }
        let url = format!("{}/cas/{}", self.base(), image.sha256);
        let bad = |why: String| {
            self.inner.printer.warn(
                "Warning",
                &format!(
                    "remote cache: blob `{}` is {why}; not used (a miss)",
                    image.sha256
                ),
            );
            None
        };
        let Ok(tmp_dir) = blobs.tmp_dir() else {
            return Err(None);
        };
        let Ok(mut tmp) = tempfile::NamedTempFile::new_in(&tmp_dir) else {
            return Err(None);
        };
        let mut response = match self.send(http, reqwest::Method::GET, &url, None).await {
            Ok(r) if r.status().as_u16() == 404 => return Err(bad("missing".to_owned())),
            Ok(r) if r.status().is_success() => r,
            Ok(r) => return Err(Some(Fault::Status(r.status().as_u16()))),
            Err(fault) => return Err(Some(fault)),
        };
        let (mut sha, mut b3, mut len) = (Sha256::new(), blake3::Hasher::new(), 0u64);
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    len += chunk.len() as u64;
                    if len > image.size || len > MAX_BLOB {
                        return Err(bad(format!("longer than its {} bytes", image.size)));
                    }
                    sha.update(&chunk);
                    b3.update(&chunk);
                    if tmp.write_all(&chunk).is_err() {
                        return Err(None);
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(bad(format!("cut short ({e})"))),
            }
        }
        if len != image.size {
            return Err(bad(format!("{len} bytes, not {}", image.size)));
        }
        if hex(&sha.finalize()) != image.sha256 {
            return Err(bad("not the bytes its SHA-256 names".to_owned()));
        }
        if b3.finalize().to_hex().as_str() != image.blake3 {
            return Err(bad("not the image the entry says (blake3)".to_owned()));
        }
        match crate::executor::image_check::check_file(tmp.path()) {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Err(bad(why.to_string())),
            Err(_) => return Err(None),
        }
        let path = tmp.into_temp_path();
        match blobs.insert_file(&path) {
            Ok(_) => {
                let _ = path.keep();
                Ok(())
            }
            Err(_) => Err(None),
        }
    }

    /// `GET url`: `Some(body)` on 200, `None` on 404.
    async fn get(
        &self,
        http: &reqwest::Client,
        url: &str,
    ) -> std::result::Result<Option<Vec<u8>>, Fault> {
        let response = self.send(http, reqwest::Method::GET, url, None).await?;
        match response.status().as_u16() {
            404 => Ok(None),
            200..=299 => {
                if response.content_length().is_some_and(|l| l > MAX_BLOB) {
                    return Err(Fault::Status(413));
                }
                response
                    .bytes()
                    .await
                    .map(|b| Some(b.to_vec()))
                    .map_err(|e| Fault::Down(e.to_string()))
            }
            status => Err(Fault::Status(status)),
        }
    }

    /// One request, retried with backoff on connection faults, 429 and 5xx.
    async fn send(
        &self,
        http: &reqwest::Client,
        method: reqwest::Method,
        url: &str,
        body: Option<&[u8]>,
    ) -> std::result::Result<reqwest::Response, Fault> {
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if self.is_down() {
                return Err(Fault::Down("an earlier request failed".to_owned()));
            }
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            self.inner.requests.fetch_add(1, Ordering::Relaxed);
            let mut request = http.request(method.clone(), url);
            request = match &self.inner.config.credentials {
                Some(Credentials::Bearer(token)) => request.bearer_auth(token.expose()),
                Some(Credentials::Basic { user, password }) => {
                    request.basic_auth(user, Some(password.expose()))
                }
                None => request,
            };
            if let Some(body) = body {
                request = request.body(body.to_vec());
            }
            match request.send().await {
                Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
                    last = format!("HTTP {}", r.status().as_u16());
                }
                Ok(r) => return Ok(r),
                // A request that timed out is not tried again: a slow remote would hold the build
                // for three timeouts instead of one.
                Err(e) if e.is_timeout() => return Err(Fault::Down(without_source_chain(&e))),
                // reqwest's error names the URL, which holds no secret (refused when configured).
                Err(e) => last = without_source_chain(&e),
            }
        }
        Err(Fault::Down(last))
    }

    fn http(&self) -> reqwest::Client {
        let mut builder = reqwest::Client::builder();
        if crate::compile::cache_key::Provider::from_base_url(self.base()).is_emulated() {
            builder = builder.no_proxy();
        }
        builder
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("wanx/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default()
    }

    fn is_down(&self) -> bool {
        self.inner.down.load(Ordering::SeqCst)
    }

    /// One warning for the first fault of its kind; the remote is then left alone (down) or left
    /// unwritten (a refused write).
    fn fault(&self, fault: &Fault, doing: &str) {
        let (flag, message) = match fault {
            Fault::Down(why) => (
                &self.inner.down,
                format!(
                    "remote cache `{}` is unreachable ({why}); continuing with the local cache only",
                    self.base()
                ),
            ),
            Fault::Status(status) if doing == "write" => (
                &self.inner.refused,
                format!(
                    "remote cache `{}` refused an upload (HTTP {status}); nothing more is uploaded by this build",
                    self.base()
                ),
            ),
            Fault::Status(status) => (
                &self.inner.down,
                format!(
                    "remote cache `{}` answered HTTP {status}; continuing with the local cache only",
                    self.base()
                ),
            ),
        };
        if !flag.swap(true, Ordering::SeqCst) {
            self.inner.printer.warn("Warning", &message);
        }
    }

    fn unusable(&self, task: &str, why: &str) {
        self.inner.printer.warn(
            "Warning",
            &format!("remote cache: the entry for `{task}` is unusable ({why}); not used (a miss)"),
        );
    }

    /// A background uploader, if this cache takes uploads.
    pub fn uploader(&self, blobs: BlobStore) -> Option<Uploader> {
        if !self.uploads() {
            return None;
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Upload>();
        let cache = self.clone();
        let thread = std::thread::spawn(move || {
            block_on(|| async move {
                let http = cache.http();
                let limit = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
                let mut running = tokio::task::JoinSet::new();
                while let Some(upload) = rx.recv().await {
                    let (cache, http, blobs, limit) = (
                        cache.clone(),
                        http.clone(),
                        blobs.clone(),
                        Arc::clone(&limit),
                    );
                    running.spawn(async move {
                        let _permit = limit.acquire_owned().await;
                        cache.upload(&http, &blobs, &upload).await
                    });
                }
                let mut uploaded = 0;
                while let Some(done) = running.join_next().await {
                    uploaded += usize::from(matches!(done, Ok(true)));
                }
                uploaded
            })
        });
        Some(Uploader {
            queue: UploadQueue(Arc::new(std::sync::Mutex::new(Some(tx)))),
            thread: Some(thread),
            printer: self.inner.printer,
        })
    }

    /// Puts the images, then the entry that names them. Returns whether the entry was written.
    async fn upload(&self, http: &reqwest::Client, blobs: &BlobStore, upload: &Upload) -> bool {
        let mut images = Vec::with_capacity(upload.images.len());
        for blake3 in &upload.images {
            if self.is_down() || self.inner.refused.load(Ordering::SeqCst) {
                return false;
            }
            let Ok(bytes) = tokio::fs::read(blobs.path(blake3)).await else {
                return false;
            };
            // A damaged local blob is never shared.
            if blake3::hash(&bytes).to_hex().as_str() != blake3 {
                return false;
            }
            let sha256 = hex(&Sha256::digest(&bytes));
            let url = format!("{}/cas/{sha256}", self.base());
            if !self.put(http, &url, &bytes).await {
                return false;
            }
            images.push(RemoteImage {
                sha256,
                size: bytes.len() as u64,
                blake3: blake3.clone(),
            });
        }
        let entry = RemoteEntry {
            model: upload.model.clone(),
            generated_at: upload.generated_at,
            images,
        };
        let url = format!("{}/ac/{}", self.base(), action_key(&upload.key));
        self.put(http, &url, &entry.encode()).await
    }

    async fn put(&self, http: &reqwest::Client, url: &str, body: &[u8]) -> bool {
        match self.send(http, reqwest::Method::PUT, url, Some(body)).await {
            Ok(r) if r.status().is_success() => true,
            Ok(r) => {
                self.fault(&Fault::Status(r.status().as_u16()), "write");
                false
            }
            Err(fault) => {
                self.fault(&fault, "write");
                false
            }
        }
    }
}

/// A generation stored locally, to share.
pub struct Upload {
    /// The wanx key, hex.
    pub key: String,
    pub model: String,
    pub generated_at: i64,
    /// blake3 of each image, in index order.
    pub images: Vec<String>,
}

/// Uploads generations on a thread of its own while the build goes on; [`Uploader::finish`]
/// waits for what is queued (each request is bounded by its timeouts and retries).
pub struct Uploader {
    queue: UploadQueue,
    thread: Option<std::thread::JoinHandle<usize>>,
    printer: Printer,
}

/// Where generations are queued for upload; closed by [`Uploader::finish`] whoever holds a clone.
#[derive(Clone)]
pub struct UploadQueue(Arc<std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<Upload>>>>);

impl UploadQueue {
    pub fn send(&self, upload: Upload) {
        if let Some(tx) = &*self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            let _ = tx.send(upload);
        }
    }

    fn close(&self) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

impl Uploader {
    pub fn queue(&self) -> UploadQueue {
        self.queue.clone()
    }

    /// Waits for the queued uploads and says how many entries were written.
    pub fn finish(mut self) {
        self.queue.close();
        if let Some(thread) = self.thread.take() {
            let uploaded = thread.join().unwrap_or(0);
            if uploaded > 0 {
                self.printer.status(
                    "Uploaded",
                    &format!(
                        "{uploaded} task{} to the remote cache",
                        if uploaded == 1 { "" } else { "s" }
                    ),
                );
            }
        }
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        self.queue.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// reqwest's error and its causes on one line (`error sending request: connection refused`).
fn without_source_chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Runs the future `make` makes to completion on a thread of its own with a runtime of its own, so
/// it can be called from synchronous code that is itself on a runtime's worker.
fn block_on<F: Future>(make: impl FnOnce() -> F + Send) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime needs only a timer and the reactor")
                    .block_on(make())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_keys_are_sha256_hex_of_the_wanx_key() {
        let k = action_key(&"ab".repeat(32));
        assert!(crate::remote::action_result::is_hex64(&k));
        assert_ne!(k, "ab".repeat(32));
        assert_ne!(k, action_key(&"ac".repeat(32)));
        // Pinned: changing it orphans every shared cache.
        assert_eq!(
            action_key(""),
            hex(&Sha256::digest(b"wanx-remote-cache-v1\n"))
        );
    }

    #[test]
    fn urls_are_checked_and_never_hold_credentials() {
        assert_eq!(
            validate_url("http://127.0.0.1:8080/cache/").unwrap(),
            "http://127.0.0.1:8080/cache"
        );
        assert!(validate_url("https://cache.example").is_ok());
        assert!(validate_url("ftp://x").is_err());
        assert!(validate_url("http://").is_err());
        let Err(Error::Usage { message, .. }) = validate_url("http://u:hunter2@host/") else {
            panic!("credentials in the URL are refused")
        };
        assert!(!message.contains("hunter2"));
    }
}
