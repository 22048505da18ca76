//! Executing a plan: the executor's jobs for what planning decided, the waiting tasks decided and
//! started as their inputs appear, and every outcome recorded in the build's [`Session`] (its report,
//! the lock, the store, the remote cache). [`execute`] is what `build_with` calls between the checks
//! and the run's record.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::cli::BuildArgs;
use crate::compile::cache_key::Provider;
use crate::emulator::Emulator;
use crate::error::{Error, Result};
use crate::executor::{
    Event, Executor, Failure, FailureKind, Job, JobKind, Outcome, PollPolicy, Running,
};
use crate::money::Money;
use crate::planner::reconcile::{Action, Decision};
use crate::planner::{Chain, Unit, Waiting};
use crate::planner::{Planned, Project};
use crate::project::lock::LockFile;
use crate::remote::{Upload, UploadQueue};
use crate::report::task_report;
use crate::store::Store;
use crate::store::blob_store::BlobStore;
use crate::term::printer::Printer;
use crate::term::progress::{Pace, Progress};
use crate::tree::output_name::now_unix;

use super::connect::{connect, latency_history, poll_policy, task_timeout};
use super::events::{progress_printer, restore_reasons};
use super::hooks::{Hooks, OnEvent};
use super::session::{Next, Session, job};
use crate::par::blocking;

