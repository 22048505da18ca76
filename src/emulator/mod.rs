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
//! The state is one `State` behind one mutex that is never held across an `.await`; every request
//! goes through `respond`.

pub mod config;
mod faults;
#[cfg(test)]
mod http_tests;
mod multipart;
pub mod placeholder_png;
mod request;
mod state;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

pub use crate::emulator::config::{
    EmulatorConfig, Fault, FaultEvent, FaultRule, LatencySpec, Quota,
};
use crate::emulator::faults::{FaultPlan, splitmix64};
use crate::emulator::multipart::{boundary, parse_multipart};
use crate::emulator::request::{ApiError, Media, Submission, data_inspection};
use crate::emulator::state::{
    IdGenerator, Outcome, Policy, State, StoredObject, Task, format_time,
};
use crate::media::{base64_encode, image_size, sniff};

use crate::registry::{IMAGE2IMAGE, TEXT2IMAGE};
use crate::size::Size;

/// The path prefix of the API, as in `https://dashscope.aliyuncs.com/api/v1`.
const API_PREFIX: &str = "/api/v1";
/// The largest request body accepted (inputs may carry base64 images, uploads carry files).
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// How long an upload credential is valid (§8).
const POLICY_TTL: Duration = Duration::from_secs(300);

/// What the emulator was asked and what it billed, since it started or was reset.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Ledger {
    /// Task submissions accepted.
    pub submissions: u64,
    /// Task submissions answered with an error (throttled ones included).
    pub rejected: u64,
    /// Task submissions refused for a quota (`429 Throttling.RateQuota`).
    pub throttled: u64,
    /// Authorized `GET /tasks/{id}` requests.
    pub queries: u64,
    /// Authorized `GET /tasks` (task list) requests.
    pub task_lists: u64,
    /// Result images served (truncated ones included).
    pub downloads: u64,
    /// Tasks canceled while PENDING.
    pub canceled: u64,
    /// Upload credentials issued by `getPolicy`.
    pub upload_policies: u64,
    /// Files stored through `POST /oss`.
    pub uploads: u64,
    /// Faults injected by the configured rules, delays included.
    pub faults_injected: u64,
    pub images_billed: u64,
    /// CNY, the sum of registry price × images billed.
    pub amount: f64,
    pub per_model: BTreeMap<String, ModelLedger>,
    /// Every accepted submission, in order.
    pub requests: Vec<RecordedRequest>,
}

/// One model's share of the [`Ledger`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelLedger {
    pub submissions: u64,
    pub images_billed: u64,
    /// CNY.
    pub amount: f64,
    /// Submissions refused for this model's quota.
    pub throttled: u64,
    /// The most tasks PENDING or RUNNING at once.
    pub max_in_flight: u64,
    /// Every accepted task, in submission order.
    pub timeline: Vec<TaskSpan>,
}

/// When a task was in progress, in milliseconds since the emulator started (or was reset).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpan {
    pub task_id: String,
    pub submitted_ms: u64,
    /// When it succeeded, failed or was canceled; `None` while in progress.
    pub finished_ms: Option<u64>,
}

/// An accepted submission as it arrived.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub task_id: String,
    /// The HTTP path, e.g. `/api/v1/services/aigc/text2image/image-synthesis`.
    pub path: String,
    pub model: String,
    pub body: Value,
    /// The `X-DashScope-*` headers, names lowercased (as HTTP/2 and hyper write them).
    pub headers: BTreeMap<String, String>,
    /// The kind of each media input, in field order (`base_image_url` first): `url`, `data-uri`
    /// or `oss`.
    #[serde(default)]
    pub media: Vec<String>,
}

