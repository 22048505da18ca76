//! `wanx watch`: an initial build, then a rebuild on every change to `wanx.toml`, a plan file or a
//! local input. This module owns notify: file events are debounced by notify-debouncer-full on its own
//! thread (an editor's truncate+write, rename-over or delete+create is one change) and bridged into
//! tokio through a bounded channel; [`WatchSet`] decides which events are changes, so wanx's own writes
//! (outputs, `.wanx/`, `wanx.lock`) never trigger a rebuild.
//!
//! Each rebuild is an ordinary [`build::build_with`]: reconcile makes it regenerate exactly what
//! changed, restore what the cache has, and leave the rest. After a build that left every task up to
//! date, a save that only edits plan files builds just the tasks it changed and their consumers
//! ([`Settled`]): at 10,000 tasks, deciding every task again is most of a rebuild's time. The last
//! few projects stay loaded ([`KEEP_PROJECTS`]): a save that brings the files back to one of them (an
//! undo) loads nothing, and each build hands the lock it wrote to the next
//! ([`LockFile::keep`](crate::project::lock::LockFile::keep)). A save that breaks the project prints
//! its diagnostics and the watch goes on with the last good plan.
//!
//! A change that arrives while a build runs: the new state is loaded and keyed at once, and the running
//! build's [`before_submit`](crate::executor::Executor::before_submit) gate drops every task not yet
//! submitted whose key the new state no longer wants (never paid for). Tasks already submitted finish
//! and are cached (they are paid for). Then the new state builds.
//!
//! Ctrl-C (or SIGTERM): no new submission; generations already submitted finish and are cached, then
//! the watch ends. A second Ctrl-C ends at once: every output is written atomically (never half
//! written), and each submitted task's remote id is already in the store's journal.
//!
//! Events for programs (`--json`) are documented in [`crate::watch::events`]; [`sink`] is where
//! they go besides stdout (the live gallery of `--serve`).

pub mod events;
pub mod set;
pub mod sink;

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notify::{PollWatcher, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{
    DebounceEventResult, DebouncedEvent, Debouncer, NoCache, RecommendedCache, new_debouncer_opt,
};
use tokio::sync::mpsc;

use crate::build::{self, Hooks, Project};
use crate::cli::{BuildArgs, WatchArgs};
use crate::error::{Error, Result};
use crate::executor::{Event, Job};
use crate::project::manifest::Manifest;
use crate::term::printer::Printer;
use crate::watch::events::{Reporter, Session, Timings};
use crate::watch::set::{Depth, Relevance, WatchSet};

/// Quiet time after a file event before it is delivered: long enough to merge an editor's save into
/// one change, short enough for the 250 ms save → first request target.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// How often the debouncer looks for events that have been quiet long enough.
const TICK: Duration = Duration::from_millis(10);
/// How long a change that deleted a watched file waits for it to come back (delete + create saves).
const SETTLE: Duration = Duration::from_millis(150);
/// How often `--poll` scans the watched folders.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Debounced batches in flight between notify's thread and the watch loop; the notify side waits
/// (its own queue keeps merging events) when the loop is busy.
const CHANNEL_CAPACITY: usize = 16;
/// Projects kept loaded after their build: a save that brings the files back to one of them (an
/// undo, a branch switched back) loads nothing.
const KEEP_PROJECTS: usize = 3;

/// `wanx watch`.
pub async fn watch(dir: Option<&Path>, args: &WatchArgs, printer: &Printer) -> Result<()> {
    let start = Instant::now();
    let cwd = match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::current_dir().map_err(|e| Error::io("could not read", ".", e))?,
    };
    let manifest_path = Manifest::find(&cwd)?;
    let mut reporter = Reporter {
        printer: *printer,
        json: args.json,
        start,
        sink: None,
    };
    if let Some(addr) = &args.serve {
        let live = crate::gallery::server::Live::start(addr, dir, &args.selection).await?;
        reporter.sink = Some(live.sink());
        reporter.serving(&live.url());
    }
    // The watch set before the first load: the manifest's globs, or the defaults while it is broken.
    let set = match Manifest::load(&manifest_path) {
        Ok((manifest, registry)) => {
            let loaded = crate::plan::load(&manifest, &registry).ok();
            WatchSet::new(&manifest, loaded.as_ref())
        }
        Err(_) => WatchSet::new(&fallback_manifest(&manifest_path)?, None),
    };
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let fs = FsWatch::start(args.poll, tx)?;
    let mut watch = Watch {
        args,
        printer: *printer,
        reporter,
        dir: dir.map(Path::to_path_buf),
        rx,
        fs,
        set,
        session: Session::default(),
        stop: Stop::new()?,
        seq: 0,
        earlier: Vec::new(),
        settled: false,
    };
    watch.fs.update(watch.set.dirs())?;
    let dirs: Vec<String> = watch
        .fs
        .watched
        .iter()
        .map(|(d, _)| d.display().to_string())
        .collect();
    watch
        .reporter
        .watching(watch.set.root(), args.poll, &dirs, watch.set.counts());
    watch.run(start).await
}

