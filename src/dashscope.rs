//! `Client`: the DashScope async image protocol over HTTP (dashscope-protocol.md §1, §3, §4): submit
//! with `X-DashScope-Async: enable`, query `GET /tasks/{id}`, download results. It owns HTTP and
//! classifies every failure into retry, fail-the-task or stop-the-build; the executor decides what to
//! do about each.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::compile::Compiled;
use crate::secret::ApiKey;

/// What a failure means for the build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderError {
    /// Worth trying again after a pause: throttling, 5xx, timeouts, connection faults.
    Transient { code: String, message: String },
    /// This task cannot succeed as requested: invalid parameters, content inspection.
    Task { code: String, message: String },
    /// No further task can succeed: bad key, no access, arrears, quota exhausted.
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
            | ProviderError::Fatal { code, .. } => code,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            ProviderError::Transient { message, .. }
            | ProviderError::Task { message, .. }
            | ProviderError::Fatal { message, .. } => message,
        }
    }
}

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

/// Sorts an error response by HTTP status and DashScope code (protocol §4).
pub fn classify(
    status: u16,
    code: &str,
    message: &str,
    request_id: Option<String>,
) -> ProviderError {
    let (code, message) = (code.to_owned(), message.to_owned());
    let fatal = matches!(
        code.as_str(),
        "InvalidApiKey"
            | "Arrearage"
            | "Throttling.AllocationQuota"
            | "ModelNotFound"
            | "WorkSpaceNotFound"
            | "PrepaidBillOverdue"
            | "PostpaidBillOverdue"
            | "CommodityNotPurchased"
            | "insufficient_quota"
            | "invalid_api_key"
    ) || code.starts_with("AccessDenied")
        || code.ends_with(".AccessDenied")
        || status == 401;
    if fatal {
        return ProviderError::Fatal {
            code,
            message,
            request_id,
        };
    }
    let transient = status == 429
        || status == 408
        || status >= 500
        || code.starts_with("Throttling")
        || code.starts_with("InternalError")
        || code == "SystemError"
        || code == "ModelUnavailable"
        || code == "RequestTimeOut";
    if transient {
        ProviderError::Transient { code, message }
    } else {
        ProviderError::Task { code, message }
    }
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
    http: reqwest::Client,
    base_url: String,
    key: ApiKey,
    workspace: Option<String>,
}

impl Client {
    pub fn new(base_url: &str, key: ApiKey, workspace: Option<String>) -> Result<Client, String> {
        // Proxies come from the environment (HTTPS_PROXY, NO_PROXY, …), except for a loopback emulator.
        let mut builder = reqwest::Client::builder();
        if crate::cache_key::Provider::from_base_url(base_url).is_emulated() {
            builder = builder.no_proxy();
        }
        let http = builder
            .connect_timeout(Duration::from_secs(15))
            .timeout(Duration::from_secs(120))
            .user_agent(concat!("wanx/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("could not start the HTTP client: {e}"))?;
        Ok(Client {
            http,
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

    /// Submits a task; returns its remote task id.
    pub async fn submit(&self, compiled: &Compiled, body: &Value) -> Result<String, ProviderError> {
        let mut request = self
            .authorized(
                self.http
                    .post(format!("{}{}", self.base_url, compiled.endpoint)),
            )
            .json(body);
        for (name, value) in &compiled.headers {
            request = request.header(*name, value);
        }
        let envelope = self.send(request).await?;
        envelope
            .output
            .and_then(|o| o.task_id)
            .ok_or_else(|| ProviderError::Transient {
                code: "BadResponse".into(),
                message: "the submit response had no `output.task_id`".into(),
            })
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
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(transport_error)?;
        let envelope: Option<Envelope> = serde_json::from_slice(&bytes).ok();
        if (200..300).contains(&status) {
            return envelope.ok_or_else(|| ProviderError::Transient {
                code: "BadResponse".into(),
                message: format!("HTTP {status} with a body that is not DashScope JSON"),
            });
        }
        let (code, message, request_id) = match envelope {
            Some(e) => (
                e.code.unwrap_or_else(|| format!("HTTP{status}")),
                e.message.unwrap_or_default(),
                e.request_id,
            ),
            None => (
                format!("HTTP{status}"),
                String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                None,
            ),
        };
        Err(classify(status, &code, &message, request_id))
    }

    /// Streams a result image to `dest` (a new file), refusing more than `max_bytes`. Result URLs are
    /// pre-signed object-store URLs: the API key is never sent to them.
    pub async fn download(
        &self,
        url: &str,
        dest: &Path,
        max_bytes: u64,
    ) -> Result<u64, ProviderError> {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            let shown: String = url.chars().take(80).collect();
            return Err(ProviderError::Task {
                code: "UnsupportedResultUrl".into(),
                message: format!(
                    "the service returned the result URL `{shown}`, which is not an http(s) URL; wanx downloads results only over http(s)"
                ),
            });
        }
        let response = self
            .http
            .get(url)
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .map_err(transport_error)?;
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
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(transport_error)?;
        if !(200..300).contains(&status) {
            let e: Option<Envelope> = serde_json::from_slice(&body).ok();
            let (code, message) = e.map_or((format!("HTTP{status}"), String::new()), |e| {
                (e.code.unwrap_or_default(), e.message.unwrap_or_default())
            });
            return Err(classify(status, &code, &message, None));
        }
        let policy = serde_json::from_slice::<PolicyEnvelope>(&body)
            .ok()
            .and_then(|p| p.data)
            .ok_or_else(|| ProviderError::Transient {
                code: "BadResponse".into(),
                message: "the upload policy response had no `data`".into(),
            })?;
        let key = format!("{}/{file_name}", policy.upload_dir);
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
        // The object store takes the signed form, never the API key.
        let response = self
            .http
            .post(&policy.upload_host)
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
    let code = if e.is_timeout() {
        "Timeout"
    } else if e.is_connect() {
        "ConnectionFailed"
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
            ProviderError::Fatal { .. }
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
}
