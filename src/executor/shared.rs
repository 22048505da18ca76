//! `Executor`, the settings of an execution, and `Shared`, the state its tasks share: the model
//! limits, the stop and refusal flags, the lock's batched writes, and the store behind a blocking thread.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::job::{Event, Job};
use super::limits::{ModelLimit, Pacer, QUERIES_PER_SECOND};
use super::poll::PollPolicy;
use crate::executor::dashscope::{Client, ProviderError};
use crate::money::Money;
use crate::project::lock::{LockEntry, LockFile};
use crate::registry::Registry;
use crate::store::Store;
use crate::store::blob_store::BlobStore;

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

pub(super) struct Shared {
    pub(super) exec: Executor,
    pub(super) registry: Registry,
    /// Per model, created when its first job starts.
    pub(super) limits: Mutex<HashMap<String, Arc<ModelLimit>>>,
    pub(super) jobs: Semaphore,
    pub(super) queries: Pacer,
    /// Latencies per model: the store's history, plus every task of this build as it finishes.
    pub(super) history: Mutex<HashMap<String, Vec<f64>>>,
    /// When `wanx.lock` was last written, and whether entries wait to be.
    pub(super) lock_written: Mutex<Option<Instant>>,
    pub(super) lock_dirty: AtomicBool,
    pub(super) stopped: Mutex<Option<ProviderError>>,
    pub(super) stop_flag: AtomicBool,
    /// Models the service refused for this key (access denied, not served): why, by model. Their
    /// other tasks are not submitted; other models go on.
    pub(super) refused: Mutex<HashMap<String, String>>,
    /// Remote task ids this build was given: an ambiguous submission's task is none of these.
    pub(super) known: Mutex<HashSet<String>>,
    /// [`Executor::resumed`], each taken by the first restore of its key.
    pub(super) resumed: Mutex<HashMap<String, (Money, u32)>>,
}

impl Shared {
    /// The limits of `model`: its registry quota, or 2 tasks and 2 submissions a second for a model
    /// the registry does not know.
    pub(super) fn limit(&self, model: &str) -> Arc<ModelLimit> {
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
    pub(super) fn halted(&self) -> Option<&'static str> {
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
    pub(super) fn refused_model(&self, model: &str) -> Option<String> {
        let refused = self.refused.lock().expect("never poisoned");
        refused
            .get(model)
            .map(|why| format!("not submitted: the service refused `{model}` for this key ({why})"))
    }

    /// Stops submitting `model`'s tasks; the rest of the build goes on.
    pub(super) fn refuse_model(&self, model: &str, error: &ProviderError) {
        let mut refused = self.refused.lock().expect("never poisoned");
        refused
            .entry(model.to_owned())
            .or_insert_with(|| error.to_string());
    }
}

impl Executor {
    pub(super) fn into_shared(mut self, registry: &Registry) -> Arc<Shared> {
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
}

/// A lock of this many tasks or more is rewritten at most every [`LOCK_WRITE_INTERVAL`]: rewriting a
/// multi-megabyte file after each of thousands of tasks would make a large build quadratic. What a
/// task paid for is in the store the moment it completes, so a crash inside the interval loses nothing:
/// the next build restores those tasks from the cache and writes their entries.
pub(super) const LOCK_BATCH_FROM: usize = 1000;
pub(super) const LOCK_WRITE_INTERVAL: Duration = Duration::from_millis(500);

pub(super) fn record_in_lock(shared: &Shared, id: &str, entry: LockEntry) -> Result<(), String> {
    let mut lock = shared.exec.lock.lock().expect("never poisoned");
    lock.insert(id.to_owned(), entry);
    let mut last = shared.lock_written.lock().expect("never poisoned");
    let due = lock.tasks().len() < LOCK_BATCH_FROM
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
pub(super) fn flush_lock(shared: &Shared) {
    if shared.lock_dirty.swap(false, Ordering::SeqCst) {
        let mut lock = shared.exec.lock.lock().expect("never poisoned");
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

pub(super) async fn with_store<T: Send + 'static>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&mut Store) -> crate::error::Result<T> + Send + 'static,
) -> Result<T, String> {
    let store = Arc::clone(&shared.exec.store);
    tokio::task::spawn_blocking(move || f(&mut store.lock().expect("never poisoned")))
        .await
        .unwrap_or_else(|e| panic!("a store call panicked: {e}"))
        .map_err(|e| e.to_string())
}

pub(super) fn stop(shared: &Shared, error: ProviderError) {
    shared.stop_flag.store(true, Ordering::SeqCst);
    let mut stopped = shared.stopped.lock().expect("never poisoned");
    if stopped.is_none() {
        *stopped = Some(error);
    }
}
