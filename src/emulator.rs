//! The `DashScope` emulator: an in-process HTTP server on loopback that speaks the async image protocol
//! (`dashscope-protocol.md` §1, §3, §4), renders deterministic placeholder PNGs of the requested size,
//! and bills each task once, at registry prices, into a [`Ledger`] that tests and users can read.
//!
//! `wanx build --emulate` and `wanx emulator --port N` start it; every test talks to it over real HTTP.
//!
//! Routes, all JSON except the images:
//! - `POST /api/v1/services/aigc/{text2image,image2image}/image-synthesis`: submit a task.
//! - `GET /api/v1/tasks/{task_id}`: PENDING for the first tenth of the configured latency, then
//!   RUNNING, then SUCCEEDED; an id the emulator never issued is UNKNOWN (HTTP 200, as the service does).
//! - `GET /files/{task_id}/{index}.png`: a result image, rendered on request (no key needed, like the
//!   service's signed result URLs).
//! - `GET /emulator/ledger`: the [`Ledger`].
//!
//! Where the real service's behaviour is unknown the emulator picks one and says so: an unknown model
//! is `404 ModelNotFound` (the §4 code table); an alias such as `wanx2.2-t2i-flash` is unknown, as it
//! is to the service; timestamps are UTC (the service's zone is unstated); results served without an
//! explicit `size` use the registry's default size, or `1024*1024` when it has none (image edit).
//!
//! The state is one `Task` record per submission plus the ledger, behind one mutex that is never held
//! across an `.await`; every request goes through `respond`, so quotas, fault injection, expiry and
//! uploads can each be one more check or route there.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::money::Money;
use crate::placeholder_png;
use crate::registry::{Family, IMAGE2IMAGE, ModelSpec, Registry, TEXT2IMAGE};
use crate::size::Size;

/// The path prefix of the API, as in `https://dashscope.aliyuncs.com/api/v1`.
const API_PREFIX: &str = "/api/v1";
/// The largest request body accepted (inputs may carry base64 images).
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// The largest seed the service accepts (§2).
const MAX_SEED: u64 = 2_147_483_647;
/// The size rendered when neither the request nor the registry names one.
const FALLBACK_SIZE: Size = Size::new(1024, 1024);

/// How the emulator behaves.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// Which models exist, their rules and their prices.
    pub registry: Registry,
    /// Time from submission to SUCCEEDED (PENDING for the first tenth, then RUNNING).
    pub latency: Duration,
    /// The accepted API keys; `None` accepts any non-empty Bearer token.
    pub valid_keys: Option<Vec<String>>,
}

impl Default for EmulatorConfig {
    fn default() -> EmulatorConfig {
        EmulatorConfig {
            registry: Registry::builtin(),
            latency: Duration::from_millis(300),
            valid_keys: None,
        }
    }
}

/// What the emulator was asked and what it billed, since it started.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    /// Task submissions accepted.
    pub submissions: u64,
    /// Task submissions answered with an error.
    pub rejected: u64,
    /// Authorized `GET /tasks/{id}` requests.
    pub queries: u64,
    /// Result images served.
    pub downloads: u64,
    pub images_billed: u64,
    /// CNY, the sum of registry price × images billed.
    pub amount: f64,
    pub per_model: BTreeMap<String, ModelLedger>,
    /// Every accepted submission, in order.
    pub requests: Vec<RecordedRequest>,
}

/// One model's share of the [`Ledger`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelLedger {
    pub submissions: u64,
    pub images_billed: u64,
    /// CNY.
    pub amount: f64,
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

    /// A snapshot of the ledger, with every task that has completed by now billed.
    pub fn ledger(&self) -> Ledger {
        self.shared.ledger()
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

// ------------------------------------------------------------------------------------------------
// Serving

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
        async move { Ok::<_, Infallible>(respond(&shared, request).await) }
    });
    // A client hanging up mid-exchange is its business, not an emulator failure.
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
    File {
        task_id: &'a str,
        index: u32,
    },
    Ledger,
    NotFound,
}

fn route<'a>(method: &Method, path: &'a str) -> Route<'a> {
    let path = path.trim_end_matches('/');
    if let Some(api) = path.strip_prefix(API_PREFIX) {
        if *method == Method::POST {
            return match api {
                TEXT2IMAGE => Route::Submit(TEXT2IMAGE),
                IMAGE2IMAGE => Route::Submit(IMAGE2IMAGE),
                _ => Route::NotFound,
            };
        }
        return match api.strip_prefix("/tasks/") {
            Some(id) if *method == Method::GET && !id.is_empty() && !id.contains('/') => {
                Route::Task(id)
            }
            _ => Route::NotFound,
        };
    }
    if *method != Method::GET {
        return Route::NotFound;
    }
    if path == "/emulator/ledger" {
        return Route::Ledger;
    }
    let file = path
        .strip_prefix("/files/")
        .and_then(|rest| rest.split_once('/'))
        .and_then(|(task_id, name)| {
            let index = name.strip_suffix(".png")?.parse().ok()?;
            Some(Route::File { task_id, index })
        });
    file.unwrap_or(Route::NotFound)
}

