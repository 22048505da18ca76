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

pub mod key_cache;
pub mod reconcile;
pub mod why;
pub mod word_diff;
pub mod writes;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::cli::Selection;
use crate::compile::cache_key::{CacheKey, Provider};
use crate::compile::{self, Compiled, compile};
use crate::error::{Error, Result};
use crate::money::Money;
use crate::par::par_map;
use crate::plan::task::{InputRef, Task};
use crate::plan::{self, Loaded};
use crate::planner::key_cache::KeyCache;
use crate::planner::reconcile::{Action, Decision, Item, Recorded, Snapshot};
use crate::project::lock::LockFile;
use crate::project::manifest::{self, Manifest};
use crate::registry::Registry;
use crate::remote::action_result::RemoteEntry;
use crate::remote::{RemoteCache, RemoteConfig, RemoteUse, Wanted};
use crate::report::{Cumulative, Summary, TaskReport};
use crate::store::blob_store::{BlobStore, hash_file};
use crate::store::{StatEntry, Store, StoredImage, StoredResult, stat_of};
use crate::term::diagnostic::{Diagnostic, did_you_mean};
use crate::term::printer::Printer;
use crate::tree::output_name::now_unix;

/// The project as loaded: manifest, registry and validated plans.
pub struct Project {
    pub manifest: Manifest,
    pub registry: Registry,
    pub loaded: Loaded,
}

impl Project {
    /// Finds and loads the project. Any error stops here, before any effect. Plan notes (how the
    /// seed's vocabulary was lowered) are kept for [`Project::print_notes`]: `wanx plan`, `explain` and a
    /// build that generates print them, a no-op does not.
    pub fn load(dir: Option<&Path>, _printer: &Printer) -> Result<Project> {
        let cwd = match dir {
            Some(d) => d.to_path_buf(),
            None => std::env::current_dir().map_err(|e| Error::io("could not read", ".", e))?,
        };
        let path = Manifest::find(&cwd)?;
        let (manifest, registry) = Manifest::load(&path)?;
        let loaded = plan::load(&manifest, &registry)?;
        Ok(Project {
            manifest,
            registry,
            loaded,
        })
    }

    /// Prints the notes about the plan files `files` (all of them when `None`).
    pub fn print_notes(&self, printer: &Printer, files: Option<&HashSet<&Path>>) {
        for note in &self.loaded.notes {
            if files.is_none_or(|f| f.contains(note.path.as_path())) {
                printer.block(&note.render(printer.color), false);
            }
        }
    }

    /// The tasks named on the command line and every task whose images they consume, in plan order
    /// (all tasks when none are named).
    pub fn select(&self, selection: &Selection) -> Result<Vec<&Task>> {
        let by_id: HashMap<&str, &Task> = self
            .loaded
            .tasks
            .iter()
            .map(|t| (t.id.as_str(), t))
            .collect();
        if let Some(unknown) = selection
            .tasks
            .iter()
            .find(|w| !by_id.contains_key(w.as_str()))
        {
            let hint = did_you_mean(unknown, by_id.keys().copied())
                .map(|s| format!("did you mean `{s}`?"));
            return Err(Error::Usage {
                message: format!("no task named `{unknown}` in this project"),
                hint: hint.or_else(|| Some("`wanx plan` lists every task".to_owned())),
            });
        }
        if selection.tasks.is_empty() {
            return Ok(self.loaded.tasks.iter().collect());
        }
        let mut wanted: HashSet<&str> = HashSet::new();
        let mut stack: Vec<&str> = selection.tasks.iter().map(String::as_str).collect();
        while let Some(id) = stack.pop() {
            if wanted.insert(id) {
                stack.extend(upstream_ids(by_id[id]).filter(|up| by_id.contains_key(up)));
            }
        }
        Ok(self
            .loaded
            .tasks
            .iter()
            .filter(|t| wanted.contains(t.id.as_str()))
            .collect())
    }

