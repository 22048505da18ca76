//! `build`: the pipeline's effects, after `planner` has decided. Resume journaled work, check
//! `--locked` and the budget, execute (a task that consumes images this build generates is decided,
//! and started, the moment the last of them exists), and report. The order guarantees the invariants: nothing is sent or
//! written before the whole project validated, and nothing is paid for under `--locked` or over
//! budget.
//!
//! Beside it: `build/journal.rs` (resuming what earlier builds journaled), `build/connect.rs` (the
//! provider client and the executor's settings from the project), `build/events.rs` (executor events
//! as status lines). Planning runs through [`blocking`]: it reads SQLite and hashes files.

mod connect;
mod events;
mod journal;
pub mod uptodate;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::cli::BuildArgs;
use crate::compile::cache_key::Provider;
use crate::emulator::Emulator;
use crate::error::{Error, Result};
use crate::executor::dashscope::ProviderError;
use crate::executor::{
    Event, Executor, Failure, FailureKind, Job, JobKind, Outcome, PollPolicy, Running,
};
use crate::money::Money;
use crate::planner::reconcile::{Action, Decision};
use crate::planner::{Chain, Settled, Unit, Waiting};
pub use crate::planner::{Planned, Project, plan, waiting_reason};
use crate::project::lock::LockFile;
use crate::remote::{RemoteUse, Upload, UploadQueue};
pub use crate::report::print_plan;
use crate::report::{Cumulative, Summary, TaskReport};
use crate::report::{task_report, waiting_report};
use crate::store::blob_store::BlobStore;
use crate::store::{RunRecord, Store};
use crate::term::printer::Printer;
use crate::term::progress::{Pace, Progress};
use crate::tree::output_name::now_unix;

use connect::{connect, latency_history, poll_policy, task_timeout};
use events::{progress_printer, restore_reasons};
use journal::{Resumption, resume_journal};

/// Runs blocking work (planning: SQLite reads, hashing files) without holding an async worker: on
/// the multi-threaded runtime the worker hands its other tasks to the rest of the pool while `f`
/// runs (`block_in_place`). Planning borrows the project and returns what borrows it, so it cannot
/// move to a `spawn_blocking` thread, which needs `'static`. Outside such a runtime `f` just runs.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// [`plan`] on a blocking thread (see [`blocking`]): for callers on the async runtime.
pub fn plan_blocking<'a>(
    project: &'a Project,
    selection: &crate::planner::Selection,
    forced: &HashSet<String>,
) -> Result<Planned<'a>> {
    blocking(|| plan(project, selection, forced))
}

/// `wanx build`: resume what earlier builds left journaled, plan, check `--locked` and the budget,
/// then execute: every task whose inputs are known starts at once; a task that consumes images this
/// build generates is keyed and decided as soon as they exist, while the rest goes on.
pub async fn build(
    project: &Project,
    args: &BuildArgs,
    printer: &Printer,
    cancel: Arc<AtomicBool>,
) -> Result<Built> {
    build_with(project, args, printer, cancel, &Hooks::default()).await
}

// --- hooks for `wanx watch` (src/watch/mod.rs); a plain build uses none ---------------------------------

