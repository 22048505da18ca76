//! `plan`: everything a build decides before any effect. The project is loaded and validated; the
//! selected tasks (and the tasks whose images they consume) are compiled and keyed; a snapshot of the
//! lock, the stat cache, the store and the blob store is taken; and `reconcile` decides each task.
//!
//! Tasks that consume other tasks' images are decided in graph order, after what they consume: an
//! input's key part is the blake3 of its bytes, so an upstream task that is fresh or restored gives its
//! dependants their keys at once, while one that must be generated leaves them *waiting* until its
//! new images exist. A [`Chain`] then decides each waiting task the moment the last image it consumes
//! exists, while the rest of the build runs: if the bytes did not change, nothing more is paid
//! (early cutoff).
//!
//! The folder, by concern: `project` (the project as loaded and the tasks a `selection` names), `unit`
//! (a task compiled and keyed, or waiting), `resolve` (the digests of a request's media), `snapshot`
//! (what `reconcile` decides from, read from the lock, the disk, the store and the remote cache),
//! `reconcile` (the pure decision), `chain` (the waiting tasks, decided as their inputs appear),
//! `key_cache`, `why` and `word_diff` (why a task is not fresh, in the plan's words). This file keeps
//! [`plan`], in named steps.

mod chain;
pub mod key_cache;
mod project;
pub mod reconcile;
mod resolve;
pub mod selection;
mod snapshot;
mod unit;
pub mod why;
pub mod word_diff;
pub mod writes;

use std::collections::{HashMap, HashSet};

use crate::compile::cache_key::{CacheKey, Provider};
use crate::compile::{self, compile};
use crate::error::{Error, Result};
use crate::money::Money;
use crate::par::par_map;
use crate::plan::task::Task;
use crate::planner::key_cache::KeyCache;
use crate::planner::reconcile::{Action, Decision};
use crate::project::lock::LockFile;
use crate::remote::RemoteCache;
use crate::store::blob_store::BlobStore;
use crate::store::{StatEntry, Store};
use crate::tree::output_name::now_unix;
pub use chain::{Chain, Later, Settled};
pub use project::Project;
pub use selection::Selection;
pub use unit::{MediaSource, Unit, Waiting, upstream_ids, waiting_reason};

use chain::{ChainError, Chained, decide_chained};
use resolve::{Resolution, known_images, resolve_media};
pub use snapshot::Stat;
use snapshot::{Context, Remote, StatCache, decide};

/// Everything decided, before any effect.
pub struct Planned<'a> {
    pub units: Vec<Unit<'a>>,
    pub decisions: Vec<Decision>,
    /// Tasks decided only once their inputs are generated, in graph order.
    pub waiting: Vec<Waiting<'a>>,
    pub provider: Provider,
    pub lock: LockFile,
    pub store: Store,
    pub blobs: BlobStore,
    /// Lock entries of tasks no longer in any plan (pruned by a full build).
    pub stale_lock_entries: Vec<String>,
    /// Stats of outputs hashed while taking the snapshot, to remember.
    pub new_stats: Vec<(String, StatEntry)>,
    /// Every output checked against the lock, with the stat it was vouched for under.
    pub observed: Vec<(String, Stat)>,
    /// The blake3 of `wanx.lock` as read (`None`: there was none).
    pub lock_digest: Option<[u8; 32]>,
    /// What deciding `waiting` later needs.
    pub later: Later,
    /// The remote cache, when one is configured and the command uses it.
    pub remote: Option<RemoteCache>,
    /// Why each task that is not fresh is not, in the plan's words (src/planner/why.rs), by task id.
    pub why: HashMap<String, Vec<crate::planner::why::Change>>,
    /// The canonical form of each request to build (by task id): recorded once it is built.
    pub requests: HashMap<String, serde_json::Value>,
    /// The budget a build of this plan is held to (`--max-spend`, else `[build] max_spend`).
    pub budget: Option<Money>,
}

impl Planned<'_> {
    /// Totals over the decided tasks and, priced as generations, the waiting ones.
    pub fn totals(&self) -> reconcile::Totals {
        let mut totals = reconcile::totals(
            self.decisions
                .iter()
                .zip(&self.units)
                .map(|(d, u)| (d, u.compiled.n)),
        );
        for w in &self.waiting {
            totals.generate += 1;
            totals.images_to_generate += w.compiled.n;
            totals.cost += w.compiled.cost();
        }
        totals
    }
}