/// Answers one request. Every route passes through here.
async fn respond(shared: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    match route(request.method(), &path) {
        Route::Submit(endpoint) => {
            let request_id = shared.ids.next("request");
            match submit(shared, endpoint, request).await {
                Ok(output) => json_response(
                    StatusCode::OK,
                    &json!({"output": output, "request_id": request_id}),
                ),
                Err(error) => {
                    shared.state().ledger.rejected += 1;
                    error.response(&request_id)
                }
            }
        }
        Route::Task(task_id) => query(shared, request.headers(), task_id),
        Route::File { task_id, index } => download(shared, task_id, index).await,
        Route::Ledger => json_response(StatusCode::OK, &shared.ledger()),
        Route::NotFound => ApiError::not_found(format!("no such endpoint: `{path}`"))
            .response(&shared.ids.next("request")),
    }
}

/// `POST …/image-synthesis`: validates, records, and answers with the new task's `output`.
async fn submit(
    shared: &Shared,
    endpoint: &'static str,
    request: Request<Incoming>,
) -> Result<Value, ApiError> {
    shared.authorize(request.headers())?;
    require_async(request.headers())?;
    let path = request.uri().path().trim_end_matches('/').to_owned();
    let headers = dashscope_headers(request.headers());
    let body = read_json(request.into_body()).await?;
    let submission = Submission::validate(&shared.config.registry, endpoint, &body)?;
    let now = Instant::now();
    let task_id = shared.ids.next("task");
    let mut state = shared.state();
    state.settle(now);
    state.record(RecordedRequest {
        task_id: task_id.clone(),
        path,
        model: submission.model.clone(),
        body,
        headers,
    });
    let task = Task::new(task_id.clone(), submission, shared.config.latency, now);
    state.insert(task);
    Ok(json!({"task_status": "PENDING", "task_id": task_id}))
}

/// `GET /tasks/{id}`: the task's `output` (and `usage` once it succeeded).
fn query(shared: &Shared, headers: &HeaderMap, task_id: &str) -> Response<Full<Bytes>> {
    let request_id = shared.ids.next("request");
    if let Err(error) = shared.authorize(headers) {
        return error.response(&request_id);
    }
    let files = files_base(headers, shared.addr);
    let now = Instant::now();
    let mut state = shared.state();
    state.settle(now);
    state.ledger.queries += 1;
    let mut body = match state.tasks.get(task_id) {
        Some(task) => task.to_json(now, &files),
        None => json!({"output": {"task_id": task_id, "task_status": "UNKNOWN"}}),
    };
    drop(state);
    body["request_id"] = json!(request_id);
    json_response(StatusCode::OK, &body)
}

/// `GET /files/{task}/{index}.png`: renders the image outside the lock, on a blocking thread.
async fn download(shared: &Shared, task_id: &str, index: u32) -> Response<Full<Bytes>> {
    let now = Instant::now();
    let image = {
        let mut state = shared.state();
        state.settle(now);
        let image = state
            .tasks
            .get(task_id)
            .filter(|task| task.phase(now) == Phase::Succeeded && index < task.n)
            .map(|task| (task.size, task.image_material(index)));
        if image.is_some() {
            state.ledger.downloads += 1;
        }
        image
    };
    let Some((size, material)) = image else {
        return ApiError::not_found(format!("no such file: `{task_id}/{index}.png`"))
            .response(&shared.ids.next("request"));
    };
    let rendered = tokio::task::spawn_blocking(move || {
        placeholder_png::render(size.width, size.height, &material)
    })
    .await;
    match rendered {
        Ok(png) => {
            let mut response = Response::new(Full::new(Bytes::from(png)));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("image/png"));
            response
        }
        Err(_) => ApiError::internal("rendering the image failed".to_owned())
            .response(&shared.ids.next("request")),
    }
}

/// `http://HOST/files`, from the query's `Host` header so a client that reached the emulator by
/// another name (a container, `0.0.0.0`) can follow the URLs; else from the bound address.
fn files_base(headers: &HeaderMap, addr: SocketAddr) -> String {
    match headers.get(HOST).and_then(|h| h.to_str().ok()) {
        Some(host) if !host.is_empty() => format!("http://{host}/files"),
        _ => format!("{}/files", origin(addr)),
    }
}

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

fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Full<Bytes>> {
    // Serializing a `Value` or the ledger (string keys only) cannot fail.
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

// ------------------------------------------------------------------------------------------------
// Errors

/// An error answer: `{"code","message","request_id"}` with an HTTP status (§4).
#[derive(Debug, PartialEq)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn invalid(message: String) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "InvalidParameter", message)
    }

    fn not_found(message: String) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    fn internal(message: String) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    fn response(&self, request_id: &str) -> Response<Full<Bytes>> {
        json_response(
            self.status,
            &json!({"code": self.code, "message": self.message, "request_id": request_id}),
        )
    }
}

// ------------------------------------------------------------------------------------------------
// Validation

/// A submission that passed every check, with what the task needs to answer later.
#[derive(Debug)]
struct Submission {
    model: String,
    family: Family,
    price: Money,
    n: u32,
    size: Size,
    prompt: Option<String>,
    prompt_extend: bool,
    seed: Option<u64>,
    /// blake3 of the canonical (model, input, parameters without `n` and `seed`): what decides the
    /// pictures, so the same request always renders the same bytes.
    digest: blake3::Hash,
}