/// Called with the reconciled plan right before it is executed (after the budget checks).
pub type OnPlan = Arc<dyn Fn(&Planned<'_>) + Send + Sync>;
/// Called with every executor event, before it is printed.
pub type OnEvent = Arc<dyn Fn(&Event) + Send + Sync>;

/// What `wanx watch` attaches to a build. `Default` attaches nothing.
#[derive(Clone, Default)]
pub struct Hooks {
    pub on_plan: Option<OnPlan>,
    pub on_event: Option<OnEvent>,
    /// Passed to [`Executor::before_submit`].
    pub before_submit: Option<crate::executor::SubmitGate>,
}

/// [`build`] with [`Hooks`].
pub async fn build_with(
    project: &Project,
    args: &BuildArgs,
    printer: &Printer,
    cancel: Arc<AtomicBool>,
    hooks: &Hooks,
) -> Result<Built> {
    let started_at = now_unix();
    // One writer per project, held from before the journal and the snapshot to the last write.
    let _project_lock =
        crate::project::one_writer::ProjectLock::for_build(project, args, printer).await?;
    if !args.dry_run {
        uptodate::forget(&project.manifest.state_dir());
    }
    let resumption = if !args.dry_run && !args.locked {
        resume_journal(project, args, printer, &cancel).await?
    } else {
        Resumption::default()
    };
    // Before planning hashes them: an input changed after this stat is a miss for the record.
    let inputs = uptodate::local_inputs(project);
    let forced = forced_tasks(project, args)?;
    let mut planned = plan_for_build(project, args, printer, &forced)?;
    let emulated = planned.provider.is_emulated();
    let foreign = crate::planner::writes::foreign(&project.manifest.root, &planned, now_unix());
    if args.dry_run {
        return dry_run(project, args, printer, &planned, &foreign);
    }
    if args.locked {
        check_locked(&planned, printer, args.json)?;
    }
    check_budget(&planned, printer)?;
    if !foreign.is_empty() {
        let state_dir = project.manifest.state_dir();
        let root = &project.manifest.root;
        crate::tree::output_guard::guard(root, &state_dir, &forced, &foreign, printer)?;
    }

    let mut session = Session::resumed(resumption, emulated);
    announce_generations(project, printer, &planned);
    if let Some(on_plan) = &hooks.on_plan {
        on_plan(&planned);
    }
    let before = crate::planner::writes::before(&planned);
    let selected = planned.units.len() + planned.waiting.len();
    let seen = uptodate::Seen::of(&mut planned, inputs);
    let emulator = execute(
        project,
        args,
        printer,
        &cancel,
        hooks,
        planned,
        &mut session,
    )
    .await?;
    if let Some(emu) = emulator {
        emu.shutdown().await;
    }
    if let Some(before) = before {
        prune_stale_outputs(project, &before, printer)?;
    }
    let interrupted = cancel.load(Ordering::SeqCst);
    let nothing_done = session.summary.fresh == selected
        && session.fatal.is_none()
        && !interrupted
        && session.summary.spent == Money::ZERO
        && session.summary.maybe_billed == Money::ZERO
        && session.failures.is_empty();
    let fatal = session.fatal.take().map(fatal_error);
    let summary = record_run(
        project,
        printer,
        session,
        started_at,
        (emulated, nothing_done),
    )?;
    // Written once the build's last database connection closed: the database's stat is final.
    if nothing_done && let Some(seen) = &seen {
        let digests = &project.loaded.digests;
        uptodate::record(&project.manifest, digests, args, seen, &summary);
    }
    Ok(Built {
        summary,
        fatal,
        interrupted,
    })
}

/// The tasks `--force` regenerates: those named (all when none is), not the upstream tasks a named
/// one pulls in: those are only built if they need to be.
fn forced_tasks(project: &Project, args: &BuildArgs) -> Result<HashSet<String>> {
    Ok(match (args.force, args.selection.tasks.is_empty()) {
        (false, _) => HashSet::new(),
        (true, true) => project.loaded.tasks.iter().map(|t| t.id.clone()).collect(),
        (true, false) => {
            project.select(&args.selection)?;
            args.selection.tasks.iter().cloned().collect()
        }
    })
}

/// Plans the build on a blocking thread, remembers the hashes it computed and sets `--max-spend`.
/// The remote cache is consulted for what would be generated: fetched from by a build, only looked
/// at by a dry run.
fn plan_for_build<'a>(
    project: &'a Project,
    args: &BuildArgs,
    printer: &Printer,
    forced: &HashSet<String>,
) -> Result<Planned<'a>> {
    let mut selection = args.selection.clone();
    selection.remote.usage = if args.dry_run {
        RemoteUse::Lookup(*printer)
    } else {
        RemoteUse::Fetch(*printer)
    };
    let mut planned = blocking(|| {
        let mut planned = plan(project, &selection, forced)?;
        remember_stats(&mut planned)?;
        Ok::<_, Error>(planned)
    })?;
    if let Some(budget) = args.max_spend {
        planned.budget = Some(Money::from_yuan(budget));
    }
    Ok(planned)
}

/// `--dry-run`: prints the plan (and the notes, and the outputs it would overwrite), refuses it
/// over budget, and returns what it would spend and save.
fn dry_run(
    project: &Project,
    args: &BuildArgs,
    printer: &Printer,
    planned: &Planned<'_>,
    foreign: &[crate::tree::output_guard::Foreign],
) -> Result<Built> {
    project.print_notes(printer, None);
    // With `--json`, a refused plan prints only the error object (one object on stdout).
    let refused = check_budget(planned, printer);
    if !(args.json && refused.is_err()) {
        print_plan(planned, printer, args.json);
    }
    crate::tree::output_guard::warn(foreign, printer);
    refused?;
    let totals = planned.totals();
    let summary = Summary {
        dry_run: true,
        would_spend: Some(totals.cost),
        would_save: Some(totals.saved),
        emulated: planned.provider.is_emulated(),
        currency: "CNY",
        ..Summary::default()
    };
    Ok(Built {
        summary,
        fatal: None,
        interrupted: false,
    })
}