/// Compiles, keys, snapshots and reconciles the selected tasks. `forced` names tasks to generate
/// whatever the cache holds.
pub fn plan<'a>(
    project: &'a Project,
    selection: &Selection,
    forced: &HashSet<String>,
) -> Result<Planned<'a>> {
    let provider = project.provider(selection.emulate);
    let tasks = project.select(selection)?;
    let remote = Remote::new(project, selection, &provider)?;
    let (mut cx, key_cache) = open_context(project, &provider, remote, tasks.len())?;

    // Tasks that consume no other task's images: decided together, the common case.
    let (chained, plain): (Vec<&Task>, Vec<&Task>) =
        tasks.iter().partition(|t| upstream_ids(t).next().is_some());
    let mut units = key_plain(project, &provider, key_cache.as_ref(), plain)?;
    if let Some(cache) = &key_cache {
        // A cache that cannot be written costs the next build its compiling, nothing more.
        // (A unit keyed from the cache has no body yet.)
        let keyed = units
            .iter()
            .map(|u| (u.task, u.key, u.compiled.body.is_null()));
        let _ = cache.save(&mut cx.store, keyed);
    }
    let mut decisions = decide(&mut cx, &units, forced)?;
    complete(
        &mut cx,
        &mut units,
        &mut decisions,
        forced,
        project,
        &provider,
    )?;

    let (waiting, images) = decide_chained_tasks(
        &mut cx,
        project,
        &provider,
        &chained,
        (&mut units, &mut decisions),
        forced,
    )?;

    // A fresh task needs its key, not its request: free the bodies (a large no-op holds thousands).
    for (unit, d) in units.iter_mut().zip(&decisions) {
        if d.action == Action::Fresh {
            unit.compiled.body = serde_json::Value::Null;
        }
    }
    let stale_lock_entries = stale_lock_entries(project, selection, &cx.lock);
    let later = later(&mut cx, &waiting, forced, images);
    let (why, requests) = crate::planner::why::reasons(&cx.store, &provider, &units, &decisions)?;
    Ok(Planned {
        units,
        decisions,
        waiting,
        provider,
        lock: cx.lock,
        store: cx.store,
        blobs: cx.blobs,
        stale_lock_entries,
        new_stats: cx.new_stats,
        observed: cx.observed,
        lock_digest: cx.lock_digest,
        later,
        remote: cx.remote.map(|r| r.cache),
        why,
        requests,
        budget: project.manifest.build.max_spend.map(Money::from_yuan),
    })
}

/// Opens what the snapshot reads: `wanx.lock` (on a second thread while the store is opened and its
/// caches read), the store, the key cache and the stat cache.
fn open_context<'p>(
    project: &'p Project,
    provider: &Provider,
    remote: Option<Remote>,
    selected: usize,
) -> Result<(Context<'p>, Option<KeyCache>)> {
    let root = &project.manifest.root;
    let state_dir = project.manifest.state_dir();
    // A large `wanx.lock` is read on a second thread while the store is opened and its caches read.
    let lock_path = project.manifest.lock_path();
    let (opened, lock) = std::thread::scope(|scope| {
        let lock = scope.spawn(|| LockFile::read_with_digest(&lock_path));
        let opened = Store::open(&state_dir).and_then(|store| {
            let key_cache = KeyCache::open(&store, &project.manifest, &project.loaded, provider)?;
            let stat_cache = StatCache::open(&store, selected)?;
            Ok((store, key_cache, stat_cache))
        });
        let lock = lock
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (opened, lock)
    });
    let (store, key_cache, stat_cache) = opened?;
    let (lock, lock_digest) = lock?;
    let cx = Context {
        root,
        lock,
        lock_digest,
        stat_cache,
        store,
        blobs: BlobStore::new(state_dir.join("blobs")),
        new_stats: Vec::new(),
        observed: Vec::new(),
        now: now_unix(),
        remote,
    };
    Ok((cx, key_cache))
}