/// Executes the plan and records every outcome in `session`. Tasks decided at planning start at
/// once; each waiting task is decided the moment the last image it consumes exists, and started if
/// it must be generated or restored. Returns the in-process emulator, if one was started, and the
/// lock as the build left it.
pub(super) async fn execute(
    project: &Project,
    args: &BuildArgs,
    printer: &Printer,
    cancel: &Arc<AtomicBool>,
    hooks: &Hooks,
    planned: Planned<'_>,
    session: &mut Session,
) -> Result<(Option<Emulator>, LockFile)> {
    let Planned {
        units,
        decisions,
        waiting,
        lock,
        store,
        blobs,
        stale_lock_entries,
        provider,
        later,
        remote,
        why,
        requests,
        ..
    } = planned;
    // Generations are shared as they are stored, on the uploader's own thread.
    let uploader = remote.and_then(|r| r.uploader(blobs.clone()));
    let why_lines = Arc::new(Mutex::new(why_lines(&why)));
    session.why = why;
    let order = report_order(&units, &waiting);
    // A waiting task exists only downstream of a generation, so this also covers the chain.
    let (client, emulator) = if decisions.iter().any(|d| d.action == Action::Generate) {
        let (client, emulator) = connect(project, args.selection.emulate, printer).await?;
        (Some(client), emulator)
    } else {
        (None, None)
    };
    let chain = if waiting.is_empty() {
        None
    } else {
        Some(blocking(|| {
            Chain::new(project, provider.clone(), waiting, later)
        })?)
    };
    let mut decided: Vec<(Unit<'_>, Decision)> = units.into_iter().zip(decisions).collect();
    let jobs: Vec<Job> = decided
        .iter()
        .filter_map(|(u, d)| job(project, u, d))
        .collect();
    let models = generating_models(&jobs, chain.as_ref());
    let latency_history = latency_history(&store, &models)?;
    let parallel = args.jobs.or(project.manifest.build.jobs).unwrap_or(16);
    let total = jobs.len() + chain.as_ref().map_or(0, Chain::undecided);
    let progress = progress_bar(printer, total, models.len(), &latency_history, parallel);
    let on_event = event_sink(printer, &progress, &decided, &why_lines, hooks);
    let on_event = match &uploader {
        Some(uploader) => with_upload(on_event, uploader.queue()),
        None => on_event,
    };
    let run = Execution {
        project,
        provider: &provider,
        store: Arc::new(Mutex::new(store)),
        lock: Arc::new(Mutex::new(pruned_lock(lock, &stale_lock_entries))),
        why_lines,
        total: Arc::new(AtomicUsize::new(total)),
        progress,
        on_event,
    };
    let mut running = run
        .executor(
            cancel,
            hooks,
            session,
            Prepared {
                client,
                blobs,
                latency_history,
                parallel,
            },
        )
        .start(&project.registry);
    // The executor writes the lock after each task; only pruning (or a first, empty lock) is left to
    // write here. A build with nothing to do touches nothing: a no-op must stay as cheap as ninja's.
    let prune = !stale_lock_entries.is_empty() || !project.manifest.lock_path().exists();
    let outcomes = run
        .run_jobs(&mut running, jobs, chain, session, &mut decided)
        .await?;
    let fatal = running.finish();
    run.progress.clear();
    touch_restored(&run.store, &outcomes)?;
    if let Some(uploader) = uploader {
        uploader.finish();
    }
    if prune {
        run.write_lock()?;
    }
    let lock = std::mem::take(&mut *run.lock.lock().expect("never poisoned"));
    if session.fatal.is_none() {
        session.fatal = fatal;
    }
    // Only `--json` and `wanx watch` read the fresh tasks' reports: a plain build counts them.
    let brief = !args.json && hooks.on_plan.is_none() && hooks.on_event.is_none();
    record_outcomes(session, &decided, &outcomes, brief, order);
    remember_requests(&run.store, &provider, &requests, &decided, &outcomes)?;
    Ok((emulator, lock))
}

/// Adds every decided task's outcome to the session (see [`record_outcome`]), then puts the
/// reports back in plan `order` if a chain reported out of it.
fn record_outcomes(
    session: &mut Session,
    decided: &[(Unit<'_>, Decision)],
    outcomes: &HashMap<String, Outcome>,
    brief: bool,
    order: Option<HashMap<String, usize>>,
) {
    for (unit, d) in decided {
        record_outcome(session, unit, d, outcomes.get(&unit.task.id), brief);
    }
    if let Some(order) = order {
        session
            .reports
            .sort_by_key(|r| order.get(&r.id).copied().unwrap_or(usize::MAX));
    }
}

/// Every executor event goes through this: the progress printer, after the hook of `wanx watch`.
type EventSink = Arc<dyn Fn(Event) + Send + Sync>;

/// What the steps of an execution share once the plan is taken apart.
struct Execution<'p> {
    project: &'p Project,
    provider: &'p Provider,
    store: Arc<Mutex<Store>>,
    lock: Arc<Mutex<LockFile>>,
    /// Why each task is not fresh, as the one line its status shows.
    why_lines: Arc<Mutex<HashMap<String, String>>>,
    /// Jobs this build will run: fresh waiting tasks are taken off as they are decided.
    total: Arc<AtomicUsize>,
    progress: Arc<Progress>,
    on_event: EventSink,
}

/// What the executor gets from planning beside the [`Execution`]: the provider client (none when
/// nothing is generated), the blob store, the model latencies, the jobs at once.
struct Prepared {
    client: Option<Arc<crate::executor::dashscope::Client>>,
    blobs: BlobStore,
    latency_history: HashMap<String, Vec<f64>>,
    parallel: usize,
}

impl Execution<'_> {
    /// The executor for this build, taking the keys the resume of the journal left to `session`.
    fn executor(
        &self,
        cancel: &Arc<AtomicBool>,
        hooks: &Hooks,
        session: &mut Session,
        prepared: Prepared,
    ) -> Executor {
        Executor {
            root: self.project.manifest.root.clone(),
            store: Arc::clone(&self.store),
            blobs: Arc::new(prepared.blobs),
            lock: Arc::clone(&self.lock),
            lock_path: self.project.manifest.lock_path(),
            client: prepared.client,
            provider: self.provider.identity(),
            poll: if self.provider.is_emulated() {
                PollPolicy::EMULATED
            } else {
                poll_policy(self.project)
            },
            task_timeout: task_timeout(self.project),
            jobs: prepared.parallel,
            on_event: Arc::clone(&self.on_event),
            cancel: Arc::clone(cancel),
            latency_history: prepared.latency_history,
            before_submit: hooks.before_submit.clone(),
            resumed: std::mem::take(&mut session.resumed),
            journaled: std::mem::take(&mut session.journaled),
        }
    }

    /// Runs the jobs decided at planning (generations first: they are the slow part, and restores,
    /// local copies, run while they wait), then each waiting task as the chain settles it. Returns
    /// every outcome by task id; the waiting tasks never settled are reported unbuilt.
    async fn run_jobs<'a>(
        &self,
        running: &mut Running,
        jobs: Vec<Job>,
        mut chain: Option<Chain<'a>>,
        session: &mut Session,
        decided: &mut Vec<(Unit<'a>, Decision)>,
    ) -> Result<HashMap<String, Outcome>> {
        let (generations, restores): (Vec<Job>, Vec<Job>) = jobs
            .into_iter()
            .partition(|j| matches!(j.kind, JobKind::Generate));
        for job in generations.into_iter().chain(restores) {
            running.push(job).await;
        }
        let mut outcomes: HashMap<String, Outcome> = HashMap::new();
        while let Some(outcome) = running.next().await {
            if matches!(&outcome.result, Err(e) if e.unsent()) {
                session.unsent.insert(outcome.id.clone());
            }
            if let Some(chain) = &mut chain {
                self.settle_waiting(chain, &outcome, running, session, decided)
                    .await?;
            }
            outcomes.insert(outcome.id.clone(), outcome);
        }
        for w in chain.map(Chain::into_remaining).unwrap_or_default() {
            session.unbuilt(
                &w,
                &Failure::new(FailureKind::Blocked, "its inputs were not produced"),
            );
        }
        Ok(outcomes)
    }

    /// Tells the chain a task finished and acts on every waiting task that settles: starts its
    /// job, counts it fresh, or reports it unbuilt.
    async fn settle_waiting<'a>(
        &self,
        chain: &mut Chain<'a>,
        outcome: &Outcome,
        running: &mut Running,
        session: &mut Session,
        decided: &mut Vec<(Unit<'a>, Decision)>,
    ) -> Result<()> {
        let images = outcome.result.as_ref().ok().map(|done| {
            let outputs = &done.entry.outputs;
            outputs.iter().map(|o| o.blake3.clone()).collect()
        });
        for settled in blocking(|| chain.finished(&outcome.id, images))? {
            match session.settle(self.project, settled, running.halted(), decided) {
                Next::Start(job) => {
                    if let Some((unit, d)) = decided.last() {
                        self.explain(unit, d, session)?;
                    }
                    running.push(job).await;
                }
                Next::Fresh => {
                    let left = self.total.fetch_sub(1, Ordering::SeqCst) - 1;
                    self.progress.set_total(left);
                }
                Next::Ended(unbuilt) => (self.on_event)(Event::Finished(unbuilt)),
            }
        }
        Ok(())
    }

    /// Finds why a waiting task just decided is not fresh, for its status line and its report.
    fn explain(&self, unit: &Unit<'_>, d: &Decision, session: &mut Session) -> Result<()> {
        let store = self.store.lock().expect("never poisoned");
        let (mut why, _) = blocking(|| {
            crate::planner::why::reasons(
                &store,
                self.provider,
                std::slice::from_ref(unit),
                std::slice::from_ref(d),
            )
        })?;
        if let Some(changes) = why.remove(&unit.task.id) {
            self.why_lines
                .lock()
                .expect("never poisoned")
                .insert(unit.task.id.clone(), crate::planner::why::line(&changes));
            session.why.insert(unit.task.id.clone(), changes);
        }
        Ok(())
    }

    /// Writes `wanx.lock` as the build left it.
    fn write_lock(&self) -> Result<()> {
        let path = self.project.manifest.lock_path();
        self.lock
            .lock()
            .expect("never poisoned")
            .write_atomic(&path)
            .map_err(|e| Error::io("could not write", path, e))
    }
}

/// Each task's reasons as the one line its status shows.
fn why_lines(why: &HashMap<String, Vec<crate::planner::why::Change>>) -> HashMap<String, String> {
    why.iter()
        .map(|(id, changes)| (id.clone(), crate::planner::why::line(changes)))
        .collect()
}

/// Reports come out in plan order: decided tasks, then waiting ones in graph order. Only a chain
/// reports out of that order (a blocked task as it is settled), so without one there is no order to
/// restore (`None`).
fn report_order(units: &[Unit<'_>], waiting: &[Waiting<'_>]) -> Option<HashMap<String, usize>> {
    (!waiting.is_empty()).then(|| {
        units
            .iter()
            .map(|u| &u.task.id)
            .chain(waiting.iter().map(|w| &w.task.id))
            .enumerate()
            .map(|(i, id)| (id.clone(), i))
            .collect()
    })
}

/// The lock without the entries of tasks the plan no longer has.
fn pruned_lock(mut lock: LockFile, stale: &[String]) -> LockFile {
    for id in stale {
        lock.remove(id);
    }
    lock
}

/// The models this build may generate with: of the jobs decided, and of the waiting tasks.
fn generating_models<'a>(jobs: &'a [Job], chain: Option<&'a Chain<'_>>) -> Vec<&'a str> {
    let mut models: Vec<&str> = jobs
        .iter()
        .filter(|j| matches!(j.kind, JobKind::Generate))
        .map(|j| j.compiled.model.as_str())
        .collect();
    if let Some(chain) = chain {
        models.extend(chain.models());
    }
    models
}