impl Submission {
    fn validate(registry: &Registry, endpoint: &str, body: &Value) -> Result<Submission, ApiError> {
        let body = body
            .as_object()
            .ok_or_else(|| ApiError::invalid("the request body must be a JSON object".into()))?;
        let spec = model_spec(registry, body)?;
        if spec.endpoint != endpoint {
            return Err(ApiError::invalid("url error, please check url!".into()));
        }
        let input = object_field(body, "input")?.ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "BadRequest.EmptyInput",
                "Required input parameter missing from request.",
            )
        })?;
        let parameters = object_field(body, "parameters")?
            .cloned()
            .unwrap_or_default();
        let prompt = check_input(spec, input)?;
        let n = check_n(spec, &parameters)?;
        let size = check_size(spec, &parameters)?;
        let seed = check_seed(&parameters)?;
        let prompt_extend = match parameters.get("prompt_extend") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(ApiError::invalid("prompt_extend must be a boolean".into())),
        };
        Ok(Submission {
            model: spec.id.clone(),
            family: spec.family,
            price: spec.price,
            n,
            size,
            prompt,
            prompt_extend,
            seed,
            digest: request_digest(&spec.id, input, &parameters),
        })
    }
}

/// The model the body names, by its real id (aliases are wanx's, not the service's).
fn model_spec<'r>(
    registry: &'r Registry,
    body: &Map<String, Value>,
) -> Result<&'r ModelSpec, ApiError> {
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m,
        None | Some(Value::Null) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "BadRequest.EmptyModel",
                "Required parameter \"model\" missing from request.",
            ));
        }
        Some(_) => return Err(ApiError::invalid("model must be a string".into())),
    };
    let exact = registry
        .resolve(model)
        .filter(|r| r.alias_of.is_none() && r.spec.id == *model)
        .map(|r| r.spec);
    exact
        .or_else(|| registry.models().find(|spec| spec.id == *model))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "ModelNotFound",
                format!("Model not exist: {model}"),
            )
        })
}

/// `body[name]` as an object: `None` when absent or null, an error when it is something else.
fn object_field<'b>(
    body: &'b Map<String, Value>,
    name: &str,
) -> Result<Option<&'b Map<String, Value>>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(ApiError::invalid(format!("{name} must be a JSON object"))),
    }
}

/// Checks the input fields each family requires; returns the prompt, if any.
fn check_input(spec: &ModelSpec, input: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    let text = |name: &str| match input.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        None | Some(Value::Null) => Ok(None),
        Some(_) => Err(ApiError::invalid(format!("input.{name} must be a string"))),
    };
    let required = |name: &str| {
        text(name)?.ok_or_else(|| ApiError::invalid(format!("input.{name} is required")))
    };
    match spec.family {
        Family::ImageEdit => {
            let function = required("function")?;
            required("base_image_url")?;
            if function == "description_edit_with_mask" {
                required("mask_image_url")?;
            }
            text("prompt")
        }
        Family::Wan25I2i => {
            let images = input.get("images").and_then(Value::as_array);
            let count = images.map_or(0, Vec::len);
            if !(1..=3).contains(&count) || images.is_some_and(|i| i.iter().any(|v| !v.is_string()))
            {
                return Err(ApiError::invalid(
                    "input.images must be an array of 1 to 3 image URLs".into(),
                ));
            }
            required("prompt").map(Some)
        }
        Family::WanxV1 | Family::WanV2 | Family::Wan25 | Family::Qwen => {
            required("prompt").map(Some)
        }
    }
}

/// `parameters.n`, defaulting as the service does: 1 for wanx2.1-imageedit, else 4, within the
/// model's maximum.
fn check_n(spec: &ModelSpec, parameters: &Map<String, Value>) -> Result<u32, ApiError> {
    let Some(value) = parameters.get("n").filter(|v| !v.is_null()) else {
        let default = if spec.family == Family::ImageEdit {
            1
        } else {
            4
        };
        return Ok(default.clamp(spec.n_min, spec.n_max));
    };
    value
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| (spec.n_min..=spec.n_max).contains(n))
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "n must be an integer between {} and {} for {}, got {value}",
                spec.n_min, spec.n_max, spec.id
            ))
        })
}

/// `parameters.size` (`W*H`, checked against the model's rule), or the size the service would use.
fn check_size(spec: &ModelSpec, parameters: &Map<String, Value>) -> Result<Size, ApiError> {
    let Some(value) = parameters.get("size").filter(|v| !v.is_null()) else {
        return Ok(spec.default_size.unwrap_or(FALLBACK_SIZE));
    };
    let text = value
        .as_str()
        .filter(|s| s.contains('*'))
        .ok_or_else(|| ApiError::invalid(format!("size must be a string `W*H`, got {value}")))?;
    let size: Size = text.parse().map_err(ApiError::invalid)?;
    spec.sizes
        .check(size)
        .map_err(|(reason, hint)| ApiError::invalid(format!("{reason}; {hint}")))?;
    Ok(size)
}

fn check_seed(parameters: &Map<String, Value>) -> Result<Option<u64>, ApiError> {
    match parameters.get("seed") {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .filter(|s| *s <= MAX_SEED)
            .map(Some)
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "seed must be an integer between 0 and {MAX_SEED}, got {value}"
                ))
            }),
    }
}

