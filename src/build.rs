//! `build`: the pipeline's effects, after `planner` has decided. Resume journaled work, check
//! `--locked` and the budget, execute in rounds (tasks that consume images generated in a round are
//! planned again after it), and report. The order guarantees the invariants: nothing is sent or
//! written before the whole project validated, and nothing is paid for under `--locked` or over
//! budget.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::blob_store::BlobStore;
use crate::cache_key::Provider;
use crate::cli::{BuildArgs, Selection};
use crate::dashscope::{Client, ProviderError};
use crate::emulator::{Emulator, EmulatorConfig};
use crate::error::{Error, Result};
use crate::executor::{Event, Executor, Job, JobKind, Outcome, PollPolicy, Resumed};
use crate::lock::LockFile;
use crate::money::Money;
use crate::output_name::now_unix;
use crate::planner::task_report;
pub use crate::planner::{Planned, Project, plan, print_plan, waiting_reason};
use crate::printer::Printer;
use crate::reconcile::Action;
use crate::report::{Cumulative, Summary, TaskReport};
use crate::secret::ApiKey;
use crate::store::{RunRecord, Store};

/// `wanx build`: resume what earlier builds left journaled, plan, check `--locked` and the budget,
/// then execute in rounds: each round runs every task whose inputs are known; tasks that consume
/// images generated in a round are planned again after it.
pub async fn build(
    project: &Project,
    args: &BuildArgs,
    printer: &Printer,
    cancel: Arc<AtomicBool>,
) -> Result<Built> {
    build_with(project, args, printer, cancel, &Hooks::default()).await
}