/// The progress line, paced by the models' past latencies.
fn progress_bar(
    printer: &Printer,
    total: usize,
    models: usize,
    latency_history: &HashMap<String, Vec<f64>>,
    parallel: usize,
) -> Arc<Progress> {
    let latencies: Vec<f64> = latency_history.values().flatten().copied().collect();
    Arc::new(Progress::new(
        printer,
        total,
        models,
        Pace::from_latencies(&latencies, parallel),
    ))
}

/// The executor's events: to `wanx watch`'s hook, then printed as status lines.
fn event_sink(
    printer: &Printer,
    progress: &Arc<Progress>,
    decided: &[(Unit<'_>, Decision)],
    why_lines: &Arc<Mutex<HashMap<String, String>>>,
    hooks: &Hooks,
) -> EventSink {
    with_hook(
        progress_printer(
            printer,
            Arc::clone(progress),
            restore_reasons(decided),
            Arc::clone(why_lines),
        ),
        hooks.on_event.clone(),
    )
}

/// Records the canonical request of every task built (generated or restored), for the next plan's
/// reasons (src/planner/why.rs).
fn remember_requests(
    store: &Mutex<Store>,
    provider: &Provider,
    requests: &HashMap<String, serde_json::Value>,
    decided: &[(Unit<'_>, Decision)],
    outcomes: &HashMap<String, Outcome>,
) -> Result<()> {
    let identity = provider.identity();
    let rows: Vec<(String, String, String)> = decided
        .iter()
        .filter(|(u, _)| matches!(outcomes.get(&u.task.id), Some(o) if o.result.is_ok()))
        .filter_map(|(u, _)| {
            let request = match requests.get(&u.task.id) {
                Some(r) => r.clone(),
                None => crate::planner::why::canonical(&identity, u)?,
            };
            Some((u.task.id.clone(), u.key.hex(), request.to_string()))
        })
        .collect();
    store
        .lock()
        .expect("never poisoned")
        .put_built_requests(&rows)
}

/// Adds a decided task's report and figures to the session: fresh when it had no job (counted only,
/// when `brief`).
fn record_outcome(
    session: &mut Session,
    unit: &Unit<'_>,
    d: &Decision,
    outcome: Option<&Outcome>,
    brief: bool,
) {
    if session.reported.contains(&unit.task.id) {
        return;
    }
    let summary = &mut session.summary;
    let report = match outcome.map(|o| &o.result) {
        // Fresh: the cache kept nothing from being paid in this build.
        None if brief => {
            summary.fresh += 1;
            return;
        }
        None => {
            summary.fresh += 1;
            task_report(unit, d, "fresh", None)
        }
        Some(Ok(done)) => {
            let mut r = if done.generated {
                summary.generated += 1;
                // A resumed task's booking is in the figures from the resume already.
                if !done.resumed {
                    summary.images_generated += done.images_billed;
                    summary.spent += done.spent;
                }
                let mut r = task_report(unit, d, "generated", None);
                r.action = "generate";
                r.reason = if done.resumed {
                    "resumed from the journal".to_owned()
                } else {
                    r.reason
                };
                r.cost = done.spent;
                r.saved = Money::ZERO;
                r
            } else {
                summary.restored += 1;
                summary.restored_remote += usize::from(d.remote);
                summary.saved += d.saved();
                let by_model = session
                    .saved_by_model
                    .entry(unit.compiled.model.clone())
                    .or_default();
                by_model.0 += done.entry.images;
                by_model.1 += d.saved();
                task_report(unit, d, "restored", None)
            };
            r.outputs = done.entry.outputs.iter().map(|o| o.path.clone()).collect();
            session.built.push(unit.task.id.clone());
            r
        }
        Some(Err(e)) => {
            let status = if e.unsent() {
                summary.skipped += 1;
                "skipped"
            } else {
                summary.failed += 1;
                session
                    .failures
                    .push((unit.task.id.clone(), unit.key.hex(), e.message.clone()));
                "failed"
            };
            // A task can fail after paying for part of its images (kept for the next build).
            summary.spent += e.spent;
            summary.maybe_billed += e.maybe_billed;
            summary.images_generated += e.images_billed;
            let mut r = task_report(unit, d, status, Some(e.message.clone()));
            r.cost = e.spent;
            r.dropped = e.kind == FailureKind::Dropped;
            r
        }
    };
    let report = report.with_why(session.why.get(&unit.task.id));
    session.report(report);
}

/// Queues each generation for the remote cache, then passes the event on.
fn with_upload(
    next: Arc<dyn Fn(Event) + Send + Sync>,
    queue: UploadQueue,
) -> Arc<dyn Fn(Event) + Send + Sync> {
    Arc::new(move |event| {
        if let Event::Finished(Outcome {
            result: Ok(done), ..
        }) = &event
            && done.generated
        {
            queue.send(Upload {
                key: done.entry.key.clone(),
                model: done.entry.model.clone(),
                generated_at: done.entry.generated_at,
                images: done
                    .entry
                    .outputs
                    .iter()
                    .map(|o| o.blake3.clone())
                    .collect(),
            });
        }
        next(event);
    })
}

/// Calls `hook` with each event before `print`.
fn with_hook(
    print: Arc<dyn Fn(Event) + Send + Sync>,
    hook: Option<OnEvent>,
) -> Arc<dyn Fn(Event) + Send + Sync> {
    match hook {
        None => print,
        Some(hook) => Arc::new(move |event| {
            hook(&event);
            print(event);
        }),
    }
}

/// Records that the restored tasks' blobs were just used, so the cache's bound evicts them last.
fn touch_restored(store: &Mutex<Store>, outcomes: &HashMap<String, Outcome>) -> Result<()> {
    let used: Vec<&str> = outcomes
        .values()
        .filter_map(|o| o.result.as_ref().ok())
        .filter(|done| !done.generated)
        .flat_map(|done| done.entry.outputs.iter().map(|o| o.blake3.as_str()))
        .collect();
    store
        .lock()
        .expect("never poisoned")
        .touch_blobs(&used, now_unix())
}
