//! One generation: the rounds of requests (the first, then follow-ups for failed images) that
//! produce a job's `n` images, then storing the result and writing the outputs.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::failure::{Failure, FailureKind};
use super::job::{Done, Event, Job};
use super::limits::ModelLimit;
use super::remote_task::{finish_journals, run_remote_task};
use super::restore::materialize;
use super::shared::{Shared, record_in_lock, with_store};
use super::submit::prepare_request;
use crate::compile::Compiled;
use crate::executor::dashscope::Client;
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
    // Images an earlier build paid for under this key (the pool: a smaller `n`, or a request that
    // fell short): only the rest is requested, with the seeds that follow theirs.
    let carried = carried_partial(shared, &job).await?;
    let mut gathered = Gathered::carrying(&job, &carried);
    let request = Request {
        shared,
        client: &client,
        limit: &limit,
        job: &job,
    };
    let short_by = gathered
        .rounds(&request, !carried.images.is_empty())
        .await?;
    let Gathered {
        slots,
        billed,
        remote_ids,
        journal,
        latency,
    } = gathered;
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
    store_result(shared, result, journal, latency)
        .await
        .map_err(|e| {
            paid(format!(
                "{e}; its images were paid for and stay journaled: the next build saves them without paying again"
            ))
        })?;
    let entry = write_outputs(shared, job, &images, generated_at, cost)
        .await
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

/// What one generation's requests go through: the build's shared state, the provider client, the
/// model's limits, and the job.
struct Request<'a> {
    shared: &'a Arc<Shared>,
    client: &'a Client,
    limit: &'a ModelLimit,
    job: &'a Job,
}

/// What the rounds of requests gathered for a job.
struct Gathered {
    /// Each of the job's `n` images, where one exists: carried from an earlier build, or made now.
    slots: Vec<Option<StoredImage>>,
    /// Images billed in this build.
    billed: u32,
    /// The remote task ids of this build's requests.
    remote_ids: Vec<String>,
    /// The journal entries of the requests so far: open until the result is stored.
    journal: Vec<i64>,
    /// The first request's latency (seconds), for the model's history.
    latency: Option<f64>,
}

impl Gathered {
    /// Slots for the job's `n` images, the first filled with those `carried` from an earlier build.
    fn carrying(job: &Job, carried: &Partial) -> Gathered {
        let mut slots: Vec<Option<StoredImage>> = vec![None; job.compiled.n as usize];
        for (slot, image) in slots.iter_mut().zip(carried.images.iter().cloned()) {
            *slot = Some(image);
        }
        Gathered {
            slots,
            billed: 0,
            remote_ids: Vec::new(),
            journal: Vec::new(),
            latency: None,
        }
    }

    /// The offsets of the images still missing.
    fn missing(&self) -> Vec<u32> {
        (0..self.slots.len() as u32)
            .filter(|i| self.slots[*i as usize].is_none())
            .collect()
    }

    /// Requests the missing images: a first round, then up to [`MAX_FOLLOW_UPS`] rounds for those
    /// that failed. Ends with every image (`None`), or with why not; an error preparing the request
    /// ends the generation at once.
    async fn rounds(
        &mut self,
        request: &Request<'_>,
        carried: bool,
    ) -> Result<Option<Failure>, Failure> {
        let job = request.job;
        let base_seed = job.compiled.body["parameters"]["seed"].as_u64();
        let mut sent: Option<Compiled> = None;
        for round in 0..=MAX_FOLLOW_UPS {
            let missing = self.missing();
            if missing.is_empty() {
                return Ok(None);
            }
            if round > 0 || carried {
                announce_round(request, missing.len(), round > 0);
            }
            if sent.is_none() {
                sent = Some(prepare_request(request.shared, request.client, job).await?);
            }
            let sent = sent.as_ref().expect("prepared just above");
            for offsets in follow_ups(&missing, base_seed.is_some()) {
                if let Err(e) = self.request(request, sent, &offsets, base_seed).await {
                    return Ok(Some(e));
                }
            }
        }
        let made = self.slots.iter().flatten().count();
        let n = self.slots.len();
        Ok((made != n).then(|| {
            Failure::from(format!(
                "only {made} of {n} images were produced after {MAX_FOLLOW_UPS} follow-up requests (paid {})",
                job.compiled.price.times(self.billed)
            ))
        }))
    }

