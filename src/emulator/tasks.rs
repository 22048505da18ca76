//! The task routes (protocol §1, §3): submit (validate, inject faults, check the quotas, record),
//! query one task, list the recent ones, cancel a PENDING one, and download a result image.

use std::collections::BTreeMap;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::emulator::config::{Fault, FaultEvent};
use crate::emulator::ledger::RecordedRequest;
use crate::emulator::placeholder_png;
use crate::emulator::request::{
    ApiError, Media, Submission, dashscope_headers, data_inspection, header_enabled, read_json,
    require_async,
};
use crate::emulator::response::{Answer, ConnectionReset, fault_status, json_response, oss_error};
use crate::emulator::shared::{Shared, object_store_fault, public_origin};
use crate::emulator::state::{Outcome, State, Task};
use crate::media::{image_size, sniff};
use crate::size::Size;

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
pub(crate) async fn submit(
    shared: &Shared,
    endpoint: &'static str,
    request: Request<Incoming>,
) -> Answer {
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

/// `GET /tasks/{id}`: the task's `output` (and `usage` once it succeeded).
pub(crate) async fn query(shared: &Shared, headers: &HeaderMap, task_id: &str) -> Answer {
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
pub(crate) fn list(shared: &Shared, request: &Request<Incoming>) -> Response<Full<Bytes>> {
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
pub(crate) fn cancel(shared: &Shared, headers: &HeaderMap, task_id: &str) -> Response<Full<Bytes>> {
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
pub(crate) async fn download(shared: &Shared, task_id: &str, index: u32) -> Answer {
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