/// A change: the project-relative paths and when the first event of it happened.
#[derive(Debug)]
struct Change {
    paths: BTreeSet<String>,
    first: Instant,
    announced: bool,
}

impl Change {
    fn add(change: &mut Option<Change>, path: &Path, at: Instant) {
        let c = change.get_or_insert_with(|| Change {
            paths: BTreeSet::new(),
            first: at,
            announced: false,
        });
        c.first = c.first.min(at);
        c.paths.insert(path.display().to_string());
    }
}

struct Watch<'a> {
    args: &'a WatchArgs,
    printer: Printer,
    reporter: Reporter,
    dir: Option<PathBuf>,
    rx: mpsc::Receiver<DebounceEventResult>,
    fs: FsWatch,
    set: WatchSet,
    session: Session,
    stop: Stop,
    seq: u64,
    /// The projects of the last builds, most recent first (at most [`KEEP_PROJECTS`]).
    earlier: Vec<Project>,
    /// Whether the last build (of `earlier[0]`) left every task up to date (see [`Settled`]).
    settled: bool,
}

/// A build under watch that left every task up to date (fresh, generated or restored). The next
/// save that edits only plan files then builds only the tasks it changed and those that consume
/// their images: the others are as that build left them. Anything else (`wanx.toml`, a local
/// input, a task added or removed, a failure or an interruption) builds the whole selection, as
/// `wanx build` does.
struct Settled;

impl Settled {
    /// Whether `ended` left every task of the project up to date. A build of `only` reports the
    /// tasks it did not build as fresh, as the last build left them.
    fn settles(project: &Project, ended: &mut Ended, only: Option<&Vec<String>>) -> bool {
        let total = project.loaded.tasks.len();
        let Ok(built) = ended.result.as_mut() else {
            return false;
        };
        let s = &mut built.summary;
        if only.is_some() {
            let counted = s.generated + s.restored + s.fresh + s.failed + s.skipped;
            s.fresh += total.saturating_sub(counted);
        }
        built.fatal.is_none()
            && !built.interrupted
            && s.failed == 0
            && s.skipped == 0
            && s.generated + s.restored + s.fresh == total
    }

    /// The tasks `change` edited since the `settled` project and every task that consumes their
    /// images, in plan order; `None` when the whole project must be built (see [`Settled`]) or
    /// nothing changed. The tasks are compared in plan order: a task added, removed or moved
    /// before another builds everything.
    fn changed(settled: &Project, project: &Project, change: &Change) -> Option<Vec<String>> {
        let loaded = &project.loaded;
        let plans_only = change
            .paths
            .iter()
            .all(|p| loaded.digests.contains_key(Path::new(p)));
        if settled.manifest.digest != project.manifest.digest
            || !plans_only
            || loaded.tasks.len() != settled.loaded.tasks.len()
        {
            return None;
        }
        // Only a file whose text changed can hold a changed task (tasks come file by file).
        let edited = |file: &Path| loaded.digests.get(file) != settled.loaded.digests.get(file);
        let mut file: Option<(&Path, bool)> = None;
        let mut changed: HashSet<&str> = HashSet::new();
        for (task, before) in loaded.tasks.iter().zip(&settled.loaded.tasks) {
            if task.id != before.id {
                return None;
            }
            let in_edited = match file {
                Some((f, e)) if f == task.origin.file => e,
                _ => {
                    let e = edited(&task.origin.file);
                    file = Some((&task.origin.file, e));
                    e
                }
            };
            if in_edited && task != before {
                changed.insert(&task.id);
            }
        }
        loop {
            let consumers: Vec<&str> = loaded
                .tasks
                .iter()
                .filter(|t| !changed.contains(t.id.as_str()))
                .filter(|t| crate::planner::upstream_ids(t).any(|u| changed.contains(u)))
                .map(|t| t.id.as_str())
                .collect();
            if consumers.is_empty() {
                break;
            }
            changed.extend(consumers);
        }
        (!changed.is_empty()).then(|| {
            loaded
                .tasks
                .iter()
                .filter(|t| changed.contains(t.id.as_str()))
                .map(|t| t.id.clone())
                .collect()
        })
    }
}