/// Compiles and keys the tasks that consume no other task's images (the common case), on every
/// core; a key the key cache vouches for needs no request.
fn key_plain<'a>(
    project: &'a Project,
    provider: &Provider,
    key_cache: Option<&KeyCache>,
    plain: Vec<&'a Task>,
) -> Result<Vec<Unit<'a>>> {
    let root = &project.manifest.root;
    let mut units = Vec::with_capacity(plain.len());
    let mut errors = Vec::new();
    // Compiling and keying are pure and per task: spread over the cores for large projects.
    let keyed = par_map(plain, |task| {
        // A key the cache vouches for needs no request: `complete` compiles it if it is not fresh.
        if let Some(key) = key_cache.and_then(|c| c.get(task)) {
            return Ok(Unit {
                task,
                compiled: compile::header(task, &project.registry),
                key,
                legacy: None,
                media: Vec::new(),
            });
        }
        let compiled = compile(task, &project.registry);
        match resolve_media(root, task, &compiled, &HashMap::new()) {
            Ok(Resolution::Ready(digests, media)) => {
                let key = CacheKey::new(provider, &compiled, &digests);
                let legacy = Some(CacheKey::legacy(provider, &compiled, &digests));
                Ok(Unit {
                    task,
                    compiled,
                    key,
                    legacy,
                    media,
                })
            }
            Ok(Resolution::Waits(_)) => {
                unreachable!("a task without task inputs waits for nothing")
            }
            Err(d) => Err(d),
        }
    });
    for result in keyed {
        match result {
            Ok(unit) => units.push(unit),
            Err(d) => errors.push(*d),
        }
    }
    if !errors.is_empty() {
        return Err(Error::Invalid {
            count: errors.len(),
            diagnostics: errors,
        });
    }
    Ok(units)
}

/// Images known by task id: each task's blake3s, in order.
type Images = HashMap<String, Vec<String>>;

