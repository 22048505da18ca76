//! Submission: the request as sent (media inline or uploaded), retries on transient refusals, and
//! the recovery of a submission whose answer was lost.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::failure::Failure;
use super::job::{Event, Job};
use super::limits::ModelLimit;
use super::shared::{Shared, stop, with_store};
use crate::compile::Compiled;
use crate::executor::dashscope::{Client, ListedTask, ProviderError, SubmitError};
use crate::planner::MediaSource;

/// Submission attempts on transient errors before the task fails.
pub(super) const MAX_SUBMIT_ATTEMPTS: u32 = 6;

/// Submits `body`, again after a refusal worth retrying (throttling, 5xx, a connection that never
/// opened). A failure after the request was sent is never retried: the service may have created
/// (and will bill) the task, so it is looked for in the service's task list instead ([`recover`]).
pub(super) async fn submit_with_retries(
    shared: &Arc<Shared>,
    client: &Client,
    limit: &ModelLimit,
    job: &Job,
    sent: &Compiled,
    body: &Value,
) -> Result<String, Failure> {
    let mut backoff = Duration::from_millis(500);
    for attempt in 1..=MAX_SUBMIT_ATTEMPTS {
        if let Some(reason) = shared.halted() {
            return Err(Failure::skipped(reason));
        }
        // The first attempt's turn was taken before journaling (`run_remote_task`).
        if attempt > 1 {
            limit.pacer.wait().await;
        }
        let sent_at = SystemTime::now();
        let submitted = {
            let _submitting = limit.submitting.read().await;
            let submitted = client.submit(sent, body).await;
            if let Ok(remote) = &submitted {
                let mut known = shared.known.lock().expect("never poisoned");
                known.insert(remote.clone());
            }
            submitted
        };
        let error = match submitted {
            Ok(remote) => {
                limit.recover_once();
                return Ok(remote);
            }
            Err(SubmitError::Ambiguous { code, message }) => {
                return recover(shared, client, limit, job, body, sent_at, &code, &message).await;
            }
            Err(SubmitError::Refused(error)) => error,
        };
        match error {
            ProviderError::Transient { code, message } if attempt < MAX_SUBMIT_ATTEMPTS => {
                if code.starts_with("Throttling") {
                    limit.cut_once();
                }
                let wait = backoff + jitter(backoff / 4);
                (shared.exec.on_event)(Event::Retrying {
                    id: job.id.clone(),
                    error: format!("{code}: {message}"),
                    wait,
                });
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            e @ ProviderError::Fatal { .. } => {
                let message = format!("submission refused: {e}");
                stop(shared, e);
                return Err(message.into());
            }
            e @ ProviderError::Model { .. } => {
                shared.refuse_model(&job.compiled.model, &e);
                let hint = crate::executor::dashscope::model_refusal_hint(&job.compiled.model, &e);
                return Err(format!(
                    "submission refused: {e}; `{}`'s other tasks are not submitted, other models' go on; hint: {hint}",
                    job.compiled.model
                )
                .into());
            }
            e => return Err(format!("submission failed: {e}").into()),
        }
    }
    unreachable!("the last attempt returns")
}

/// How far the service's clock and ours may disagree when matching a listed task's creation time.
pub(super) const CLOCK_SLACK: Duration = Duration::from_secs(30);

/// After a submission sent at `sent_at` failed without an answer (`code`: `message`): finds the task
/// it may have created in the service's task list. Exactly one task of the model, created in the
/// window and unknown to this build and project, is adopted; otherwise the submission is reported
/// as "may have been billed", with its price, and not sent again in this build.
#[allow(
    clippy::too_many_arguments,
    reason = "the failed submission's context, all needed to report it"
)]
pub(super) async fn recover(
    shared: &Arc<Shared>,
    client: &Client,
    limit: &ModelLimit,
    job: &Job,
    body: &Value,
    sent_at: SystemTime,
    code: &str,
    message: &str,
) -> Result<String, Failure> {
    let model = &job.compiled.model;
    (shared.exec.on_event)(Event::Retrying {
        id: job.id.clone(),
        error: format!(
            "{code}: {message}; the service may have accepted the task: looking for it in its task list"
        ),
        wait: Duration::ZERO,
    });
    // No other submission of this model is in the air (unanswered, unknown) while we look.
    let _alone = limit.submitting.write().await;
    let from = sent_at - CLOCK_SLACK;
    let since = from
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    // Without the project's own recent ids, an earlier build's task could pass for this one.
    let known = with_store(shared, move |s| s.remote_ids_since(since)).await;
    let mut found = Err(String::new());
    let pauses: &[Duration] = match &known {
        Ok(_) => &[Duration::ZERO, Duration::from_secs(1)],
        Err(e) => {
            found = Err(format!("the build database could not be read ({e})"));
            &[]
        }
    };
    let mut known = known.unwrap_or_default();
    known.extend(shared.known.lock().expect("never poisoned").iter().cloned());
    // A task just created may take a moment to be listed.
    for pause in pauses.iter().copied() {
        tokio::time::sleep(pause).await;
        let to = SystemTime::now() + CLOCK_SLACK;
        found = match client.list_tasks(model, from, to).await {
            Ok(listed) => Ok(candidates(&listed, model, from, to, &known)),
            Err(e) => Err(format!("the service's task list could not be read ({e})")),
        };
        if !matches!(&found, Ok(c) if c.is_empty()) {
            break;
        }
    }
    let why = match found {
        Ok(c) if c.len() == 1 => {
            let remote = c[0].clone();
            shared
                .known
                .lock()
                .expect("never poisoned")
                .insert(remote.clone());
            (shared.exec.on_event)(Event::Retrying {
                id: job.id.clone(),
                error: format!(
                    "found task `{remote}` in the service's list: taking it instead of paying again"
                ),
                wait: Duration::ZERO,
            });
            return Ok(remote);
        }
        Ok(c) if c.is_empty() => "no such task is in the service's list".to_owned(),
        Ok(c) => format!(
            "{} tasks of `{model}` created then are in the service's list, none known to be it",
            c.len()
        ),
        Err(why) => why,
    };
    let images = body["parameters"]["n"]
        .as_u64()
        .map_or(job.compiled.n, |n| n as u32);
    let maybe = job.compiled.price.times(images);
    Err(Failure {
        message: format!(
            "the submission broke after it was sent ({code}: {message}) and {why}: the service may have billed it (up to {maybe}); it is not sent again in this build, and the next build submits it again"
        ),
        maybe_billed: maybe,
        ..Failure::default()
    })
}