impl RecordedRequest {
    /// A recorded header by name, in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

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

/// `http://HOST:PORT` for a bound address; an unspecified address is reached through loopback.
fn origin(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if !ip.is_unspecified() => ip,
        std::net::IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// `http://HOST` from the request's `Host` header, so a client that reached the emulator by another
/// name (a container, `0.0.0.0`) can follow the URLs it is given; else from the bound address.
fn public_origin(headers: &HeaderMap, addr: SocketAddr) -> String {
    match headers.get(HOST).and_then(|h| h.to_str().ok()) {
        Some(host) if !host.is_empty() => format!("http://{host}"),
        _ => origin(addr),
    }
}

// ------------------------------------------------------------------------------------------------
// Serving

/// The injected `reset` fault: the connection closes without an answer.
#[derive(Debug, thiserror::Error)]
#[error("connection reset by an injected fault")]
struct ConnectionReset;

type Answer = Result<Response<Full<Bytes>>, ConnectionReset>;

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                // Out of file descriptors and the like: wait for connections to close.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    // Small JSON answers: don't let Nagle delay them.
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| {
        let shared = Arc::clone(&shared);
        async move { respond(&shared, request).await }
    });
    // A client hanging up mid-exchange is its business, and a service error is an injected reset:
    // hyper then closes the connection without writing an answer.
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Where a request goes.
#[derive(Debug, PartialEq)]
enum Route<'a> {
    /// A task submission to one of the registry's endpoint paths.
    Submit(&'static str),
    Task(&'a str),
    /// `GET /tasks?…`: the recent tasks.
    List,
    Cancel(&'a str),
    Policy,
    OssUpload,
    File {
        task_id: &'a str,
        index: u32,
    },
    Ledger,
    Reset,
    Health,
    NotFound,
}

fn route<'a>(method: &Method, path: &'a str) -> Route<'a> {
    let path = path.trim_end_matches('/');
    let get = *method == Method::GET;
    let post = *method == Method::POST;
    if let Some(api) = path.strip_prefix(API_PREFIX) {
        if let Some(task) = api.strip_prefix("/tasks/") {
            return match task.split_once('/') {
                None if get && !task.is_empty() => Route::Task(task),
                Some((id, "cancel")) if post && !id.is_empty() => Route::Cancel(id),
                _ => Route::NotFound,
            };
        }
        return match api {
            TEXT2IMAGE if post => Route::Submit(TEXT2IMAGE),
            IMAGE2IMAGE if post => Route::Submit(IMAGE2IMAGE),
            "/uploads" if get => Route::Policy,
            "/tasks" if get => Route::List,
            _ => Route::NotFound,
        };
    }
    match path {
        "/oss" if post => return Route::OssUpload,
        "/emulator/ledger" if get => return Route::Ledger,
        "/emulator/reset" if post => return Route::Reset,
        "/emulator/health" if get => return Route::Health,
        _ => {}
    }
    let file = path
        .strip_prefix("/files/")
        .filter(|_| get)
        .and_then(|rest| rest.split_once('/'))
        .and_then(|(task_id, name)| {
            let index = name.strip_suffix(".png")?.parse().ok()?;
            Some(Route::File { task_id, index })
        });
    file.unwrap_or(Route::NotFound)
}

/// Answers one request. Every route passes through here.
async fn respond(shared: &Shared, request: Request<Incoming>) -> Answer {
    let path = request.uri().path().to_owned();
    match route(request.method(), &path) {
        Route::Submit(endpoint) => submit(shared, endpoint, request).await,
        Route::Task(task_id) => query(shared, request.headers(), task_id).await,
        Route::List => Ok(list(shared, &request)),
        Route::Cancel(task_id) => Ok(cancel(shared, request.headers(), task_id)),
        Route::Policy => Ok(get_policy(shared, &request)),
        Route::OssUpload => upload(shared, request).await,
        Route::File { task_id, index } => download(shared, task_id, index).await,
        Route::Ledger => Ok(json_response(StatusCode::OK, &shared.ledger())),
        Route::Reset => {
            shared.state().reset(Instant::now());
            Ok(json_response(StatusCode::OK, &json!({"status": "reset"})))
        }
        Route::Health => Ok(json_response(StatusCode::OK, &json!({"status": "ok"}))),
        Route::NotFound => Ok(ApiError::not_found(format!("no such endpoint: `{path}`"))
            .response(&shared.ids.next("request"))),
    }
}

/// Why a submission got no task.
enum Refusal {
    Error(ApiError),
    Reset,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Refusal {
        Refusal::Error(error)
    }
}

/// `POST …/image-synthesis`: answers with the new task's `output`, or the error.
async fn submit(shared: &Shared, endpoint: &'static str, request: Request<Incoming>) -> Answer {
    let request_id = shared.ids.next("request");
    match accept(shared, endpoint, request).await {
        Ok((_, Some(Fault::ResetAfterAccept))) | Err(Refusal::Reset) => Err(ConnectionReset),
        Ok((output, after)) => {
            if let Some(Fault::DelayAfterAccept { ms }) = after {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            Ok(json_response(
                StatusCode::OK,
                &json!({"output": output, "request_id": request_id}),
            ))
        }
        Err(Refusal::Error(error)) => {
            shared.state().ledger.rejected += 1;
            Ok(error.response(&request_id))
        }
    }
}

/// Validates, injects the submit faults, checks the quotas, and records the task. Returns the
/// answer's `output`, and the fault to enact once the task exists (`reset_after_accept`,
/// `delay_after_accept`).
async fn accept(
    shared: &Shared,
    endpoint: &'static str,
    request: Request<Incoming>,
) -> Result<(Value, Option<Fault>), Refusal> {
    shared.authorize(request.headers())?;
    require_async(request.headers())?;
    let oss_resolve = header_enabled(request.headers(), "x-dashscope-ossresourceresolve");
    let path = request.uri().path().trim_end_matches('/').to_owned();
    let headers = dashscope_headers(request.headers());
    let body = read_json(request.into_body()).await?;
    let config = &shared.config;
    let submission = Submission::validate(&config.registry, endpoint, &body, oss_resolve)?;
    let fault = shared
        .inject(FaultEvent::Submit, Some(&submission.model))
        .await;
    let after = fault
        .clone()
        .filter(|f| matches!(f, Fault::ResetAfterAccept | Fault::DelayAfterAccept { .. }));
    let outcome = match fault {
        Some(Fault::Http {
            status,
            code,
            message,
        }) => return Err(ApiError::new(fault_status(status), code, message).into()),
        Some(Fault::Reset) => return Err(Refusal::Reset),
        Some(Fault::TaskFailed { code, message }) => Outcome::Failed { code, message },
        Some(Fault::PartialFailure { failed }) => Outcome::Partial { failed },
        Some(
            Fault::Truncate
            | Fault::Delay { .. }
            | Fault::ResetAfterAccept
            | Fault::DelayAfterAccept { .. },
        )
        | None => Outcome::Success,
    };
    let model = submission.model.clone();
    let now = Instant::now();
    let mut state = shared.state();
    state.settle(now);
    let input_size = resolve_uploads(&state, &submission, now, config.task_ttl * 2)?;
    if config.enforce_quotas {
        let spec = config.registry.models().find(|spec| spec.id == model);
        let quota = spec.map_or((u32::MAX, u32::MAX), |spec| config.quota(spec));
        if state.admit(&model, now, quota).is_err() {
            state.throttled(&model);
            drop(state);
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Throttling.RateQuota",
                "Requests rate limit exceeded, please try again later.",
            )
            .into());
        }
    }
    let ordinal = {
        let count = state.accepted.entry(model.clone()).or_default();
        *count += 1;
        *count
    };
    let latency = shared.latency_for(&model, ordinal);
    let task_id = shared.ids.next("task");
    state.record(RecordedRequest {
        task_id: task_id.clone(),
        path,
        model,
        body,
        headers,
        media: submission
            .media
            .iter()
            .map(|m| m.kind().to_owned())
            .collect(),
    });
    let size = submission.output_size(input_size);
    state.insert(Task::new(
        task_id.clone(),
        submission,
        size,
        latency,
        outcome,
        now,
    ));
    Ok((json!({"task_status": "PENDING", "task_id": task_id}), after))
}

