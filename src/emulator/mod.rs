//! The `DashScope` emulator: an HTTP server on loopback that speaks the async image protocol
//! (`dashscope-protocol.md` §1, §3, §4, §5, §8) closely enough that the official Python SDK works
//! against it, renders deterministic placeholder PNGs of the requested size, and bills each task
//! once, at registry prices, into a [`Ledger`] that tests and users can read.
//!
//! `wanx build --emulate` and `wanx emulator --port N` start it; every test talks to it over real HTTP.
//!
//! # Routes
//! - `POST /api/v1/services/aigc/{text2image,image2image}/image-synthesis`: submit a task. Needs
//!   `X-DashScope-Async: enable`; `oss://` inputs also need `X-DashScope-OssResourceResolve: enable`.
//! - `GET /api/v1/tasks/{id}`: PENDING for the first tenth of the task's latency, then RUNNING, then
//!   SUCCEEDED (or FAILED, by an injected fault); UNKNOWN for an id never issued or older than
//!   `task_ttl` (HTTP 200, as the service does).
//! - `GET /api/v1/tasks?page_no&page_size&start_time&end_time&model_name&status&api_key_id&region`:
//!   the tasks not yet forgotten, newest first, shaped as the service's recorded answer (§3 "List":
//!   `total`, `data[]`, `total_page`, `page_no`, `page_size`, `request_id`); `start_time` and
//!   `end_time` are `YYYYMMDDhhmmss` (UTC here) bounding the creation time, inclusive; page size
//!   10 by default, at most 100.
//! - `POST /api/v1/tasks/{id}/cancel`: a PENDING task becomes CANCELED; any other answers
//!   `400 UnsupportedOperation`.
//! - `GET /api/v1/uploads?action=getPolicy&model=M`: an upload credential whose `upload_host` is
//!   this server's `/oss`; `POST /oss` takes the SDK's multipart form and stores the file as
//!   `oss://KEY`, bound to the model, for twice `task_ttl` (48 h on the service).
//! - `GET /files/{id}/{index}.png`: a result image (no key needed, like the service's signed URLs);
//!   `403` with an OSS-style XML error once `task_ttl` has passed since the task ended.
//! - `GET /emulator/ledger`, `POST /emulator/reset` (forget every task, upload and count, restart
//!   the clock and the fault schedule), `GET /emulator/health`.
//!
//! # Behaviour
//! - Quotas (§5), unless `enforce_quotas = false`: per model, at most `concurrency` tasks PENDING or
//!   RUNNING and at most `submit_rps` accepted submissions in any sliding second, from the registry
//!   or `quotas`; over either, `429 Throttling.RateQuota`. The service may queue instead (§5 marks
//!   this unknown); rejecting is the stricter choice for testing clients.
//! - Latency: `latency`, or per model `base_ms` plus a jitter in `0..=jitter_ms` drawn from
//!   splitmix64 of (`fault_seed`, the model, the model's submission number). Task ids are unique
//!   per run, so they do not seed anything.
//! - Media inputs (`images[]`, `ref_img`, `*_url`): `http(s)://` URLs are taken as they are (not
//!   fetched); `data:` URIs only where §8 documents them (wanx2.1-imageedit `base_image_url` and
//!   `mask_image_url`, wan2.5-i2i-preview `images`) and only PNG, JPEG or WebP
//!   (`400 InvalidParameter.DataInspection` otherwise); `oss://KEY` must name an object uploaded
//!   for the same model. A wanx2.1-imageedit result has the size of its input image when the
//!   emulator can read it (a data URI or an upload), times `left_scale + right_scale - 1` by
//!   `top_scale + bottom_scale - 1` for `expand`, times `upscale_factor` for `super_resolution`.
//! - Faults: each rule counts the occurrences of its event (for its model, when set); it fires on
//!   the `nth` occurrences listed, and/or with probability `rate` drawn from splitmix64 of
//!   (`fault_seed`, rule index, occurrence): the same seed and requests give the same faults.
//!   Submit faults are decided after validation and before the quota check; a `reset` or `http`
//!   fault on a submit creates no task. `reset_after_accept` creates (and bills) the task, then
//!   closes the connection without an answer; `delay_after_accept` creates it and answers `ms`
//!   late (past a client's read timeout: the client cannot know the task exists).
//! - Where the real service's behaviour is unknown the emulator picks one and says so: an unknown
//!   model is `404 ModelNotFound`; an alias such as `wanx2.2-t2i-flash` is unknown, as it is to the
//!   service; timestamps are UTC; a result without an explicit `size` uses the registry's default
//!   size, or `1024*1024` when it has none.
//!
//! # Configuration file
//! [`EmulatorConfig::from_toml`] reads this format; every field is optional and unknown fields,
//! unknown models and impossible faults are errors:
//!
//! ```toml
//! latency_ms = 300              # default task latency
//! task_ttl_ms = 86400000        # task and result-URL lifetime (24 h)
//! valid_keys = ["sk-test"]      # omit to accept any Bearer token
//! enforce_quotas = true
//! fault_seed = 42               # seeds `rate` faults and latency jitter
//!
//! [latency_per_model."wan2.2-t2i-flash"]
//! base_ms = 1500
//! jitter_ms = 500
//!
//! [quotas."wan2.2-t2i-flash"]   # replaces the registry's values
//! concurrency = 4
//! submit_rps = 2
//!
//! [prices]                      # and [models.NAME], as in wanx.toml
//! "wan2.2-t2i-flash" = 0.14
//!
//! # on = "submit" | "query" | "download" | "upload"; model, nth (1-based) and rate are optional
//! [[faults]]
//! on = "submit"
//! model = "wan2.2-t2i-flash"
//! nth = [2, 5]
//! fault = { kind = "http", status = 429, code = "Throttling", message = "Requests throttling triggered." }
//!
//! [[faults]]
//! on = "submit"
//! nth = [3]
//! fault = { kind = "partial_failure", failed = 1 }   # or { kind = "task_failed", code, message },
//!                                                    # "reset_after_accept", { kind = "delay_after_accept", ms }
//!
//! [[faults]]
//! on = "download"
//! rate = 0.1
//! fault = { kind = "truncate" }                      # download only
//!
//! [[faults]]
//! on = "query"
//! nth = [1]
//! fault = { kind = "delay", ms = 500 }               # or { kind = "reset" }
//! ```
//!
//! # Files
//! `server` accepts connections and routes each request; `tasks` (submit, query, list, cancel,
//! download) and `uploads` (getPolicy, `POST /oss`) answer them; `request` checks what arrives,
//! `response` shapes what leaves. `shared` holds what every connection shares: the configuration
//! (`config`), the fault rules (`faults`) and the one `State` (`state`) behind one mutex that is
//! never held across an `.await`; `ledger` is the books it keeps. `placeholder_png` renders the
//! results, `multipart` reads the SDK's upload form. Each file imports only files below it; none
//! imports this one.
//!
//! # What it imports
//! The emulator is a second product, a DashScope server, and knows nothing of the client: it
//! imports no `plan`, `compile`, `planner`, `executor` (`dashscope` included), `store`, `build` or
//! `tree`; only the facts both sides share (`registry`, `money`, `size`, `media`, `clock`) and its
//! own files. A unit test below reads the sources and holds it to that.