/// Before anything is paid for: the notes on how the seed's vocabulary was lowered in the files
/// that will generate, and what the build will do.
fn announce_generations(project: &Project, printer: &Printer, planned: &Planned<'_>) {
    let totals = planned.totals();
    if totals.generate == 0 {
        return;
    }
    let generating: HashSet<&std::path::Path> = planned
        .units
        .iter()
        .zip(&planned.decisions)
        .filter(|(_, d)| d.action == Action::Generate)
        .map(|(u, _)| u.task.origin.file.as_path())
        .chain(planned.waiting.iter().map(|w| w.task.origin.file.as_path()))
        .collect();
    project.print_notes(printer, Some(&generating));
    printer.status("Planning", &totals.describe(planned.provider.is_emulated()));
}

/// Removes the outputs this build's lock no longer claims (see `tree::stale_outputs`).
fn prune_stale_outputs(
    project: &Project,
    before: &crate::tree::stale_outputs::Before,
    printer: &Printer,
) -> Result<()> {
    let after = LockFile::read(&project.manifest.lock_path())?;
    let blobs = BlobStore::new(project.manifest.state_dir().join("blobs"));
    crate::tree::stale_outputs::prune(&project.manifest.root, &blobs, before, &after, printer)
}

/// Records the finished build in the store (the run, what restores saved, the failures), unless
/// it had `nothing_done`: such a build writes nothing, as with ninja or cargo. Collects garbage, and
/// returns the summary with the cumulative figures; the store is closed when it returns.
fn record_run(
    project: &Project,
    printer: &Printer,
    mut session: Session,
    started_at: i64,
    (emulated, nothing_done): (bool, bool),
) -> Result<Summary> {
    let mut summary = session.summary;
    summary.tasks = session.reports;
    let mut store = Store::open(&project.manifest.state_dir())?;
    if !nothing_done {
        let run_id = store.record_run(&RunRecord {
            started_at,
            finished_at: now_unix(),
            command: "build".to_owned(),
            emulated,
            generated: summary.generated as u32,
            restored: summary.restored as u32,
            fresh: summary.fresh as u32,
            failed: summary.failed as u32,
            images_generated: summary.images_generated,
            spent: summary.spent,
            saved: summary.saved,
        })?;
        let saved_by_model: Vec<(String, u32, Money)> = std::mem::take(&mut session.saved_by_model)
            .into_iter()
            .map(|(model, (images, value))| (model, images, value))
            .collect();
        store.record_savings(run_id, &saved_by_model)?;
        store.record_failures(&session.failures, &session.built, now_unix())?;
    }
    crate::commands::gc::after_build(&project.manifest, &mut store, printer)?;
    summary.cumulative = Cumulative::of(&store.ledger_totals()?, emulated);
    Ok(summary)
}

/// The stop-class provider error that cut a build short, as the error the build exits with.
fn fatal_error(fatal: ProviderError) -> Error {
    match fatal {
        ProviderError::Fatal {
            code,
            message,
            request_id,
        } => Error::ProviderFatal {
            code,
            message,
            request_id,
        },
        other => Error::ProviderFatal {
            code: other.code().to_owned(),
            message: other.message().to_owned(),
            request_id: None,
        },
    }
}

/// What a build has done so far.
#[derive(Default)]
struct Session {
    summary: Summary,
    reports: Vec<TaskReport>,
    reported: HashSet<String>,
    /// Tasks that ended unsent (skipped, dropped): their dependants are skipped too, not failed.
    unsent: HashSet<String>,
    fatal: Option<ProviderError>,
    /// Keys the resume of the journal cached, with what it booked (see [`Executor::resumed`]).
    resumed: HashMap<String, (Money, u32)>,
    /// Keys left journaled by the resume (see [`Executor::journaled`]).
    journaled: HashSet<String>,
    /// Why each task is not fresh (src/planner/why.rs).
    why: HashMap<String, Vec<crate::planner::why::Change>>,
    /// What restores saved, by model: images and their price (`wanx stats`).
    saved_by_model: BTreeMap<String, (u32, Money)>,
    /// Tasks that failed in this build (id, key hex, message) and tasks that were built: the
    /// store keeps each task's last failure until it is built (`wanx gallery` shows it).
    failures: Vec<(String, String, String)>,
    built: Vec<String>,
}