/// How a build under watch ended.
struct Ended {
    result: Result<build::Built>,
    timings: Timings,
    submissions: u64,
    pending: Option<Change>,
    /// Ctrl-C arrived: `Some(true)` when a second one cut the build short.
    stop: Option<bool>,
}

impl Watch<'_> {
    async fn run(&mut self, start: Instant) -> Result<()> {
        let mut next = Some(Change {
            paths: BTreeSet::new(),
            first: start,
            announced: false,
        });
        loop {
            let change = if let Some(change) = next.take() {
                change
            } else if let Some(change) = self.wait().await {
                change
            } else {
                crate::project::lock::LockFile::mirror_kept();
                self.reporter.stopped(false, &self.session);
                return Ok(());
            };
            let seq = self.seq;
            self.seq += 1;
            if !change.announced {
                let paths: Vec<String> = change.paths.iter().cloned().collect();
                self.reporter.change(seq, &paths, false, change.first);
            }
            let (project, was) = match Project::load_reusing(self.dir.as_deref(), &mut self.earlier)
            {
                Ok(loaded) => loaded,
                Err(e) => {
                    self.reporter.invalid(seq, &e);
                    self.reporter.idle(self.set.counts(), self.args.poll);
                    continue;
                }
            };
            self.rewatch(self.set.renew(&project.manifest, &project.loaded));
            // A selection on the command line is built whole each time. The project the last
            // build settled is `earlier[0]`, unless this is that very project again.
            let only = self
                .earlier
                .first()
                .filter(|_| self.settled && was != Some(0) && self.args.selection.tasks.is_empty())
                .and_then(|settled| Settled::changed(settled, &project, &change));
            let mut ended = self.build(seq, &project, &change, only.as_ref()).await;
            let settles = Settled::settles(&project, &mut ended, only.as_ref());
            match &ended.result {
                Ok(built) => {
                    self.session.builds += 1;
                    self.session.spent += built.summary.spent;
                    self.session.saved += built.summary.saved;
                    self.reporter.built(
                        seq,
                        &built.summary,
                        ended.submissions,
                        &ended.timings,
                        &self.session,
                    );
                    if let Some(fatal) = &built.fatal {
                        self.reporter.error(seq, fatal);
                    }
                }
                Err(Error::Interrupted) => {}
                Err(e) => self.reporter.error(seq, e),
            }
            // This build's outputs are wanx's own writes: ignore them too (the set is this
            // project's already: renewed before the build).
            let set = match &ended.result {
                Ok(built) => self.set.clone().with_outputs(
                    built
                        .summary
                        .tasks
                        .iter()
                        .flat_map(|t| &t.outputs)
                        .map(String::as_str),
                ),
                Err(_) => WatchSet::new(&project.manifest, Some(&project.loaded)),
            };
            self.rewatch(set);
            // The project as this build left it, for the next save.
            self.settled = settles;
            self.earlier.insert(0, project);
            self.earlier.truncate(KEEP_PROJECTS);
            if let Some(cut_short) = ended.stop {
                crate::project::lock::LockFile::mirror_kept();
                self.reporter.stopped(cut_short, &self.session);
                return if cut_short {
                    Err(Error::Interrupted)
                } else {
                    Ok(())
                };
            }
            next = ended.pending;
            if next.is_none() {
                self.reporter.idle(self.set.counts(), self.args.poll);
            }
        }
    }

    /// Waits for the next change; `None` on Ctrl-C.
    async fn wait(&mut self) -> Option<Change> {
        let mut change = None;
        loop {
            tokio::select! {
                batch = self.rx.recv() => {
                    let batch = batch?;
                    self.absorb(batch, &mut change);
                    if change.is_some() {
                        break;
                    }
                }
                () = self.stop.recv() => return None,
            }
        }
        self.settle(&mut change).await;
        change
    }

    /// A change that removed a watched file waits briefly for it to be written again, so that an
    /// editor's delete + create save does not build a project without that file.
    async fn settle(&mut self, change: &mut Option<Change>) {
        let deadline = tokio::time::Instant::now() + SETTLE;
        let root = self.set.root().to_path_buf();
        let missing = |c: &Option<Change>| {
            c.as_ref()
                .is_some_and(|c| c.paths.iter().any(|p| !root.join(p).exists()))
        };
        while missing(change) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(batch)) => self.absorb(batch, change),
                Ok(None) | Err(_) => break,
            }
        }
    }

    /// Adds the relevant events of a debounced batch to `change`.
    fn absorb(&mut self, batch: DebounceEventResult, change: &mut Option<Change>) {
        let events = match batch {
            Ok(events) => events,
            Err(errors) => {
                for e in errors {
                    let hint = limit_hint(&e);
                    self.printer.warn(
                        "Watch",
                        &format!("{e}{}", hint.map(|h| format!("; {h}")).unwrap_or_default()),
                    );
                }
                return;
            }
        };
        let mut new_dirs = false;
        for DebouncedEvent { event, time } in events {
            if event.need_rescan() {
                Change::add(change, Path::new("(rescan)"), time);
                new_dirs = true;
                continue;
            }
            if !counts(&event.kind) {
                continue;
            }
            for path in &event.paths {
                match self.set.classify(path) {
                    Some(Relevance::Changed(rel)) => Change::add(change, &rel, time),
                    Some(Relevance::Directory(rel)) => {
                        new_dirs = true;
                        for plan in self.set.plans_in(&rel) {
                            Change::add(change, &plan, time);
                        }
                    }
                    None => {}
                }
            }
        }
        if new_dirs {
            let set = self.set.clone();
            self.rewatch(set);
        }
    }

    /// Watches what `set` names; a failure is reported and the watch goes on with what it has.
    fn rewatch(&mut self, set: WatchSet) {
        if let Err(e) = self.fs.update(set.dirs()) {
            self.printer.report_error(&e);
        }
        self.set = set;
    }

    /// Runs one build while watching for changes and Ctrl-C.
    async fn build(
        &mut self,
        seq: u64,
        project: &Project,
        change: &Change,
        only: Option<&Vec<String>>,
    ) -> Ended {
        let gate = Arc::new(Gate::default());
        let first_request: Arc<Mutex<Option<Instant>>> = Arc::default();
        let planned: Arc<Mutex<Option<Instant>>> = Arc::default();
        let submissions = Arc::new(AtomicU64::new(0));
        let reporter = self.reporter.clone();
        let hooks = Hooks {
            on_plan: Some({
                let reporter = reporter.clone();
                let planned = Arc::clone(&planned);
                let total = only.map(|_| project.loaded.tasks.len());
                Arc::new(move |p: &build::Planned<'_>| {
                    *planned.lock().expect("never poisoned") = Some(Instant::now());
                    let planned_here = p.units.len() + p.waiting.len();
                    let beside = total.map_or(0, |t| t.saturating_sub(planned_here));
                    reporter.plan(seq, p, beside);
                })
            }),
            on_event: Some({
                let first_request = Arc::clone(&first_request);
                let submissions = Arc::clone(&submissions);
                Arc::new(move |event: &Event| {
                    if matches!(event, Event::Submitted { .. }) {
                        submissions.fetch_add(1, Ordering::SeqCst);
                        first_request
                            .lock()
                            .expect("never poisoned")
                            .get_or_insert_with(Instant::now);
                    }
                    reporter.executor_event(seq, event);
                })
            }),
            before_submit: Some({
                let gate = Arc::clone(&gate);
                Arc::new(move |job: &Job| gate.allows(job))
            }),
        };
        let mut selection = self.args.selection.clone();
        if let Some(only) = only {
            selection.tasks.clone_from(only);
        }
        let args = BuildArgs {
            selection,
            jobs: self.args.jobs,
            max_spend: self.args.max_spend,
            ..BuildArgs::default()
        };
        let printer = self.printer;
        // Ctrl-C goes through the gate (`stop_all`), which also drops what a newer save made obsolete.
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let building = build::build_with(project, &args, &printer, cancel, &hooks);
        tokio::pin!(building);
        let mut pending: Option<Change> = None;
        let mut stopping = false;
        let result = loop {
            tokio::select! {
                result = &mut building => break result,
                Some(batch) = self.rx.recv() => {
                    let before = pending.as_ref().map_or(0, |c| c.paths.len());
                    self.absorb(batch, &mut pending);
                    if let Some(next) = &mut pending && next.paths.len() > before {
                        let paths: Vec<String> = next.paths.iter().cloned().collect();
                        self.reporter.change(self.seq, &paths, true, next.first);
                        next.announced = true;
                        self.narrow(&gate);
                    }
                }
                () = self.stop.recv() => {
                    if stopping {
                        break Err(Error::Interrupted);
                    }
                    stopping = true;
                    gate.stop_all.store(true, Ordering::SeqCst);
                    self.reporter.stopping();
                }
            }
        };
        let cut_short = matches!(result, Err(Error::Interrupted));
        Ended {
            result,
            timings: Timings {
                changed: change.first,
                planned: *planned.lock().expect("never poisoned"),
                first_request: *first_request.lock().expect("never poisoned"),
                done: Instant::now(),
            },
            submissions: submissions.load(Ordering::SeqCst),
            pending,
            stop: stopping.then_some(cut_short),
        }
    }

    /// Loads and keys the project as it is now, and lets the running build submit only what that
    /// state still wants. A state that does not load changes nothing (the last good plan stands).
    fn narrow(&self, gate: &Gate) {
        let quiet = Printer {
            quiet: true,
            ..self.printer
        };
        let Ok(project) = Project::load(self.dir.as_deref(), &quiet) else {
            return;
        };
        let Ok(planned) = build::plan_blocking(&project, &self.args.selection, &HashSet::new())
        else {
            return;
        };
        let keys = planned.units.iter().map(|u| u.key.hex()).collect();
        *gate.wanted.lock().expect("never poisoned") = Some(keys);
    }
}