pub mod config;
mod faults;
#[cfg(test)]
mod http_test_client;
#[cfg(test)]
mod http_tests;
#[cfg(test)]
mod http_upload_tests;
mod ledger;
mod multipart;
pub mod placeholder_png;
mod request;
mod response;
mod server;
mod shared;
mod state;
mod tasks;
mod uploads;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use crate::emulator::config::{
    EmulatorConfig, Fault, FaultEvent, FaultRule, LatencySpec, Quota,
};
pub use crate::emulator::ledger::{Ledger, ModelLedger, RecordedRequest, TaskSpan};
use crate::emulator::server::{API_PREFIX, serve};
use crate::emulator::shared::{Shared, origin};

/// A running emulator. Dropping it stops the server too; [`Emulator::shutdown`] also waits for it.
pub struct Emulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<JoinHandle<()>>,
}

impl Emulator {
    /// Binds `addr` (port 0 picks a free port) and serves on the current tokio runtime.
    pub async fn start(config: EmulatorConfig, addr: SocketAddr) -> std::io::Result<Emulator> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config, addr));
        let server = tokio::spawn(serve(listener, Arc::clone(&shared)));
        Ok(Emulator {
            addr,
            shared,
            server: Some(server),
        })
    }

    /// The address the server is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL a client uses, e.g. `http://127.0.0.1:PORT/api/v1`.
    pub fn base_url(&self) -> String {
        format!("{}{API_PREFIX}", origin(self.addr))
    }

    /// A snapshot of the ledger, with every task that has ended by now closed and billed.
    pub fn ledger(&self) -> Ledger {
        self.shared.ledger()
    }

    /// What `POST /emulator/reset` does: forgets every task, upload and count, and restarts the
    /// clock and the fault schedule.
    pub fn reset(&self) {
        self.shared.state().reset(Instant::now());
    }

    /// Stops accepting connections, drops open ones, and waits for the server task to end.
    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            // The task ends either way; a cancelled JoinError is the expected outcome of abort.
            let _ = server.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_configuration_parses() {
        let doc: String = include_str!("mod.rs")
            .lines()
            .filter_map(|line| line.strip_prefix("//!"))
            .map(|line| line.strip_prefix(' ').unwrap_or(line))
            .collect::<Vec<_>>()
            .join("\n");
        let start = doc
            .find("```toml\n")
            .expect("the module doc has a TOML example")
            + 8;
        let end = start + doc[start..].find("```").expect("the TOML example ends");
        let config = EmulatorConfig::from_toml(&doc[start..end]).unwrap();
        assert_eq!(config.faults.len(), 4);
        assert_eq!(config.fault_seed, 42);
    }

    /// The leaf modules the emulator shares with the client; everything else of the crate is the
    /// client's.
    const SHARED_FACTS: [&str; 5] = ["registry", "money", "size", "media", "clock"];

    /// The top-level modules named by `crate::…` in a source file, outside its unit tests.
    fn crate_modules(text: &str) -> Vec<String> {
        let cut = [
            "#[cfg(test)]\nmod tests",
            "#[cfg(test)]\npub(crate) mod tests",
        ]
        .iter()
        .filter_map(|marker| text.find(marker))
        .min()
        .unwrap_or(text.len());
        let code = &text[..cut];
        code.lines()
            .map(|line| line.split("//").next().unwrap_or_default())
            .flat_map(|line| {
                line.match_indices("crate::")
                    .map(move |(at, _)| &line[at + 7..])
            })
            .map(|rest| {
                rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn the_emulator_imports_nothing_of_the_client() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files: Vec<_> = std::fs::read_dir(src.join("emulator"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "rs"))
            .collect();
        files.extend(SHARED_FACTS.iter().map(|m| src.join(format!("{m}.rs"))));
        assert!(files.len() > 15, "{files:?}");
        let mut found = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            // The HTTP tests are test code through and through (their `mod` is `#[cfg(test)]`).
            if file
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("http_"))
            {
                continue;
            }
            let is_emulator = file.parent().is_some_and(|dir| dir.ends_with("emulator"));
            for module in crate_modules(&text) {
                let allowed = SHARED_FACTS.contains(&module.as_str())
                    || (is_emulator && module == "emulator");
                if !allowed {
                    found.push(format!("{} imports `crate::{module}`", file.display()));
                }
            }
        }
        assert!(found.is_empty(), "{found:#?}");
        assert_eq!(
            crate_modules("use crate::registry::X;\n// crate::build\nx(crate::executor::y);"),
            ["registry", "executor"]
        );
    }
}