impl Session {
    /// A session that starts with what the resume of the journal booked: it is this build's spend,
    /// whether or not a task still wants the key.
    fn resumed(resumption: Resumption, emulated: bool) -> Session {
        Session {
            summary: Summary {
                currency: "CNY",
                emulated,
                spent: resumption.spent,
                images_generated: resumption.images_billed,
                ..Summary::default()
            },
            resumed: resumption.keys,
            journaled: resumption.journaled,
            ..Session::default()
        }
    }

    fn report(&mut self, report: TaskReport) {
        if self.reported.insert(report.id.clone()) {
            self.reports.push(report);
        }
    }

    /// Reports a waiting task that ended unbuilt: skipped (never sent) or failed.
    fn unbuilt(&mut self, w: &Waiting<'_>, failure: &Failure) {
        let status = if failure.unsent() {
            self.summary.skipped += 1;
            self.unsent.insert(w.task.id.clone());
            "skipped"
        } else {
            self.summary.failed += 1;
            "failed"
        };
        self.report(waiting_report(w, status, Some(failure.message.clone())));
    }

    /// Acts on a waiting task that a finished task settled: a decided one joins `decided` (and
    /// starts, if it needs work); one that can never be built is reported here and its outcome
    /// returned for the event printer.
    fn settle<'a>(
        &mut self,
        project: &Project,
        settled: Settled<'a>,
        halted: bool,
        decided: &mut Vec<(Unit<'a>, Decision)>,
    ) -> Next {
        let (w, failure) = match settled {
            Settled::Decided(unit, d) => {
                let job = job(project, &unit, &d);
                decided.push((unit, d));
                return job.map_or(Next::Fresh, Next::Start);
            }
            Settled::Blocked(w, _) if halted => (
                w,
                Failure::skipped("not submitted: the build stopped before its inputs were ready"),
            ),
            // Dropped unsent (a newer save in `wanx watch`): nothing failed.
            Settled::Blocked(w, upstream) if self.unsent.contains(&upstream) => (
                w,
                Failure::skipped(&format!("not submitted: input `{upstream}` was not built")),
            ),
            Settled::Blocked(w, upstream) => (
                w,
                Failure::new(
                    FailureKind::Blocked,
                    format!("input `{upstream}` was not built"),
                ),
            ),
            Settled::Invalid(w, why) => (w, Failure::new(FailureKind::Blocked, why)),
        };
        self.unbuilt(&w, &failure);
        Next::Ended(Outcome {
            id: w.task.id.clone(),
            result: Err(failure),
        })
    }
}

/// What a settled waiting task needs next.
enum Next {
    /// Its job: generate or restore.
    Start(Job),
    /// Nothing: it is fresh.
    Fresh,
    /// It ended unbuilt.
    Ended(Outcome),
}

/// Remembers hashes computed while looking, so the next no-op hashes nothing.
fn remember_stats(planned: &mut Planned<'_>) -> Result<()> {
    if !planned.new_stats.is_empty() {
        planned.store.put_stats(&planned.new_stats)?;
    }
    Ok(())
}

/// `--locked`: nothing may be generated and `wanx.lock` may not change.
fn check_locked(planned: &Planned<'_>, printer: &Printer, json: bool) -> Result<()> {
    let changed = planned
        .units
        .iter()
        .zip(&planned.decisions)
        .filter(|(u, d)| {
            let lock_key = planned.lock.tasks.get(&u.task.id).map(|e| e.key.as_str());
            d.action == Action::Generate || lock_key != Some(u.key.hex().as_str())
        })
        .count()
        + planned.waiting.len();
    if changed > 0 || !planned.stale_lock_entries.is_empty() {
        if !json {
            print_plan(planned, printer, false);
        }
        return Err(Error::NotLocked {
            stale: changed,
            removed: planned.stale_lock_entries.clone(),
        });
    }
    Ok(())
}