/// Checks every `oss://` input names a live object uploaded for this model and holding an image;
/// returns the size of the base input image when it can be read.
fn resolve_uploads(
    state: &State,
    submission: &Submission,
    now: Instant,
    ttl: Duration,
) -> Result<Option<Size>, ApiError> {
    for media in &submission.media {
        let Media::Oss(key) = media else { continue };
        let object = state
            .objects
            .get(key)
            .filter(|o| o.model == submission.model && now < o.stored + ttl)
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "{} (`oss://{key}` is not a file uploaded for {} or it has expired)",
                    crate::emulator::request::INVALID_URL,
                    submission.model
                ))
            })?;
        if sniff(&object.bytes).is_none() {
            return Err(data_inspection(&format!("oss://{key}")));
        }
    }
    Ok(match submission.base_media() {
        Some(Media::DataUri(size)) => *size,
        Some(Media::Oss(key)) => state.objects.get(key).and_then(|o| image_size(&o.bytes)),
        Some(Media::Url) | None => None,
    })
}

/// An injected status, or 500 for one `http::StatusCode` rejects (config checks keep 400–599).
fn fault_status(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// `GET /tasks/{id}`: the task's `output` (and `usage` once it succeeded).
async fn query(shared: &Shared, headers: &HeaderMap, task_id: &str) -> Answer {
    let request_id = shared.ids.next("request");
    if let Err(error) = shared.authorize(headers) {
        return Ok(error.response(&request_id));
    }
    let model = {
        let mut state = shared.state();
        state.ledger.queries += 1;
        state.tasks.get(task_id).map(|t| t.model.clone())
    };
    match shared.inject(FaultEvent::Query, model.as_deref()).await {
        Some(Fault::Http {
            status,
            code,
            message,
        }) => {
            return Ok(ApiError::new(fault_status(status), code, message).response(&request_id));
        }
        Some(Fault::Reset) => return Err(ConnectionReset),
        _ => {}
    }
    let files = format!("{}/files", public_origin(headers, shared.addr));
    let now = Instant::now();
    let mut state = shared.state();
    state.settle(now);
    let mut body = match state.tasks.get(task_id) {
        Some(task) if !task.expired(now, shared.config.task_ttl) => task.to_json(now, &files),
        _ => json!({"output": {"task_id": task_id, "task_status": "UNKNOWN"}}),
    };
    drop(state);
    body["request_id"] = json!(request_id);
    Ok(json_response(StatusCode::OK, &body))
}

/// The most tasks one page of `GET /tasks` holds (the service's limit is not documented).
const MAX_PAGE_SIZE: usize = 100;

/// `GET /tasks?page_no&page_size&start_time&end_time&model_name&status&api_key_id&region`: the
/// tasks not yet forgotten, newest first, filtered and paged, shaped as the service's recorded
/// answer (protocol §3 "List"). `start_time` and `end_time` (`YYYYMMDDhhmmss`, UTC here, inclusive
/// to the second) bound the creation time; times in the answer are epoch milliseconds.
fn list(shared: &Shared, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let request_id = shared.ids.next("request");
    if let Err(error) = shared.authorize(request.headers()) {
        return error.response(&request_id);
    }
    let params = query_params(request.uri().query().unwrap_or_default());
    let param = |name: &str| params.get(name).filter(|v| !v.is_empty()).cloned();
    let number = |name: &str, default: usize| match param(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| ApiError::invalid(format!("{name} must be a positive integer"))),
    };
    let time = |name: &str| match param(name) {
        None => Ok(None),
        Some(v) => crate::emulator::state::parse_list_time(&v)
            .map(Some)
            .ok_or_else(|| ApiError::invalid(format!("{name} must be YYYYMMDDhhmmss"))),
    };
    let parsed = (|| {
        Ok::<_, ApiError>((
            number("page_no", 1)?,
            number("page_size", 10)?.min(MAX_PAGE_SIZE),
            time("start_time")?,
            time("end_time")?,
        ))
    })();
    let (page_no, page_size, start, end) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => return error.response(&request_id),
    };
    let key_id = Shared::api_key_id(request.headers());
    let now = Instant::now();
    let mut state = shared.state();
    state.ledger.task_lists += 1;
    state.settle(now);
    let mut entries: Vec<(u64, Value)> = state
        .tasks
        .values()
        .filter(|t| !t.expired(now, shared.config.task_ttl))
        .filter(|t| param("model_name").is_none_or(|m| t.model == m))
        .filter(|t| param("status").is_none_or(|s| t.phase(now).as_str() == s))
        .filter(|_| param("api_key_id").is_none_or(|k| k == key_id))
        .filter(|_| param("region").is_none_or(|r| r == crate::emulator::state::REGION))
        .filter(|t| {
            let created = t.created_ms() / 1000;
            start.is_none_or(|s| created >= s) && end.is_none_or(|e| created <= e)
        })
        .map(|t| (t.created_ms(), t.list_entry(now, &key_id)))
        .collect();
    drop(state);
    entries.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| a.1["task_id"].as_str().cmp(&b.1["task_id"].as_str()))
    });
    let total = entries.len();
    let data: Vec<Value> = entries
        .into_iter()
        .skip((page_no - 1).saturating_mul(page_size))
        .take(page_size)
        .map(|(_, entry)| entry)
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "total": total,
            "data": data,
            "total_page": total.div_ceil(page_size),
            "page_no": page_no,
            "request_id": request_id,
            "page_size": page_size,
        }),
    )
}

