//! `Executor`: performs reconcile's decisions. Restores copy verified blobs to their outputs; generations
//! run under tokio within per-model limits (tasks in flight, submissions per second) and a global job
//! limit: journal the intent, submit, journal the remote id, poll, download at once, verify, store the
//! blobs, record the result, write the outputs atomically, update `wanx.lock`. Each task's effects are
//! recorded as it completes, so an interrupted build keeps everything it paid for.

pub mod dashscope;
pub mod image_check;
pub mod secret;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::compile::Compiled;
use crate::compile::cache_key::CacheKey;
use crate::executor::dashscope::{Client, ListedTask, ProviderError, SubmitError, TaskState};
use crate::money::Money;
use crate::plan::task::OutputSpec;
use crate::planner::MediaSource;
use crate::project::lock::{LockEntry, LockFile, LockOutput};
use crate::registry::Registry;
use crate::store::blob_store::BlobStore;
use crate::store::{
    Charge, JournalEntry, JournalIntent, Partial, StatEntry, Store, StoredImage, StoredResult,
    stat_of,
};
use crate::tree::output_name;

/// The largest image wanx accepts from a result URL.
const MAX_IMAGE_BYTES: u64 = 64 * 1024 * 1024;
/// Follow-up requests for images a task failed to produce (partial failures).
const MAX_FOLLOW_UPS: u32 = 2;
/// Submission attempts on transient errors before the task fails.
const MAX_SUBMIT_ATTEMPTS: u32 = 6;

/// One unit of work.
pub struct Job {
    pub id: String,
    pub key: CacheKey,
    pub compiled: Compiled,
    pub output: OutputSpec,
    /// The candidates written as outputs (1-based); `None` writes every image. Behind a pointer:
    /// jobs travel in enums that stay small.
    pub pick: Option<Arc<Vec<u32>>>,
    pub kind: JobKind,
    /// The bytes for each media slot of the body (JSON pointer → source).
    pub media: Vec<(String, MediaSource)>,
    /// The model takes images inline as data URIs; otherwise they go through temporary storage.
    pub inline_media: bool,
}

pub enum JobKind {
    Restore {
        images: Vec<String>,
        generated_at: i64,
    },
    Generate,
}

/// What happened to a job.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub id: String,
    pub result: Result<Done, Failure>,
}

/// Why a job produced no images.
#[derive(Clone, Debug, Default)]
pub struct Failure {
    pub message: String,
    /// Not submitted (interrupted, or stopped by another task's fatal error): nothing more was paid.
    pub skipped: bool,
    /// Images paid for in this build all the same (a partial result, kept for the next build).
    pub images_billed: u32,
    /// What they cost.
    pub spent: Money,
    /// What the service may have billed for a submission whose fate is unknown (the connection broke
    /// after it was sent, and its task could not be found in the service's list): not paid for
    /// certain, not sent again in this build.
    pub maybe_billed: Money,
}