    /// Where requests go: `DASHSCOPE_HTTP_BASE_URL` (as the official SDK reads it), `[provider]
    /// base_url`, a seed plan's `api_endpoint`, or Beijing.
    pub fn base_url(&self) -> String {
        std::env::var("DASHSCOPE_HTTP_BASE_URL")
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| self.manifest.provider.base_url.clone())
            .or_else(|| self.loaded.seed.base_url.clone())
            .unwrap_or_else(|| manifest::DEFAULT_BASE_URL.to_owned())
    }

    pub fn provider(&self, emulate: bool) -> Provider {
        if emulate {
            Provider::Emulator
        } else {
            Provider::from_base_url(&self.base_url())
        }
    }

    /// The API key variable: `[provider] api_key_env`, unless left at its default and a seed plan
    /// names one.
    pub fn api_key_env(&self) -> String {
        let configured = &self.manifest.provider.api_key_env;
        match &self.loaded.seed.api_key_env {
            Some((var, _)) if configured == "DASHSCOPE_API_KEY" => var.clone(),
            _ => configured.clone(),
        }
    }
}

/// The ids of the tasks whose images `task` consumes.
pub fn upstream_ids(task: &Task) -> impl Iterator<Item = &str> {
    task.inputs().filter_map(|input| match input {
        InputRef::Task { id, .. } => Some(id.as_str()),
        _ => None,
    })
}

/// Where the bytes for one media slot of a request come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaSource {
    /// A local file (absolute path).
    File(PathBuf),
    /// Another task's image, by its blake3, in the blob store.
    Blob(String),
}

/// A selected task, compiled and keyed.
pub struct Unit<'a> {
    pub task: &'a Task,
    pub compiled: Compiled,
    pub key: CacheKey,
    /// The key version 1 gave the request (`n` included), when known: a lock entry under it is
    /// migrated to `key` (see [`migrate`]).
    pub legacy: Option<CacheKey>,
    /// The bytes for each of `compiled.media`, in order.
    pub media: Vec<MediaSource>,
}

/// A task whose key depends on images that this build has yet to generate.
pub struct Waiting<'a> {
    pub task: &'a Task,
    pub compiled: Compiled,
    /// The upstream tasks it waits for.
    pub upstream: Vec<String>,
}

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

/// What deciding the waiting tasks needs once the images they consume exist: the images known at
/// planning, the stat cache, the waiting tasks' own lock entries and which of them are forced.
#[derive(Default)]
pub struct Later {
    images: HashMap<String, Vec<String>>,
    stat_cache: HashMap<String, StatEntry>,
    lock: LockFile,
    forced: HashSet<String>,
    remote: Option<Remote>,
}

/// The remote cache as planning uses it: looked up for what the local cache cannot supply.
#[derive(Clone)]
struct Remote {
    cache: RemoteCache,
    /// Download what is found (a build) or only look (`wanx plan`).
    fetch: bool,
    /// The provider identity, recorded with fetched results.
    provider: String,
}

impl Remote {
    fn new(
        project: &Project,
        selection: &Selection,
        provider: &Provider,
    ) -> Result<Option<Remote>> {
        let (printer, fetch) = match selection.remote.usage {
            RemoteUse::Off => return Ok(None),
            RemoteUse::Lookup(printer) => (printer, false),
            RemoteUse::Fetch(printer) => (printer, true),
        };
        let config = RemoteConfig::resolve(
            &project.manifest,
            selection.remote.remote_cache.as_deref(),
            selection.remote.remote_cache_read_only,
        )?;
        Ok(config.map(|config| Remote {
            cache: RemoteCache::new(config, printer),
            fetch,
            provider: provider.identity(),
        }))
    }
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

/// What the snapshot needs from the store, opened once per plan.
struct Context<'p> {
    root: &'p Path,
    lock: LockFile,
    store: Store,
    blobs: BlobStore,
    stat_cache: HashMap<String, StatEntry>,
    new_stats: Vec<(String, StatEntry)>,
    now: i64,
    remote: Option<Remote>,
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
    let root = &project.manifest.root;
    let state_dir = project.manifest.state_dir();
    // A large `wanx.lock` is read on a second thread while the store is opened and its caches read.
    let lock_path = project.manifest.lock_path();
    let (opened, lock) = std::thread::scope(|scope| {
        let lock = scope.spawn(|| LockFile::read(&lock_path));
        let opened = Store::open(&state_dir).and_then(|store| {
            let key_cache = KeyCache::open(&store, &project.manifest, &project.loaded, &provider)?;
            let stat_cache = store.stat_cache()?;
            Ok((store, key_cache, stat_cache))
        });
        let lock = lock
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (opened, lock)
    });
    let (store, key_cache, stat_cache) = opened?;
    let mut cx = Context {
        root,
        lock: lock?,
        stat_cache,
        store,
        blobs: BlobStore::new(state_dir.join("blobs")),
        new_stats: Vec::new(),
        now: now_unix(),
        remote,
    };