// --- hooks for `wanx watch` (src/watch.rs); a plain build uses none ---------------------------------

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
    let _project_lock = crate::project_lock::ProjectLock::for_build(project, args, printer).await?;
    if !args.dry_run && !args.locked {
        resume_journal(project, args, printer, &cancel).await?;
    }
    let mut forced: HashSet<String> = if args.force {
        project
            .select(&args.selection)?
            .iter()
            .map(|t| t.id.clone())
            .collect()
    } else {
        HashSet::new()
    };
    let mut planned = plan(project, &args.selection, &forced)?;
    remember_stats(&mut planned)?;
    let emulated = planned.provider.is_emulated();
    if args.dry_run {
        print_plan(&planned, printer, args.json);
        let summary = Summary {
            dry_run: true,
            emulated,
            currency: "CNY",
            ..Summary::default()
        };
        return Ok(Built {
            summary,
            fatal: None,
            interrupted: false,
        });
    }
    if args.locked {
        check_locked(&planned, printer)?;
    }
    check_budget(project, args, &planned, printer)?;

    let mut session = Session {
        summary: Summary {
            currency: "CNY",
            emulated,
            ..Summary::default()
        },
        ..Session::default()
    };
    loop {
        let totals = planned.totals();
        if totals.generate > 0 && session.rounds == 0 {
            printer.status("Planning", &totals.describe(emulated));
        }
        if let Some(on_plan) = &hooks.on_plan {
            on_plan(&planned);
        }
        let waiting = run_round(
            project,
            args,
            printer,
            &cancel,
            hooks,
            planned,
            &mut session,
        )
        .await?;
        if waiting.is_empty() {
            break;
        }
        let halted = cancel.load(Ordering::SeqCst) || session.fatal.is_some();
        let mut next = Vec::new();
        for (id, upstream) in waiting {
            let failed_input = upstream.iter().find(|u| session.unsuccessful.contains(*u));
            match (halted, failed_input) {
                (true, _) => session.skip(
                    &id,
                    "not submitted: the build stopped before its inputs were ready",
                ),
                (false, Some(up)) => session.fail(&id, &format!("input `{up}` was not built")),
                (false, None) if session.progressed => next.push(id),
                (false, None) => session.fail(&id, "its inputs were not produced"),
            }
        }
        if next.is_empty() {
            break;
        }
        forced.retain(|id| next.contains(id));
        let selection = Selection {
            tasks: next,
            emulate: args.selection.emulate,
        };
        planned = plan(project, &selection, &forced)?;
        remember_stats(&mut planned)?;
    }
    if let Some((_, Some(emu))) = session.connection.take() {
        emu.shutdown().await;
    }

    let mut summary = session.summary;
    summary.tasks = session.reports;
    let store = Store::open(&project.manifest.state_dir())?;
    let mut store = store;
    store.record_run(&RunRecord {
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
    let totals = store.ledger_totals()?;
    let kind = if emulated {
        totals.emulated
    } else {
        totals.real
    };
    summary.cumulative = Cumulative {
        runs: kind.runs,
        spent: kind.spent,
        saved: kind.saved,
    };
    let fatal = session.fatal.map(|f| match f {
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
    });
    Ok(Built {
        summary,
        fatal,
        interrupted: cancel.load(Ordering::SeqCst),
    })
}

/// What a build has done so far, across its rounds.
#[derive(Default)]
struct Session {
    summary: Summary,
    reports: Vec<TaskReport>,
    reported: HashSet<String>,
    /// Tasks that failed or were skipped: their dependants cannot be built.
    unsuccessful: HashSet<String>,
    /// Whether the last round generated anything (so waiting tasks may now be decidable).
    progressed: bool,
    rounds: u32,
    connection: Option<(Arc<Client>, Option<Emulator>)>,
    fatal: Option<ProviderError>,
}

impl Session {
    fn report(&mut self, report: TaskReport) {
        if self.reported.insert(report.id.clone()) {
            self.reports.push(report);
        }
    }

    fn fail(&mut self, id: &str, why: &str) {
        self.summary.failed += 1;
        self.unsuccessful.insert(id.to_owned());
        self.report(bare_report(id, "failed", why));
    }

    fn skip(&mut self, id: &str, why: &str) {
        self.summary.skipped += 1;
        self.unsuccessful.insert(id.to_owned());
        self.report(bare_report(id, "skipped", why));
    }
}

fn bare_report(id: &str, status: &'static str, why: &str) -> TaskReport {
    TaskReport {
        id: id.to_owned(),
        action: "generate",
        status,
        reason: why.to_owned(),
        model: String::new(),
        images: 0,
        cost: Money::ZERO,
        saved: Money::ZERO,
        outputs: Vec::new(),
        error: Some(why.to_owned()),
    }
}

/// Remembers hashes computed while looking, so the next no-op hashes nothing.
fn remember_stats(planned: &mut Planned<'_>) -> Result<()> {
    if !planned.new_stats.is_empty() {
        planned.store.put_stats(&planned.new_stats)?;
    }
    Ok(())
}

/// `--locked`: nothing may be generated and `wanx.lock` may not change.
fn check_locked(planned: &Planned<'_>, printer: &Printer) -> Result<()> {
    let changed = planned
        .units
        .iter()
        .zip(&planned.decisions)
        .filter(|(u, d)| {
            let lock_key = planned.lock.tasks.get(&u.task.id).map(|e| e.key.as_str());
            d.action == Action::Generate || lock_key != Some(u.key.hex().as_str())
        })
        .count()
        + planned.waiting.len()
        + planned.stale_lock_entries.len();
    if changed > 0 {
        print_plan(planned, printer, false);
        return Err(Error::NotLocked { stale: changed });
    }
    Ok(())
}

/// Refuses, before any request, a build whose generations would cost more than the budget.
fn check_budget(
    project: &Project,
    args: &BuildArgs,
    planned: &Planned<'_>,
    printer: &Printer,
) -> Result<()> {
    let Some(budget) = args
        .max_spend
        .or(project.manifest.build.max_spend)
        .map(Money::from_yuan)
    else {
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

/// Executes one round's decisions and records their outcomes. Returns the tasks still waiting for
/// inputs, each with the upstream tasks it waits for.
async fn run_round(
    project: &Project,
    args: &BuildArgs,
    printer: &Printer,
    cancel: &Arc<AtomicBool>,
    hooks: &Hooks,
    planned: Planned<'_>,
    session: &mut Session,
) -> Result<Vec<(String, Vec<String>)>> {
    let Planned {
        units,
        decisions,
        waiting,
        lock,
        store,
        blobs,
        stale_lock_entries,
        provider,
        ..
    } = planned;
    let waiting: Vec<(String, Vec<String>)> = waiting
        .into_iter()
        .map(|w| (w.task.id.clone(), w.upstream))
        .collect();
    session.rounds += 1;
    session.progressed = false;
    let needs_provider = decisions.iter().any(|d| d.action == Action::Generate);
    if needs_provider && session.connection.is_none() {
        let (client, emulator) = connect(project, args.selection.emulate, printer).await?;
        session.connection = Some((client, emulator));
    }
    let mut lock = lock;
    for id in &stale_lock_entries {
        lock.tasks.remove(id);
    }
    let lock = Arc::new(Mutex::new(lock));
    let store = Arc::new(Mutex::new(store));
    let jobs: Vec<Job> = units
        .iter()
        .zip(&decisions)
        .filter_map(|(u, d)| {
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
            let inline = project
                .registry
                .get(&u.task.model)
                .is_some_and(|spec| spec.family.is_edit());
            Some(Job {
                id: u.task.id.clone(),
                key: u.key,
                compiled: u.compiled.clone(),
                output: u.task.output.clone(),
                kind,
                media: u
                    .compiled
                    .media
                    .iter()
                    .map(|slot| slot.pointer.clone())
                    .zip(u.media.iter().cloned())
                    .collect(),
                inline_media: inline,
            })
        })
        .collect();
    let job_count = jobs.len();
    if job_count > 0 {
        printer.progress(&format!(
            "    Building [{}] 0/{job_count} tasks",
            " ".repeat(24)
        ));
    }
    let models: Vec<&str> = jobs
        .iter()
        .filter(|j| matches!(j.kind, JobKind::Generate))
        .map(|j| j.compiled.model.as_str())
        .collect();
    let latency_history = latency_history(&store.lock().expect("never poisoned"), &models)?;
    let emulated = provider.is_emulated();
    let executor = Executor {
        root: project.manifest.root.clone(),
        store: Arc::clone(&store),
        blobs: Arc::new(blobs),
        lock: Arc::clone(&lock),
        lock_path: project.manifest.lock_path(),
        client: session.connection.as_ref().map(|(c, _)| Arc::clone(c)),
        provider: provider.identity(),
        poll: if emulated {
            PollPolicy::EMULATED
        } else {
            poll_policy(project)
        },
        task_timeout: task_timeout(project),
        jobs: args.jobs.or(project.manifest.build.jobs).unwrap_or(16),
        on_event: with_hook(progress_printer(printer, job_count), hooks.on_event.clone()),
        cancel: Arc::clone(cancel),
        latency_history,
        before_submit: hooks.before_submit.clone(),
    };
    // The executor writes the lock after each task; only pruning (or a first, empty lock) is left to
    // write here. A round with nothing to do touches nothing: a no-op must stay as cheap as ninja's.
    let prune = !stale_lock_entries.is_empty() || !project.manifest.lock_path().exists();
    let execution = executor.run(jobs, &project.registry).await;
    if prune {
        lock.lock()
            .expect("never poisoned")
            .write_atomic(&project.manifest.lock_path())
            .map_err(|e| Error::io("could not write", project.manifest.lock_path(), e))?;
    }
    if session.fatal.is_none() {
        session.fatal = execution.fatal;
    }
    let outcomes: HashMap<&str, &Outcome> = execution
        .outcomes
        .iter()
        .map(|o| (o.id.as_str(), o))
        .collect();
    for (unit, d) in units.iter().zip(&decisions) {
        if session.reported.contains(&unit.task.id) {
            continue;
        }
        let summary = &mut session.summary;
        let report = match outcomes.get(unit.task.id.as_str()).map(|o| &o.result) {
            None => {
                summary.fresh += 1;
                summary.saved += d.saved();
                task_report(unit, d, "fresh", None)
            }
            Some(Ok(done)) => {
                let mut r = if done.generated {
                    session.progressed = true;
                    summary.generated += 1;
                    summary.images_generated += done.entry.images;
                    summary.spent += done.spent;
                    let mut r = task_report(unit, d, "generated", None);
                    r.cost = done.spent;
                    r
                } else {
                    summary.restored += 1;
                    summary.saved += d.saved();
                    task_report(unit, d, "restored", None)
                };
                r.outputs = done.entry.outputs.iter().map(|o| o.path.clone()).collect();
                r
            }
            Some(Err(e)) => {
                let status = if e.skipped {
                    summary.skipped += 1;
                    "skipped"
                } else {
                    summary.failed += 1;
                    "failed"
                };
                session.unsuccessful.insert(unit.task.id.clone());
                let mut r = task_report(unit, d, status, Some(e.message.clone()));
                r.cost = Money::ZERO;
                r
            }
        };
        session.report(report);
    }
    Ok(waiting)
}

/// A client for the provider the build talks to: the in-process emulator, or DashScope with the
/// API key from the environment.
async fn connect(
    project: &Project,
    emulate: bool,
    printer: &Printer,
) -> Result<(Arc<Client>, Option<Emulator>)> {
    let mut emulator = None;
    let (base_url, key) = if emulate {
        let config = EmulatorConfig {
            registry: project.registry.clone(),
            ..EmulatorConfig::default()
        };
        let emu = Emulator::start(config, ([127, 0, 0, 1], 0).into())
            .await
            .map_err(|e| Error::Other(format!("could not start the emulator: {e}")))?;
        let url = emu.base_url();
        printer.verbose("Emulator", &format!("listening at {url}"));
        emulator = Some(emu);
        (url, ApiKey::new("wanx-emulator-key"))
    } else {
        let var = project.api_key_env();
        let key = std::env::var(&var)
            .ok()
            .filter(|k| !k.trim().is_empty())
            .ok_or(Error::MissingApiKey { var })?;
        (project.base_url(), ApiKey::new(key.trim()))
    };
    let client = Client::new(&base_url, key, project.manifest.provider.workspace.clone())
        .map_err(Error::Other)?;
    Ok((Arc::new(client), emulator))
}

/// Finishes tasks an earlier build journaled but never saw through (a crash, a kill, a second
/// Ctrl-C): their images go into the cache, so planning restores them instead of paying again.
async fn resume_journal(
    project: &Project,
    args: &BuildArgs,
    printer: &Printer,
    cancel: &Arc<AtomicBool>,
) -> Result<()> {
    let state_dir = project.manifest.state_dir();
    if !state_dir.join(crate::store::DB_FILE).exists() {
        return Ok(());
    }
    let mut store = Store::open(&state_dir)?;
    let entries = store.journal_open()?;
    if entries.is_empty() {
        return Ok(());
    }
    printer.status(
        "Resuming",
        &format!("{} task(s) journaled by an earlier build", entries.len()),
    );
    // Warn first, then forget: a crash in between repeats the warning instead of losing it (the
    // executor would close these entries at once but their warnings print only after every other
    // journaled task has been resumed).
    let (unsent, entries): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .partition(|e| e.remote_task_id.is_none());
    for entry in unsent {
        warn_billed_twice(printer, &entry.task_id);
        store.journal_finish(entry.id)?;
    }
    if entries.is_empty() {
        return Ok(());
    }
    let (client, emulator) = match connect(project, args.selection.emulate, printer).await {
        Ok(connected) => connected,
        Err(e) => {
            printer.warn(
                "Skipping",
                &format!("cannot resume journaled tasks now: {e}"),
            );
            return Ok(());
        }
    };
    let emulated =
        args.selection.emulate || Provider::from_base_url(client.base_url()).is_emulated();
    let models: Vec<&str> = entries.iter().map(|e| e.model.as_str()).collect();
    let latency_history = latency_history(&store, &models)?;
    let executor = Executor {
        root: project.manifest.root.clone(),
        store: Arc::new(Mutex::new(store)),
        blobs: Arc::new(BlobStore::new(state_dir.join("blobs"))),
        lock: Arc::new(Mutex::new(LockFile::default())),
        lock_path: project.manifest.lock_path(),
        client: Some(client),
        provider: project.provider(args.selection.emulate).identity(),
        poll: if emulated {
            PollPolicy::EMULATED
        } else {
            poll_policy(project)
        },
        task_timeout: task_timeout(project),
        jobs: 64,
        on_event: event_printer(printer),
        cancel: Arc::clone(cancel),
        latency_history,
        before_submit: None,
    };
    for resumed in executor.resume(entries, &project.registry).await {
        match resumed {
            Resumed::Recovered { task_id, images } => {
                printer.status(
                    "Recovered",
                    &format!("{task_id}: {images} image(s) paid for by an earlier build"),
                );
            }
            Resumed::Lost { task_id, reason } => {
                printer.warn("Lost", &format!("{task_id}: {reason}"));
            }
            Resumed::MaybeBilledTwice { task_id } => warn_billed_twice(printer, &task_id),
            Resumed::Pending { task_id, reason } => {
                printer.warn("Pending", &format!("{task_id}: {reason}; still journaled"));
            }
        }
    }
    if let Some(emu) = emulator {
        emu.shutdown().await;
    }
    Ok(())
}

fn warn_billed_twice(printer: &Printer, task_id: &str) {
    printer.warn(
        "Warning",
        &format!("{task_id}: an earlier build was stopped while submitting it; it may have been billed twice"),
    );
}

/// Recent latencies per model, for aiming the polling.
fn latency_history(store: &Store, models: &[&str]) -> Result<HashMap<String, Vec<f64>>> {
    let mut history = HashMap::new();
    for model in models {
        if !history.contains_key(*model) {
            history.insert((*model).to_owned(), store.latencies(model, 50)?);
        }
    }
    Ok(history)
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

fn event_printer(printer: &Printer) -> Arc<dyn Fn(Event) + Send + Sync> {
    let printer = *printer;
    Arc::new(move |event| print_event(&printer, event))
}

/// Prints events, and on a terminal keeps a progress line: tasks done of `total`, money spent.
fn progress_printer(printer: &Printer, total: usize) -> Arc<dyn Fn(Event) + Send + Sync> {
    let printer = *printer;
    let done = std::sync::atomic::AtomicUsize::new(0);
    let spent = Mutex::new(Money::ZERO);
    Arc::new(move |event| {
        if let Event::Finished(outcome) = &event {
            let finished = done.fetch_add(1, Ordering::SeqCst) + 1;
            let mut spent = spent.lock().expect("never poisoned");
            if let Ok(d) = &outcome.result {
                *spent += d.spent;
            }
            print_event(&printer, event);
            if finished < total {
                let width = 24;
                let filled = finished * width / total.max(1);
                printer.progress(&format!(
                    "    Building [{}{}] {finished}/{total} tasks, {} spent",
                    "=".repeat(filled),
                    " ".repeat(width - filled),
                    *spent
                ));
            } else {
                printer.clear_progress();
            }
        } else {
            print_event(&printer, event);
        }
    })
}

/// A finished build: its summary, and the stop-class provider error that cut it short, if any.
pub struct Built {
    pub summary: Summary,
    pub fatal: Option<Error>,
    /// Ctrl-C stopped new submissions.
    pub interrupted: bool,
}

/// Reports one executor event as a status line.
fn print_event(printer: &Printer, event: Event) {
    match event {
        Event::Submitted { id, remote } => {
            printer.verbose("Submitted", &format!("{id} (task {remote})"));
        }
        Event::Retrying { id, error, wait } => {
            printer.warn(
                "Retrying",
                &format!("{id}: {error} (in {:.1}s)", wait.as_secs_f64()),
            );
        }
        Event::Finished(outcome) => match outcome.result {
            Ok(done) if done.generated => {
                printer.status(
                    "Generated",
                    &format!(
                        "{} → {} ({})",
                        outcome.id,
                        describe_outputs(&done.entry.outputs),
                        done.spent
                    ),
                );
            }
            Ok(done) => printer.status(
                "Restored",
                &format!(
                    "{} → {} (free)",
                    outcome.id,
                    describe_outputs(&done.entry.outputs)
                ),
            ),
            Err(error) if error.message == crate::executor::NOT_SUBMITTED => {
                printer.warn("Dropped", &format!("{}: {error}", outcome.id));
            }
            Err(error) if error.skipped => {
                printer.warn("Skipped", &format!("{}: {error}", outcome.id));
            }
            Err(error) => printer.fail("Failed", &format!("{}: {error}", outcome.id)),
        },
    }
}

/// `a.png`, or `a_1.png (+3 more)`.
fn describe_outputs(outputs: &[crate::lock::LockOutput]) -> String {
    match outputs {
        [] => "no files".to_owned(),
        [one] => one.path.clone(),
        [first, rest @ ..] => format!("{} (+{} more)", first.path, rest.len()),
    }
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

fn poll_policy(project: &Project) -> PollPolicy {
    match project.manifest.build.poll_interval {
        Some(secs) if secs > 0.0 => {
            let first = Duration::from_secs_f64(secs);
            PollPolicy {
                first,
                max: first.max(PollPolicy::REAL.max),
            }
        }
        _ => PollPolicy::REAL,
    }
}

fn task_timeout(project: &Project) -> Duration {
    project
        .manifest
        .build
        .task_timeout
        .map_or(Duration::from_secs(600), Duration::from_secs_f64)
}