/// A query string's parameters (no percent-decoding: the list's values are plain).
fn query_params(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

/// `POST /tasks/{id}/cancel`: only a PENDING task can be canceled (§3).
fn cancel(shared: &Shared, headers: &HeaderMap, task_id: &str) -> Response<Full<Bytes>> {
    let request_id = shared.ids.next("request");
    if let Err(error) = shared.authorize(headers) {
        return error.response(&request_id);
    }
    let now = Instant::now();
    let mut state = shared.state();
    state.settle(now);
    let live = state
        .tasks
        .get(task_id)
        .is_some_and(|t| !t.expired(now, shared.config.task_ttl));
    if live && state.cancel(task_id, now) {
        return json_response(StatusCode::OK, &json!({"request_id": request_id}));
    }
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "UnsupportedOperation",
        "Failed to cancel the task, please confirm if the task is in PENDING status.",
    )
    .response(&request_id)
}

/// `GET /files/{task}/{index}.png`: renders the image outside the lock, on a blocking thread.
async fn download(shared: &Shared, task_id: &str, index: u32) -> Answer {
    let request_id = shared.ids.next("request");
    let now = Instant::now();
    let found = {
        let mut state = shared.state();
        state.settle(now);
        match state.tasks.get(task_id) {
            Some(task) if task.urls_expired(now, shared.config.task_ttl) => {
                return Ok(oss_error(
                    StatusCode::FORBIDDEN,
                    "AccessDenied",
                    "Request has expired.",
                    &request_id,
                ));
            }
            Some(task) if task.has_image(now, index) => {
                Some((task.model.clone(), task.size, task.image_material(index)))
            }
            _ => None,
        }
    };
    let Some((model, size, material)) = found else {
        return Ok(oss_error(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            &format!("The specified key does not exist: `{task_id}/{index}.png`."),
            &request_id,
        ));
    };
    let truncate = match object_store_fault(shared, FaultEvent::Download, &model, &request_id).await
    {
        Err(answer) => return answer,
        Ok(fault) => matches!(fault, Some(Fault::Truncate)),
    };
    let rendered = tokio::task::spawn_blocking(move || {
        placeholder_png::render(size.width, size.height, &material)
    })
    .await;
    let Ok(mut png) = rendered else {
        return Ok(
            ApiError::internal("rendering the image failed".to_owned()).response(&request_id)
        );
    };
    if truncate {
        png.truncate(png.len() / 2);
    }
    shared.state().ledger.downloads += 1;
    let mut response = Response::new(Full::new(Bytes::from(png)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("image/png"));
    Ok(response)
}

// ------------------------------------------------------------------------------------------------
// Uploads (§8)

/// `GET /uploads?action=getPolicy&model=M`: a credential for one upload directory, bound to `M`.
fn get_policy(shared: &Shared, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let request_id = shared.ids.next("request");
    if let Err(error) = shared.authorize(request.headers()) {
        return error.response(&request_id);
    }
    let query = request.uri().query().unwrap_or_default();
    let param = |name: &str| {
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then(|| value.to_owned())
        })
    };
    if param("action").as_deref() != Some("getPolicy") {
        return ApiError::invalid("action must be `getPolicy`".into()).response(&request_id);
    }
    let Some(model) = param("model").filter(|m| !m.is_empty()) else {
        return ApiError::invalid("model is required".into()).response(&request_id);
    };
    if !shared.config.registry.models().any(|spec| spec.id == model) {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "ModelNotFound",
            format!("Model not exist: {model}"),
        )
        .response(&request_id);
    }
    let nonce = shared.ids.next("policy");
    let date = format_time(SystemTime::now());
    let upload_dir = format!(
        "dashscope-instant/{}/{}/{nonce}",
        blake3::hash(model.as_bytes()).to_hex()[..32].to_owned(),
        &date[..10]
    );
    let policy = base64_encode(
        json!({
            "expiration": format_time(SystemTime::now() + POLICY_TTL),
            "conditions": [
                ["content-length-range", 0, MAX_BODY_BYTES],
                ["starts-with", "$key", upload_dir],
                {"bucket": "dashscope-file-mgr"},
            ],
        })
        .to_string()
        .as_bytes(),
    );
    let signature = base64_encode(&blake3::hash(policy.as_bytes()).as_bytes()[..20]);
    let access_key_id = format!("LTAI5tEmu{}", &nonce[..8]);
    let credential = json!({
        "policy": policy,
        "signature": signature,
        "upload_dir": upload_dir,
        "upload_host": format!("{}/oss", public_origin(request.headers(), shared.addr)),
        "expire_in_seconds": POLICY_TTL.as_secs(),
        "max_file_size_mb": 1024,
        "capacity_limit_mb": 999_999,
        "oss_access_key_id": access_key_id,
        "x_oss_object_acl": "private",
        "x_oss_forbid_overwrite": "true",
    });
    let mut state = shared.state();
    state.ledger.upload_policies += 1;
    state.policies.insert(
        policy.clone(),
        Policy {
            model,
            upload_dir,
            signature,
            access_key_id,
            issued: Instant::now(),
        },
    );
    drop(state);
    json_response(
        StatusCode::OK,
        &json!({"data": credential, "request_id": request_id}),
    )
}