/// Refuses, before any request, a build whose generations would cost more than the budget
/// (`planned.budget`). `wanx plan` and `--dry-run` decide with this same function.
pub fn check_budget(planned: &Planned<'_>, printer: &Printer) -> Result<()> {
    let Some(budget) = planned.budget else {
        return Ok(());
    };
    let cost = planned.totals().cost;
    if cost <= budget {
        return Ok(());
    }
    let mut costly: Vec<(&str, Money, u32, &str)> = planned
        .units
        .iter()
        .zip(&planned.decisions)
        .filter(|(_, d)| d.cost() > Money::ZERO)
        .map(|(u, d)| {
            (
                u.task.id.as_str(),
                d.cost(),
                u.compiled.n,
                u.compiled.model.as_str(),
            )
        })
        .chain(planned.waiting.iter().map(|w| {
            (
                w.task.id.as_str(),
                w.compiled.cost(),
                w.compiled.n,
                w.compiled.model.as_str(),
            )
        }))
        .collect();
    costly.sort_by_key(|c| std::cmp::Reverse(c.1));
    for (id, cost, n, model) in costly.iter().take(5) {
        printer.warn(
            "Costly",
            &format!(
                "{id}: {cost} ({n} image{} of {model})",
                if *n == 1 { "" } else { "s" }
            ),
        );
    }
    Err(Error::OverBudget {
        planned: cost,
        budget,
    })
}

/// Executes the plan and records every outcome in `session`. Tasks decided at planning start at
/// once; each waiting task is decided the moment the last image it consumes exists, and started if
/// it must be generated or restored. Returns the in-process emulator, if one was started.
async fn execute(
    project: &Project,
    args: &BuildArgs,
    printer: &Printer,
    cancel: &Arc<AtomicBool>,
    hooks: &Hooks,
    planned: Planned<'_>,
    session: &mut Session,
) -> Result<Option<Emulator>> {
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
    if session.fatal.is_none() {
        session.fatal = fatal;
    }
    // Only `--json` and `wanx watch` read the fresh tasks' reports: a plain build counts them.
    let brief = !args.json && hooks.on_plan.is_none() && hooks.on_event.is_none();
    record_outcomes(session, &decided, &outcomes, brief, order);
    remember_requests(&run.store, &provider, &requests, &decided, &outcomes)?;
    Ok(emulator)
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
        lock.tasks.remove(id);
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

/// The executor's job for a decision: `None` for a fresh task, which needs nothing done.
fn job(project: &Project, u: &Unit<'_>, d: &Decision) -> Option<Job> {
    let kind = match &d.action {
        Action::Fresh => return None,
        Action::Restore {
            images,
            generated_at,
        } => JobKind::Restore {
            images: images.clone(),
            generated_at: *generated_at,
        },
        Action::Generate => JobKind::Generate,
    };
    Some(Job {
        id: u.task.id.clone(),
        key: u.key,
        compiled: u.compiled.clone(),
        output: u.task.output.clone(),
        pick: u.task.pick.clone().map(Arc::new),
        kind,
        media: u
            .compiled
            .media
            .iter()
            .map(|slot| slot.pointer.clone())
            .zip(u.media.iter().cloned())
            .collect(),
        inline_media: project.registry.takes_inline_media(&u.task.model),
    })
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

/// A finished build: its summary, and the stop-class provider error that cut it short, if any.
pub struct Built {
    pub summary: Summary,
    pub fatal: Option<Error>,
    /// Ctrl-C stopped new submissions.
    pub interrupted: bool,
}

/// Prints the summary (human on stderr, JSON on stdout).
pub fn finish(printer: &Printer, summary: &Summary, json: bool) {
    if json {
        printer.data(&serde_json::to_string_pretty(summary).expect("a summary always serializes"));
    }
    for line in summary.human() {
        printer.status("Finished", &line);
    }
}

/// Defined here, not in `project::one_writer`, because it takes the build's own types: the lock
/// knows nothing of builds.
impl crate::project::one_writer::ProjectLock {
    /// The lock `wanx build` holds: none for `--dry-run`, which writes no output and no lock (its
    /// stat-cache update is an SQLite transaction, safe beside a build); otherwise the project's,
    /// waiting for it unless `--no-wait`.
    pub async fn for_build(
        project: &Project,
        args: &BuildArgs,
        printer: &Printer,
    ) -> Result<Option<Self>> {
        if args.dry_run {
            return Ok(None);
        }
        let state_dir = project.manifest.state_dir();
        Self::acquire_async(&state_dir, !args.no_wait, printer)
            .await
            .map(Some)
    }
}