/// Whether a generation may still be submitted.
#[derive(Default)]
struct Gate {
    /// Ctrl-C: submit nothing more.
    stop_all: AtomicBool,
    /// The keys the newest loadable state wants; `None` until a change arrives during the build.
    wanted: Mutex<Option<HashSet<String>>>,
}

impl Gate {
    fn allows(&self, job: &Job) -> bool {
        if self.stop_all.load(Ordering::SeqCst) {
            return false;
        }
        self.wanted
            .lock()
            .expect("never poisoned")
            .as_ref()
            .is_none_or(|keys| keys.contains(&job.key.hex()))
    }
}

/// Everything but reads: a read (by wanx itself, too) changes nothing. Metadata changes count, as
/// `--poll` reports a new modification time as one; a mere `touch` costs a no-op build.
fn counts(kind: &notify::EventKind) -> bool {
    use notify::EventKind;
    use notify::event::{MetadataKind, ModifyKind};
    !matches!(
        kind,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) | EventKind::Access(_)
    )
}

/// The manifest's location with default settings, while `wanx.toml` itself does not parse.
fn fallback_manifest(path: &Path) -> Result<Manifest> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("could not create", "a temp dir", e))?;
    std::fs::write(dir.path().join(crate::project::manifest::FILE_NAME), "")
        .map_err(|e| Error::io("could not write", dir.path(), e))?;
    let (mut manifest, _) = Manifest::load(&dir.path().join(crate::project::manifest::FILE_NAME))?;
    manifest.root = std::path::absolute(path.parent().unwrap_or(Path::new(".")))
        .map_err(|e| Error::io("could not resolve", path, e))?;
    Ok(manifest)
}

