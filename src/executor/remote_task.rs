//! One remote task: journal, submit, poll to its end, book what it billed, download.

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use super::download::download_all;
use super::failure::{Failure, FailureKind};
use super::job::{Event, Job};
use super::limits::ModelLimit;
use super::poll::PollSchedule;
use super::shared::{Shared, stop, with_store};
use super::submit::submit_with_retries;
use crate::compile::Compiled;
use crate::executor::dashscope::{Client, ProviderError, TaskState};
use crate::money::Money;
use crate::store::{Charge, JournalIntent, StoredImage};
use crate::tree::output_name;

/// What one remote task produced.
pub(super) struct RemoteTask {
    pub(super) remote: String,
    /// Its images by result index: `None` where the service failed to make one.
    pub(super) images: Vec<Option<StoredImage>>,
    /// Images the service billed (booked by this build).
    pub(super) billed: u32,
    pub(super) took: f64,
    pub(super) journal_id: i64,
}

/// One remote task: journal, submit (with retries), poll, book what it billed, download. A task
/// billed whose images could not all be fetched or stored stays journaled (with those it saved):
/// the next build fetches the rest without paying again.
pub(super) async fn run_remote_task(
    shared: &Arc<Shared>,
    client: &Client,
    limit: &ModelLimit,
    job: &Job,
    sent: &Compiled,
    body: Value,
    n: u32,
) -> Result<RemoteTask, Failure> {
    let intent = JournalIntent {
        key: job.key.hex(),
        task_id: job.id.clone(),
        model: job.compiled.model.clone(),
        request_json: body.to_string(),
        images: n,
        created_at: output_name::now_unix(),
    };
    // A quota slot is a task in progress on the service: held from submission until it ends there,
    // not while its images download.
    let slot = limit
        .in_flight
        .acquire()
        .await
        .expect("model semaphores are never closed");
    // The global limit (`-j`) counts tasks in flight, taken only with the model's slot: tasks queued
    // behind one model's quota never hold permits another model's tasks could use.
    let job_permit = shared
        .jobs
        .acquire()
        .await
        .expect("the job semaphore is never closed");
    // Wait for the first submission's turn before journaling it: an entry without a remote id
    // warns "may have been billed twice", so a crash during this wait must leave none.
    limit.pacer.wait().await;
    may_submit(shared, job)?;
    let journal_id = with_store(shared, move |s| s.journal_begin(&intent))
        .await
        .map_err(Failure::io)?;
    let remote = match submit_with_retries(shared, client, limit, job, sent, &body).await {
        Ok(remote) => remote,
        Err(e) => {
            finish_journals(shared, vec![journal_id])
                .await
                .map_err(Failure::io)?;
            return Err(e);
        }
    };
    let remote2 = remote.clone();
    with_store(shared, move |s| s.journal_submitted(journal_id, &remote2))
        .await
        .map_err(Failure::io)?;
    (shared.exec.on_event)(Event::Submitted {
        id: job.id.clone(),
        remote: remote.clone(),
    });
    let since = Instant::now();
    // An error here leaves the task journaled: the next build resumes it rather than paying again.
    let waited = wait_for(shared, client, &job.id, &job.compiled.model, &remote, since).await?;
    drop(slot);
    drop(job_permit);
    let (results, took) = match waited {
        Waited::Done(results, took) => (results, took),
        Waited::Ended(message) => {
            finish_journals(shared, vec![journal_id])
                .await
                .map_err(Failure::io)?;
            return Err(message.into());
        }
    };
    let billed = billed_by(&results);
    let booked = book(
        shared,
        journal_id,
        &job.id,
        &job.compiled.model,
        &remote,
        billed,
    )
    .await
    .map_err(Failure::io)?;
    let paid = |message: String| Failure {
        kind: FailureKind::Download,
        message,
        images_billed: booked,
        spent: job.compiled.price.times(booked),
        maybe_billed: Money::ZERO,
    };
    // `task_timeout` runs from submission to downloaded result.
    let deadline = since + shared.exec.task_timeout;
    let (mut images, fetched) = download_all(shared, client, &results, &[], deadline).await;
    images.resize(n as usize, None);
    if let Err(e) = fetched {
        // Paid for and still on the service for 24 h: the entry stays open with what was saved.
        let saved = images.clone();
        let kept = saved.iter().flatten().count();
        let recorded = with_store(shared, move |s| s.journal_saved(journal_id, &saved)).await;
        let note = recorded.err().map_or(String::new(), |e| format!(" ({e})"));
        return Err(paid(format!(
            "{e}; the service billed {billed} image(s) for task `{remote}`: it stays journaled with the {kept} saved{note}, and the next build downloads the rest without paying again"
        )));
    }
    // Still journaled: `generate` closes the entry in the transaction that stores the result.
    Ok(RemoteTask {
        remote,
        images,
        billed: booked,
        took,
        journal_id,
    })
}