impl Failure {
    fn skipped(message: &str) -> Failure {
        Failure {
            message: message.to_owned(),
            skipped: true,
            ..Failure::default()
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure {
            message,
            ..Failure::default()
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Clone, Debug)]
pub struct Done {
    pub generated: bool,
    pub entry: LockEntry,
    /// Money this build booked for this job (zero for restores; see [`Charge`]).
    pub spent: Money,
    /// Images this build booked for it.
    pub images_billed: u32,
    /// A task resumed from the journal (an earlier build submitted it): a generation, not a
    /// restore. Its booking is already in the build's figures from the resume.
    pub resumed: bool,
}

/// Progress, for the printer.
#[derive(Clone, Debug)]
pub enum Event {
    Submitted {
        id: String,
        remote: String,
    },
    Retrying {
        id: String,
        error: String,
        wait: Duration,
    },
    Finished(Outcome),
}

/// How often to query a task: `first` after submission, growing by half each time up to `max`.
#[derive(Clone, Copy, Debug)]
pub struct PollPolicy {
    pub first: Duration,
    pub max: Duration,
}

impl PollPolicy {
    /// The official SDK's schedule starts at 1 s and caps at 5 s (protocol §6).
    pub const REAL: PollPolicy = PollPolicy {
        first: Duration::from_secs(1),
        max: Duration::from_secs(5),
    };
    /// For the emulator: its tasks finish in well under a second.
    pub const EMULATED: PollPolicy = PollPolicy {
        first: Duration::from_millis(40),
        max: Duration::from_millis(200),
    };
}

/// Spaces events at least `spacing` apart (submissions per model, task queries overall).
struct Pacer {
    spacing: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    /// Paces at a hair under `per_second`: a service counting in a sliding one-second window sees
    /// network jitter, and an event exactly on the window's edge would be throttled.
    fn new(per_second: u32) -> Pacer {
        Pacer {
            spacing: Duration::from_secs(1) / per_second.max(1) * 103 / 100
                + Duration::from_millis(2),
            next: Mutex::new(Instant::now()),
        }
    }

    async fn wait(&self) {
        let wait = {
            let mut next = self
                .next
                .lock()
                .expect("the pacing lock is never poisoned: no panics while held");
            let now = Instant::now();
            let at = (*next).max(now);
            *next = at + self.spacing;
            at - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Per-model quota: tasks in flight and submission spacing. Throttling cuts the tasks in flight by
/// one (down to one); each later success gives one back (additive recovery).
struct ModelLimit {
    in_flight: Arc<Semaphore>,
    pacer: Pacer,
    /// Held shared by each submission until its task id is known, and exclusively while an
    /// ambiguous submission looks for its task in the service's list: no other submission of the
    /// model can then be in the air, unknown, and mistaken for it.
    submitting: tokio::sync::RwLock<()>,
    quota: u32,
    cut: AtomicU32,
}

impl ModelLimit {
    /// Withdraws one permit, once one is free, unless only one would be left.
    fn cut_once(&self) {
        let cut = self.cut.load(Ordering::SeqCst);
        if cut + 1 >= self.quota
            || self
                .cut
                .compare_exchange(cut, cut + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
        {
            return;
        }
        let semaphore = Arc::clone(&self.in_flight);
        tokio::spawn(async move {
            if let Ok(permit) = semaphore.acquire().await {
                permit.forget();
            }
        });
    }

    fn recover_once(&self) {
        let cut = self.cut.load(Ordering::SeqCst);
        if cut > 0
            && self
                .cut
                .compare_exchange(cut, cut - 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.in_flight.add_permits(1);
        }
    }
}

/// How long to wait before each query of one task: the SDK's schedule without history, and a
/// schedule aimed at the model's observed latencies with it.
pub struct PollSchedule {
    policy: PollPolicy,
    /// (early, late): the 10th and 90th percentile of past latencies, when known.
    window: Option<(Duration, Duration)>,
    step: u32,
    /// Queries since the task outlasted `late`.
    overrun: u32,
    elapsed: Duration,
}

impl PollSchedule {
    pub fn new(policy: PollPolicy, history: &[f64]) -> PollSchedule {
        let window = (history.len() >= 3).then(|| {
            let mut sorted: Vec<f64> = history
                .iter()
                .copied()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .collect();
            sorted.sort_by(f64::total_cmp);
            let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
            (
                Duration::from_secs_f64(at(0.1) * 0.9),
                Duration::from_secs_f64(at(0.9)),
            )
        });
        PollSchedule {
            policy,
            window,
            step: 0,
            overrun: 0,
            elapsed: Duration::ZERO,
        }
    }

    /// The next wait.
    pub fn next_wait(&mut self) -> Duration {
        self.step += 1;
        let wait = match self.window {
            // Sleep through the part of the distribution where results never arrive, then poll
            // often enough inside it to detect completion sooner than the SDK would.
            Some((early, _)) if self.step == 1 && early > self.policy.first => early,
            Some((early, late)) if self.elapsed < late => {
                ((late.saturating_sub(early)) / 6).clamp(self.policy.first, self.policy.max)
            }
            // Slower than usual: start the SDK's schedule afresh rather than at its slow end.
            Some(_) => {
                self.overrun += 1;
                self.sdk_step(self.overrun)
            }
            None => self.sdk_step(self.step),
        };
        self.elapsed += wait;
        wait
    }

    /// The official SDK's schedule (protocol §6): 1, 1, 2, 2, 2, 4, 4, 4, 5, 5, … × `first`, capped.
    fn sdk_step(&self, step: u32) -> Duration {
        let factor = match step {
            1 | 2 => 1,
            3..=5 => 2,
            _ => 4,
        };
        (self.policy.first * factor).min(self.policy.max)
    }
}

pub struct Executor {
    pub root: PathBuf,
    pub store: Arc<Mutex<Store>>,
    pub blobs: Arc<BlobStore>,
    pub lock: Arc<Mutex<LockFile>>,
    pub lock_path: PathBuf,
    pub client: Option<Arc<Client>>,
    pub provider: String,
    pub poll: PollPolicy,
    pub task_timeout: Duration,
    pub jobs: usize,
    pub on_event: Arc<dyn Fn(Event) + Send + Sync>,
    /// Set from outside (Ctrl-C, `wanx watch`): submit nothing more; tasks in flight finish.
    pub cancel: Arc<AtomicBool>,
    /// Past latencies (seconds) per model, oldest first, to aim the polling.
    pub latency_history: HashMap<String, Vec<f64>>,
    /// Asked right before a generation is submitted; `false` drops it unsubmitted (nothing is paid).
    /// `wanx watch` drops the tasks a newer save made obsolete; `None` submits everything.
    pub before_submit: Option<SubmitGate>,
    /// Keys whose images this build's resume of the journal brought into the cache, with what it
    /// booked for them: the first task restoring one is reported as the generation it is.
    pub resumed: HashMap<String, (Money, u32)>,
    /// Keys still journaled after the resume (a task of an earlier build still running, or whose
    /// images could not all be fetched): paid for, so never submitted again by this build.
    pub journaled: std::collections::HashSet<String>,
}

/// See [`Executor::before_submit`].
pub type SubmitGate = Arc<dyn Fn(&Job) -> bool + Send + Sync>;

/// The error of a generation [`Executor::before_submit`] dropped before it was sent.
pub const NOT_SUBMITTED: &str = "not submitted: a newer change made it obsolete";

/// Task queries per second across the whole build (DashScope's documented limit is 20).
const QUERIES_PER_SECOND: u32 = 20;

struct Shared {
    exec: Executor,
    registry: Registry,
    /// Per model, created when its first job starts.
    limits: Mutex<HashMap<String, Arc<ModelLimit>>>,
    jobs: Semaphore,
    queries: Pacer,
    /// Latencies per model: the store's history, plus every task of this build as it finishes.
    history: Mutex<HashMap<String, Vec<f64>>>,
    /// When `wanx.lock` was last written, and whether entries wait to be.
    lock_written: Mutex<Option<Instant>>,
    lock_dirty: AtomicBool,
    stopped: Mutex<Option<ProviderError>>,
    stop_flag: AtomicBool,
    /// Models the service refused for this key (access denied, not served): why, by model. Their
    /// other tasks are not submitted; other models go on.
    refused: Mutex<HashMap<String, String>>,
    /// Remote task ids this build was given: an ambiguous submission's task is none of these.
    known: Mutex<HashSet<String>>,
    /// [`Executor::resumed`], each taken by the first restore of its key.
    resumed: Mutex<HashMap<String, (Money, u32)>>,
}

impl Shared {
    /// The limits of `model`: its registry quota, or 2 tasks and 2 submissions a second for a model
    /// the registry does not know.
    fn limit(&self, model: &str) -> Arc<ModelLimit> {
        let mut limits = self.limits.lock().expect("never poisoned");
        let limit = limits.entry(model.to_owned()).or_insert_with(|| {
            let spec = self.registry.get(model);
            let quota = spec.map_or(2, |s| s.concurrency).max(1);
            Arc::new(ModelLimit {
                in_flight: Arc::new(Semaphore::new(quota as usize)),
                pacer: Pacer::new(spec.map_or(2, |s| s.submit_rps)),
                submitting: tokio::sync::RwLock::new(()),
                quota,
                cut: AtomicU32::new(0),
            })
        });
        Arc::clone(limit)
    }

    /// True once nothing more may be submitted: a stop-class error, or a cancel from outside.
    fn halted(&self) -> Option<&'static str> {
        if self.stop_flag.load(Ordering::SeqCst) {
            Some("not submitted: the build stopped after a fatal provider error")
        } else if self.exec.cancel.load(Ordering::SeqCst) {
            Some("not submitted: the build was interrupted")
        } else {
            None
        }
    }
}

impl Shared {
    /// Why `model`'s tasks are no longer submitted, once the service refused it.
    fn refused_model(&self, model: &str) -> Option<String> {
        let refused = self.refused.lock().expect("never poisoned");
        refused
            .get(model)
            .map(|why| format!("not submitted: the service refused `{model}` for this key ({why})"))
    }

    /// Stops submitting `model`'s tasks; the rest of the build goes on.
    fn refuse_model(&self, model: &str, error: &ProviderError) {
        let mut refused = self.refused.lock().expect("never poisoned");
        refused
            .entry(model.to_owned())
            .or_insert_with(|| error.to_string());
    }
}

impl Executor {
    fn into_shared(mut self, registry: &Registry) -> Arc<Shared> {
        // DashScope allows 20 task queries a second; wanx's own emulator has no such limit.
        let queries_per_second =
            if self.provider == crate::compile::cache_key::Provider::Emulator.identity() {
                1000
            } else {
                QUERIES_PER_SECOND
            };
        let resumed = Mutex::new(std::mem::take(&mut self.resumed));
        Arc::new(Shared {
            resumed,
            history: Mutex::new(self.latency_history.clone()),
            lock_written: Mutex::new(None),
            lock_dirty: AtomicBool::new(false),
            jobs: Semaphore::new(self.jobs.max(1)),
            exec: self,
            registry: registry.clone(),
            limits: Mutex::new(HashMap::new()),
            queries: Pacer::new(queries_per_second),
            stopped: Mutex::new(None),
            stop_flag: AtomicBool::new(false),
            refused: Mutex::new(HashMap::new()),
            known: Mutex::new(HashSet::new()),
        })
    }

    /// Starts an execution that takes jobs as they become known: a build pushes a chained task once
    /// the images it consumes exist, while the rest are in flight.
    pub fn start(self, registry: &Registry) -> Running {
        Running {
            shared: self.into_shared(registry),
            in_flight: JoinSet::new(),
            backlog: HashMap::new(),
            started: HashMap::new(),
            finished: std::collections::VecDeque::new(),
        }
    }
}

/// An execution in progress: jobs go in with [`Running::push`], outcomes come out of
/// [`Running::next`] in the order they finish.
///
/// Generations wait in a backlog per model and start a few more than the model's quota at a time:
/// enough that a freed slot is taken at once, few enough that a 100,000-task build holds a few
/// hundred tasks' state, not all of it.
pub struct Running {
    shared: Arc<Shared>,
    in_flight: JoinSet<(String, Outcome)>,
    /// Generations not yet started, per model, in the order pushed.
    backlog: HashMap<String, std::collections::VecDeque<Job>>,
    /// Generations started and not yet finished, per model.
    started: HashMap<String, usize>,
    /// Outcomes of restores (run at once, in order, when pushed) not yet taken.
    finished: std::collections::VecDeque<Outcome>,
}

impl Running {
    /// A restore runs now (local, free, and in plan order); a generation starts in the background,
    /// under the model's limits and the global job limit, once its model's window has room.
    pub async fn push(&mut self, job: Job) {
        match job.kind {
            JobKind::Restore { .. } => {
                let worker = Arc::clone(&self.shared);
                let outcome = tokio::task::spawn_blocking(move || restore(&worker, &job))
                    .await
                    .unwrap_or_else(|e| panic!("a restore panicked: {e}"));
                (self.shared.exec.on_event)(Event::Finished(outcome.clone()));
                self.finished.push_back(outcome);
            }
            JobKind::Generate => {
                let model = job.compiled.model.clone();
                self.backlog
                    .entry(model.clone())
                    .or_default()
                    .push_back(job);
                self.start_waiting(&model);
            }
        }
    }

    /// Starts `model`'s waiting generations while its window has room (all of them once nothing
    /// more will be submitted: each then ends at once, unsent).
    fn start_waiting(&mut self, model: &str) {
        let window = if self.shared.halted().is_some() {
            usize::MAX
        } else {
            (self.shared.limit(model).quota as usize * 2).max(4)
        };
        let started = self.started.entry(model.to_owned()).or_default();
        let Some(backlog) = self.backlog.get_mut(model) else {
            return;
        };
        while *started < window {
            let Some(job) = backlog.pop_front() else {
                break;
            };
            *started += 1;
            let shared = Arc::clone(&self.shared);
            let model = model.to_owned();
            self.in_flight.spawn(async move {
                let id = job.id.clone();
                let result = generate(&shared, job).await;
                let outcome = Outcome { id, result };
                (shared.exec.on_event)(Event::Finished(outcome.clone()));
                (model, outcome)
            });
        }
    }

    /// The next finished job; `None` once every job pushed so far has finished.
    pub async fn next(&mut self) -> Option<Outcome> {
        if let Some(outcome) = self.finished.pop_front() {
            return Some(outcome);
        }
        let joined = self.in_flight.join_next().await?;
        let (model, outcome) = joined.unwrap_or_else(|e| panic!("a generation task panicked: {e}"));
        if let Some(started) = self.started.get_mut(&model) {
            *started -= 1;
        }
        self.start_waiting(&model);
        Some(outcome)
    }

    /// True once a stop-class error or a cancel from outside means nothing more will be submitted.
    pub fn halted(&self) -> bool {
        self.shared.halted().is_some()
    }

    /// Writes what the lock batching held back; returns the stop-class error that ended
    /// submissions, if any.
    pub fn finish(self) -> Option<ProviderError> {
        flush_lock(&self.shared);
        self.shared.stopped.lock().expect("never poisoned").clone()
    }
}

fn restore(shared: &Shared, job: &Job) -> Outcome {
    let JobKind::Restore {
        images,
        generated_at,
    } = &job.kind
    else {
        unreachable!("restore() is only called for restores")
    };
    let resumed = shared
        .resumed
        .lock()
        .expect("never poisoned")
        .remove(&job.key.hex());
    let result = (|| {
        let cost = recorded_cost(shared, job);
        let entry = materialize(shared, job, images, *generated_at, cost)?;
        record_in_lock(shared, &job.id, entry.clone())?;
        let (spent, images_billed) = resumed.unwrap_or_default();
        Ok::<Done, String>(Done {
            generated: resumed.is_some(),
            entry,
            spent,
            images_billed,
            resumed: resumed.is_some(),
        })
    })()
    .map_err(Failure::from);
    Outcome {
        id: job.id.clone(),
        result,
    }
}

/// What the images a restore copies back cost when they were generated: the lock's entry for this
/// key, else the store's result. The restore itself is free; the lock records the images' price so
/// that restoring an output leaves a committed `wanx.lock` unchanged.
fn recorded_cost(shared: &Shared, job: &Job) -> Money {
    let key = job.key.hex();
    let locked = shared
        .exec
        .lock
        .lock()
        .expect("never poisoned")
        .tasks
        .get(&job.id)
        .and_then(|e| (e.key == key.as_str()).then_some(e.cost));
    locked
        .or_else(|| {
            let store = shared.exec.store.lock().expect("never poisoned");
            store.result(&key).ok().flatten().map(|r| r.cost)
        })
        .unwrap_or(Money::ZERO)
}

/// Copies `images` from the blob store to the job's outputs (verifying each hash), records their
/// stats so the next build need not hash them, and returns the lock entry.
fn materialize(
    shared: &Shared,
    job: &Job,
    images: &[String],
    generated_at: i64,
    cost: Money,
) -> Result<LockEntry, String> {
    let exec = &shared.exec;
    let paths = output_name::render(
        &job.output,
        &job.id,
        images.len() as u32,
        &job.key,
        generated_at,
    );
    let mut outputs = Vec::new();
    let mut stats = Vec::new();
    for (path, hash) in paths.iter().zip(images) {
        let dest = exec.root.join(path);
        ensure_inside(&exec.root, &dest)?;
        let size = exec
            .blobs
            .materialize(hash, &dest)
            .map_err(|e| format!("could not write `{path}`: {e}"))?;
        let meta = std::fs::metadata(&dest).map_err(|e| format!("could not stat `{path}`: {e}"))?;
        let (fsize, mtime_ns, inode) = stat_of(&meta);
        stats.push((
            path.clone(),
            StatEntry {
                size: fsize,
                mtime_ns,
                inode,
                blake3: hash.clone(),
            },
        ));
        outputs.push(LockOutput {
            path: path.clone(),
            blake3: hash.clone(),
            size,
        });
    }
    exec.store
        .lock()
        .expect("never poisoned")
        .put_stats(&stats)
        .map_err(|e| format!("could not record output stats: {e}"))?;
    Ok(LockEntry {
        key: job.key.hex(),
        model: job.compiled.model.clone(),
        images: images.len() as u32,
        cost,
        generated_at,
        outputs,
    })
}

/// Refuses a destination whose existing parent resolves outside the project (a symlinked directory).
fn ensure_inside(root: &Path, dest: &Path) -> Result<(), String> {
    let parent = dest.parent().unwrap_or(root);
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("could not create `{}`: {e}", parent.display()))?;
    let real_parent = parent
        .canonicalize()
        .map_err(|e| format!("could not resolve `{}`: {e}", parent.display()))?;
    let real_root = root
        .canonicalize()
        .map_err(|e| format!("could not resolve `{}`: {e}", root.display()))?;
    if real_parent.starts_with(&real_root) {
        Ok(())
    } else {
        Err(format!(
            "`{}` resolves outside the project (a symlink?); wanx never writes outside the project root",
            dest.display()
        ))
    }
}

/// A lock of this many tasks or more is rewritten at most every [`LOCK_WRITE_INTERVAL`]: rewriting a
/// multi-megabyte file after each of thousands of tasks would make a large build quadratic. What a
/// task paid for is in the store the moment it completes, so a crash inside the interval loses nothing:
/// the next build restores those tasks from the cache and writes their entries.
const LOCK_BATCH_FROM: usize = 1000;
const LOCK_WRITE_INTERVAL: Duration = Duration::from_millis(500);

fn record_in_lock(shared: &Shared, id: &str, entry: LockEntry) -> Result<(), String> {
    let mut lock = shared.exec.lock.lock().expect("never poisoned");
    lock.tasks.insert(id.to_owned(), entry);
    let mut last = shared.lock_written.lock().expect("never poisoned");
    let due = lock.tasks.len() < LOCK_BATCH_FROM
        || last.is_none_or(|at| at.elapsed() >= LOCK_WRITE_INTERVAL);
    if !due {
        shared.lock_dirty.store(true, Ordering::SeqCst);
        return Ok(());
    }
    *last = Some(Instant::now());
    shared.lock_dirty.store(false, Ordering::SeqCst);
    lock.write_atomic(&shared.exec.lock_path)
        .map_err(|e| format!("could not write `wanx.lock`: {e}"))
}

/// Writes entries [`record_in_lock`] held back, at the end of a run.
fn flush_lock(shared: &Shared) {
    if shared.lock_dirty.swap(false, Ordering::SeqCst) {
        let lock = shared.exec.lock.lock().expect("never poisoned");
        if let Err(e) = lock.write_atomic(&shared.exec.lock_path) {
            (shared.exec.on_event)(Event::Retrying {
                id: "wanx.lock".to_owned(),
                error: format!(
                    "could not write `wanx.lock`: {e}; the next build rewrites it from the cache"
                ),
                wait: Duration::ZERO,
            });
        }
    }
}

async fn with_store<T: Send + 'static>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&mut Store) -> crate::error::Result<T> + Send + 'static,
) -> Result<T, String> {
    let store = Arc::clone(&shared.exec.store);
    tokio::task::spawn_blocking(move || f(&mut store.lock().expect("never poisoned")))
        .await
        .unwrap_or_else(|e| panic!("a store call panicked: {e}"))
        .map_err(|e| e.to_string())
}

fn stop(shared: &Shared, error: ProviderError) {
    shared.stop_flag.store(true, Ordering::SeqCst);
    let mut stopped = shared.stopped.lock().expect("never poisoned");
    if stopped.is_none() {
        *stopped = Some(error);
    }
}

async fn generate(shared: &Arc<Shared>, job: Job) -> Result<Done, Failure> {
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
        message,
        skipped: false,
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
fn follow_ups(missing: &[u32], seeded: bool) -> Vec<Vec<u32>> {
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
async fn store_partial(
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
async fn carried_partial(shared: &Arc<Shared>, job: &Job) -> Result<Partial, Failure> {
    let key = job.key.hex();
    let blobs = Arc::clone(&shared.exec.blobs);
    let n = job.compiled.n as usize;
    let partial = with_store(shared, move |s| s.pool(&key)).await?;
    Ok(partial
        .filter(|p| p.images.len() < n && p.images.iter().all(|i| blobs.contains(&i.blake3)))
        .unwrap_or_default())
}

/// What a generation that fell short holds.
struct Short {
    /// Its images: carried from an earlier build, then this build's.
    images: Vec<StoredImage>,
    /// What the carried images cost.
    carried: Money,
    /// Images billed in this build.
    billed: u32,
    /// Its open journal entries.
    journal: Vec<i64>,
}

/// Ends a generation that fell short: the images it holds (paid for, by this build or an earlier
/// one) are kept as the key's partial result, closing its journal entries; `failure` says so, and
/// what this build paid.
async fn keep_partial(
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
    // `wanx watch` recognizes [`NOT_SUBMITTED`] by its message.
    if failure.message != NOT_SUBMITTED {
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

/// What one remote task produced.
struct RemoteTask {
    remote: String,
    /// Its images by result index: `None` where the service failed to make one.
    images: Vec<Option<StoredImage>>,
    /// Images the service billed (booked by this build).
    billed: u32,
    took: f64,
    journal_id: i64,
}

/// One remote task: journal, submit (with retries), poll, book what it billed, download. A task
/// billed whose images could not all be fetched or stored stays journaled (with those it saved):
/// the next build fetches the rest without paying again.
async fn run_remote_task(
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
    if let Some(reason) = shared.halted() {
        return Err(Failure::skipped(reason));
    }
    if let Some(why) = shared.refused_model(&job.compiled.model) {
        return Err(Failure::skipped(&why));
    }
    if let Some(gate) = &shared.exec.before_submit
        && !gate(job)
    {
        return Err(Failure::skipped(NOT_SUBMITTED));
    }
    let journal_id = with_store(shared, move |s| s.journal_begin(&intent)).await?;
    let remote = match submit_with_retries(shared, client, limit, job, sent, &body).await {
        Ok(remote) => remote,
        Err(e) => {
            with_store(shared, move |s| s.journal_finish(&[journal_id])).await?;
            return Err(e);
        }
    };
    let remote2 = remote.clone();
    with_store(shared, move |s| s.journal_submitted(journal_id, &remote2)).await?;
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
            with_store(shared, move |s| s.journal_finish(&[journal_id])).await?;
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
    .await?;
    let paid = |message: String| Failure {
        message,
        skipped: false,
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

/// Images a succeeded task is billed for: every result with a URL.
fn billed_by(results: &[crate::executor::dashscope::TaskResult]) -> u32 {
    results.iter().filter(|r| r.url.is_some()).count() as u32
}

/// Books what the service billed for journal entry `journal_id` (once, whichever build first sees
/// the task succeed). Returns the images booked now (zero if an earlier build booked them).
async fn book(
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
async fn finish_journals(shared: &Arc<Shared>, journal: Vec<i64>) -> Result<(), String> {
    with_store(shared, move |s| s.journal_finish(&journal)).await
}

/// How a remote task ended.
enum Waited {
    /// SUCCEEDED: its results, and about how many seconds it took.
    Done(Vec<crate::executor::dashscope::TaskResult>, f64),
    /// FAILED, CANCELED or UNKNOWN: over, and nothing to download.
    Ended(String),
}

/// Submits `body`, again after a refusal worth retrying (throttling, 5xx, a connection that never
/// opened). A failure after the request was sent is never retried: the service may have created
/// (and will bill) the task, so it is looked for in the service's task list instead ([`recover`]).
async fn submit_with_retries(
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
const CLOCK_SLACK: Duration = Duration::from_secs(30);

/// After a submission sent at `sent_at` failed without an answer (`code`: `message`): finds the task
/// it may have created in the service's task list. Exactly one task of the model, created in the
/// window and unknown to this build and project, is adopted; otherwise the submission is reported
/// as "may have been billed", with its price, and not sent again in this build.
#[allow(
    clippy::too_many_arguments,
    reason = "the failed submission's context, all needed to report it"
)]
async fn recover(
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
fn candidates(
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
async fn prepare_request(
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
fn jitter(max: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let max_ns = max.as_nanos().max(1) as u64;
    Duration::from_nanos(u64::from(nanos) % max_ns)
}

/// Polls a remote task to its end. Returns its results and an estimate of when it finished (seconds
/// after `since`, half the last interval before its detection).
async fn wait_for(
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

/// Downloads every successful result into the blob store, except those `saved` already holds (by
/// result index, with their blob intact). Returns the images by result index (`None` for a failed
/// result or a failed download) and the first error, after trying every image.
async fn download_all(
    shared: &Arc<Shared>,
    client: &Client,
    results: &[crate::executor::dashscope::TaskResult],
    saved: &[Option<StoredImage>],
    deadline: Instant,
) -> (Vec<Option<StoredImage>>, Result<(), String>) {
    let mut images = Vec::new();
    let mut first_error = Ok(());
    for (index, result) in results.iter().enumerate() {
        let Some(url) = &result.url else {
            images.push(None);
            continue;
        };
        if let Some(Some(image)) = saved.get(index)
            && shared.exec.blobs.contains(&image.blake3)
        {
            images.push(Some(image.clone()));
            continue;
        }
        match download_one(shared, client, url, deadline).await {
            Ok((blake3, size)) => images.push(Some(StoredImage {
                blake3,
                size,
                actual_prompt: result.actual_prompt.clone(),
                seed: None,
                paid_at: Some(output_name::now_unix()),
            })),
            Err(e) => {
                images.push(None);
                if first_error.is_ok() {
                    first_error = Err(format!("image {}: {e}", index + 1));
                }
            }
        }
    }
    (images, first_error)
}

async fn download_one(
    shared: &Arc<Shared>,
    client: &Client,
    url: &str,
    deadline: Instant,
) -> Result<(String, u64), String> {
    let tmp_dir = shared
        .exec
        .blobs
        .tmp_dir()
        .map_err(|e| format!("could not create the cache's temp directory: {e}"))?;
    let tmp = tempfile::Builder::new()
        .prefix("download-")
        .tempfile_in(&tmp_dir)
        .map_err(|e| format!("could not create a temp file: {e}"))?
        .into_temp_path();
    let mut last = String::new();
    for attempt in 0..3 {
        match client
            .download_until(url, &tmp, MAX_IMAGE_BYTES, deadline)
            .await
        {
            // A body cut short still starts with the magic: never cache it, fetch it again.
            Ok(_) if !crate::executor::image_check::is_complete(&tmp) => {
                last = crate::executor::image_check::describe_download(&tmp);
                tokio::time::sleep(Duration::from_millis(300 << attempt)).await;
            }
            Ok(_) => {
                last.clear();
                break;
            }
            Err(ProviderError::Transient { code, message }) => {
                last = format!("{code}: {message}");
                tokio::time::sleep(Duration::from_millis(300 << attempt)).await;
            }
            Err(e) => return Err(format!("download failed: {e}")),
        }
    }
    if !last.is_empty() {
        return Err(format!("download failed: {last}"));
    }
    let blobs = Arc::clone(&shared.exec.blobs);
    let path = tmp.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let stored = blobs
            .insert_file(&path)
            .map_err(|e| format!("could not store the image: {e}"))?;
        drop(tmp);
        Ok(stored)
    })
    .await
    .unwrap_or_else(|e| panic!("storing a download panicked: {e}"))
}

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
const REMOTE_TASK_TTL_SECS: i64 = 24 * 3600;

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
async fn resume_one(
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
struct Fetched {
    images: Vec<StoredImage>,
    billed: u32,
    took: f64,
}

/// Queries a journaled remote task until it ends, books what it billed unless an earlier build did
/// (adding the images to `booked`), and downloads its images into the blob store (those it saved
/// before are kept). The error is what to report: `Pending` leaves the entry journaled, the others
/// close it.
async fn fetch_journaled(
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