/// blake3 of the canonical JSON of what decides the pictures: the model, the input, and the
/// parameters other than `n` (which only says how many) and `seed` (mixed in per image).
fn request_digest(
    model: &str,
    input: &Map<String, Value>,
    parameters: &Map<String, Value>,
) -> blake3::Hash {
    let mut parameters = parameters.clone();
    parameters.remove("n");
    parameters.remove("seed");
    let canonical = canonical(&json!({
        "model": model,
        "input": input,
        "parameters": parameters,
    }));
    blake3::hash(canonical.to_string().as_bytes())
}

/// `value` with every object's keys in sorted order, whatever map type `serde_json` was built with.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), canonical(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

// ------------------------------------------------------------------------------------------------
// Tasks and state

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Pending,
    Running,
    Succeeded,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "PENDING",
            Phase::Running => "RUNNING",
            Phase::Succeeded => "SUCCEEDED",
        }
    }
}

/// One submitted task. Its status is a function of time, so nothing has to drive it.
#[derive(Debug)]
struct Task {
    id: String,
    model: String,
    family: Family,
    price: Money,
    n: u32,
    size: Size,
    prompt: Option<String>,
    prompt_extend: bool,
    seed: Option<u64>,
    digest: blake3::Hash,
    submitted: Instant,
    submitted_wall: SystemTime,
    latency: Duration,
    billed: bool,
}

impl Task {
    fn new(id: String, s: Submission, latency: Duration, now: Instant) -> Task {
        Task {
            id,
            model: s.model,
            family: s.family,
            price: s.price,
            n: s.n,
            size: s.size,
            prompt: s.prompt,
            prompt_extend: s.prompt_extend,
            seed: s.seed,
            digest: s.digest,
            submitted: now,
            submitted_wall: SystemTime::now(),
            latency,
            billed: false,
        }
    }

    /// The time spent queued before RUNNING: the first tenth of the latency.
    fn queued(&self) -> Duration {
        self.latency / 10
    }

    fn phase(&self, now: Instant) -> Phase {
        let elapsed = now.saturating_duration_since(self.submitted);
        if elapsed >= self.latency {
            Phase::Succeeded
        } else if elapsed >= self.queued() {
            Phase::Running
        } else {
            Phase::Pending
        }
    }

    /// The seed material of image `index`. With a seed, image `i` is the picture of seed `seed + i`,
    /// as on the service (§2): `n=2, seed=42` repeats `n=1, seed=43` in its second image.
    fn image_material(&self, index: u32) -> Vec<u8> {
        let (tag, value) = self.seed.map_or((&b"index"[..], u64::from(index)), |seed| {
            (&b"seed"[..], seed + u64::from(index))
        });
        let mut material = self.digest.as_bytes().to_vec();
        material.extend_from_slice(tag);
        material.extend_from_slice(&value.to_le_bytes());
        material
    }

    /// The task-query answer (without `request_id`), shaped as §3.
    fn to_json(&self, now: Instant, files_base: &str) -> Value {
        let phase = self.phase(now);
        let mut output = json!({
            "task_id": self.id,
            "task_status": phase.as_str(),
            "submit_time": format_time(self.submitted_wall),
        });
        if phase == Phase::Pending {
            return json!({ "output": output });
        }
        output["scheduled_time"] = json!(format_time(self.submitted_wall + self.queued()));
        let succeeded = if phase == Phase::Succeeded { self.n } else { 0 };
        output["task_metrics"] = json!({"TOTAL": self.n, "SUCCEEDED": succeeded, "FAILED": 0});
        if phase == Phase::Running {
            return json!({ "output": output });
        }
        output["end_time"] = json!(format_time(self.submitted_wall + self.latency));
        output["results"] = (0..self.n).map(|i| self.result(i, files_base)).collect();
        json!({"output": output, "usage": {"image_count": self.n}})
    }

    /// One entry of `results`: the URL, and for the families that rewrite prompts, the prompts.
    fn result(&self, index: u32, files_base: &str) -> Value {
        let mut result = json!({"url": format!("{files_base}/{}/{index}.png", self.id)});
        let rewrites = matches!(
            self.family,
            Family::WanV2 | Family::Wan25 | Family::Qwen | Family::Wan25I2i
        );
        if let (true, Some(prompt)) = (rewrites, &self.prompt) {
            result["orig_prompt"] = json!(prompt);
            if self.prompt_extend {
                result["actual_prompt"] = json!(extended_prompt(prompt));
            }
        }
        result
    }
}

/// What the emulated prompt rewriter makes of a prompt: the prompt plus a fixed embellishment.
fn extended_prompt(prompt: &str) -> String {
    format!("{prompt}. Rich detail, soft natural light, balanced composition, high definition.")
}

/// Everything the server tasks share.
struct Shared {
    config: EmulatorConfig,
    addr: SocketAddr,
    ids: IdGenerator,
    state: Mutex<State>,
}