    // Tasks that consume no other task's images: decided together, the common case.
    let (chained, plain): (Vec<&Task>, Vec<&Task>) =
        tasks.iter().partition(|t| upstream_ids(t).next().is_some());
    let mut units = Vec::with_capacity(plain.len());
    let mut errors = Vec::new();
    // Compiling and keying are pure and per task: spread over the cores for large projects.
    let keyed = par_map(plain, |task| {
        // A key the cache vouches for needs no request: `complete` compiles it if it is not fresh.
        if let Some(key) = key_cache.as_ref().and_then(|c| c.get(task)) {
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
                let key = CacheKey::new(&provider, &compiled, &digests);
                let legacy = Some(CacheKey::legacy(&provider, &compiled, &digests));
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

    // Tasks that consume others' images: in graph order, each once what it consumes is decided.
    let consumed: HashSet<&str> = chained.iter().flat_map(|t| upstream_ids(t)).collect();
    let mut images: HashMap<String, Vec<String>> = HashMap::new();
    for (unit, d) in units.iter().zip(&decisions) {
        if consumed.contains(unit.task.id.as_str())
            && let Some(known) = known_images(&cx.lock, unit, d)
        {
            images.insert(unit.task.id.clone(), known);
        }
    }
    let mut waiting: Vec<Waiting<'a>> = Vec::new();
    for task in graph_order(&chained) {
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
        match decide_chained(&mut cx, &provider, task, compiled, &mut images, forced) {
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

    // A fresh task needs its key, not its request: free the bodies (a large no-op holds thousands).
    for (unit, d) in units.iter_mut().zip(&decisions) {
        if d.action == Action::Fresh {
            unit.compiled.body = serde_json::Value::Null;
        }
    }
    let stale_lock_entries = if selection.tasks.is_empty() {
        let ids: HashSet<&str> = project.loaded.tasks.iter().map(|t| t.id.as_str()).collect();
        cx.lock
            .tasks
            .keys()
            .filter(|id| !ids.contains(id.as_str()))
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    let later = if waiting.is_empty() {
        Later::default()
    } else {
        Later {
            lock: LockFile {
                tasks: waiting
                    .iter()
                    .filter_map(|w| {
                        let entry = cx.lock.tasks.get(&w.task.id)?;
                        Some((w.task.id.clone(), entry.clone()))
                    })
                    .collect(),
            },
            forced: waiting
                .iter()
                .filter(|w| forced.contains(&w.task.id))
                .map(|w| w.task.id.clone())
                .collect(),
            images,
            stat_cache: std::mem::take(&mut cx.stat_cache),
            remote: cx.remote.clone(),
        }
    };
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
        later,
        remote: cx.remote.map(|r| r.cache),
        why,
        requests,
        budget: project.manifest.build.max_spend.map(Money::from_yuan),
    })
}

enum Chained<'a> {
    Decided(Unit<'a>, Decision),
    Waits(Waiting<'a>),
}

enum ChainError {
    /// The task cannot be built as written (an input missing or out of range).
    Invalid(Box<Diagnostic>),
    Store(Error),
}

/// Keys and decides a task that consumes other tasks' images, if `images` holds all it consumes;
/// a decided task's images, when known without generating, join `images` for its dependants.
fn decide_chained<'a>(
    cx: &mut Context<'_>,
    provider: &Provider,
    task: &'a Task,
    compiled: Compiled,
    images: &mut HashMap<String, Vec<String>>,
    forced: &HashSet<String>,
) -> std::result::Result<Chained<'a>, ChainError> {
    match resolve_media(cx.root, task, &compiled, images).map_err(ChainError::Invalid)? {
        Resolution::Ready(digests, media) => {
            let key = CacheKey::new(provider, &compiled, &digests);
            let legacy = Some(CacheKey::legacy(provider, &compiled, &digests));
            let unit = Unit {
                task,
                compiled,
                key,
                legacy,
                media,
            };
            let d = decide(cx, std::slice::from_ref(&unit), forced)
                .map_err(ChainError::Store)?
                .remove(0);
            if let Some(known) = known_images(&cx.lock, &unit, &d) {
                images.insert(task.id.clone(), known);
            }
            Ok(Chained::Decided(unit, d))
        }
        Resolution::Waits(upstream) => Ok(Chained::Waits(Waiting {
            task,
            compiled,
            upstream,
        })),
    }
}

/// Decides the waiting tasks of a build as the images they consume come into existence, so each
/// starts as soon as its inputs exist while the rest of the build goes on.
pub struct Chain<'a> {
    cx: Context<'a>,
    provider: Provider,
    forced: HashSet<String>,
    images: HashMap<String, Vec<String>>,
    /// Tasks that produced no images (failed, skipped or blocked themselves).
    lost: HashSet<String>,
    /// Undecided tasks; a settled one leaves `None`.
    waiting: Vec<Option<Waiting<'a>>>,
    /// Upstream task id → the indices in `waiting` of the tasks that consume it.
    dependants: HashMap<&'a str, Vec<usize>>,
}

/// A waiting task, settled by [`Chain::finished`].
pub enum Settled<'a> {
    /// Keyed and reconciled: fresh, restore or generate.
    Decided(Unit<'a>, Decision),
    /// Cannot be built: the named upstream task produced no images.
    Blocked(Waiting<'a>, String),
    /// Cannot be built as written, now that its inputs are known (an image index beyond what the
    /// upstream produced).
    Invalid(Waiting<'a>, String),
}

impl<'a> Chain<'a> {
    /// The chain of `planned`'s waiting tasks; opens its own store connection.
    pub fn new(
        project: &'a Project,
        provider: Provider,
        waiting: Vec<Waiting<'a>>,
        later: Later,
    ) -> Result<Chain<'a>> {
        let state_dir = project.manifest.state_dir();
        let mut dependants: HashMap<&'a str, Vec<usize>> = HashMap::new();
        for (i, w) in waiting.iter().enumerate() {
            for up in upstream_ids(w.task) {
                dependants.entry(up).or_default().push(i);
            }
        }
        Ok(Chain {
            cx: Context {
                root: &project.manifest.root,
                lock: later.lock,
                store: Store::open(&state_dir)?,
                blobs: BlobStore::new(state_dir.join("blobs")),
                stat_cache: later.stat_cache,
                new_stats: Vec::new(),
                now: now_unix(),
                remote: later.remote,
            },
            provider,
            forced: later.forced,
            images: later.images,
            lost: HashSet::new(),
            waiting: waiting.into_iter().map(Some).collect(),
            dependants,
        })
    }

    /// Task `id` finished with `images`, or with none (failed or skipped). Returns the waiting
    /// tasks this settles: those whose inputs now all exist, those that can never be built, and,
    /// in cascade, whatever those settle in turn without generating.
    pub fn finished(&mut self, id: &str, images: Option<Vec<String>>) -> Result<Vec<Settled<'a>>> {
        match images {
            Some(images) => {
                self.images.insert(id.to_owned(), images);
            }
            None => {
                self.lost.insert(id.to_owned());
            }
        }
        let mut settled = Vec::new();
        let mut queue = vec![id.to_owned()];
        while let Some(up) = queue.pop() {
            let Some(consumers) = self.dependants.get(up.as_str()) else {
                continue;
            };
            for &i in consumers {
                let Some(w) = &self.waiting[i] else { continue };
                let lost = upstream_ids(w.task).find(|u| self.lost.contains(*u));
                if let Some(lost) = lost.map(str::to_owned) {
                    let w = self.waiting[i].take().expect("checked above");
                    self.lost.insert(w.task.id.clone());
                    queue.push(w.task.id.clone());
                    settled.push(Settled::Blocked(w, lost));
                    continue;
                }
                if !upstream_ids(w.task).all(|u| self.images.contains_key(u)) {
                    continue;
                }
                let w = self.waiting[i].take().expect("checked above");
                let id = w.task.id.clone();
                match decide_chained(
                    &mut self.cx,
                    &self.provider,
                    w.task,
                    w.compiled.clone(),
                    &mut self.images,
                    &self.forced,
                ) {
                    Ok(Chained::Decided(unit, d)) => {
                        if self.images.contains_key(&id) {
                            queue.push(id);
                        }
                        settled.push(Settled::Decided(unit, d));
                    }
                    Ok(Chained::Waits(_)) => unreachable!("every input's images are known"),
                    Err(ChainError::Invalid(diagnostic)) => {
                        self.lost.insert(id.clone());
                        queue.push(id);
                        settled.push(Settled::Invalid(w, diagnostic.message.clone()));
                    }
                    Err(ChainError::Store(e)) => return Err(e),
                }
            }
        }
        if !self.cx.new_stats.is_empty() {
            self.cx.store.put_stats(&self.cx.new_stats)?;
            self.cx.new_stats.clear();
        }
        Ok(settled)
    }

    /// The models the undecided tasks would generate with.
    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.waiting
            .iter()
            .flatten()
            .map(|w| w.compiled.model.as_str())
    }

    /// How many tasks are still undecided.
    pub fn undecided(&self) -> usize {
        self.waiting.iter().flatten().count()
    }

    /// The tasks never settled: what they consume never finished.
    pub fn into_remaining(self) -> Vec<Waiting<'a>> {
        self.waiting.into_iter().flatten().collect()
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

enum Resolution {
    /// Every input's digest and source are known.
    Ready(Vec<String>, Vec<MediaSource>),
    /// These upstream tasks must be generated first.
    Waits(Vec<String>),
}

/// The digest and source of each media slot of `compiled`; `images` holds the known images of
/// upstream tasks.
fn resolve_media(
    root: &Path,
    task: &Task,
    compiled: &Compiled,
    images: &HashMap<String, Vec<String>>,
) -> std::result::Result<Resolution, Box<Diagnostic>> {
    let mut digests = Vec::with_capacity(compiled.media.len());
    let mut media = Vec::with_capacity(compiled.media.len());
    let mut waits = Vec::new();
    for slot in &compiled.media {
        match &slot.source {
            InputRef::File(path) => {
                let full = root.join(path);
                let (digest, _) = hash_file(&full).map_err(|e| {
                    Box::new(
                        Diagnostic::error(
                            &task.origin.file,
                            format!("cannot read input `{}`: {e}", path.display()),
                        )
                        .at_line_col("", task.origin.line, task.origin.column)
                        .field(format!("task `{}`", task.id)),
                    )
                })?;
                digests.push(digest);
                media.push(MediaSource::File(full));
            }
            InputRef::Task { id, index } => match images.get(id) {
                Some(known) => {
                    let i = index.map_or(0, |k| k as usize - 1);
                    let digest = known.get(i).cloned().ok_or_else(|| {
                        Box::new(
                            Diagnostic::error(
                                &task.origin.file,
                                format!("task `{id}` has no image {}", i + 1),
                            )
                            .at_line_col(
                                "",
                                task.origin.line,
                                task.origin.column,
                            ),
                        )
                    })?;
                    digests.push(digest.clone());
                    media.push(MediaSource::Blob(digest));
                }
                None => waits.push(id.clone()),
            },
            InputRef::Url(_) => {
                unreachable!("URL inputs are placed in the body, not in media slots")
            }
        }
    }
    if waits.is_empty() {
        Ok(Resolution::Ready(digests, media))
    } else {
        waits.dedup();
        Ok(Resolution::Waits(waits))
    }
}

/// The images a decided task's outputs hold (or will hold) without generating: its lock entry's for
/// `fresh`, the cached ones for `restore`.
fn known_images(lock: &LockFile, unit: &Unit<'_>, d: &Decision) -> Option<Vec<String>> {
    match &d.action {
        Action::Fresh => lock
            .tasks
            .get(&unit.task.id)
            .map(|e| e.outputs.iter().map(|o| o.blake3.clone()).collect()),
        Action::Restore { images, .. } => Some(images.clone()),
        Action::Generate => None,
    }
}

/// Snapshots what `units` need and reconciles them. Only what is not fresh touches the store.
fn decide(
    cx: &mut Context<'_>,
    units: &[Unit<'_>],
    forced: &HashSet<String>,
) -> Result<Vec<Decision>> {
    let Context {
        root,
        lock,
        store,
        blobs,
        stat_cache,
        new_stats,
        now,
        remote,
    } = cx;
    let migrated = migrate(lock, store, units)?;
    let (root, lock, stat_cache, now) = (*root, &*lock, &*stat_cache, *now);
    // The snapshot borrows from the lock, the stat cache and the store's results: it copies no string.
    let mut snapshot = Snapshot::default();
    // Outputs the lock records under the current key: stat them (on every core), hashing only what the
    // stat cache cannot vouch for.
    let locked: Vec<&crate::project::lock::LockOutput> = units
        .iter()
        .filter_map(|u| {
            lock.tasks
                .get(&u.task.id)
                .filter(|e| *u.key.to_hex() == *e.key || migrated.contains_key(u.task.id.as_str()))
        })
        .flat_map(|e| &e.outputs)
        .collect();
    let observed = par_map(locked, |output| {
        let mut fresh_stat = Vec::new();
        let hash = observe(
            root,
            &output.path,
            stat_cache.get(&output.path),
            &mut fresh_stat,
        );
        (output.path.as_str(), hash, fresh_stat)
    });
    for (path, hash, fresh_stat) in observed {
        snapshot.disk.insert(path, hash);
        new_stats.extend(fresh_stat);
    }
    for unit in units {
        let Some(entry) = lock.tasks.get(&unit.task.id) else {
            continue;
        };
        snapshot.lock.insert(
            unit.task.id.as_str(),
            Recorded {
                key: migrated.get(unit.task.id.as_str()).unwrap_or(&entry.key),
                generated_at: entry.generated_at,
                images: entry.outputs.iter().map(|o| o.blake3.as_str()).collect(),
                outputs: entry.outputs.iter().map(|o| o.path.as_str()).collect(),
            },
        );
    }
    let items: Vec<Item<'_>> = units.iter().map(item).collect();
    let force = |id: &str| forced.contains(id);
    let first = reconcile::reconcile(&items, &snapshot, force, now);
    let unsettled: Vec<&Unit<'_>> = units
        .iter()
        .zip(&first)
        .filter(|(u, d)| d.action != Action::Fresh && !forced.contains(&u.task.id))
        .map(|(u, _)| u)
        .collect();
    // Generations (forced ones too) may start from images an earlier build paid for.
    let generating: Vec<String> = units
        .iter()
        .zip(&first)
        .filter(|(_, d)| d.action == Action::Generate)
        .map(|(u, _)| u.key.hex())
        .collect();
    if unsettled.is_empty() && generating.is_empty() {
        return Ok(first);
    }
    let generating: Vec<&str> = generating.iter().map(String::as_str).collect();
    let held = store.partials_held(&generating)?;
    snapshot
        .partial
        .extend(held.iter().map(|(k, n)| (k.as_str(), *n)));
    let keys: Vec<String> = unsettled.iter().map(|u| u.key.hex()).collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let results = store.results(&key_refs)?;
    for (key, result) in &results {
        snapshot.cached.insert(
            key,
            Recorded {
                key,
                generated_at: result.generated_at,
                images: result.images.iter().map(|i| i.blake3.as_str()).collect(),
                outputs: vec![],
            },
        );
    }
    let mut wanted: HashSet<&str> = snapshot
        .cached
        .values()
        .flat_map(|r| r.images.iter().copied())
        .collect();
    for unit in &unsettled {
        if let Some(rec) = snapshot.lock.get(unit.task.id.as_str()) {
            wanted.extend(rec.images.iter().copied());
        }
    }
    let present: Vec<&str> = wanted.into_iter().filter(|h| blobs.contains(h)).collect();
    snapshot.blobs.extend(present);
    let decisions = reconcile::reconcile(&items, &snapshot, force, now);
    // Only what would otherwise be generated is asked of the remote cache.
    let Some(remote) = remote.as_ref() else {
        return Ok(decisions);
    };
    let (indices, asked): (Vec<usize>, Vec<Wanted>) = units
        .iter()
        .zip(&decisions)
        .enumerate()
        .filter(|(_, (u, d))| d.action == Action::Generate && !forced.contains(&u.task.id))
        .map(|(i, (u, _))| {
            let wanted = Wanted {
                task: u.task.id.clone(),
                key: u.key.hex(),
                n: u.compiled.n,
            };
            (i, wanted)
        })
        .unzip();
    if asked.is_empty() {
        return Ok(decisions);
    }
    let found = remote.cache.lookup(&asked, remote.fetch.then_some(&*blobs));
    // What the remote cache supplied (the snapshot borrows from it).
    let hits: Vec<(String, RemoteEntry)> = indices
        .iter()
        .zip(asked)
        .zip(found)
        .filter_map(|((i, w), entry)| Some((*i, w.key, entry?)))
        .map(|(i, key, entry)| {
            if remote.fetch {
                let unit = &units[i];
                let result = StoredResult {
                    key: key.clone(),
                    task_id: unit.task.id.clone(),
                    model: unit.compiled.model.clone(),
                    provider: remote.provider.clone(),
                    request_json: unit.compiled.body.to_string(),
                    remote_task_id: None,
                    images: entry
                        .images
                        .iter()
                        .map(|i| StoredImage {
                            blake3: i.blake3.clone(),
                            size: i.size,
                            actual_prompt: None,
                            seed: None,
                            paid_at: None,
                        })
                        .collect(),
                    cost: unit.compiled.price.times(unit.compiled.n),
                    generated_at: entry.generated_at,
                };
                store.put_result(&result).map(|()| (key, entry))
            } else {
                Ok((key, entry))
            }
        })
        .collect::<Result<_>>()?;
    if hits.is_empty() {
        return Ok(decisions);
    }
    for (key, entry) in &hits {
        let images: Vec<&str> = entry.images.iter().map(|i| i.blake3.as_str()).collect();
        // Fetched blobs are in the store now; a plan takes the entry's word for them.
        snapshot.blobs.extend(images.iter().copied());
        snapshot.cached.insert(
            key,
            Recorded {
                key,
                generated_at: entry.generated_at,
                images,
                outputs: vec![],
            },
        );
    }
    let from_remote: HashSet<&str> = hits.iter().map(|(k, _)| k.as_str()).collect();
    let mut decisions = reconcile::reconcile(&items, &snapshot, force, now);
    for (unit, d) in units.iter().zip(&mut decisions) {
        d.remote = matches!(d.action, Action::Restore { .. })
            && from_remote.contains(unit.key.hex().as_str());
    }
    Ok(decisions)
}

/// Lock entries an earlier wanx wrote under a version-1 key (`n` in it), by task id → the current
/// key (hex); the store's result and partial result under the old key are copied to the new one,
/// so the pool holds what was paid for. Nothing is regenerated, nothing paid again.
fn migrate<'u>(
    lock: &LockFile,
    store: &mut Store,
    units: &'u [Unit<'_>],
) -> Result<HashMap<&'u str, String>> {
    let mut migrated = HashMap::new();
    for unit in units {
        let (Some(entry), Some(legacy)) = (lock.tasks.get(&unit.task.id), unit.legacy) else {
            continue;
        };
        if *legacy.to_hex() != *entry.key || legacy == unit.key {
            continue;
        }
        let key = unit.key.hex();
        if store.pool(&key)?.is_none()
            && let Some(mut result) = store.result(&legacy.hex())?
        {
            result.key.clone_from(&key);
            store.put_result(&result)?;
        }
        migrated.insert(unit.task.id.as_str(), key);
    }
    Ok(migrated)
}

