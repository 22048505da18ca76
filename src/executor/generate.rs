//! One generation: the rounds of requests (the first, then follow-ups for failed images) that
//! produce a job's `n` images, then storing the result and writing the outputs.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::failure::{Failure, FailureKind};
use super::job::{Done, Event, Job};
use super::remote_task::{finish_journals, run_remote_task};
use super::restore::materialize;
use super::shared::{Shared, record_in_lock, with_store};
use super::submit::prepare_request;
use crate::compile::Compiled;
use crate::money::Money;
use crate::store::{Partial, StoredImage, StoredResult};
use crate::tree::output_name;

/// Follow-up requests for images a task failed to produce (partial failures).
pub(super) const MAX_FOLLOW_UPS: u32 = 2;

pub(super) async fn generate(shared: &Arc<Shared>, job: Job) -> Result<Done, Failure> {
    if shared.exec.journaled.contains(&job.key.hex()) {
        return Err(Failure::from(
            "not submitted: a task an earlier build paid for with this request is still journaled; the next build resumes it".to_owned(),
        ));
    }
    let limit = shared.limit(&job.compiled.model);
    let client = shared
        .exec
        .client
        .clone()
        .ok_or_else(|| Failure::from("no provider client for a generation".to_owned()))?;
    let mut latency = None;
    let mut sent: Option<Compiled> = None;
    // Images an earlier build paid for under this key (the pool: a smaller `n`, or a request that
    // fell short): only the rest is requested, with the seeds that follow theirs.
    let carried = carried_partial(shared, &job).await?;
    let n = job.compiled.n as usize;
    let mut slots: Vec<Option<StoredImage>> = vec![None; n];
    for (slot, image) in slots.iter_mut().zip(carried.images.iter().cloned()) {
        *slot = Some(image);
    }
    let base_seed = job.compiled.body["parameters"]["seed"].as_u64();
    let mut billed = 0u32;
    let mut remote_ids = Vec::new();
    // The journal entries of the requests so far: open until the result is stored.
    let mut journal = Vec::new();
    // The rounds end with every image, or with why not.
    let short_by: Option<Failure> = 'rounds: {
        for round in 0..=MAX_FOLLOW_UPS {
            let missing: Vec<u32> = (0..n as u32)
                .filter(|i| slots[*i as usize].is_none())
                .collect();
            if missing.is_empty() {
                break 'rounds None;
            }
            if round > 0 || !carried.images.is_empty() {
                let why = if round > 0 {
                    "failed"
                } else {
                    "are missing (the rest were paid for by an earlier build)"
                };
                (shared.exec.on_event)(Event::Retrying {
                    id: job.id.clone(),
                    error: format!(
                        "{} of {} images {why}; requesting them",
                        missing.len(),
                        job.compiled.n
                    ),
                    wait: Duration::ZERO,
                });
            }
            if sent.is_none() {
                sent = Some(prepare_request(shared, &client, &job).await?);
            }
            let sent = sent.as_ref().expect("prepared just above");
            for offsets in follow_ups(&missing, base_seed.is_some()) {
                let mut body = sent.body.clone();
                body["parameters"]["n"] = Value::from(offsets.len());
                if let Some(seed) = base_seed {
                    body["parameters"]["seed"] = Value::from(seed + u64::from(offsets[0]));
                }
                let count = offsets.len() as u32;
                match run_remote_task(shared, &client, &limit, &job, sent, body, count).await {
                    Ok(task) => {
                        journal.push(task.journal_id);
                        latency.get_or_insert(task.took);
                        remote_ids.push(task.remote);
                        billed += task.billed;
                        for (offset, image) in offsets.iter().zip(task.images) {
                            // The service numbers a batch's images seed, seed + 1, …
                            slots[*offset as usize] = image.map(|mut image| {
                                image.seed = base_seed.map(|seed| seed + u64::from(*offset));
                                image
                            });
                        }
                    }
                    Err(e) => {
                        billed += e.images_billed;
                        break 'rounds Some(e);
                    }
                }
            }
        }
        let made = slots.iter().flatten().count();
        (made != n).then(|| {
            Failure::from(format!(
                "only {made} of {n} images were produced after {MAX_FOLLOW_UPS} follow-up requests (paid {})",
                job.compiled.price.times(billed)
            ))
        })
    };
    let images: Vec<StoredImage> = slots.into_iter().flatten().collect();
    if let Some(failure) = short_by {
        let short = Short {
            images,
            carried: carried.cost,
            billed,
            journal,
        };
        return Err(keep_partial(shared, &job, short, failure).await);
    }
    let paid_now = job.compiled.price.times(billed);
    // Paid for whatever happens next: a failure to record or write it still reports the spend.
    let paid = |message: String| Failure {
        kind: FailureKind::Io,
        message,
        images_billed: billed,
        spent: paid_now,
        maybe_billed: Money::ZERO,
    };
    let cost = carried.cost + paid_now;
    let generated_at = output_name::now_unix();
    let result = StoredResult {
        key: job.key.hex(),
        task_id: job.id.clone(),
        model: job.compiled.model.clone(),
        provider: shared.exec.provider.clone(),
        request_json: job.compiled.body.to_string(),
        remote_task_id: Some(remote_ids.join(",")),
        images: images.clone(),
        cost,
        generated_at,
    };
    let model = job.compiled.model.clone();
    with_store(shared, move |s| {
        s.put_result_closing(&result, &journal)?;
        match latency {
            Some(seconds) => s.record_latency(&model, seconds),
            None => Ok(()),
        }
    })
    .await
    .map_err(|e| {
        paid(format!(
            "{e}; its images were paid for and stay journaled: the next build saves them without paying again"
        ))
    })?;
    // The pool holds every candidate; the outputs are the picked ones (validated against `n`).
    let hashes: Vec<String> = match &job.pick {
        None => images.iter().map(|i| i.blake3.clone()).collect(),
        Some(picks) => picks
            .iter()
            .filter_map(|i| images.get((*i as usize).wrapping_sub(1)))
            .map(|i| i.blake3.clone())
            .collect(),
    };
    let shared2 = Arc::clone(shared);
    let entry = tokio::task::spawn_blocking(move || {
        let entry = materialize(&shared2, &job, &hashes, generated_at, cost)?;
        record_in_lock(&shared2, &job.id, entry.clone())?;
        Ok::<_, String>(entry)
    })
    .await
    .unwrap_or_else(|e| panic!("materializing panicked: {e}"))
    .map_err(|e| {
        paid(format!(
            "{e}; its images are cached and the next build restores them without paying again"
        ))
    })?;
    Ok(Done {
        generated: true,
        entry,
        spent: paid_now,
        images_billed: billed,
        resumed: false,
    })
}