    /// One request for the images at `offsets` (a run of seeds from `base_seed`, when there is one):
    /// its images fill their slots, and what it billed is booked, whether it succeeds or not.
    async fn request(
        &mut self,
        request: &Request<'_>,
        sent: &Compiled,
        offsets: &[u32],
        base_seed: Option<u64>,
    ) -> Result<(), Failure> {
        let mut body = sent.body.clone();
        body["parameters"]["n"] = Value::from(offsets.len());
        if let Some(seed) = base_seed {
            body["parameters"]["seed"] = Value::from(seed + u64::from(offsets[0]));
        }
        let count = offsets.len() as u32;
        let Request {
            shared,
            client,
            limit,
            job,
        } = *request;
        match run_remote_task(shared, client, limit, job, sent, body, count).await {
            Ok(task) => {
                self.journal.push(task.journal_id);
                self.latency.get_or_insert(task.took);
                self.remote_ids.push(task.remote);
                self.billed += task.billed;
                for (offset, image) in offsets.iter().zip(task.images) {
                    // The service numbers a batch's images seed, seed + 1, …
                    self.slots[*offset as usize] = image.map(|mut image| {
                        image.seed = base_seed.map(|seed| seed + u64::from(*offset));
                        image
                    });
                }
                Ok(())
            }
            Err(e) => {
                self.billed += e.images_billed;
                Err(e)
            }
        }
    }
}

/// Says a round asks again for `missing` images: after a round that `failed`, or because the rest
/// were paid for by an earlier build.
fn announce_round(request: &Request<'_>, missing: usize, failed: bool) {
    let why = if failed {
        "failed"
    } else {
        "are missing (the rest were paid for by an earlier build)"
    };
    (request.shared.exec.on_event)(Event::Retrying {
        id: request.job.id.clone(),
        error: format!(
            "{missing} of {} images {why}; requesting them",
            request.job.compiled.n
        ),
        wait: Duration::ZERO,
    });
}

/// Stores a generation's result, closing its journal entries in the same transaction, and the
/// model's latency.
async fn store_result(
    shared: &Arc<Shared>,
    result: StoredResult,
    journal: Vec<i64>,
    latency: Option<f64>,
) -> Result<(), String> {
    let model = result.model.clone();
    with_store(shared, move |s| {
        s.put_result_closing(&result, &journal)?;
        match latency {
            Some(seconds) => s.record_latency(&model, seconds),
            None => Ok(()),
        }
    })
    .await
}

/// Writes the job's outputs from the cached images and records them in the lock. The pool holds
/// every candidate; the outputs are the picked ones (validated against `n`).
async fn write_outputs(
    shared: &Arc<Shared>,
    job: Job,
    images: &[StoredImage],
    generated_at: i64,
    cost: Money,
) -> Result<crate::project::lock::LockEntry, String> {
    let hashes: Vec<String> = match &job.pick {
        None => images.iter().map(|i| i.blake3.clone()).collect(),
        Some(picks) => picks
            .iter()
            .filter_map(|i| images.get((*i as usize).wrapping_sub(1)))
            .map(|i| i.blake3.clone())
            .collect(),
    };
    let shared = Arc::clone(shared);
    tokio::task::spawn_blocking(move || {
        let entry = materialize(&shared, &job, &hashes, generated_at, cost)?;
        record_in_lock(&shared, &job.id, entry.clone())?;
        Ok::<_, String>(entry)
    })
    .await
    .unwrap_or_else(|e| panic!("materializing panicked: {e}"))
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
