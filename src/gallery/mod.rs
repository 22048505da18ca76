//! `Gallery`: what `wanx gallery` and `wanx watch --serve` show, one [`Card`] per task in graph order.
//! It is gathered, never sent: the planner and reconcile decide each task's status (fresh, or stale
//! with the reason a build would act), `wanx.lock` and the store say which images a task has and
//! what they cost, the store's other results for the same task id are its earlier versions, and the
//! ledger gives the totals spent and saved. Rendering is in `gallery_page`, files in
//! `gallery_files`, the live page in `gallery_server`.

pub mod files;
pub mod page;
pub mod server;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::build::{self, Project};
use crate::cli::Selection;
use crate::clock::civil_from_days;
use crate::compile::Compiled;
use crate::error::Result;
use crate::money::Money;
use crate::plan::task::Task;
use crate::planner::reconcile::Action;
use crate::planner::{Planned, upstream_ids, waiting_reason};
use crate::project::lock::LockEntry;
use crate::store::blob_store::BlobStore;
use crate::store::{Ledger, StoredResult};

/// Earlier versions shown per task, newest first.
const HISTORY_KEPT: usize = 12;

/// Everything the page shows.
#[derive(Clone, Debug)]
pub struct Gallery {
    /// The project folder's name.
    pub title: String,
    pub cards: Vec<Card>,
    /// Plan files, project-relative, in the order their first task appears.
    pub plans: Vec<String>,
    pub ledger: Ledger,
    /// Whether the statuses are those of the emulator (`--emulate`).
    pub emulated: bool,
    /// Unix seconds.
    pub made_at: i64,
}

impl Gallery {
    /// Every image the page shows: each card's current images and its earlier versions'.
    pub fn images(&self) -> impl Iterator<Item = &Image> {
        self.cards.iter().flat_map(|c| {
            c.images
                .iter()
                .chain(c.history.iter().flat_map(|v| &v.images))
        })
    }
}

/// One task.
#[derive(Clone, Debug, PartialEq)]
pub struct Card {
    pub id: String,
    /// The plan file, project-relative.
    pub plan: String,
    /// `fresh`, `stale` or `failed`; live pages add `planned` and `generating`.
    pub status: &'static str,
    /// Why, in words (`up to date`, `request changed: generate, ¥0.14`, the failure's message).
    pub reason: String,
    /// The prompt as sent (the seed's template and presets lowered).
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub model: String,
    pub size: Option<String>,
    pub seed: Option<u32>,
    /// Price × images.
    pub cost: Money,
    /// When the images shown were generated (unix seconds).
    pub made_at: Option<i64>,
    /// The request key, or the key of the images shown while the new one is not yet known.
    pub key: String,
    pub images: Vec<Image>,
    /// Tasks whose images this one consumes (its edit chain's inputs).
    pub inputs: Vec<String>,
    pub history: Vec<Version>,
}

/// One image, by its blake3.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub hash: String,
    /// Where its bytes are: the blob store, or a verified output.
    pub source: PathBuf,
    /// `png`, `jpg`, `webp`.
    pub ext: &'static str,
    pub width: u32,
    pub height: u32,
}

/// An earlier generation of the same task.
#[derive(Clone, Debug, PartialEq)]
pub struct Version {
    pub key: String,
    pub prompt: String,
    pub made_at: i64,
    pub images: Vec<Image>,
}

/// What the plan decided for one card: the task's compiled request, its key, its status and why,
/// and the images to show (hash, and the output path when it is verified fresh).
struct Decided<'p> {
    compiled: &'p Compiled,
    key: String,
    status: &'static str,
    reason: String,
    shown: Vec<(String, Option<String>)>,
}

/// The plan's decision for `task` (decided now, or waiting on its inputs); `None` when the plan
/// has neither.
fn decided_card<'p>(
    planned: &'p Planned<'_>,
    decided: &HashMap<&str, usize>,
    waiting: &HashMap<&str, usize>,
    task: &Task,
    locked: Option<&LockEntry>,
) -> Option<Decided<'p>> {
    let old = || {
        locked.map_or_else(Vec::new, |l| {
            l.outputs.iter().map(|o| (o.blake3.clone(), None)).collect()
        })
    };
    if let Some(&i) = decided.get(task.id.as_str()) {
        let (unit, d) = (&planned.units[i], &planned.decisions[i]);
        let (status, reason, shown) = match &d.action {
            Action::Fresh => (
                "fresh",
                d.reason.to_string(),
                locked.map_or_else(Vec::new, |l| {
                    l.outputs
                        .iter()
                        .map(|o| (o.blake3.clone(), Some(o.path.clone())))
                        .collect()
                }),
            ),
            Action::Restore { images, .. } => (
                "stale",
                format!("{}: restore from the cache, free", d.reason),
                images.iter().map(|h| (h.clone(), None)).collect(),
            ),
            Action::Generate => (
                "stale",
                format!("{}: generate, {}", d.reason, d.cost()),
                old(),
            ),
        };
        return Some(Decided {
            compiled: &unit.compiled,
            key: unit.key.hex(),
            status,
            reason,
            shown,
        });
    }
    let w = &planned.waiting[*waiting.get(task.id.as_str())?];
    Some(Decided {
        compiled: &w.compiled,
        key: locked.map_or_else(|| "not yet known".to_owned(), |l| l.key.clone()),
        status: "stale",
        reason: waiting_reason(w),
        shown: old(),
    })
}

