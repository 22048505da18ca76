//! `Executor`: performs reconcile's decisions. Restores copy verified blobs to their outputs; generations
//! run under tokio within per-model limits (tasks in flight, submissions per second) and a global job
//! limit: journal the intent, submit, journal the remote id, poll, download at once, verify, store the
//! blobs, record the result, write the outputs atomically, update `wanx.lock`. Each task's effects are
//! recorded as it completes, so an interrupted build keeps everything it paid for.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::blob_store::BlobStore;
use crate::cache_key::CacheKey;
use crate::compile::Compiled;
use crate::dashscope::{Client, ProviderError, TaskState, looks_like_image};
use crate::lock::{LockEntry, LockFile, LockOutput};
use crate::money::Money;
use crate::output_name;
use crate::registry::Registry;
use crate::store::{JournalIntent, StatEntry, Store, StoredImage, StoredResult, stat_of};
use crate::task::OutputSpec;

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
    pub kind: JobKind,
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
    pub result: Result<Done, String>,
}

#[derive(Clone, Debug)]
pub struct Done {
    pub generated: bool,
    pub entry: LockEntry,
    /// Money paid for this job (zero for restores).
    pub spent: Money,
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
        first: Duration::from_millis(60),
        max: Duration::from_millis(400),
    };

    fn next(self, current: Duration) -> Duration {
        (current + current / 2).min(self.max)
    }
}

/// Per-model quota: tasks in flight and submission spacing.
struct ModelLimit {
    in_flight: Semaphore,
    spacing: Duration,
    next_submit: Mutex<Instant>,
}

