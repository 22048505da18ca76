//! `Client`: the DashScope async image protocol over HTTP (dashscope-protocol.md §1, §3, §4): submit
//! with `X-DashScope-Async: enable`, query `GET /tasks/{id}`, list recent tasks, download results. It
//! owns HTTP and classifies every failure into retry, fail-the-task, stop-the-model or stop-the-build;
//! a submit whose fate is unknown (the request may have reached the service) is told apart from one
//! that provably never left. The executor decides what to do about each.
//!
//! Authorized API calls follow no redirect (the key must never travel to another origin) and read at
//! most [`MAX_API_BODY_BYTES`] of any answer; result downloads and uploads to temporary storage go
//! through a second client that never carries the key.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::compile::Compiled;
use crate::executor::secret::ApiKey;

/// The most wanx reads of an API answer (JSON envelopes are a few kilobytes; a task list page a few
/// dozen).
pub const MAX_API_BODY_BYTES: usize = 4 * 1024 * 1024;

/// What a failure means for the build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderError {
    /// Worth trying again after a pause: throttling, 5xx, timeouts, connection faults.
    Transient { code: String, message: String },
    /// This task cannot succeed as requested: invalid parameters, content inspection.
    Task { code: String, message: String },
    /// No task of this model can succeed with this key (access denied for the model, a model the
    /// region does not serve): its other tasks are not submitted, other models' tasks go on.
    Model { code: String, message: String },
    /// No further task can succeed: bad key, arrears, quota exhausted, a redirecting endpoint.
    Fatal {
        code: String,
        message: String,
        request_id: Option<String>,
    },
}

impl ProviderError {
    pub fn code(&self) -> &str {
        match self {
            ProviderError::Transient { code, .. }
            | ProviderError::Task { code, .. }
            | ProviderError::Model { code, .. }
            | ProviderError::Fatal { code, .. } => code,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            ProviderError::Transient { message, .. }
            | ProviderError::Task { message, .. }
            | ProviderError::Model { message, .. }
            | ProviderError::Fatal { message, .. } => message,
        }
    }
}

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

/// Codes that refuse the key itself: nothing more can succeed in this build.
const KEY_WIDE: [&str; 12] = [
    "InvalidApiKey",
    "invalid_api_key",
    "Arrearage",
    "PrepaidBillOverdue",
    "PostpaidBillOverdue",
    "CommodityNotPurchased",
    "Throttling.AllocationQuota",
    "insufficient_quota",
    "WorkSpaceNotFound",
    "Workspace.AccessDenied",
    "AccessDenied.Workspace",
    "Redirected",
];

/// Sorts an error response by HTTP status and DashScope code together (protocol §4): a 4xx is never
/// retried unless its code is a known throttle, whatever its code's prefix (the service sends
/// `400 InternalError.Algo.DataInspectionFailed`); a refusal names what it is about (the key, or
/// one model).
pub fn classify(
    status: u16,
    code: &str,
    message: &str,
    request_id: Option<String>,
) -> ProviderError {
    let (code, message) = (code.to_owned(), message.to_owned());
    if status == 401 || KEY_WIDE.contains(&code.as_str()) {
        return ProviderError::Fatal {
            code,
            message,
            request_id,
        };
    }
    let refused_model = code == "ModelNotFound"
        || code == "AccessDenied"
        || code.starts_with("AccessDenied.")
        || code.ends_with(".AccessDenied");
    if refused_model {
        return ProviderError::Model { code, message };
    }
    let throttle =
        code == "Throttling" || code.starts_with("Throttling.") || code == "LimitRequests";
    // 408: the service gave up waiting for the request; it was not processed.
    let transient =
        matches!(status, 408 | 429 | 500..=599) || ((400..=499).contains(&status) && throttle);
    if transient {
        ProviderError::Transient { code, message }
    } else {
        ProviderError::Task { code, message }
    }
}