/// The form fields an upload must carry, as the SDK sends them.
const UPLOAD_FIELDS: [&str; 9] = [
    "OSSAccessKeyId",
    "Signature",
    "policy",
    "key",
    "x-oss-object-acl",
    "x-oss-forbid-overwrite",
    "success_action_status",
    "x-oss-content-type",
    "file",
];

/// `POST /oss`: an OSS `PostObject` with a policy from `getPolicy`; answers as OSS does, with XML
/// errors.
async fn upload(shared: &Shared, request: Request<Incoming>) -> Answer {
    let request_id = shared.ids.next("request");
    let form = match read_form(request).await {
        Ok(form) => form,
        Err((status, code, message)) => {
            return Ok(oss_error(status, code, &message, &request_id));
        }
    };
    let denied = |code: &str, message: &str| {
        Ok(oss_error(StatusCode::FORBIDDEN, code, message, &request_id))
    };
    if let Some(missing) = UPLOAD_FIELDS.iter().find(|f| !form.contains_key(**f)) {
        return denied(
            "AccessDenied",
            &format!("Invalid according to Policy: the form field `{missing}` is missing."),
        );
    }
    let text = |name: &str| String::from_utf8_lossy(&form[name]).into_owned();
    let key = text("key");
    let model = {
        let state = shared.state();
        let Some(policy) = state.policies.get(&text("policy")) else {
            return denied(
                "AccessDenied",
                "Invalid according to Policy: unknown policy.",
            );
        };
        if policy.access_key_id != text("OSSAccessKeyId") {
            return denied(
                "InvalidAccessKeyId",
                "The OSS Access Key Id you provided does not exist in our records.",
            );
        }
        if policy.signature != text("Signature") {
            return denied(
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            );
        }
        if policy.issued.elapsed() >= POLICY_TTL {
            return denied(
                "AccessDenied",
                "Invalid according to Policy: Policy expired.",
            );
        }
        if !key.starts_with(&format!("{}/", policy.upload_dir)) {
            return denied(
                "AccessDenied",
                "Invalid according to Policy: Policy Condition failed: [\"starts-with\", \"$key\", upload_dir].",
            );
        }
        policy.model.clone()
    };
    if let Err(answer) = object_store_fault(shared, FaultEvent::Upload, &model, &request_id).await {
        return answer;
    }
    let mut state = shared.state();
    if text("x-oss-forbid-overwrite") == "true" && state.objects.contains_key(&key) {
        drop(state);
        return Ok(oss_error(
            StatusCode::CONFLICT,
            "FileAlreadyExists",
            "The object you specified already exists and can not be overwritten.",
            &request_id,
        ));
    }
    let bytes = form["file"].clone();
    state.objects.insert(
        key,
        StoredObject {
            model,
            bytes,
            stored: Instant::now(),
        },
    );
    state.ledger.uploads += 1;
    drop(state);
    let status = match text("success_action_status").as_str() {
        "200" => StatusCode::OK,
        "201" => StatusCode::CREATED,
        _ => StatusCode::NO_CONTENT,
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("x-oss-request-id", header_value(&request_id));
    Ok(response)
}

type FormError = (StatusCode, &'static str, String);

/// The fields of a `multipart/form-data` body by name (the last one wins, like OSS).
async fn read_form(request: Request<Incoming>) -> Result<BTreeMap<String, Bytes>, FormError> {
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(boundary) = boundary(content_type) else {
        return Err((
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "the body must be multipart/form-data with a boundary".into(),
        ));
    };
    let body = match Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            return Err((
                StatusCode::BAD_REQUEST,
                "EntityTooLarge",
                "Your proposed upload exceeds the maximum allowed size.".into(),
            ));
        }
        Err(e) => {
            return Err((
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                format!("the body could not be read: {e}"),
            ));
        }
    };
    let parts = parse_multipart(&body, &boundary).map_err(|why| {
        (
            StatusCode::BAD_REQUEST,
            "MalformedPOSTRequest",
            format!("The body of your POST request is not well-formed multipart/form-data: {why}."),
        )
    })?;
    Ok(parts.into_iter().map(|p| (p.name, p.data)).collect())
}