/// The debouncer over either OS notifications or polling.
enum Backend {
    Native(Debouncer<RecommendedWatcher, RecommendedCache>),
    Poll(Debouncer<PollWatcher, NoCache>),
}

struct FsWatch {
    backend: Backend,
    poll: bool,
    watched: Vec<(PathBuf, Depth)>,
}

impl FsWatch {
    fn start(poll: bool, tx: mpsc::Sender<DebounceEventResult>) -> Result<FsWatch> {
        // notify's thread waits while the loop is busy; a closed channel means the watch is ending.
        let handler = move |batch: DebounceEventResult| {
            let _ = tx.blocking_send(batch);
        };
        let backend = if poll {
            // Modification times are compared in whole seconds: compare contents too, so two saves
            // within a second are both seen.
            let config = notify::Config::default()
                .with_poll_interval(POLL_INTERVAL)
                .with_compare_contents(true);
            Backend::Poll(
                new_debouncer_opt(DEBOUNCE, Some(TICK), handler, NoCache::new(), config)
                    .map_err(|e| watch_error(&e, Path::new("."), poll))?,
            )
        } else {
            Backend::Native(
                new_debouncer_opt(
                    DEBOUNCE,
                    Some(TICK),
                    handler,
                    RecommendedCache::new(),
                    notify::Config::default(),
                )
                .map_err(|e| watch_error(&e, Path::new("."), poll))?,
            )
        };
        Ok(FsWatch {
            backend,
            poll,
            watched: Vec::new(),
        })
    }