/// Why a submission has no task id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// No task was created: the service answered with an error, or the request provably never
    /// reached it (connection refused, DNS, TLS handshake).
    Refused(ProviderError),
    /// The request may have reached the service, and a task may exist and be billed: the connection
    /// broke or timed out after the request was sent, or the answer could not be read. Sending it
    /// again could pay twice (the service has no idempotency key).
    Ambiguous { code: String, message: String },
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubmitError::Refused(e) => e.fmt(f),
            SubmitError::Ambiguous { code, message } => write!(f, "{code}: {message}"),
        }
    }
}

/// One task of `GET /tasks` (protocol §3 "List"). Times are milliseconds since the Unix epoch.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ListedTask {
    pub task_id: String,
    #[serde(default)]
    pub model_name: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub gmt_create: Option<i64>,
}

#[derive(Deserialize)]
struct TaskList {
    #[serde(default)]
    data: Vec<ListedTask>,
    total_page: Option<u32>,
}

/// The longest wanx waits for an upload to temporary storage of `bytes`: two minutes, plus the time
/// the file takes at 8 KiB/s (a 10 MB image: about 23 minutes), at most an hour (the SDK's limit).
pub fn upload_deadline(bytes: usize) -> Duration {
    let at_slow_link = Duration::from_secs((bytes / (8 * 1024)) as u64);
    (Duration::from_secs(120) + at_slow_link).min(Duration::from_secs(3600))
}

/// A task's state as `GET /tasks/{id}` reports it.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskState {
    Pending,
    Running,
    Succeeded {
        results: Vec<TaskResult>,
        image_count: Option<u32>,
    },
    Failed {
        code: String,
        message: String,
    },
    Canceled,
    /// Not found, or expired after 24 h.
    Unknown,
}

/// One entry of `output.results`: an image URL, or a per-image failure.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct TaskResult {
    pub url: Option<String>,
    pub code: Option<String>,
    pub message: Option<String>,
    pub actual_prompt: Option<String>,
}

#[derive(Deserialize)]
struct Envelope {
    output: Option<Output>,
    usage: Option<Usage>,
    code: Option<String>,
    message: Option<String>,
    request_id: Option<String>,
}

#[derive(Deserialize)]
struct Output {
    task_id: Option<String>,
    task_status: Option<String>,
    #[serde(default)]
    results: Vec<TaskResult>,
    code: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    image_count: Option<u32>,
}

pub struct Client {
    /// For authorized API calls: follows no redirect.
    http: reqwest::Client,
    /// For result downloads and uploads to temporary storage: never given the key.
    files: reqwest::Client,
    base_url: String,
    key: ApiKey,
    workspace: Option<String>,
}