/// When the shown images were made: the lock's time if it records one of them, else the stored
/// result's under `key`.
fn made_at(
    locked: Option<&LockEntry>,
    shown_hashes: &HashSet<&str>,
    history: Option<&Vec<StoredResult>>,
    key: &str,
) -> Option<i64> {
    locked
        .filter(|l| {
            l.outputs
                .iter()
                .any(|o| shown_hashes.contains(o.blake3.as_str()))
        })
        .map(|l| l.generated_at)
        .or_else(|| {
            history
                .and_then(|rs| rs.iter().find(|r| r.key == key))
                .map(|r| r.generated_at)
        })
}

/// The task's earlier versions (other keys whose images are not all shown), newest first.
fn versions(
    history: Option<&Vec<StoredResult>>,
    key: &str,
    shown_hashes: &HashSet<&str>,
    images: &mut Images<'_>,
) -> Vec<Version> {
    history
        .map(|rs| {
            rs.iter()
                .filter(|r| {
                    r.key != key && !r.images.iter().all(|i| shown_hashes.contains(&*i.blake3))
                })
                .take(HISTORY_KEPT)
                .map(|r| Version {
                    key: r.key.clone(),
                    prompt: request_prompt(&r.request_json).unwrap_or_default(),
                    made_at: r.generated_at,
                    images: r
                        .images
                        .iter()
                        .filter_map(|i| images.get(&i.blake3, None))
                        .collect(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Gathers the gallery of the selected tasks. `failed` holds failures seen by a live page (task id →
/// message); they win over the planned status until the task succeeds. A failure an earlier build
/// recorded shows while the task still asks for the request that failed.
pub fn collect(
    project: &Project,
    selection: &Selection,
    failed: &HashMap<String, String>,
) -> Result<Gallery> {
    let mut planned = build::plan(project, selection, &HashSet::new())?;
    let root = &project.manifest.root;
    let mut history: HashMap<String, Vec<StoredResult>> = HashMap::new();
    for result in planned.store.all_results()? {
        history
            .entry(result.task_id.clone())
            .or_default()
            .push(result);
    }
    let ledger = planned.store.ledger_totals()?;
    // Failures recorded by earlier builds, shown while the request that failed is still the task's.
    let recorded_failures = planned.store.failures()?;
    let decided: HashMap<&str, usize> = planned
        .units
        .iter()
        .enumerate()
        .map(|(i, u)| (u.task.id.as_str(), i))
        .collect();
    let waiting: HashMap<&str, usize> = planned
        .waiting
        .iter()
        .enumerate()
        .map(|(i, w)| (w.task.id.as_str(), i))
        .collect();
    let mut images = Images::new(&planned.blobs);
    let mut cards = Vec::new();
    let mut plans: Vec<String> = Vec::new();
    for task in graph_order(&project.select(selection)?) {
        let locked = planned.lock.get(&task.id);
        let Some(Decided {
            compiled,
            key,
            status,
            reason,
            shown,
        }) = decided_card(&planned, &decided, &waiting, task, locked)
        else {
            continue;
        };
        let plan = task.origin.file.to_string_lossy().replace('\\', "/");
        if !plans.contains(&plan) {
            plans.push(plan.clone());
        }
        let images_now: Vec<Image> = shown
            .iter()
            .filter_map(|(hash, path)| images.get(hash, path.as_deref().map(|p| root.join(p))))
            .collect();
        let shown_hashes: HashSet<&str> = shown.iter().map(|(h, _)| h.as_str()).collect();
        let made_at = made_at(locked, &shown_hashes, history.get(&task.id), &key);
        let versions = versions(history.get(&task.id), &key, &shown_hashes, &mut images);
        let recorded = recorded_failures
            .get(&task.id)
            .filter(|(failed_key, _)| status != "fresh" && *failed_key == key)
            .map(|(_, message)| message);
        let (status, reason) = match failed.get(&task.id).or(recorded) {
            Some(message) => ("failed", message.clone()),
            None => (status, reason),
        };
        let input = &compiled.body["input"];
        cards.push(Card {
            id: task.id.clone(),
            plan,
            status,
            reason,
            prompt: input["prompt"]
                .as_str()
                .map_or_else(|| prompt_text(task), str::to_owned),
            negative_prompt: input["negative_prompt"].as_str().map(str::to_owned),
            model: compiled.model.clone(),
            size: compiled.size.map(|s| s.to_string()),
            seed: task.seed,
            cost: compiled.cost(),
            made_at,
            key,
            images: images_now,
            inputs: upstream_ids(task).map(str::to_owned).collect(),
            history: versions,
        });
    }
    // Dedup the inputs (a task can name the same upstream twice).
    for card in &mut cards {
        let mut seen = HashSet::new();
        card.inputs.retain(|i| seen.insert(i.clone()));
    }
    // Read, not changed: back to the next reader (the next build of `wanx watch --serve`).
    std::mem::take(&mut planned.lock).keep(&project.manifest.lock_path());
    Ok(Gallery {
        title: root
            .file_name()
            .map_or_else(|| "wanx".to_owned(), |n| n.to_string_lossy().into_owned()),
        cards,
        plans,
        ledger,
        emulated: selection.emulate,
        made_at: crate::clock::now_unix(),
    })
}

/// Tasks with every task whose images they consume before them, otherwise in plan order.
pub fn graph_order<'a>(tasks: &[&'a Task]) -> Vec<&'a Task> {
    let by_id: HashMap<&str, &Task> = tasks.iter().map(|t| (t.id.as_str(), *t)).collect();
    let mut done: HashSet<&str> = HashSet::new();
    let mut order = Vec::with_capacity(tasks.len());
    for task in tasks {
        // Depth first, iteratively: (task, whether its upstreams are already pushed).
        let mut stack = vec![(*task, false)];
        while let Some((t, expanded)) = stack.pop() {
            if done.contains(t.id.as_str()) {
                continue;
            }
            if expanded {
                done.insert(t.id.as_str());
                order.push(t);
                continue;
            }
            stack.push((t, true));
            for up in upstream_ids(t) {
                // The loader rejects cycles; `done` and the stack bound the walk regardless.
                if let Some(u) = by_id.get(up)
                    && !done.contains(up)
                    && !stack.iter().any(|(s, _)| s.id == up)
                {
                    stack.push((u, false));
                }
            }
        }
    }
    order
}

/// The prompt of a stored request body.
fn request_prompt(request_json: &str) -> Option<String> {
    let body: serde_json::Value = serde_json::from_str(request_json).ok()?;
    body["input"]["prompt"].as_str().map(str::to_owned)
}

fn prompt_text(task: &Task) -> String {
    task.prompt.parts().join(", ")
}

/// Finds images' bytes and reads their dimensions once per hash.
struct Images<'a> {
    blobs: &'a BlobStore,
    known: HashMap<String, Option<Image>>,
}

impl<'a> Images<'a> {
    fn new(blobs: &'a BlobStore) -> Images<'a> {
        Images {
            blobs,
            known: HashMap::new(),
        }
    }

    /// The image `hash`, from the blob store or else from `output` (an output verified fresh).
    fn get(&mut self, hash: &str, output: Option<PathBuf>) -> Option<Image> {
        if let Some(known) = self.known.get(hash) {
            return known.clone();
        }
        let source = Some(self.blobs.path(hash))
            .filter(|_| self.blobs.contains(hash))
            .or(output)?;
        let image = describe(hash, &source);
        self.known.insert(hash.to_owned(), image.clone());
        image
    }
}

/// Reads an image's format and size from its header.
pub fn describe(hash: &str, source: &Path) -> Option<Image> {
    let reader = image::ImageReader::open(source)
        .ok()?
        .with_guessed_format()
        .ok()?;
    let ext = match reader.format()? {
        image::ImageFormat::Png => "png",
        image::ImageFormat::Jpeg => "jpg",
        image::ImageFormat::WebP => "webp",
        _ => return None,
    };
    let (width, height) = reader.into_dimensions().ok()?;
    Some(Image {
        hash: hash.to_owned(),
        source: source.to_path_buf(),
        ext,
        width,
        height,
    })
}

/// `2025-10-19 15:30 UTC`.
pub fn format_date(unix: i64) -> String {
    let (y, m, d) = civil_from_days(unix.div_euclid(86_400));
    let secs = unix.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_minutes() {
        assert_eq!(format_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_date(1_760_887_800), "2025-10-19 15:30 UTC");
    }

    #[test]
    fn a_stored_request_gives_its_prompt() {
        assert_eq!(
            request_prompt(r#"{"model":"m","input":{"prompt":"a cat"},"parameters":{}}"#)
                .as_deref(),
            Some("a cat")
        );
        assert_eq!(request_prompt("not json"), None);
    }
}