    /// Watches exactly `dirs`: unwatches what is no longer wanted, watches what is new.
    fn update(&mut self, dirs: Vec<(PathBuf, Depth)>) -> Result<()> {
        for old in &self.watched {
            if !dirs.contains(old) {
                // A folder that is gone is unwatched already.
                let _ = match &mut self.backend {
                    Backend::Native(d) => d.unwatch(&old.0),
                    Backend::Poll(d) => d.unwatch(&old.0),
                };
            }
        }
        let mut result = Ok(());
        let mut now = Vec::new();
        for (dir, depth) in dirs {
            if self.watched.contains(&(dir.clone(), depth)) {
                now.push((dir, depth));
                continue;
            }
            let mode = match depth {
                Depth::Flat => RecursiveMode::NonRecursive,
                Depth::Recursive => RecursiveMode::Recursive,
            };
            let added = match &mut self.backend {
                Backend::Native(d) => d.watch(&dir, mode),
                Backend::Poll(d) => d.watch(&dir, mode),
            };
            match added {
                Ok(()) => now.push((dir, depth)),
                Err(e) => {
                    if result.is_ok() {
                        result = Err(watch_error(&e, &dir, self.poll));
                    }
                }
            }
        }
        self.watched = now;
        result
    }
}

fn watch_error(e: &notify::Error, path: &Path, poll: bool) -> Error {
    match limit_hint(e) {
        Some(hint) if !poll => Error::Usage {
            message: format!("could not watch `{}`: {e}", path.display()),
            hint: Some(hint),
        },
        _ => Error::Other(format!("could not watch `{}`: {e}", path.display())),
    }
}

/// The hint for the OS limits on inotify watches and instances.
fn limit_hint(e: &notify::Error) -> Option<String> {
    const EMFILE: i32 = 24;
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => Some(
            "the system's inotify watch limit is reached: raise it (`sudo sysctl fs.inotify.max_user_watches=524288`), or run `wanx watch --poll`".to_owned(),
        ),
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(EMFILE) => Some(
            "the system's inotify instance limit is reached: raise it (`sudo sysctl fs.inotify.max_user_instances=1024`), or run `wanx watch --poll`".to_owned(),
        ),
        _ => None,
    }
}

/// Ctrl-C, and SIGTERM on Unix: both stop the watch the same way.
struct Stop {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Stop {
    fn new() -> Result<Stop> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen = |kind| {
                signal(kind).map_err(|e| Error::Other(format!("could not listen for signals: {e}")))
            };
            Ok(Stop {
                interrupt: listen(SignalKind::interrupt())?,
                terminate: listen(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Stop {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