impl Client {
    /// A client whose API calls each end after `timeout` (`[provider] request_timeout`).
    pub fn with_timeout(
        base_url: &str,
        key: ApiKey,
        workspace: Option<String>,
        timeout: Duration,
    ) -> Result<Client, String> {
        // Proxies come from the environment (HTTPS_PROXY, NO_PROXY, …), except for a loopback emulator.
        let emulated = crate::compile::cache_key::Provider::from_base_url(base_url).is_emulated();
        let builder = |redirects: reqwest::redirect::Policy| {
            let builder = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(15))
                .redirect(redirects)
                .user_agent(concat!("wanx/", env!("CARGO_PKG_VERSION")));
            if emulated {
                builder.no_proxy()
            } else {
                builder
            }
        };
        let fail = |e: reqwest::Error| format!("could not start the HTTP client: {e}");
        // The key rides on every API call: a redirect, even to the same host, is refused and named.
        let http = builder(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .build()
            .map_err(fail)?;
        // Downloads and uploads carry no key; each sets its own deadline.
        let files = builder(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(fail)?;
        Ok(Client {
            http,
            files,
            base_url: base_url.trim_end_matches('/').to_owned(),
            key,
            workspace,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let request = request.bearer_auth(self.key.expose());
        match &self.workspace {
            Some(ws) => request.header("X-DashScope-WorkSpace", ws),
            None => request,
        }
    }

    /// Submits a task; returns its remote task id. Tells a refusal (no task exists) from a failure
    /// after the request was sent (a task may exist): see [`SubmitError`].
    pub async fn submit(&self, compiled: &Compiled, body: &Value) -> Result<String, SubmitError> {
        let mut request = self
            .authorized(
                self.http
                    .post(format!("{}{}", self.base_url, compiled.endpoint)),
            )
            .json(body);
        for (name, value) in &compiled.headers {
            request = request.header(*name, value);
        }
        let ambiguous = |code: &str, message: String| SubmitError::Ambiguous {
            code: code.to_owned(),
            message,
        };
        let response = match request.send().await {
            Ok(response) => response,
            // Connection refused, DNS, TLS handshake, connect timeout: nothing was sent.
            Err(e) if e.is_connect() => return Err(SubmitError::Refused(transport_error(e))),
            Err(e) => {
                let code = if e.is_timeout() {
                    "Timeout"
                } else {
                    "Transport"
                };
                return Err(ambiguous(code, e.without_url().to_string()));
            }
        };
        if let Some(e) = redirected(&response) {
            return Err(SubmitError::Refused(e));
        }
        let status = response.status().as_u16();
        let bytes = match read_capped(response, MAX_API_BODY_BYTES).await {
            Ok(bytes) => bytes,
            // The status line arrived: an error status means no task, whatever the body did.
            Err(e) if status >= 300 => {
                return Err(SubmitError::Refused(ProviderError::Transient {
                    code: format!("HTTP{status}"),
                    message: e.message().to_owned(),
                }));
            }
            Err(e) => return Err(ambiguous(e.code(), e.message().to_owned())),
        };
        if (200..300).contains(&status) {
            let envelope: Option<Envelope> = serde_json::from_slice(&bytes).ok();
            return envelope
                .and_then(|e| e.output)
                .and_then(|o| o.task_id)
                .ok_or_else(|| {
                    ambiguous(
                        "BadResponse",
                        format!("HTTP {status} without an `output.task_id`"),
                    )
                });
        }
        // A 5xx the service wrote (a DashScope error with its `code`) is its refusal; one without
        // (a gateway's 502 or 504) may hide a task the service accepted behind it.
        let service_said = serde_json::from_slice::<Envelope>(&bytes)
            .ok()
            .is_some_and(|e| e.code.is_some());
        if status >= 500 && !service_said {
            return Err(ambiguous(
                &format!("HTTP{status}"),
                "a gateway error without the service's answer".to_owned(),
            ));
        }
        Err(SubmitError::Refused(error_of(status, &bytes)))
    }

    /// The tasks of `model` the service lists as created between `from` and `to` (all pages, up to
    /// 1,000 tasks). The list's time filter is written in the service's clock format,
    /// `YYYYMMDDhhmmss`, whose time zone the protocol does not state: the window asked for covers
    /// both UTC and Beijing time (UTC+8), and the caller filters by `gmt_create` (epoch ms).
    pub async fn list_tasks(
        &self,
        model: &str,
        from: SystemTime,
        to: SystemTime,
    ) -> Result<Vec<ListedTask>, ProviderError> {
        let beijing = Duration::from_secs(8 * 3600);
        let start = list_time(from);
        let end = list_time(to + beijing);
        let mut tasks = Vec::new();
        for page in 1..=10u32 {
            let url = format!(
                "{}/tasks?page_no={page}&page_size=100&model_name={model}&start_time={start}&end_time={end}",
                self.base_url
            );
            let (_, bytes) = success_body(self.authorized(self.http.get(url))).await?;
            let list: TaskList =
                serde_json::from_slice(&bytes).map_err(|e| ProviderError::Transient {
                    code: "BadResponse".into(),
                    message: format!("the task list is not the documented JSON: {e}"),
                })?;
            let done = list.data.is_empty() || list.total_page.is_none_or(|pages| page >= pages);
            tasks.extend(list.data);
            if done {
                break;
            }
        }
        Ok(tasks)
    }

    /// Queries a task's state once.
    pub async fn query(&self, task_id: &str) -> Result<TaskState, ProviderError> {
        let envelope = self
            .send(self.authorized(self.http.get(format!("{}/tasks/{task_id}", self.base_url))))
            .await?;
        let Some(output) = envelope.output else {
            return Err(ProviderError::Transient {
                code: "BadResponse".into(),
                message: "the task response had no `output`".into(),
            });
        };
        Ok(match output.task_status.as_deref().unwrap_or("UNKNOWN") {
            "PENDING" => TaskState::Pending,
            "RUNNING" | "SUSPENDED" => TaskState::Running,
            "SUCCEEDED" => TaskState::Succeeded {
                results: output.results,
                image_count: envelope.usage.and_then(|u| u.image_count),
            },
            "FAILED" => TaskState::Failed {
                code: output.code.unwrap_or_else(|| "Unknown".into()),
                message: output.message.unwrap_or_default(),
            },
            "CANCELED" => TaskState::Canceled,
            _ => TaskState::Unknown,
        })
    }

    /// Sends a request and parses the JSON envelope, turning HTTP and DashScope errors into
    /// [`ProviderError`]s. The body is parsed as JSON whatever the content type says (protocol §4).
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Envelope, ProviderError> {
        let (status, bytes) = success_body(request).await?;
        serde_json::from_slice(&bytes).map_err(|_| ProviderError::Transient {
            code: "BadResponse".into(),
            message: format!("HTTP {status} with a body that is not DashScope JSON"),
        })
    }

    /// Streams a result image to `dest` (a new file), refusing more than `max_bytes`, ending at
    /// `deadline` or [`DOWNLOAD_DEADLINE`] from now, whichever comes first (the task's own deadline covers its downloads). A download that runs out of time
    /// is not retried: `ResultTimeout`.
    pub async fn download_until(
        &self,
        url: &str,
        dest: &Path,
        max_bytes: u64,
        deadline: Instant,
    ) -> Result<u64, ProviderError> {
        let deadline = deadline.min(Instant::now() + DOWNLOAD_DEADLINE);
        let fetch = self.fetch_to(url, dest, max_bytes);
        match tokio::time::timeout_at(deadline.into(), fetch).await {
            Ok(done) => done,
            Err(_) => Err(ProviderError::Task {
                code: "ResultTimeout".into(),
                message: "downloading a result ran out of time (the task's `task_timeout`, or 5 minutes per image)".into(),
            }),
        }
    }

    async fn fetch_to(&self, url: &str, dest: &Path, max_bytes: u64) -> Result<u64, ProviderError> {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            let shown: String = url.chars().take(80).collect();
            return Err(ProviderError::Task {
                code: "UnsupportedResultUrl".into(),
                message: format!(
                    "the service returned the result URL `{shown}`, which is not an http(s) URL; wanx downloads results only over http(s)"
                ),
            });
        }
        let response = self.files.get(url).send().await.map_err(transport_error)?;
        let status = response.status().as_u16();
        if status == 403 || status == 404 {
            return Err(ProviderError::Task {
                code: "ResultExpired".into(),
                message: format!(
                    "the result URL answered HTTP {status}: it has expired (URLs live 24 h) or never existed"
                ),
            });
        }
        if !(200..300).contains(&status) {
            return Err(classify(
                status,
                &format!("HTTP{status}"),
                "downloading a result failed",
                None,
            ));
        }
        let io_err = |e: std::io::Error| ProviderError::Transient {
            code: "LocalIo".into(),
            message: format!("writing `{}`: {e}", dest.display()),
        };
        let mut file = tokio::fs::File::create(dest).await.map_err(io_err)?;
        let mut stream = response.bytes_stream();
        let mut written = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(transport_error)?;
            written += chunk.len() as u64;
            if written > max_bytes {
                return Err(ProviderError::Task {
                    code: "ResultTooLarge".into(),
                    message: format!("a result exceeded {max_bytes} bytes"),
                });
            }
            file.write_all(&chunk).await.map_err(io_err)?;
        }
        file.flush().await.map_err(io_err)?;
        Ok(written)
    }
}

/// What to do about a model the service refused for this key (a [`ProviderError::Model`]).
pub fn model_refusal_hint(model: &str, error: &ProviderError) -> String {
    let message = error.message().to_ascii_lowercase();
    match error.code() {
        "AccessDenied" if message.contains("asynchronous") => format!(
            "the service does not take asynchronous calls (`X-DashScope-Async: enable`, the only way wanx submits) for `{model}` with this key; check the model id and its endpoint with `wanx explain`, or use another model for these tasks"
        ),
        "ModelNotFound" => {
            format!("`{model}` is not served in this region: check `model` and `provider.base_url`")
        }
        "AccessDenied.Unpurchased" => format!(
            "the account has not activated `{model}`: activate it in the Model Studio console"
        ),
        _ => format!(
            "this key may not use `{model}`: check the model is activated for the account (and the workspace) in the Model Studio console"
        ),
    }
}

/// The longest one result image may take to download.
pub const DOWNLOAD_DEADLINE: Duration = Duration::from_secs(300);

/// The body of `response`, refusing more than `max` bytes (read no further than that).
/// Sends an API request and reads its body (at most [`MAX_API_BODY_BYTES`]): the status and the
/// body of a success (2xx), or the [`ProviderError`] of a redirect, a transport failure or an
/// error status.
async fn success_body(request: reqwest::RequestBuilder) -> Result<(u16, Vec<u8>), ProviderError> {
    let response = request.send().await.map_err(transport_error)?;
    if let Some(e) = redirected(&response) {
        return Err(e);
    }
    let status = response.status().as_u16();
    let bytes = read_capped(response, MAX_API_BODY_BYTES).await?;
    if !(200..300).contains(&status) {
        return Err(error_of(status, &bytes));
    }
    Ok((status, bytes))
}

async fn read_capped(response: reqwest::Response, max: usize) -> Result<Vec<u8>, ProviderError> {
    let mut stream = response.bytes_stream();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(transport_error)?;
        if body.len() + chunk.len() > max {
            return Err(ProviderError::Transient {
                code: "ResponseTooLarge".into(),
                message: format!(
                    "the service's answer exceeded {} MB; wanx stopped reading it",
                    max / (1024 * 1024)
                ),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The error a redirect of an authorized call means, naming where it pointed; `None` for any other
/// answer.
fn redirected(response: &reqwest::Response) -> Option<ProviderError> {
    let status = response.status();
    if !status.is_redirection() {
        return None;
    }
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .map_or_else(
            || "nowhere".to_owned(),
            |l| String::from_utf8_lossy(l.as_bytes()).into_owned(),
        );
    Some(ProviderError::Fatal {
        code: "Redirected".into(),
        message: format!(
            "the API answered HTTP {} redirecting to `{location}`; wanx follows no redirect with the API key",
            status.as_u16()
        ),
        request_id: None,
    })
}

/// The error an API answer with HTTP `status` (not 2xx) means. A redirect is refused: following it
/// would send the key to wherever it points.
fn error_of(status: u16, bytes: &[u8]) -> ProviderError {
    if (300..400).contains(&status) {
        return ProviderError::Fatal {
            code: "Redirected".into(),
            message: format!(
                "the API answered HTTP {status}; wanx follows no redirect with the API key"
            ),
            request_id: None,
        };
    }
    match serde_json::from_slice::<Envelope>(bytes).ok() {
        Some(e) => classify(
            status,
            &e.code.unwrap_or_else(|| format!("HTTP{status}")),
            &e.message.unwrap_or_default(),
            e.request_id,
        ),
        None => classify(
            status,
            &format!("HTTP{status}"),
            &String::from_utf8_lossy(bytes)
                .chars()
                .take(200)
                .collect::<String>(),
            None,
        ),
    }
}

/// `YYYYMMDDhhmmss` in UTC, the task list's time format.
fn list_time(time: SystemTime) -> String {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (year, month, day) = crate::tree::output_name::civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[derive(Deserialize)]
struct PolicyEnvelope {
    data: Option<Policy>,
}

#[derive(Deserialize)]
#[allow(
    clippy::struct_field_names,
    reason = "the wire names the field `policy`"
)]
struct Policy {
    policy: String,
    signature: String,
    upload_dir: String,
    upload_host: String,
    oss_access_key_id: String,
    x_oss_object_acl: Option<String>,
    x_oss_forbid_overwrite: Option<String>,
}

impl Client {
    /// Uploads a local image through DashScope's temporary storage (protocol §8): a policy from
    /// `GET /uploads?action=getPolicy`, a form POST to the object store, and the `oss://` URL the
    /// model request then uses (with `X-DashScope-OssResourceResolve: enable`). The file is bound to
    /// `model` and lives 48 hours.
    pub async fn upload(
        &self,
        model: &str,
        file_name: &str,
        bytes: Vec<u8>,
    ) -> Result<String, ProviderError> {
        // Model ids are URL-safe (letters, digits, `.`, `-`).
        let request = self.authorized(self.http.get(format!(
            "{}/uploads?action=getPolicy&model={model}",
            self.base_url
        )));
        let (_, body) = success_body(request).await?;
        let policy = serde_json::from_slice::<PolicyEnvelope>(&body)
            .ok()
            .and_then(|p| p.data)
            .ok_or_else(|| ProviderError::Transient {
                code: "BadResponse".into(),
                message: "the upload policy response had no `data`".into(),
            })?;
        let key = format!("{}/{file_name}", policy.upload_dir);
        let size = bytes.len();
        let mime = match crate::media::sniff(&bytes) {
            Some(format) => format.mime(),
            None => "application/octet-stream",
        };
        let form = reqwest::multipart::Form::new()
            .text("OSSAccessKeyId", policy.oss_access_key_id)
            .text("Signature", policy.signature)
            .text("policy", policy.policy)
            .text("key", key.clone())
            .text(
                "x-oss-object-acl",
                policy.x_oss_object_acl.unwrap_or_else(|| "private".into()),
            )
            .text(
                "x-oss-forbid-overwrite",
                policy
                    .x_oss_forbid_overwrite
                    .unwrap_or_else(|| "true".into()),
            )
            .text("success_action_status", "200")
            .text("x-oss-content-type", mime)
            .part(
                "file",
                reqwest::multipart::Part::bytes(bytes).file_name(file_name.to_owned()),
            );
        // The object store takes the signed form, never the API key; a large file on a slow link
        // gets the time it needs.
        let deadline = upload_deadline(size);
        let response = self
            .files
            .post(&policy.upload_host)
            .timeout(deadline)
            .multipart(form)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            Ok(format!("oss://{key}"))
        } else if status >= 500 {
            Err(ProviderError::Transient {
                code: format!("HTTP{status}"),
                message: "the upload to temporary storage failed".into(),
            })
        } else {
            Err(ProviderError::Task {
                code: format!("UploadRefused{status}"),
                message: "the object store refused the upload".into(),
            })
        }
    }
}

/// Connection faults and timeouts are transient. The message never contains the key: reqwest's
/// errors name the URL, and no URL carries it.
fn transport_error(e: reqwest::Error) -> ProviderError {
    let code = if e.is_connect() {
        "ConnectionFailed"
    } else if e.is_timeout() {
        "Timeout"
    } else {
        "Transport"
    };
    ProviderError::Transient {
        code: code.into(),
        message: e.without_url().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_code_and_status() {
        assert!(matches!(
            classify(429, "Throttling.RateQuota", "", None),
            ProviderError::Transient { .. }
        ));
        assert!(matches!(
            classify(429, "Throttling.AllocationQuota", "", None),
            ProviderError::Fatal { .. }
        ));
        assert!(matches!(
            classify(401, "InvalidApiKey", "", None),
            ProviderError::Fatal { .. }
        ));
        assert!(matches!(
            classify(403, "AccessDenied.Unpurchased", "", None),
            ProviderError::Model { .. }
        ));
        assert!(matches!(
            classify(403, "Workspace.AccessDenied", "", None),
            ProviderError::Fatal { .. }
        ));
        assert!(matches!(
            classify(400, "InternalError.Algo.InvalidParameter", "", None),
            ProviderError::Task { .. }
        ));
        assert!(matches!(
            classify(429, "Throttling", "", None),
            ProviderError::Transient { .. }
        ));
        assert!(matches!(
            classify(400, "Throttling.RateQuota", "", None),
            ProviderError::Transient { .. }
        ));
        assert!(matches!(
            classify(400, "InvalidParameter", "", None),
            ProviderError::Task { .. }
        ));
        assert!(matches!(
            classify(400, "DataInspectionFailed", "", None),
            ProviderError::Task { .. }
        ));
        assert!(matches!(
            classify(500, "InternalError", "", None),
            ProviderError::Transient { .. }
        ));
        assert!(matches!(
            classify(503, "ModelUnavailable", "", None),
            ProviderError::Transient { .. }
        ));
    }

    /// Every recorded error body of the real service (`../shared/recorded/dashscope/err_*.json`,
    /// beside the repository as in CI) is classified as its meaning says; a new recording fails
    /// here until it is added to the table.
    #[test]
    fn every_recorded_error_is_classified_by_status_and_code() {
        let expected: &[(&str, &str)] = &[
            ("err_400_algo_data_inspection.json", "task"),
            ("err_400_algo_invalid_parameter.json", "task"),
            ("err_400_arrearage.json", "fatal"),
            ("err_400_data_inspection.json", "task"),
            ("err_400_invalid_parameter.json", "task"),
            ("err_400_unsupported_op.json", "task"),
            ("err_401_invalid_api_key.json", "fatal"),
            ("err_403_async_unsupported.json", "model"),
            ("err_429_throttling.json", "transient"),
        ];
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/recorded/dashscope");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.starts_with("err_") {
                continue;
            }
            let recorded: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let status = recorded["status"].as_u64().unwrap() as u16;
            let body = serde_json::to_vec(&recorded["body"]).unwrap();
            let class = match error_of(status, &body) {
                ProviderError::Transient { .. } => "transient",
                ProviderError::Task { .. } => "task",
                ProviderError::Model { .. } => "model",
                ProviderError::Fatal { .. } => "fatal",
            };
            let want = expected
                .iter()
                .find(|(file, _)| *file == name)
                .unwrap_or_else(|| panic!("{name} is not in the table: classify it"))
                .1;
            assert_eq!(class, want, "{name}");
            seen += 1;
        }
        assert_eq!(seen, expected.len(), "every listed recording exists");
    }

    #[test]
    fn an_upload_of_ten_megabytes_gets_far_more_than_the_api_timeout() {
        assert_eq!(upload_deadline(0), Duration::from_secs(120));
        let ten_mb = upload_deadline(10 * 1024 * 1024);
        assert!(ten_mb >= Duration::from_secs(1200), "{ten_mb:?}");
        assert_eq!(upload_deadline(1 << 40), Duration::from_secs(3600));
    }

    #[test]
    fn list_times_are_utc_digits() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_260_684);
        assert_eq!(list_time(t), "20240301023804");
    }
}