/// The requests that ask for the images at `missing` (offsets from the task's first image): the
/// service numbers a batch's images seed, seed + 1, …, so with a seed each contiguous run is one
/// request starting at its first seed; without one, one request for them all.
pub(super) fn follow_ups(missing: &[u32], seeded: bool) -> Vec<Vec<u32>> {
    if !seeded {
        return if missing.is_empty() {
            Vec::new()
        } else {
            vec![missing.to_vec()]
        };
    }
    let mut runs: Vec<Vec<u32>> = Vec::new();
    for &offset in missing {
        match runs.last_mut() {
            Some(run) if run.last().is_some_and(|last| last + 1 == offset) => run.push(offset),
            _ => runs.push(vec![offset]),
        }
    }
    runs
}

/// Records `partial` as `key`'s partial result, closing `journal` in the same transaction.
pub(super) async fn store_partial(
    shared: &Arc<Shared>,
    key: String,
    partial: Partial,
    journal: Vec<i64>,
) -> Result<(), String> {
    let now = output_name::now_unix();
    with_store(shared, move |s| {
        s.put_partial_closing(&key, &partial, &journal, now)
    })
    .await
}

/// The pool an earlier build left under the job's key (a result for a smaller `n`, or a partial
/// result), if it holds fewer than `n` images and all its blobs are intact.
pub(super) async fn carried_partial(shared: &Arc<Shared>, job: &Job) -> Result<Partial, Failure> {
    let key = job.key.hex();
    let blobs = Arc::clone(&shared.exec.blobs);
    let n = job.compiled.n as usize;
    let partial = with_store(shared, move |s| s.pool(&key))
        .await
        .map_err(Failure::io)?;
    Ok(partial
        .filter(|p| p.images.len() < n && p.images.iter().all(|i| blobs.contains(&i.blake3)))
        .unwrap_or_default())
}

/// What a generation that fell short holds.
pub(super) struct Short {
    /// Its images: carried from an earlier build, then this build's.
    pub(super) images: Vec<StoredImage>,
    /// What the carried images cost.
    pub(super) carried: Money,
    /// Images billed in this build.
    pub(super) billed: u32,
    /// Its open journal entries.
    pub(super) journal: Vec<i64>,
}

/// Ends a generation that fell short: the images it holds (paid for, by this build or an earlier
/// one) are kept as the key's partial result, closing its journal entries; `failure` says so, and
/// what this build paid.
pub(super) async fn keep_partial(
    shared: &Arc<Shared>,
    job: &Job,
    short: Short,
    mut failure: Failure,
) -> Failure {
    let Short {
        images,
        carried,
        billed,
        journal,
    } = short;
    failure.images_billed = billed;
    failure.spent = job.compiled.price.times(billed);
    let cost = carried + failure.spent;
    if images.is_empty() {
        if let Err(e) = finish_journals(shared, journal).await {
            failure.message = format!("{}; {e}", failure.message);
        }
        return failure;
    }
    let kept = images.len();
    let stored = store_partial(shared, job.key.hex(), Partial { images, cost }, journal).await;
    // A dropped task's message stays as it is: it was not sent, and says so.
    if failure.kind != FailureKind::Dropped {
        failure.message = match stored {
            Ok(()) => format!(
                "{}; the {kept} image(s) paid for are kept, and the next build asks only for the {} missing",
                failure.message,
                job.compiled.n as usize - kept
            ),
            Err(e) => format!("{}; {e}", failure.message),
        };
    }
    failure
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_ups_ask_for_each_run_of_missing_seeds() {
        assert_eq!(follow_ups(&[1, 2], true), vec![vec![1, 2]]);
        assert_eq!(
            follow_ups(&[0, 2, 3, 5], true),
            vec![vec![0], vec![2, 3], vec![5]]
        );
        assert_eq!(follow_ups(&[0, 2, 3], false), vec![vec![0, 2, 3]]);
        assert!(follow_ups(&[], true).is_empty());
        assert!(follow_ups(&[], false).is_empty());
    }
}