/// Whether the job may still be submitted: not when the build halted, the service refused its
/// model, or the gate of `wanx watch` drops it (all unsent, so nothing is paid).
fn may_submit(shared: &Shared, job: &Job) -> Result<(), Failure> {
    if let Some(reason) = shared.halted() {
        return Err(Failure::skipped(reason));
    }
    if let Some(why) = shared.refused_model(&job.compiled.model) {
        return Err(Failure::skipped(&why));
    }
    if let Some(gate) = &shared.exec.before_submit
        && !gate(job)
    {
        return Err(Failure::dropped());
    }
    Ok(())
}

/// Images a succeeded task is billed for: every result with a URL.
pub(super) fn billed_by(results: &[crate::executor::dashscope::TaskResult]) -> u32 {
    results.iter().filter(|r| r.url.is_some()).count() as u32
}

/// Books what the service billed for journal entry `journal_id` (once, whichever build first sees
/// the task succeed). Returns the images booked now (zero if an earlier build booked them).
pub(super) async fn book(
    shared: &Arc<Shared>,
    journal_id: i64,
    task_id: &str,
    model: &str,
    remote: &str,
    images: u32,
) -> Result<u32, String> {
    let price = shared.registry.get(model).map_or(Money::ZERO, |s| s.price);
    let charge = Charge {
        at: output_name::now_unix(),
        emulated: shared.exec.provider == crate::compile::cache_key::Provider::Emulator.identity(),
        task_id: task_id.to_owned(),
        model: model.to_owned(),
        remote_task_id: Some(remote.to_owned()),
        images,
        cost: price.times(images),
    };
    let booked = with_store(shared, move |s| s.journal_billed(journal_id, &charge)).await?;
    Ok(if booked { images } else { 0 })
}

/// Closes journal entries whose images will not be cached (the task failed as a whole).
pub(super) async fn finish_journals(shared: &Arc<Shared>, journal: Vec<i64>) -> Result<(), String> {
    with_store(shared, move |s| s.journal_finish(&journal)).await
}

/// How a remote task ended.
pub(super) enum Waited {
    /// SUCCEEDED: its results, and about how many seconds it took.
    Done(Vec<crate::executor::dashscope::TaskResult>, f64),
    /// FAILED, CANCELED or UNKNOWN: over, and nothing to download.
    Ended(String),
}

/// Polls a remote task to its end. Returns its results and an estimate of when it finished (seconds
/// after `since`, half the last interval before its detection).
pub(super) async fn wait_for(
    shared: &Arc<Shared>,
    client: &Client,
    label: &str,
    model: &str,
    remote: &str,
    since: Instant,
) -> Result<Waited, String> {
    let history = shared
        .history
        .lock()
        .expect("never poisoned")
        .get(model)
        .cloned()
        .unwrap_or_default();
    let mut schedule = PollSchedule::new(shared.exec.poll, &history);
    let deadline = since + shared.exec.task_timeout;
    let mut consecutive_errors = 0;
    loop {
        let wait = schedule.next_wait();
        tokio::time::sleep(wait).await;
        shared.queries.wait().await;
        match client.query(remote).await {
            Ok(TaskState::Pending | TaskState::Running) => consecutive_errors = 0,
            Ok(TaskState::Succeeded { results, .. }) => {
                // It ended somewhere since the previous query: take the middle of that interval. After a
                // single (long, aimed) sleep that middle means nothing, so take the whole wait then.
                let took = if schedule.step > 1 {
                    since.elapsed().saturating_sub(wait / 2)
                } else {
                    since.elapsed()
                }
                .as_secs_f64();
                shared
                    .history
                    .lock()
                    .expect("never poisoned")
                    .entry(model.to_owned())
                    .or_default()
                    .push(took);
                return Ok(Waited::Done(results, took));
            }
            Ok(TaskState::Failed { code, message }) => {
                return Ok(Waited::Ended(format!("the task failed: {code}: {message}")));
            }
            Ok(TaskState::Canceled) => {
                return Ok(Waited::Ended("the task was canceled".to_owned()));
            }
            Ok(TaskState::Unknown) => {
                return Ok(Waited::Ended(format!(
                    "the service no longer knows task `{remote}` (expired after 24 h, or never existed)"
                )));
            }
            Err(ProviderError::Transient { code, message }) => {
                consecutive_errors += 1;
                if consecutive_errors >= 10 {
                    return Err(format!(
                        "querying the task kept failing: {code}: {message}; it stays journaled for the next build"
                    ));
                }
            }
            Err(e @ ProviderError::Fatal { .. }) => {
                let message = format!("querying the task was refused: {e}");
                stop(shared, e);
                return Err(message);
            }
            Err(e) => return Err(format!("querying the task failed: {e}")),
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "timed out after {}s waiting for task `{remote}` of `{label}`; it stays journaled and the next build resumes it",
                shared.exec.task_timeout.as_secs()
            ));
        }
    }
}