impl Shared {
    fn new(config: EmulatorConfig, addr: SocketAddr) -> Shared {
        Shared {
            config,
            addr,
            ids: IdGenerator::new(addr),
            state: Mutex::new(State::default()),
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

/// The tasks and the books.
#[derive(Default)]
struct State {
    tasks: HashMap<String, Task>,
    /// Tasks not yet billed, oldest first.
    unbilled: Vec<String>,
    ledger: Ledger,
    /// The exact sums behind the ledger's `amount` fields.
    spent: Money,
    spent_per_model: BTreeMap<String, Money>,
}

impl State {
    fn record(&mut self, request: RecordedRequest) {
        self.ledger.submissions += 1;
        self.model_ledger(&request.model).submissions += 1;
        self.ledger.requests.push(request);
    }

    fn insert(&mut self, task: Task) {
        self.unbilled.push(task.id.clone());
        self.tasks.insert(task.id.clone(), task);
    }

    /// Bills every task that has succeeded by `now`, exactly once each.
    fn settle(&mut self, now: Instant) {
        let mut done = Vec::new();
        self.unbilled.retain(|id| {
            let finished = self
                .tasks
                .get(id)
                .is_none_or(|task| task.phase(now) == Phase::Succeeded);
            if finished {
                done.push(id.clone());
            }
            !finished
        });
        for id in done {
            self.bill(&id);
        }
    }

    fn bill(&mut self, task_id: &str) {
        let Some(task) = self.tasks.get_mut(task_id).filter(|t| !t.billed) else {
            return;
        };
        task.billed = true;
        let (model, images, cost) = (task.model.clone(), task.n, task.price.times(task.n));
        self.spent += cost;
        let model_spent = self.spent_per_model.entry(model.clone()).or_default();
        *model_spent += cost;
        let model_amount = model_spent.as_yuan();
        self.ledger.images_billed += u64::from(images);
        self.ledger.amount = self.spent.as_yuan();
        let entry = self.model_ledger(&model);
        entry.images_billed += u64::from(images);
        entry.amount = model_amount;
    }

    fn model_ledger(&mut self, model: &str) -> &mut ModelLedger {
        self.ledger.per_model.entry(model.to_owned()).or_default()
    }
}

/// Ids shaped like the service's (`8-4-4-4-12` hex), unique per emulator instance and across
/// restarts: blake3 of an instance nonce, a kind and a counter.
struct IdGenerator {
    nonce: [u8; 32],
    counter: AtomicU64,
}

impl IdGenerator {
    fn new(addr: SocketAddr) -> IdGenerator {
        static INSTANCES: AtomicU64 = AtomicU64::new(0);
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"wanx emulator ids");
        hasher.update(&started.to_le_bytes());
        hasher.update(&std::process::id().to_le_bytes());
        hasher.update(&INSTANCES.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        hasher.update(addr.to_string().as_bytes());
        IdGenerator {
            nonce: *hasher.finalize().as_bytes(),
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self, kind: &str) -> String {
        let count = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.nonce);
        hasher.update(kind.as_bytes());
        hasher.update(&count.to_le_bytes());
        uuid_like(&hasher.finalize())
    }
}

/// The first 16 bytes as `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
fn uuid_like(hash: &blake3::Hash) -> String {
    let hex = hash.to_hex();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// `2024-03-01 17:38:24.817`, in UTC.
fn format_time(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since_epoch.subsec_millis()
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        Registry::builtin()
    }

    fn validate(endpoint: &str, body: &Value) -> Result<Submission, ApiError> {
        Submission::validate(&registry(), endpoint, body)
    }

    fn flash(parameters: &Value) -> Value {
        json!({"model": "wan2.2-t2i-flash", "input": {"prompt": "a cat"}, "parameters": parameters})
    }

    #[test]
    fn formats_times_like_the_service_in_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_709_314_704_817);
        assert_eq!(format_time(t), "2024-03-01 17:38:24.817");
        assert_eq!(format_time(UNIX_EPOCH), "1970-01-01 00:00:00.000");
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn ids_are_uuid_shaped_and_unique() {
        let ids = IdGenerator::new(SocketAddr::from(([127, 0, 0, 1], 1)));
        let a = ids.next("task");
        let b = ids.next("task");
        assert_ne!(a, b);
        let lengths: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(lengths, [8, 4, 4, 4, 12]);
        let other = IdGenerator::new(SocketAddr::from(([127, 0, 0, 1], 1)));
        assert_ne!(
            other.next("task"),
            IdGenerator::new(SocketAddr::from(([127, 0, 0, 1], 1))).next("task")
        );
    }

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
        assert_eq!(route(&Method::GET, "/api/v1/tasks/"), Route::NotFound);
        assert_eq!(
            route(&Method::POST, "/api/v1/tasks/abc/cancel"),
            Route::NotFound
        );
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
    fn n_defaults_to_four_as_on_the_service_within_the_model_maximum() {
        assert_eq!(validate(TEXT2IMAGE, &flash(&json!({}))).unwrap().n, 4);
        let qwen = json!({"model": "qwen-image", "input": {"prompt": "a cat"}});
        assert_eq!(validate(TEXT2IMAGE, &qwen).unwrap().n, 1);
        let edit = json!({"model": "wanx2.1-imageedit",
            "input": {"function": "expand", "prompt": "p", "base_image_url": "http://x/a.png"}});
        let edit = validate(IMAGE2IMAGE, &edit).unwrap();
        assert_eq!((edit.n, edit.size), (1, FALLBACK_SIZE));
    }

    #[test]
    fn rejects_what_the_service_rejects() {
        let code = |endpoint, body: Value| validate(endpoint, &body).unwrap_err().code;
        assert_eq!(code(TEXT2IMAGE, json!([])), "InvalidParameter");
        assert_eq!(
            code(TEXT2IMAGE, json!({"input": {"prompt": "p"}})),
            "BadRequest.EmptyModel"
        );
        assert_eq!(
            code(TEXT2IMAGE, json!({"model": "nope", "input": {}})),
            "ModelNotFound"
        );
        assert_eq!(
            code(
                TEXT2IMAGE,
                json!({"model": "wanx2.2-t2i-flash", "input": {"prompt": "p"}})
            ),
            "ModelNotFound",
            "aliases are wanx's, not the service's"
        );
        assert_eq!(
            code(TEXT2IMAGE, json!({"model": "wan2.2-t2i-flash"})),
            "BadRequest.EmptyInput"
        );
        assert_eq!(
            code(
                TEXT2IMAGE,
                json!({"model": "wan2.2-t2i-flash", "input": {}})
            ),
            "InvalidParameter"
        );
        assert_eq!(
            code(TEXT2IMAGE, flash(&json!({"n": 5}))),
            "InvalidParameter"
        );
        assert_eq!(
            code(TEXT2IMAGE, flash(&json!({"n": 0}))),
            "InvalidParameter"
        );
        assert_eq!(
            code(TEXT2IMAGE, flash(&json!({"n": "2"}))),
            "InvalidParameter"
        );
        assert_eq!(
            code(TEXT2IMAGE, flash(&json!({"size": "1024x1024"}))),
            "InvalidParameter"
        );
        assert_eq!(
            code(TEXT2IMAGE, flash(&json!({"seed": -1}))),
            "InvalidParameter"
        );
        assert_eq!(
            code(TEXT2IMAGE, flash(&json!({"prompt_extend": "no"}))),
            "InvalidParameter"
        );
        assert_eq!(
            code(
                TEXT2IMAGE,
                json!({"model": "wan2.2-t2i-flash", "input": {"prompt": "p"}, "parameters": 3})
            ),
            "InvalidParameter"
        );
        let wrong_path = validate(IMAGE2IMAGE, &flash(&json!({}))).unwrap_err();
        assert_eq!(wrong_path.message, "url error, please check url!");
        let no_images =
            json!({"model": "wan2.5-i2i-preview", "input": {"prompt": "p", "images": []}});
        assert_eq!(code(IMAGE2IMAGE, no_images), "InvalidParameter");
        let no_mask = json!({"model": "wanx2.1-imageedit", "input": {"function": "description_edit_with_mask",
            "prompt": "p", "base_image_url": "http://x/a.png"}});
        assert_eq!(code(IMAGE2IMAGE, no_mask), "InvalidParameter");
    }

    #[test]
    fn size_errors_give_the_reason_and_the_range() {
        let error = validate(TEXT2IMAGE, &flash(&json!({"size": "2000*1024"}))).unwrap_err();
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert!(
            error.message.contains("2000") && error.message.contains("1440"),
            "{}",
            error.message
        );
    }

    #[test]
    fn the_digest_ignores_n_seed_and_key_order() {
        let a = validate(
            TEXT2IMAGE,
            &json!({"parameters": {"n": 1, "seed": 5, "size": "1024*1024"},
            "input": {"prompt": "a cat", "negative_prompt": "dogs"}, "model": "wan2.2-t2i-flash"}),
        )
        .unwrap();
        let b = validate(TEXT2IMAGE, &json!({"model": "wan2.2-t2i-flash",
            "input": {"negative_prompt": "dogs", "prompt": "a cat"}, "parameters": {"size": "1024*1024", "n": 3}})).unwrap();
        let c = validate(TEXT2IMAGE, &flash(&json!({"size": "1024*768"}))).unwrap();
        assert_eq!(a.digest, b.digest);
        assert_ne!(a.digest, c.digest);
    }

    fn task(latency_ms: u64, parameters: &Value, now: Instant) -> Task {
        let submission = validate(TEXT2IMAGE, &flash(parameters)).unwrap();
        Task::new(
            "t-1".into(),
            submission,
            Duration::from_millis(latency_ms),
            now,
        )
    }

    #[test]
    fn a_task_is_pending_then_running_then_succeeded() {
        let t0 = Instant::now();
        let task = task(1000, &json!({"n": 2}), t0);
        let at = |ms| task.to_json(t0 + Duration::from_millis(ms), "http://h/files");
        let pending = at(50);
        assert_eq!(pending["output"]["task_status"], "PENDING");
        assert!(pending["output"].get("scheduled_time").is_none());
        let running = at(500);
        assert_eq!(running["output"]["task_status"], "RUNNING");
        assert_eq!(
            running["output"]["task_metrics"],
            json!({"TOTAL": 2, "SUCCEEDED": 0, "FAILED": 0})
        );
        assert!(running["output"].get("results").is_none() && running.get("usage").is_none());
        let done = at(1000);
        assert_eq!(done["output"]["task_status"], "SUCCEEDED");
        assert_eq!(done["usage"], json!({"image_count": 2}));
        let results = done["output"]["results"].as_array().unwrap();
        assert_eq!(results[1]["url"], "http://h/files/t-1/1.png");
        assert_eq!(results[0]["orig_prompt"], "a cat");
        assert!(
            results[0]["actual_prompt"]
                .as_str()
                .unwrap()
                .starts_with("a cat")
        );
        assert!(done["output"]["end_time"].as_str().unwrap().len() == 23);
    }

    #[test]
    fn no_actual_prompt_without_prompt_extend() {
        let t0 = Instant::now();
        let done = task(0, &json!({"prompt_extend": false}), t0).to_json(t0, "http://h/files");
        let result = &done["output"]["results"][0];
        assert_eq!(result["orig_prompt"], "a cat");
        assert!(result.get("actual_prompt").is_none());
    }

    #[test]
    fn image_i_of_seed_s_is_image_0_of_seed_s_plus_i() {
        let t0 = Instant::now();
        let two = task(0, &json!({"n": 2, "seed": 42}), t0);
        let one = task(0, &json!({"n": 1, "seed": 43}), t0);
        assert_eq!(two.image_material(1), one.image_material(0));
        assert_ne!(two.image_material(0), two.image_material(1));
    }

    #[test]
    fn settling_bills_each_task_once() {
        let t0 = Instant::now();
        let mut state = State::default();
        state.insert(task(100, &json!({"n": 3}), t0));
        state.settle(t0);
        assert_eq!(state.ledger.images_billed, 0);
        state.settle(t0 + Duration::from_millis(100));
        state.settle(t0 + Duration::from_millis(200));
        assert_eq!(state.ledger.images_billed, 3);
        assert!((state.ledger.amount - 0.42).abs() < 1e-12);
        assert_eq!(state.ledger.per_model["wan2.2-t2i-flash"].images_billed, 3);
    }

    mod http {
        use super::*;
        use reqwest::header::HeaderMap as ClientHeaders;

        const KEY: &str = "sk-test";

        async fn start(latency_ms: u64) -> Emulator {
            let config = EmulatorConfig {
                latency: Duration::from_millis(latency_ms),
                valid_keys: Some(vec![KEY.to_owned()]),
                ..EmulatorConfig::default()
            };
            Emulator::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
                .await
                .unwrap()
        }

        fn client() -> reqwest::Client {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap()
        }

        fn headers(key: Option<&str>, asynchronous: bool) -> ClientHeaders {
            let mut headers = ClientHeaders::new();
            if let Some(key) = key {
                headers.insert("Authorization", format!("Bearer {key}").parse().unwrap());
            }
            if asynchronous {
                headers.insert("X-DashScope-Async", "enable".parse().unwrap());
            }
            headers
        }

        async fn post(emulator: &Emulator, headers: ClientHeaders, body: &Value) -> (u16, Value) {
            let response = client()
                .post(format!("{}{TEXT2IMAGE}", emulator.base_url()))
                .headers(headers)
                .json(body)
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.json().await.unwrap())
        }

        async fn get_task(emulator: &Emulator, task_id: &str) -> Value {
            let response = client()
                .get(format!("{}/tasks/{task_id}", emulator.base_url()))
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.json().await.unwrap()
        }

        /// Polls every 10 ms until the task is terminal, for at most 2 s.
        async fn wait(emulator: &Emulator, task_id: &str) -> Value {
            for _ in 0..200 {
                let body = get_task(emulator, task_id).await;
                if !matches!(
                    body["output"]["task_status"].as_str(),
                    Some("PENDING" | "RUNNING")
                ) {
                    return body;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("task {task_id} did not finish within 2 s");
        }

        async fn submit_ok(emulator: &Emulator, body: &Value) -> String {
            let (status, answer) = post(emulator, headers(Some(KEY), true), body).await;
            assert_eq!(status, 200, "{answer}");
            assert_eq!(answer["output"]["task_status"], "PENDING");
            assert!(answer["request_id"].is_string());
            answer["output"]["task_id"].as_str().unwrap().to_owned()
        }

        async fn fetch_png(url: &str) -> (u32, u32, Vec<u8>) {
            let response = client().get(url).send().await.unwrap();
            assert_eq!(response.status(), 200, "{url}");
            assert_eq!(response.headers()[CONTENT_TYPE.as_str()], "image/png");
            let bytes = response.bytes().await.unwrap().to_vec();
            let info = png::Decoder::new(std::io::Cursor::new(&bytes))
                .read_info()
                .unwrap();
            let (w, h) = (info.info().width, info.info().height);
            (w, h, bytes)
        }

        #[tokio::test]
        async fn generates_bills_and_serves_a_two_image_task() {
            let emulator = start(50).await;
            let body = flash(&json!({"n": 2, "size": "1024*768", "seed": 7}));
            let task_id = submit_ok(&emulator, &body).await;
            let done = wait(&emulator, &task_id).await;
            assert_eq!(done["output"]["task_status"], "SUCCEEDED", "{done}");
            assert_eq!(done["usage"]["image_count"], 2);
            let urls: Vec<&str> = done["output"]["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["url"].as_str().unwrap())
                .collect();
            assert_eq!(urls.len(), 2);
            let (w0, h0, first) = fetch_png(urls[0]).await;
            let (w1, h1, second) = fetch_png(urls[1]).await;
            assert_eq!((w0, h0, w1, h1), (1024, 768, 1024, 768));
            assert_ne!(first, second);
            assert_eq!(
                fetch_png(urls[0]).await.2,
                first,
                "the same image twice is the same bytes"
            );

            let ledger = emulator.ledger();
            assert_eq!((ledger.submissions, ledger.rejected), (1, 0));
            assert_eq!((ledger.images_billed, ledger.downloads), (2, 3));
            assert!((ledger.amount - 0.28).abs() < 1e-12, "{}", ledger.amount);
            assert_eq!(ledger.per_model["wan2.2-t2i-flash"].images_billed, 2);
            let recorded = &ledger.requests[0];
            assert_eq!(
                (recorded.task_id.as_str(), recorded.model.as_str()),
                (task_id.as_str(), "wan2.2-t2i-flash")
            );
            assert_eq!(recorded.path, format!("{API_PREFIX}{TEXT2IMAGE}"));
            assert_eq!(recorded.body, body);
            assert_eq!(recorded.header("X-DashScope-Async"), Some("enable"));
            assert!(ledger.queries >= 1);

            let served: Ledger = client()
                .get(format!("{}/emulator/ledger", origin(emulator.addr())))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(served.images_billed, 2);
            assert_eq!(served.requests, ledger.requests);
            emulator.shutdown().await;
        }

        #[tokio::test]
        async fn refuses_synchronous_calls() {
            let emulator = start(0).await;
            let (status, answer) = post(
                &emulator,
                headers(Some(KEY), false),
                &flash(&json!({"n": 1})),
            )
            .await;
            assert_eq!(status, 403);
            assert_eq!(answer["code"], "AccessDenied");
            assert_eq!(
                answer["message"],
                "current user api does not support synchronous calls."
            );
            assert!(answer["request_id"].is_string());
            assert_eq!(emulator.ledger().rejected, 1);
        }

        #[tokio::test]
        async fn refuses_a_missing_or_unknown_key() {
            let emulator = start(0).await;
            let (status, answer) =
                post(&emulator, headers(None, true), &flash(&json!({"n": 1}))).await;
            assert_eq!(
                (status, answer["code"].as_str()),
                (401, Some("InvalidApiKey"))
            );
            let (status, answer) = post(
                &emulator,
                headers(Some("sk-other"), true),
                &flash(&json!({"n": 1})),
            )
            .await;
            assert_eq!(
                (status, answer["message"].as_str()),
                (401, Some("Invalid API-key provided."))
            );
            let response = client()
                .get(format!("{}/tasks/whatever", emulator.base_url()))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 401);
            let ledger = emulator.ledger();
            assert_eq!(
                (ledger.submissions, ledger.rejected, ledger.queries),
                (0, 2, 0)
            );
        }

        #[tokio::test]
        async fn rejects_an_oversized_image_and_bad_json_without_billing() {
            let emulator = start(0).await;
            let (status, answer) = post(
                &emulator,
                headers(Some(KEY), true),
                &flash(&json!({"size": "2000*1024", "n": 1})),
            )
            .await;
            assert_eq!(
                (status, answer["code"].as_str()),
                (400, Some("InvalidParameter"))
            );
            assert!(answer["message"].as_str().unwrap().contains("2000"));
            let response = client()
                .post(format!("{}{TEXT2IMAGE}", emulator.base_url()))
                .headers(headers(Some(KEY), true))
                .body("{not json")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 400);
            let answer: Value = response.json().await.unwrap();
            assert_eq!(answer["code"], "InvalidParameter");
            let ledger = emulator.ledger();
            assert_eq!(
                (ledger.submissions, ledger.rejected, ledger.images_billed),
                (0, 2, 0)
            );
            assert!(ledger.requests.is_empty());
        }

        #[tokio::test]
        async fn an_unknown_task_is_unknown_and_an_unknown_path_is_not_found() {
            let emulator = start(0).await;
            let body = get_task(&emulator, "1111").await;
            assert_eq!(
                body["output"],
                json!({"task_id": "1111", "task_status": "UNKNOWN"})
            );
            let response = client()
                .get(format!("{}/nowhere", emulator.base_url()))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 404);
            let answer: Value = response.json().await.unwrap();
            assert_eq!(answer["code"], "NotFound");
            let missing = client()
                .get(format!("{}/files/1111/0.png", origin(emulator.addr())))
                .send()
                .await
                .unwrap();
            assert_eq!(missing.status(), 404);
        }

        #[tokio::test]
        async fn a_request_without_n_bills_four_images() {
            let emulator = start(0).await;
            let task_id = submit_ok(
                &emulator,
                &json!({"model": "wan2.2-t2i-flash", "input": {"prompt": "a cat"}}),
            )
            .await;
            let done = wait(&emulator, &task_id).await;
            assert_eq!(done["usage"]["image_count"], 4);
            assert_eq!(emulator.ledger().images_billed, 4);
        }

        #[tokio::test]
        async fn a_result_is_not_served_before_the_task_succeeds() {
            let emulator = start(10_000).await;
            let task_id = submit_ok(&emulator, &flash(&json!({"n": 1}))).await;
            assert_eq!(
                get_task(&emulator, &task_id).await["output"]["task_status"],
                "PENDING"
            );
            let early = client()
                .get(format!("{}/files/{task_id}/0.png", origin(emulator.addr())))
                .send()
                .await
                .unwrap();
            assert_eq!(early.status(), 404);
            let ledger = emulator.ledger();
            assert_eq!(
                (ledger.submissions, ledger.images_billed, ledger.downloads),
                (1, 0, 0)
            );
        }

        #[tokio::test]
        async fn shutdown_stops_serving() {
            let emulator = start(0).await;
            let url = format!("{}/emulator/ledger", origin(emulator.addr()));
            emulator.shutdown().await;
            assert!(client().get(url).send().await.is_err());
        }
    }
}
