//! Resuming the journal: finishes the remote tasks an interrupted build paid for, downloads their
//! images and caches them under their key, so nothing paid for is paid again.

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use tokio::task::JoinSet;

use super::download::download_all;
use super::generate::store_partial;
use super::remote_task::{Waited, billed_by, book, finish_journals, wait_for};
use super::shared::{Executor, Shared, with_store};
use crate::money::Money;
use crate::registry::Registry;
use crate::store::{JournalEntry, Partial, StoredImage, StoredResult};
use crate::tree::output_name;

/// What became of a task found in the journal (a previous build crashed or was interrupted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resumed {
    /// Its images were downloaded and cached: the build materializes them as the generation it is.
    Recovered { task_id: String, images: u32 },
    /// Its images, with those of an earlier partial, are fewer than the key needs: kept as the key's
    /// partial result, so the next generation asks only for the missing ones.
    Partial {
        task_id: String,
        images: u32,
        of: u32,
    },
    /// It cannot be recovered (failed, expired, or unknown to the service).
    Lost { task_id: String, reason: String },
    /// The crash came between the submission and the recording of its id: the service may have
    /// accepted (and billed) it, and this build will submit it again.
    MaybeBilledTwice { task_id: String },
    /// Still not finished, or its images could not all be fetched or stored (the service could not
    /// be reached, a download failed, the disk is full): left journaled for the next build.
    Pending { task_id: String, reason: String },
}

/// A journaled key resumed, and what this build booked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumedKey {
    pub key: String,
    pub outcome: Resumed,
    /// Images the service billed that this build was the first to see (an earlier build that saw
    /// them booked them itself).
    pub images_billed: u32,
    pub spent: Money,
}

/// Tasks older than this are gone from the service (protocol §3: task data is kept 24 h).
pub(super) const REMOTE_TASK_TTL_SECS: i64 = 24 * 3600;

impl Executor {
    /// Finishes the journaled tasks of earlier builds: queries each, downloads its images into the
    /// cache under its key, and closes its journal entry, so nothing paid for is paid again.
    pub async fn resume(self, entries: Vec<JournalEntry>, registry: &Registry) -> Vec<ResumedKey> {
        let shared = self.into_shared(registry);
        // A task whose first request came back partial has follow-ups journaled under the same key:
        // together they make its images, so they are resumed together, oldest first.
        let mut groups: Vec<Vec<JournalEntry>> = Vec::new();
        for entry in entries {
            match groups.iter_mut().find(|g| g[0].key == entry.key) {
                Some(group) => group.push(entry),
                None => groups.push(vec![entry]),
            }
        }
        let mut set = JoinSet::new();
        for mut group in groups {
            group.sort_by_key(|e| e.id);
            let shared = Arc::clone(&shared);
            let price = registry
                .get(&group[0].model)
                .map_or(Money::ZERO, |spec| spec.price);
            set.spawn(async move {
                let key = group[0].key.clone();
                let mut booked = 0;
                let outcome = resume_one(&shared, group, price, &mut booked).await;
                ResumedKey {
                    key,
                    outcome,
                    images_billed: booked,
                    spent: price.times(booked),
                }
            });
        }
        let mut out = Vec::new();
        while let Some(joined) = set.join_next().await {
            out.push(joined.unwrap_or_else(|e| panic!("resuming a task panicked: {e}")));
        }
        out
    }
}