/// Counts an object-store event against the fault rules. `Err` is the answer to give instead (an
/// injected HTTP error, or a reset); `Ok` passes on any other fault for the caller to enact.
async fn object_store_fault(
    shared: &Shared,
    event: FaultEvent,
    model: &str,
    request_id: &str,
) -> Result<Option<Fault>, Answer> {
    match shared.inject(event, Some(model)).await {
        Some(Fault::Http {
            status,
            code,
            message,
        }) => Err(Ok(oss_error(
            fault_status(status),
            &code,
            &message,
            request_id,
        ))),
        Some(Fault::Reset) => Err(Err(ConnectionReset)),
        other => Ok(other),
    }
}

/// An OSS-style error: `application/xml`, `<Error><Code>…`.
fn oss_error(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &str,
) -> Response<Full<Bytes>> {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>\n  <Code>{}</Code>\n  <Message>{}</Message>\n  \
         <RequestId>{request_id}</RequestId>\n  <HostId>wanx-emulator</HostId>\n</Error>\n",
        escape(code),
        escape(message)
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    headers.insert("x-oss-request-id", header_value(request_id));
    response
}

/// A header value from text the emulator made (ids are hex and dashes).
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

// ------------------------------------------------------------------------------------------------
// Request helpers

fn require_async(headers: &HeaderMap) -> Result<(), ApiError> {
    let enabled = headers
        .get("x-dashscope-async")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("enable"));
    if enabled {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "current user api does not support synchronous calls.",
        ))
    }
}