/// Decides the tasks that consume others' images, in graph order, each once what it consumes is
/// decided; those whose inputs this build has yet to generate wait. Returns them, and the images
/// known so far by task id.
fn decide_chained_tasks<'a>(
    cx: &mut Context<'_>,
    project: &'a Project,
    provider: &Provider,
    chained: &[&'a Task],
    (units, decisions): (&mut Vec<Unit<'a>>, &mut Vec<Decision>),
    forced: &HashSet<String>,
) -> Result<(Vec<Waiting<'a>>, Images)> {
    let consumed: HashSet<&str> = chained.iter().flat_map(|t| upstream_ids(t)).collect();
    let mut images: HashMap<String, Vec<String>> = HashMap::new();
    for (unit, d) in units.iter().zip(decisions.iter()) {
        if consumed.contains(unit.task.id.as_str())
            && let Some(known) = known_images(&cx.lock, unit, d)
        {
            images.insert(unit.task.id.clone(), known);
        }
    }
    let mut waiting: Vec<Waiting<'a>> = Vec::new();
    for task in graph_order(chained) {
        let compiled = compile(task, &project.registry);
        let waits_on_waiting: Vec<String> = upstream_ids(task)
            .filter(|up| waiting.iter().any(|w| w.task.id == *up))
            .map(str::to_owned)
            .collect();
        if !waits_on_waiting.is_empty() {
            waiting.push(Waiting {
                task,
                compiled,
                upstream: waits_on_waiting,
            });
            continue;
        }
        match decide_chained(cx, provider, task, compiled, &mut images, forced) {
            Ok(Chained::Decided(unit, d)) => {
                units.push(unit);
                decisions.push(d);
            }
            Ok(Chained::Waits(w)) => waiting.push(w),
            Err(ChainError::Invalid(d)) => {
                return Err(Error::Invalid {
                    count: 1,
                    diagnostics: vec![*d],
                });
            }
            Err(ChainError::Store(e)) => return Err(e),
        }
    }
    Ok((waiting, images))
}

/// Lock entries of tasks no longer in any plan, pruned by a full build (none when tasks are named).
fn stale_lock_entries(project: &Project, selection: &Selection, lock: &LockFile) -> Vec<String> {
    if selection.tasks.is_empty() {
        let ids: HashSet<&str> = project.loaded.tasks.iter().map(|t| t.id.as_str()).collect();
        lock.tasks()
            .keys()
            .filter(|id| !ids.contains(id.as_str()))
            .cloned()
            .collect()
    } else {
        Vec::new()
    }
}

/// What deciding the waiting tasks later needs (nothing when none waits).
fn later(
    cx: &mut Context<'_>,
    waiting: &[Waiting<'_>],
    forced: &HashSet<String>,
    images: HashMap<String, Vec<String>>,
) -> Later {
    if waiting.is_empty() {
        Later::default()
    } else {
        Later {
            lock: waiting
                .iter()
                .filter_map(|w| {
                    let entry = cx.lock.get(&w.task.id)?;
                    Some((w.task.id.clone(), entry.clone()))
                })
                .collect(),
            forced: waiting
                .iter()
                .filter(|w| forced.contains(&w.task.id))
                .map(|w| w.task.id.clone())
                .collect(),
            images,
            stat_cache: std::mem::take(&mut cx.stat_cache),
            remote: cx.remote.clone(),
        }
    }
}

/// Compiles in full the units whose key came from the key cache (their body is `Null`: `compile`
/// always makes an object) and that are not fresh, since they are about to be restored or
/// generated. Their key is computed again; were it to differ from the cached one, the unit is
/// decided again under the computed key.
fn complete(
    cx: &mut Context<'_>,
    units: &mut [Unit<'_>],
    decisions: &mut [Decision],
    forced: &HashSet<String>,
    project: &Project,
    provider: &Provider,
) -> Result<()> {
    for (unit, decision) in units.iter_mut().zip(decisions.iter_mut()) {
        if !unit.compiled.body.is_null() || decision.action == Action::Fresh {
            continue;
        }
        unit.compiled = compile(unit.task, &project.registry);
        let key = CacheKey::new(provider, &unit.compiled, &[]);
        unit.legacy = Some(CacheKey::legacy(provider, &unit.compiled, &[]));
        if key != unit.key {
            unit.key = key;
            *decision = decide(cx, std::slice::from_ref(unit), forced)?.remove(0);
        }
    }
    Ok(())
}

/// Depth-first: a task after everything it consumes.
fn visit<'a>(
    task: &'a Task,
    by_id: &HashMap<&str, &'a Task>,
    done: &mut HashSet<&'a str>,
    order: &mut Vec<&'a Task>,
) {
    if !done.insert(task.id.as_str()) {
        return;
    }
    for up in upstream_ids(task) {
        if let Some(upstream) = by_id.get(up) {
            visit(upstream, by_id, done, order);
        }
    }
    order.push(task);
}

/// Upstream tasks before the tasks that consume them (the loader has refused cycles).
fn graph_order<'a>(tasks: &[&'a Task]) -> Vec<&'a Task> {
    let by_id: HashMap<&str, &'a Task> = tasks.iter().map(|t| (t.id.as_str(), *t)).collect();
    let mut done: HashSet<&str> = HashSet::new();
    let mut order = Vec::with_capacity(tasks.len());
    for task in tasks {
        visit(task, &by_id, &mut done, &mut order);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::task::{Edit, EditKind, InputRef, Reference};

    fn task(id: &str, reference: Option<InputRef>, edit: Option<InputRef>) -> Task {
        let mut task = crate::compile::tests::task(id, "wan2.2-t2i-flash", "a cat");
        task.reference = reference.map(|image| Reference {
            image,
            strength: None,
            mode: None,
        });
        task.edit = edit.map(|input| Edit {
            kind: EditKind::Repair,
            input,
            extend: None,
            style_reference: None,
            mask: None,
            strength: None,
        });
        task
    }

    fn upstream(id: &str) -> InputRef {
        InputRef::Task {
            id: id.to_owned(),
            index: None,
        }
    }

    #[test]
    fn upstream_ids_are_the_task_inputs_only() {
        let t = task(
            "t",
            Some(upstream("a")),
            Some(InputRef::File("in.png".into())),
        );
        assert_eq!(upstream_ids(&t).collect::<Vec<_>>(), ["a"]);
        let t = task(
            "t",
            Some(InputRef::Url("https://x/y.png".into())),
            Some(upstream("b")),
        );
        assert_eq!(upstream_ids(&t).collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn graph_order_puts_each_task_after_what_it_consumes_and_keeps_plan_order_otherwise() {
        let tasks = [
            task("c", Some(upstream("b")), None),
            task("d", None, None),
            task("b", Some(upstream("a")), None),
            task("a", None, None),
            // Consumes a task outside the list: ordered as if it had no input.
            task("e", Some(upstream("elsewhere")), None),
        ];
        let refs: Vec<&Task> = tasks.iter().collect();
        let order: Vec<&str> = graph_order(&refs).iter().map(|t| t.id.as_str()).collect();
        assert_eq!(order, ["a", "b", "c", "d", "e"]);
    }
}