impl ModelLimit {
    async fn pace(&self) {
        let wait = {
            let mut next = self
                .next_submit
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
    /// Asked right before a generation is submitted; `false` drops it unsubmitted (nothing is paid).
    /// `wanx watch` drops the tasks a newer save made obsolete; `None` submits everything.
    pub before_submit: Option<SubmitGate>,
}

/// See [`Executor::before_submit`].
pub type SubmitGate = Arc<dyn Fn(&Job) -> bool + Send + Sync>;

/// The error of a generation [`Executor::before_submit`] dropped before it was sent.
pub const NOT_SUBMITTED: &str = "not submitted: a newer change made it obsolete";

struct Shared {
    exec: Executor,
    limits: HashMap<String, Arc<ModelLimit>>,
    jobs: Semaphore,
    stopped: Mutex<Option<ProviderError>>,
    stop_flag: AtomicBool,
}

/// The result of a whole execution.
pub struct Execution {
    pub outcomes: Vec<Outcome>,
    /// The stop-class error that ended submissions, if any.
    pub fatal: Option<ProviderError>,
}

impl Executor {
    /// Runs every job; restores first (they are local and free), then generations concurrently.
    pub async fn run(self, jobs: Vec<Job>, registry: &Registry) -> Execution {
        let limits = jobs
            .iter()
            .filter(|j| matches!(j.kind, JobKind::Generate))
            .map(|j| j.compiled.model.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|model| {
                let spec = registry.get(&model);
                let concurrency = spec.map_or(2, |s| s.concurrency).max(1) as usize;
                let rps = spec.map_or(2, |s| s.submit_rps).max(1);
                let limit = ModelLimit {
                    in_flight: Semaphore::new(concurrency),
                    spacing: Duration::from_secs(1) / rps,
                    next_submit: Mutex::new(Instant::now()),
                };
                (model, Arc::new(limit))
            })
            .collect();
        let shared = Arc::new(Shared {
            jobs: Semaphore::new(self.jobs.max(1)),
            exec: self,
            limits,
            stopped: Mutex::new(None),
            stop_flag: AtomicBool::new(false),
        });
        let mut outcomes = Vec::new();
        let mut set = JoinSet::new();
        for job in jobs {
            let shared = Arc::clone(&shared);
            match job.kind {
                JobKind::Restore { .. } => {
                    let worker = Arc::clone(&shared);
                    let outcome = tokio::task::spawn_blocking(move || restore(&worker, &job))
                        .await
                        .unwrap_or_else(|e| panic!("a restore panicked: {e}"));
                    (shared.exec.on_event)(Event::Finished(outcome.clone()));
                    outcomes.push(outcome);
                }
                JobKind::Generate => {
                    set.spawn(async move {
                        let id = job.id.clone();
                        let result = generate(&shared, job).await;
                        let outcome = Outcome { id, result };
                        (shared.exec.on_event)(Event::Finished(outcome.clone()));
                        outcome
                    });
                }
            }
        }
        while let Some(joined) = set.join_next().await {
            outcomes.push(joined.unwrap_or_else(|e| panic!("a generation task panicked: {e}")));
        }
        let fatal = shared.stopped.lock().expect("never poisoned").clone();
        Execution { outcomes, fatal }
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
    let result = (|| {
        let entry = materialize(shared, job, images, *generated_at, Money::ZERO)?;
        record_in_lock(&shared.exec, &job.id, entry.clone())?;
        Ok(Done {
            generated: false,
            entry,
            spent: Money::ZERO,
        })
    })();
    Outcome {
        id: job.id.clone(),
        result,
    }
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

fn record_in_lock(exec: &Executor, id: &str, entry: LockEntry) -> Result<(), String> {
    let mut lock = exec.lock.lock().expect("never poisoned");
    lock.tasks.insert(id.to_owned(), entry);
    lock.write_atomic(&exec.lock_path)
        .map_err(|e| format!("could not write `wanx.lock`: {e}"))
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

async fn generate(shared: &Arc<Shared>, job: Job) -> Result<Done, String> {
    let _job_permit = shared
        .jobs
        .acquire()
        .await
        .expect("the job semaphore is never closed");
    let limit = Arc::clone(&shared.limits[&job.compiled.model]);
    let _model_permit = limit
        .in_flight
        .acquire()
        .await
        .expect("model semaphores are never closed");
    if let Some(gate) = &shared.exec.before_submit
        && !gate(&job)
    {
        return Err(NOT_SUBMITTED.to_owned());
    }
    let client = shared
        .exec
        .client
        .clone()
        .ok_or("no provider client for a generation")?;
    let started = Instant::now();
    let mut images: Vec<StoredImage> = Vec::new();
    let mut billed = 0u32;
    let mut remote_ids = Vec::new();
    for round in 0..=MAX_FOLLOW_UPS {
        let missing = job.compiled.n - images.len() as u32;
        if missing == 0 {
            break;
        }
        if round > 0 {
            (shared.exec.on_event)(Event::Retrying {
                id: job.id.clone(),
                error: format!(
                    "{missing} of {} images failed; requesting them again",
                    job.compiled.n
                ),
                wait: Duration::ZERO,
            });
        }
        let mut body = job.compiled.body.clone();
        body["parameters"]["n"] = Value::from(missing);
        let (remote, got, count) =
            run_remote_task(shared, &client, &limit, &job, body, missing).await?;
        remote_ids.push(remote);
        billed += count;
        images.extend(got);
    }
    let cost = job.compiled.price.times(billed);
    if images.len() as u32 != job.compiled.n {
        return Err(format!(
            "only {} of {} images were produced after {} follow-up requests (paid {cost}); nothing was cached",
            images.len(),
            job.compiled.n,
            MAX_FOLLOW_UPS
        ));
    }
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
    let latency = started.elapsed().as_secs_f64();
    with_store(shared, move |s| {
        s.put_result(&result)?;
        s.record_latency(&model, latency)
    })
    .await?;
    let hashes: Vec<String> = images.iter().map(|i| i.blake3.clone()).collect();
    let shared2 = Arc::clone(shared);
    let entry = tokio::task::spawn_blocking(move || {
        let entry = materialize(&shared2, &job, &hashes, generated_at, cost)?;
        record_in_lock(&shared2.exec, &job.id, entry.clone())?;
        Ok::<_, String>(entry)
    })
    .await
    .unwrap_or_else(|e| panic!("materializing panicked: {e}"))?;
    Ok(Done {
        generated: true,
        entry,
        spent: cost,
    })
}

/// One remote task: journal, submit (with retries), poll, download. Returns the remote id, the images
/// stored in the blob store, and the images billed.
async fn run_remote_task(
    shared: &Arc<Shared>,
    client: &Client,
    limit: &ModelLimit,
    job: &Job,
    body: Value,
    n: u32,
) -> Result<(String, Vec<StoredImage>, u32), String> {
    let intent = JournalIntent {
        key: job.key.hex(),
        task_id: job.id.clone(),
        model: job.compiled.model.clone(),
        request_json: body.to_string(),
        images: n,
        created_at: output_name::now_unix(),
    };
    let journal_id = with_store(shared, move |s| s.journal_begin(&intent)).await?;
    let remote = match submit_with_retries(shared, client, limit, job, &body).await {
        Ok(remote) => remote,
        Err(e) => {
            with_store(shared, move |s| s.journal_finish(journal_id)).await?;
            return Err(e);
        }
    };
    let remote2 = remote.clone();
    with_store(shared, move |s| s.journal_submitted(journal_id, &remote2)).await?;
    (shared.exec.on_event)(Event::Submitted {
        id: job.id.clone(),
        remote: remote.clone(),
    });
    let results = wait_for(shared, client, job, &remote).await?;
    let (images, billed) = download_all(shared, client, &results).await;
    // The task is over whatever the downloads did: the service will not bill it again.
    with_store(shared, move |s| s.journal_finish(journal_id)).await?;
    Ok((remote, images?, billed))
}

async fn submit_with_retries(
    shared: &Arc<Shared>,
    client: &Client,
    limit: &ModelLimit,
    job: &Job,
    body: &Value,
) -> Result<String, String> {
    let mut backoff = Duration::from_millis(500);
    for attempt in 1..=MAX_SUBMIT_ATTEMPTS {
        if shared.stop_flag.load(Ordering::SeqCst) {
            return Err("not submitted: the build stopped after a fatal provider error".to_owned());
        }
        limit.pace().await;
        match client.submit(&job.compiled, body).await {
            Ok(remote) => return Ok(remote),
            Err(ProviderError::Transient { code, message }) if attempt < MAX_SUBMIT_ATTEMPTS => {
                let wait = backoff + jitter(backoff / 4);
                (shared.exec.on_event)(Event::Retrying {
                    id: job.id.clone(),
                    error: format!("{code}: {message}"),
                    wait,
                });
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e @ ProviderError::Fatal { .. }) => {
                let message = format!("submission refused: {e}");
                stop(shared, e);
                return Err(message);
            }
            Err(e) => return Err(format!("submission failed: {e}")),
        }
    }
    unreachable!("the last attempt returns")
}

/// A pseudo-random duration in `[0, max)`, from the clock's low bits: spreads retries apart.
fn jitter(max: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let max_ns = max.as_nanos().max(1) as u64;
    Duration::from_nanos(u64::from(nanos) % max_ns)
}

async fn wait_for(
    shared: &Arc<Shared>,
    client: &Client,
    job: &Job,
    remote: &str,
) -> Result<Vec<crate::dashscope::TaskResult>, String> {
    let policy = shared.exec.poll;
    let deadline = Instant::now() + shared.exec.task_timeout;
    let mut interval = policy.first;
    let mut consecutive_errors = 0;
    loop {
        tokio::time::sleep(interval).await;
        interval = policy.next(interval);
        match client.query(remote).await {
            Ok(TaskState::Pending | TaskState::Running) => consecutive_errors = 0,
            Ok(TaskState::Succeeded { results, .. }) => return Ok(results),
            Ok(TaskState::Failed { code, message }) => {
                return Err(format!("the task failed: {code}: {message}"));
            }
            Ok(TaskState::Canceled) => return Err("the task was canceled".to_owned()),
            Ok(TaskState::Unknown) => {
                return Err(format!(
                    "the service no longer knows task `{remote}` (expired or never existed)"
                ));
            }
            Err(ProviderError::Transient { code, message }) => {
                consecutive_errors += 1;
                if consecutive_errors >= 10 {
                    return Err(format!("querying the task kept failing: {code}: {message}"));
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
                "timed out after {}s waiting for task `{remote}` of `{}`",
                shared.exec.task_timeout.as_secs(),
                job.id
            ));
        }
    }
}

/// Downloads every successful result into the blob store. Returns the stored images and how many
/// images the service billed (every result with a URL).
async fn download_all(
    shared: &Arc<Shared>,
    client: &Client,
    results: &[crate::dashscope::TaskResult],
) -> (Result<Vec<StoredImage>, String>, u32) {
    let billed = results.iter().filter(|r| r.url.is_some()).count() as u32;
    let mut images = Vec::new();
    for result in results {
        let Some(url) = &result.url else { continue };
        match download_one(shared, client, url).await {
            Ok((blake3, size)) => images.push(StoredImage {
                blake3,
                size,
                actual_prompt: result.actual_prompt.clone(),
            }),
            Err(e) => return (Err(e), billed),
        }
    }
    (Ok(images), billed)
}

async fn download_one(
    shared: &Arc<Shared>,
    client: &Client,
    url: &str,
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
        match client.download(url, &tmp, MAX_IMAGE_BYTES).await {
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
        let mut head = [0u8; 16];
        let n = std::io::Read::read(&mut std::fs::File::open(&path).map_err(|e| e.to_string())?, &mut head).map_err(|e| e.to_string())?;
        if !looks_like_image(&head[..n]) {
            return Err("the result is not a PNG, JPEG or WebP image (empty or truncated?); it was not cached".to_owned());
        }
        let stored = blobs.insert_file(&path).map_err(|e| format!("could not store the image: {e}"))?;
        drop(tmp);
        Ok(stored)
    })
    .await
    .unwrap_or_else(|e| panic!("storing a download panicked: {e}"))
}