fn dashscope_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-dashscope-"))
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect()
}

async fn read_json(body: Incoming) -> Result<Value, ApiError> {
    let bytes = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BadRequest.TooLarge",
                format!("request body is larger than {MAX_BODY_BYTES} bytes"),
            ));
        }
        Err(e) => {
            return Err(ApiError::invalid(format!(
                "the request body could not be read: {e}"
            )));
        }
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid(format!("request body is not valid JSON: {e}")))
}

pub(crate) fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Full<Bytes>> {
    // Serializing a `Value` or the ledger (string keys only) cannot fail.
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Whether a header is `enable`, in any case.
fn header_enabled(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("enable"))
}

// ------------------------------------------------------------------------------------------------
// Shared state

/// Everything the server tasks share.
struct Shared {
    config: EmulatorConfig,
    addr: SocketAddr,
    ids: IdGenerator,
    state: Mutex<State>,
}

impl Shared {
    fn new(config: EmulatorConfig, addr: SocketAddr) -> Shared {
        let faults = FaultPlan::new(config.faults.clone(), config.fault_seed);
        Shared {
            config,
            addr,
            ids: IdGenerator::new(addr),
            state: Mutex::new(State::new(Instant::now(), faults)),
        }
    }

    /// The state, also after a panic elsewhere: every update leaves it consistent.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ledger(&self) -> Ledger {
        let mut state = self.state();
        state.settle(Instant::now());
        state.ledger.clone()
    }

    /// Counts one `event` against the fault rules; sleeps through a `delay` (and returns `None`, so
    /// the request goes on), returns any other fault for the caller to enact.
    async fn inject(&self, event: FaultEvent, model: Option<&str>) -> Option<Fault> {
        let fault = {
            let mut state = self.state();
            let fault = state.faults.decide(event, model);
            if fault.is_some() {
                state.ledger.faults_injected += 1;
            }
            fault
        };
        if let Some(Fault::Delay { ms }) = fault {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            return None;
        }
        fault
    }

    /// The latency of `model`'s `ordinal`-th task: its distribution's base plus a jitter drawn from
    /// the seed, or the default latency.
    fn latency_for(&self, model: &str, ordinal: u64) -> Duration {
        let Some(spec) = self.config.latency_per_model.get(model) else {
            return self.config.latency;
        };
        let model_bits = u64::from_le_bytes(
            blake3::hash(model.as_bytes()).as_bytes()[..8]
                .try_into()
                .unwrap_or_default(),
        );
        let draw = splitmix64(self.config.fault_seed ^ splitmix64(model_bits ^ ordinal));
        let jitter = draw % (spec.jitter_ms + 1);
        Duration::from_millis(spec.base_ms + jitter)
    }

    /// A stable, numeric id for the request's key (the service's `api_key_id`), never the key.
    fn api_key_id(headers: &HeaderMap) -> String {
        let key = headers
            .get(AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default();
        let bits = u64::from_le_bytes(
            blake3::hash(&key).as_bytes()[..8]
                .try_into()
                .unwrap_or_default(),
        );
        (bits % 100_000).to_string()
    }

    /// `Authorization: Bearer KEY` with a key this emulator accepts.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(value) = headers.get(AUTHORIZATION) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "InvalidApiKey",
                "No API-key provided.",
            ));
        };
        let key = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or_default();
        let accepted = !key.is_empty()
            && self
                .config
                .valid_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|k| k == key));
        if accepted {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "InvalidApiKey",
                "Invalid API-key provided.",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let t2i = format!("{API_PREFIX}{TEXT2IMAGE}");
        assert_eq!(route(&Method::POST, &t2i), Route::Submit(TEXT2IMAGE));
        assert_eq!(
            route(&Method::POST, &format!("{t2i}/")),
            Route::Submit(TEXT2IMAGE)
        );
        assert_eq!(route(&Method::GET, &t2i), Route::NotFound);
        assert_eq!(route(&Method::GET, "/api/v1/tasks/abc"), Route::Task("abc"));
        assert_eq!(route(&Method::GET, "/api/v1/tasks/"), Route::List);
        assert_eq!(route(&Method::GET, "/api/v1/tasks"), Route::List);
        assert_eq!(route(&Method::POST, "/api/v1/tasks"), Route::NotFound);
        assert_eq!(
            route(&Method::POST, "/api/v1/tasks/abc/cancel"),
            Route::Cancel("abc")
        );
        assert_eq!(
            route(&Method::GET, "/api/v1/tasks/abc/cancel"),
            Route::NotFound
        );
        assert_eq!(route(&Method::GET, "/api/v1/uploads"), Route::Policy);
        assert_eq!(route(&Method::POST, "/oss"), Route::OssUpload);
        assert_eq!(route(&Method::POST, "/emulator/reset"), Route::Reset);
        assert_eq!(route(&Method::GET, "/emulator/health"), Route::Health);
        assert_eq!(route(&Method::POST, "/files/abc/3.png"), Route::NotFound);
        assert_eq!(
            route(&Method::GET, "/files/abc/3.png"),
            Route::File {
                task_id: "abc",
                index: 3
            }
        );
        assert_eq!(route(&Method::GET, "/files/abc/x.png"), Route::NotFound);
        assert_eq!(route(&Method::GET, "/emulator/ledger"), Route::Ledger);
        assert_eq!(route(&Method::GET, "/"), Route::NotFound);
    }

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

    #[test]
    fn latency_jitter_is_seeded_and_within_its_range() {
        let mut config = EmulatorConfig::default();
        config.latency_per_model.insert(
            "wan2.2-t2i-flash".into(),
            LatencySpec {
                base_ms: 100,
                jitter_ms: 50,
            },
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let latencies = |seed| {
            let shared = Shared::new(
                EmulatorConfig {
                    fault_seed: seed,
                    ..config.clone()
                },
                addr,
            );
            (1..=20)
                .map(|i| shared.latency_for("wan2.2-t2i-flash", i))
                .collect::<Vec<_>>()
        };
        let a = latencies(1);
        assert_eq!(a, latencies(1));
        assert_ne!(a, latencies(2));
        let range = Duration::from_millis(100)..=Duration::from_millis(150);
        assert!(a.iter().all(|l| range.contains(l)), "{a:?}");
        assert!(a.iter().any(|l| *l != a[0]), "{a:?}");
        let shared = Shared::new(config, addr);
        assert_eq!(shared.latency_for("qwen-image", 1), shared.config.latency);
    }
}