/// Resumes the journal entries of one key (a request and its follow-ups, oldest first): each
/// remote task is queried and its images downloaded; if together they make the images the first
/// request asked for, they are cached under the key and every entry closes with the result.
/// `booked` counts the images this build books (the first to see them billed).
pub(super) async fn resume_one(
    shared: &Arc<Shared>,
    group: Vec<JournalEntry>,
    price: Money,
    booked: &mut u32,
) -> Resumed {
    let ids: Vec<i64> = group.iter().map(|e| e.id).collect();
    let first = &group[0];
    let task_id = first.task_id.clone();
    let wanted = first.images;
    let mut images = Vec::new();
    let mut billed = 0;
    let mut took = 0.0;
    let mut lost = None;
    for entry in &group {
        match fetch_journaled(shared, entry, booked).await {
            Ok(fetched) => {
                images.extend(fetched.images);
                billed += fetched.billed;
                took = fetched.took;
            }
            // Still running, or the service could not be reached: leave every entry for later.
            Err(pending @ Resumed::Pending { .. }) => return pending,
            // The others' images still count.
            Err(gone) => lost = Some(gone),
        }
    }
    if let Some(lost) = lost.filter(|_| images.is_empty()) {
        let _ = finish_journals(shared, ids.clone()).await;
        return lost;
    }
    // A generation that began from an earlier partial asked only for the rest: what the key needs
    // is that partial plus what its first request asked for.
    let key = first.key.clone();
    let carried = match with_store(shared, move |s| s.pool(&key)).await {
        Ok(partial) => partial.unwrap_or_default(),
        Err(reason) => return Resumed::Pending { task_id, reason },
    };
    let wanted = carried.images.len() as u32 + wanted;
    let cost = carried.cost + price.times(billed);
    let mut images: Vec<StoredImage> = carried.images.into_iter().chain(images).collect();
    if (images.len() as u32) < wanted {
        let kept = images.len() as u32;
        let stored = store_partial(shared, first.key.clone(), Partial { images, cost }, ids).await;
        return match stored {
            Ok(()) => Resumed::Partial {
                task_id,
                images: kept,
                of: wanted,
            },
            Err(reason) => Resumed::Pending { task_id, reason },
        };
    }
    images.truncate(wanted as usize);
    let count = images.len() as u32;
    // The request as the key means it: the first request's body with the key's whole `n`.
    let request_json = match serde_json::from_str::<Value>(&first.request_json) {
        Ok(mut body) if body["parameters"].is_object() => {
            body["parameters"]["n"] = Value::from(wanted);
            body.to_string()
        }
        _ => first.request_json.clone(),
    };
    let result = StoredResult {
        key: first.key.clone(),
        task_id: task_id.clone(),
        model: first.model.clone(),
        provider: shared.exec.provider.clone(),
        request_json,
        remote_task_id: first.remote_task_id.clone(),
        images,
        cost,
        generated_at: output_name::now_unix(),
    };
    let model = first.model.clone();
    let closing = ids.clone();
    // The entries close in the transaction that stores the result: a crash between the two would
    // forget images already paid for.
    let stored = with_store(shared, move |s| {
        s.put_result_closing(&result, &closing)?;
        s.record_latency(&model, took)
    })
    .await;
    // Paid for and downloaded but not recorded (the database could not be written): the entries
    // stay open, so the next build records them instead of paying again.
    match stored {
        Ok(()) => Resumed::Recovered {
            task_id,
            images: count,
        },
        Err(reason) => Resumed::Pending { task_id, reason },
    }
}

/// What one journaled remote task produced.
pub(super) struct Fetched {
    pub(super) images: Vec<StoredImage>,
    pub(super) billed: u32,
    pub(super) took: f64,
}

/// Queries a journaled remote task until it ends, books what it billed unless an earlier build did
/// (adding the images to `booked`), and downloads its images into the blob store (those it saved
/// before are kept). The error is what to report: `Pending` leaves the entry journaled, the others
/// close it.
pub(super) async fn fetch_journaled(
    shared: &Arc<Shared>,
    entry: &JournalEntry,
    booked: &mut u32,
) -> Result<Fetched, Resumed> {
    let task_id = entry.task_id.clone();
    let Some(remote) = entry.remote_task_id.clone() else {
        return Err(Resumed::MaybeBilledTwice { task_id });
    };
    if output_name::now_unix() - entry.created_at > REMOTE_TASK_TTL_SECS {
        return Err(Resumed::Lost {
            task_id,
            reason: format!("task `{remote}` is older than 24 h; the service has forgotten it"),
        });
    }
    let Some(client) = shared.exec.client.clone() else {
        return Err(Resumed::Pending {
            task_id,
            reason: "no provider to ask".to_owned(),
        });
    };
    let since = Instant::now();
    let (results, took) =
        match wait_for(shared, &client, &task_id, &entry.model, &remote, since).await {
            Ok(Waited::Done(results, took)) => (results, took),
            Ok(Waited::Ended(reason)) => return Err(Resumed::Lost { task_id, reason }),
            Err(reason) => return Err(Resumed::Pending { task_id, reason }),
        };
    let billed = billed_by(&results);
    if entry.billed.is_none() {
        match book(shared, entry.id, &task_id, &entry.model, &remote, billed).await {
            Ok(now) => *booked += now,
            Err(reason) => return Err(Resumed::Pending { task_id, reason }),
        }
    }
    let deadline = since + shared.exec.task_timeout;
    let (images, fetched) = download_all(shared, &client, &results, &entry.saved, deadline).await;
    if let Err(e) = fetched {
        let kept = images.iter().flatten().count();
        let id = entry.id;
        let _ = with_store(shared, move |s| s.journal_saved(id, &images)).await;
        return Err(Resumed::Pending {
            task_id,
            reason: format!(
                "{e} (task `{remote}`, billed {billed} image(s), {kept} saved); the next build downloads the rest without paying again"
            ),
        });
    }
    Ok(Fetched {
        images: images.into_iter().flatten().collect(),
        billed,
        took,
    })
}