fn item<'a>(unit: &'a Unit<'_>) -> Item<'a> {
    Item {
        id: &unit.task.id,
        key: unit.key,
        n: unit.compiled.n,
        pick: unit.task.pick.as_deref(),
        price: unit.compiled.price,
        output: &unit.task.output,
    }
}

/// The blake3 of a file on disk, from the stat cache when size, mtime and inode still match.
fn observe<'c>(
    root: &Path,
    path: &str,
    cached: Option<&'c StatEntry>,
    new_stats: &mut Vec<(String, StatEntry)>,
) -> Option<Cow<'c, str>> {
    let full = root.join(path);
    let meta = std::fs::metadata(&full).ok()?;
    let (size, mtime_ns, inode) = stat_of(&meta);
    if let Some(c) = cached
        && c.size == size
        && c.mtime_ns == mtime_ns
        && c.inode == inode
    {
        return Some(Cow::Borrowed(&c.blake3));
    }
    let (hash, _) = hash_file(&full).ok()?;
    new_stats.push((
        path.to_owned(),
        StatEntry {
            size,
            mtime_ns,
            inode,
            blake3: hash.clone(),
        },
    ));
    Some(Cow::Owned(hash))
}

/// `wanx plan`: one line per task in graph order with its action, reason and price, then totals.
pub fn print_plan(planned: &Planned<'_>, printer: &Printer, json: bool) {
    let totals = planned.totals();
    if json {
        let mut tasks: Vec<TaskReport> = planned
            .units
            .iter()
            .zip(&planned.decisions)
            .map(|(u, d)| task_report(u, d, "planned", None).with_why(planned.why.get(&u.task.id)))
            .collect();
        tasks.extend(
            planned
                .waiting
                .iter()
                .map(|w| waiting_report(w, "planned", None)),
        );
        let summary = Summary {
            generated: totals.generate,
            restored: totals.restore,
            restored_remote: totals.restore_remote,
            fresh: totals.fresh,
            images_generated: totals.images_to_generate,
            // Nothing is spent or saved by planning: what would be is under its own names.
            would_spend: Some(totals.cost),
            would_save: Some(totals.saved),
            currency: "CNY",
            emulated: planned.provider.is_emulated(),
            dry_run: true,
            cumulative: planned
                .store
                .ledger_totals()
                .map(|ledger| Cumulative::of(&ledger, planned.provider.is_emulated()))
                .unwrap_or_default(),
            tasks,
            budget: planned.budget.map(Money::as_yuan),
            ..Summary::default()
        };
        printer.data(&serde_json::to_string_pretty(&summary).expect("a summary always serializes"));
        return;
    }
    let width = planned
        .units
        .iter()
        .map(|u| u.task.id.len())
        .chain(planned.waiting.iter().map(|w| w.task.id.len()))
        .max()
        .unwrap_or(0);
    let action_width = if planned.decisions.iter().any(|d| d.remote) {
        16
    } else {
        8
    };
    let line = |action: &str, id: &str, model: &str, reason: &str, price: String| {
        printer.data(&format!(
            "{action:<action_width$}  {id:<width$}  {model:<18}  {reason:<28}  {price}"
        ));
    };
    for (unit, d) in planned.units.iter().zip(&planned.decisions) {
        let price = match d.action {
            Action::Generate if d.held > 0 => format!(
                "n {} → {}: {} more images, {} ({} × {}; {} paid earlier, kept)",
                d.held,
                unit.compiled.n,
                unit.compiled.n - d.held,
                d.cost(),
                unit.compiled.n - d.held,
                unit.compiled.price,
                d.held
            ),
            Action::Generate => format!(
                "{} ({} × {})",
                d.cost(),
                unit.compiled.n,
                unit.compiled.price
            ),
            _ => "free".to_owned(),
        };
        let reason = match planned.why.get(&unit.task.id) {
            Some(changes) if !changes.is_empty() => crate::planner::why::line(changes),
            _ => d.reason.to_string(),
        };
        line(
            if d.remote {
                "restore (remote)"
            } else {
                d.action.name()
            },
            &unit.task.id,
            &unit.compiled.model,
            &reason,
            price,
        );
    }
    for w in &planned.waiting {
        let price = format!(
            "up to {} ({} × {})",
            w.compiled.cost(),
            w.compiled.n,
            w.compiled.price
        );
        line(
            "generate",
            &w.task.id,
            &w.compiled.model,
            &waiting_reason(w),
            price,
        );
    }
    let budget = match planned.budget {
        Some(b) if totals.cost > b => {
            format!("; {} of {b} budget: a build would be refused", totals.cost)
        }
        Some(b) => format!("; {} of {b} budget", totals.cost),
        None => String::new(),
    };
    printer.data(&format!(
        "\n{}; saving {}{budget}",
        totals.describe(planned.provider.is_emulated()),
        totals.saved
    ));
    if !planned.waiting.is_empty() {
        printer.data(&format!(
            "{} of them consume images generated first; if those come out byte-identical, they cost nothing",
            planned.waiting.len()
        ));
    }
    if !planned.stale_lock_entries.is_empty() {
        let n = planned.stale_lock_entries.len();
        printer.data(&format!(
            "{n} lock entr{} for tasks no longer in any plan will be dropped",
            if n == 1 { "y" } else { "ies" }
        ));
    }
}

