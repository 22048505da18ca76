//! `Executor`: performs reconcile's decisions. Restores copy verified blobs to their outputs; generations
//! run under tokio within per-model limits (tasks in flight, submissions per second) and a global job
//! limit: journal the intent, submit, journal the remote id, poll, download at once, verify, store the
//! blobs, record the result, write the outputs atomically, update `wanx.lock`. Each task's effects are
//! recorded as it completes, so an interrupted build keeps everything it paid for.
//!
//! The folder, by concern: `job` (a unit of work and what it reports), `failure` (why a job made no
//! images, typed by kind), `poll` (the schedule of task queries), `limits` (the pacer and the per-model
//! quota), `shared` (the settings of an execution and the state its tasks share), `restore`,
//! `generate` (the rounds of one generation), `remote_task` (journal, submit, poll, book, download),
//! `submit` (the request as sent, retries, recovery of a lost answer), `download`, `resume` (the
//! journal of earlier builds); `dashscope` owns HTTP, `image_check` the bytes of a download, `secret`
//! the API key. This file keeps `Running`: jobs in, outcomes out.

pub mod dashscope;
mod download;
mod failure;
mod generate;
pub mod image_check;
mod job;
mod limits;
mod poll;
mod remote_task;
mod restore;
mod resume;
pub mod secret;
mod shared;
mod submit;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::task::JoinSet;

use crate::executor::dashscope::ProviderError;
use crate::registry::Registry;

pub use failure::{Failure, FailureKind};
pub use job::{Event, Job, JobKind, Outcome};
pub use poll::PollPolicy;
pub use resume::{Resumed, ResumedKey};
pub use shared::{Executor, SubmitGate};

use generate::generate;
use restore::restore;
use shared::{Shared, flush_lock};

impl Executor {
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