/// The listed tasks that may be an unanswered submission's: of `model`, created within
/// `from..=to`, and not among the `known` ids.
pub(super) fn candidates(
    listed: &[ListedTask],
    model: &str,
    from: SystemTime,
    to: SystemTime,
    known: &HashSet<String>,
) -> Vec<String> {
    let ms = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    };
    let window = ms(from)..=ms(to);
    let mut ids: Vec<String> = listed
        .iter()
        .filter(|t| t.model_name == model && !known.contains(&t.task_id))
        .filter(|t| t.gmt_create.is_none_or(|at| window.contains(&at)))
        .map(|t| t.task_id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The request as it is sent: local files and upstream images placed in the body, inline as data
/// URIs where the model takes them, otherwise uploaded to temporary storage as `oss://` URLs (with
/// the header that lets the service resolve them). The key never depends on which.
pub(super) async fn prepare_request(
    shared: &Arc<Shared>,
    client: &Client,
    job: &Job,
) -> Result<Compiled, Failure> {
    let mut sent = job.compiled.clone();
    for (pointer, source) in &job.media {
        let path = match source {
            MediaSource::File(path) => path.clone(),
            MediaSource::Blob(hash) => shared.exec.blobs.path(hash),
        };
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| format!("could not read input `{}`: {e}", path.display()))?;
        if let MediaSource::Blob(hash) = source
            && blake3::hash(&bytes).to_hex().as_str() != hash
        {
            {
                return Err(format!(
                    "the cached input image {hash} is corrupt; run `wanx verify --repair`"
                )
                .into());
            }
        }
        let value = if job.inline_media {
            crate::media::data_uri(&bytes)
        } else {
            let name = format!(
                "{}.{}",
                &blake3::hash(&bytes).to_hex()[..16],
                crate::media::sniff(&bytes).map_or("bin", |f| f.extension())
            );
            let mut backoff = Duration::from_millis(500);
            let mut attempt = 0;
            loop {
                attempt += 1;
                match client
                    .upload(&job.compiled.model, &name, bytes.clone())
                    .await
                {
                    Ok(url) => break url,
                    Err(ProviderError::Transient { code, message })
                        if attempt < MAX_SUBMIT_ATTEMPTS =>
                    {
                        (shared.exec.on_event)(Event::Retrying {
                            id: job.id.clone(),
                            error: format!("upload: {code}: {message}"),
                            wait: backoff,
                        });
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    }
                    Err(e @ ProviderError::Fatal { .. }) => {
                        let message = format!("uploading an input was refused: {e}");
                        stop(shared, e);
                        return Err(message.into());
                    }
                    Err(e @ ProviderError::Model { .. }) => {
                        shared.refuse_model(&job.compiled.model, &e);
                        return Err(format!("uploading an input was refused: {e}").into());
                    }
                    Err(e) => return Err(format!("uploading an input failed: {e}").into()),
                }
            }
        };
        match sent.body.pointer_mut(pointer) {
            Some(slot) => *slot = Value::String(value),
            None => return Err(format!("no place `{pointer}` in the request for an input").into()),
        }
    }
    let uses_oss = job.media.iter().any(|_| !job.inline_media);
    if uses_oss
        && !sent
            .headers
            .iter()
            .any(|(name, _)| *name == "X-DashScope-OssResourceResolve")
    {
        sent.headers
            .push(("X-DashScope-OssResourceResolve", "enable".to_owned()));
    }
    Ok(sent)
}

/// A pseudo-random duration in `[0, max)`, from the clock's low bits: spreads retries apart.
pub(super) fn jitter(max: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let max_ns = max.as_nanos().max(1) as u64;
    Duration::from_nanos(u64::from(nanos) % max_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(id: &str, model: &str, at_ms: Option<i64>) -> ListedTask {
        ListedTask {
            task_id: id.to_owned(),
            model_name: model.to_owned(),
            status: "RUNNING".to_owned(),
            gmt_create: at_ms,
        }
    }

    #[test]
    fn an_unanswered_submissions_candidates_are_unknown_tasks_of_its_model_in_its_window() {
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let (from, to) = (at(1000), at(1060));
        let known: HashSet<String> = ["mine".to_owned()].into();
        let tasks = [
            listed("it", "m", Some(1_030_000)),
            listed("mine", "m", Some(1_030_000)),
            listed("other-model", "n", Some(1_030_000)),
            listed("too-early", "m", Some(999_999)),
            listed("too-late", "m", Some(1_060_001)),
        ];
        assert_eq!(candidates(&tasks, "m", from, to, &known), ["it"]);
        // Without a creation time, the service's own window is trusted.
        let twice = [
            listed("it", "m", None),
            listed("also", "m", Some(1_000_000)),
        ];
        assert_eq!(candidates(&twice, "m", from, to, &known), ["also", "it"]);
    }
}