pub fn waiting_reason(w: &Waiting<'_>) -> String {
    let names: Vec<String> = w.upstream.iter().map(|u| format!("`{u}`")).collect();
    format!("waits for {}", names.join(", "))
}

pub fn task_report(
    unit: &Unit<'_>,
    d: &Decision,
    status: &'static str,
    error: Option<String>,
) -> TaskReport {
    TaskReport {
        id: unit.task.id.clone(),
        action: d.action.name(),
        status,
        reason: d.reason.to_string(),
        model: unit.compiled.model.clone(),
        images: unit.compiled.n,
        cost: d.cost(),
        saved: d.saved(),
        outputs: d.outputs.clone(),
        error,
        remote: d.remote,
        changes: Vec::new(),
    }
}

pub fn waiting_report(w: &Waiting<'_>, status: &'static str, error: Option<String>) -> TaskReport {
    TaskReport {
        id: w.task.id.clone(),
        action: "generate",
        status,
        reason: waiting_reason(w),
        model: w.compiled.model.clone(),
        images: w.compiled.n,
        cost: if status == "planned" {
            w.compiled.cost()
        } else {
            Money::ZERO
        },
        saved: Money::ZERO,
        outputs: Vec::new(),
        error,
        remote: false,
        changes: Vec::new(),
    }
}
