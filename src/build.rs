//! `build`: the pipeline's effects, after `planner` has decided. Resume journaled work, check
//! `--locked` and the budget, execute (a task that consumes images this build generates is decided,
//! and started, the moment the last of them exists), and report. The order guarantees the invariants: nothing is sent or
//! written before the whole project validated, and nothing is paid for under `--locked` or over
//! budget.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cli::BuildArgs;
use crate::compile::cache_key::Provider;
use crate::emulator::{Emulator, EmulatorConfig};
use crate::error::{Error, Result};
use crate::executor::dashscope::{Client, ProviderError};
use crate::executor::secret::ApiKey;
use crate::executor::{Event, Executor, Failure, Job, JobKind, Outcome, PollPolicy, Resumed};
use crate::money::Money;
use crate::planner::reconcile::{Action, Decision};
use crate::planner::{Chain, Settled, Unit, Waiting, task_report, waiting_report};
pub use crate::planner::{Planned, Project, plan, print_plan, waiting_reason};
use crate::project::lock::LockFile;
use crate::remote::{RemoteUse, Upload, UploadQueue};
use crate::report::{Cumulative, Summary, TaskReport};
use crate::store::blob_store::BlobStore;
use crate::store::{RunRecord, Store};
use crate::term::printer::Printer;
use crate::term::progress::{Pace, Progress};
use crate::tree::output_name::now_unix;

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
    let resumption = if !args.dry_run && !args.locked {
        resume_journal(project, args, printer, &cancel).await?
    } else {
        Resumption::default()
    };
    // `--force` regenerates the tasks named (all when none is), not the upstream tasks a named
    // one pulls in: those are only built if they need to be.
    let forced: HashSet<String> = match (args.force, args.selection.tasks.is_empty()) {
        (false, _) => HashSet::new(),
        (true, true) => project.loaded.tasks.iter().map(|t| t.id.clone()).collect(),
        (true, false) => {
            project.select(&args.selection)?;
            args.selection.tasks.iter().cloned().collect()
        }
    };
    // The remote cache is consulted for what would be generated: fetched from by a build, only
    // looked at by a dry run.
    let mut selection = args.selection.clone();
    selection.remote.usage = if args.dry_run {
        RemoteUse::Lookup(*printer)
    } else {
        RemoteUse::Fetch(*printer)
    };
    let mut planned = plan(project, &selection, &forced)?;
    remember_stats(&mut planned)?;
    let emulated = planned.provider.is_emulated();
    let foreign = crate::tree::output_guard::find(&project.manifest.root, &planned, now_unix());
    if let Some(budget) = args.max_spend {
        planned.budget = Some(Money::from_yuan(budget));
    }
    if args.dry_run {
        project.print_notes(printer, None);
        // With `--json`, a refused plan prints only the error object (one object on stdout).
        let refused = check_budget(&planned, printer);
        if !(args.json && refused.is_err()) {
            print_plan(&planned, printer, args.json);
        }
        crate::tree::output_guard::warn(&foreign, printer);
        refused?;
        let totals = planned.totals();
        let summary = Summary {
            dry_run: true,
            would_spend: Some(totals.cost),
            would_save: Some(totals.saved),
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
        check_locked(&planned, printer, args.json)?;
    }
    check_budget(&planned, printer)?;
    if !foreign.is_empty() {
        let state_dir = project.manifest.state_dir();
        let root = &project.manifest.root;
        crate::tree::output_guard::guard(root, &state_dir, &forced, &foreign, printer)?;
    }

    // What the resume booked is this build's spend, whether or not a task still wants the key.
    let mut session = Session {
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
    };
    let totals = planned.totals();
    if totals.generate > 0 {
        // How the seed's vocabulary was lowered matters when it is about to be paid for.
        let generating: HashSet<&std::path::Path> = planned
            .units
            .iter()
            .zip(&planned.decisions)
            .filter(|(_, d)| d.action == Action::Generate)
            .map(|(u, _)| u.task.origin.file.as_path())
            .chain(planned.waiting.iter().map(|w| w.task.origin.file.as_path()))
            .collect();
        project.print_notes(printer, Some(&generating));
        printer.status("Planning", &totals.describe(emulated));
    }
    if let Some(on_plan) = &hooks.on_plan {
        on_plan(&planned);
    }
    let before = crate::tree::stale_outputs::Before::take(&planned);
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
        let after = LockFile::read(&project.manifest.lock_path())?;
        let blobs = BlobStore::new(project.manifest.state_dir().join("blobs"));
        crate::tree::stale_outputs::prune(
            &project.manifest.root,
            &blobs,
            &before,
            &after,
            printer,
        )?;
    }

    let mut summary = session.summary;
    summary.tasks = session.reports;
    let store = Store::open(&project.manifest.state_dir())?;
    let mut store = store;
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
    crate::commands::gc::after_build(&project.manifest, &mut store, printer)?;
    summary.cumulative = Cumulative::of(&store.ledger_totals()?, emulated);
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
    fn report(&mut self, report: TaskReport) {
        if self.reported.insert(report.id.clone()) {
            self.reports.push(report);
        }
    }

    /// Reports a waiting task that ended unbuilt: skipped (never sent) or failed.
    fn unbuilt(&mut self, w: &Waiting<'_>, failure: &Failure) {
        let status = if failure.skipped {
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
                Failure {
                    message: "not submitted: the build stopped before its inputs were ready".into(),
                    skipped: true,
                    ..Failure::default()
                },
            ),
            // Dropped unsent (a newer save in `wanx watch`): nothing failed.
            Settled::Blocked(w, upstream) if self.unsent.contains(&upstream) => (
                w,
                Failure {
                    message: format!("not submitted: input `{upstream}` was not built"),
                    skipped: true,
                    ..Failure::default()
                },
            ),
            Settled::Blocked(w, upstream) => (
                w,
                Failure::from(format!("input `{upstream}` was not built")),
            ),
            Settled::Invalid(w, why) => (w, Failure::from(why)),
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
    let why_lines: Arc<Mutex<HashMap<String, String>>> = Arc::new(Mutex::new(
        why.iter()
            .map(|(id, changes)| (id.clone(), crate::planner::why::line(changes)))
            .collect(),
    ));
    session.why = why;
    // Reports come out in plan order: decided tasks, then waiting ones in graph order. Only a
    // chain reports out of that order (a blocked task as it is settled).
    let order: Option<HashMap<String, usize>> = (!waiting.is_empty()).then(|| {
        units
            .iter()
            .map(|u| &u.task.id)
            .chain(waiting.iter().map(|w| &w.task.id))
            .enumerate()
            .map(|(i, id)| (id.clone(), i))
            .collect()
    });
    // A waiting task exists only downstream of a generation, so this also covers the chain.
    let needs_provider = decisions.iter().any(|d| d.action == Action::Generate);
    let (client, emulator) = if needs_provider {
        let (client, emulator) = connect(project, args.selection.emulate, printer).await?;
        (Some(client), emulator)
    } else {
        (None, None)
    };
    let mut chain = if waiting.is_empty() {
        None
    } else {
        Some(Chain::new(project, provider.clone(), waiting, later)?)
    };
    let mut lock = lock;
    for id in &stale_lock_entries {
        lock.tasks.remove(id);
    }
    let lock = Arc::new(Mutex::new(lock));
    let store = Arc::new(Mutex::new(store));
    let mut decided: Vec<(Unit<'_>, Decision)> = units.into_iter().zip(decisions).collect();
    let jobs: Vec<Job> = decided
        .iter()
        .filter_map(|(u, d)| job(project, u, d))
        .collect();
    let total = Arc::new(AtomicUsize::new(
        jobs.len() + chain.as_ref().map_or(0, Chain::undecided),
    ));
    let mut models: Vec<&str> = jobs
        .iter()
        .filter(|j| matches!(j.kind, JobKind::Generate))
        .map(|j| j.compiled.model.as_str())
        .collect();
    if let Some(chain) = &chain {
        models.extend(chain.models());
    }
    let latency_history = latency_history(&store.lock().expect("never poisoned"), &models)?;
    let emulated = provider.is_emulated();
    let parallel = args.jobs.or(project.manifest.build.jobs).unwrap_or(16);
    let latencies: Vec<f64> = latency_history.values().flatten().copied().collect();
    let progress = Arc::new(Progress::new(
        printer,
        total.load(Ordering::SeqCst),
        models.len(),
        Pace::from_latencies(&latencies, parallel),
    ));
    let on_event = with_hook(
        progress_printer(
            printer,
            Arc::clone(&progress),
            restore_reasons(&decided),
            Arc::clone(&why_lines),
        ),
        hooks.on_event.clone(),
    );
    let on_event = match &uploader {
        Some(uploader) => with_upload(on_event, uploader.queue()),
        None => on_event,
    };
    let executor = Executor {
        root: project.manifest.root.clone(),
        store: Arc::clone(&store),
        blobs: Arc::new(blobs),
        lock: Arc::clone(&lock),
        lock_path: project.manifest.lock_path(),
        client,
        provider: provider.identity(),
        poll: if emulated {
            PollPolicy::EMULATED
        } else {
            poll_policy(project)
        },
        task_timeout: task_timeout(project),
        jobs: parallel,
        on_event: Arc::clone(&on_event),
        cancel: Arc::clone(cancel),
        latency_history,
        before_submit: hooks.before_submit.clone(),
        resumed: std::mem::take(&mut session.resumed),
        journaled: std::mem::take(&mut session.journaled),
    };
    // The executor writes the lock after each task; only pruning (or a first, empty lock) is left to
    // write here. A build with nothing to do touches nothing: a no-op must stay as cheap as ninja's.
    let prune = !stale_lock_entries.is_empty() || !project.manifest.lock_path().exists();
    let mut running = executor.start(&project.registry);
    // Generations first: they are the slow part, and restores (local copies) run while they wait.
    let (generations, restores): (Vec<Job>, Vec<Job>) = jobs
        .into_iter()
        .partition(|j| matches!(j.kind, JobKind::Generate));
    for job in generations.into_iter().chain(restores) {
        running.push(job).await;
    }
    let mut outcomes: HashMap<String, Outcome> = HashMap::new();
    while let Some(outcome) = running.next().await {
        if matches!(&outcome.result, Err(e) if e.skipped) {
            session.unsent.insert(outcome.id.clone());
        }
        if let Some(chain) = &mut chain {
            let images = outcome.result.as_ref().ok().map(|done| {
                let outputs = &done.entry.outputs;
                outputs.iter().map(|o| o.blake3.clone()).collect()
            });
            for settled in chain.finished(&outcome.id, images)? {
                match session.settle(project, settled, running.halted(), &mut decided) {
                    Next::Start(job) => {
                        if let Some((unit, d)) = decided.last() {
                            let store = store.lock().expect("never poisoned");
                            let (mut why, _) = crate::planner::why::reasons(
                                &store,
                                &provider,
                                std::slice::from_ref(unit),
                                std::slice::from_ref(d),
                            )?;
                            if let Some(changes) = why.remove(&unit.task.id) {
                                why_lines.lock().expect("never poisoned").insert(
                                    unit.task.id.clone(),
                                    crate::planner::why::line(&changes),
                                );
                                session.why.insert(unit.task.id.clone(), changes);
                            }
                        }
                        running.push(job).await;
                    }
                    Next::Fresh => {
                        let left = total.fetch_sub(1, Ordering::SeqCst) - 1;
                        progress.set_total(left);
                    }
                    Next::Ended(unbuilt) => on_event(Event::Finished(unbuilt)),
                }
            }
        }
        outcomes.insert(outcome.id.clone(), outcome);
    }
    for w in chain.map(Chain::into_remaining).unwrap_or_default() {
        session.unbuilt(
            &w,
            &Failure::from("its inputs were not produced".to_owned()),
        );
    }
    let fatal = running.finish();
    progress.clear();
    touch_restored(&store, &outcomes)?;
    if let Some(uploader) = uploader {
        uploader.finish();
    }
    if prune {
        lock.lock()
            .expect("never poisoned")
            .write_atomic(&project.manifest.lock_path())
            .map_err(|e| Error::io("could not write", project.manifest.lock_path(), e))?;
    }
    if session.fatal.is_none() {
        session.fatal = fatal;
    }
    for (unit, d) in &decided {
        record_outcome(session, unit, d, outcomes.get(&unit.task.id));
    }
    remember_requests(&store, &provider, &requests, &decided, &outcomes)?;
    if let Some(order) = order {
        session
            .reports
            .sort_by_key(|r| order.get(&r.id).copied().unwrap_or(usize::MAX));
    }
    Ok(emulator)
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

/// Adds a decided task's report and figures to the session: fresh when it had no job.
fn record_outcome(session: &mut Session, unit: &Unit<'_>, d: &Decision, outcome: Option<&Outcome>) {
    if session.reported.contains(&unit.task.id) {
        return;
    }
    let summary = &mut session.summary;
    let report = match outcome.map(|o| &o.result) {
        // Fresh: the cache kept nothing from being paid in this build.
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
            let status = if e.skipped {
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
            r
        }
    };
    let report = report.with_why(session.why.get(&unit.task.id));
    session.report(report);
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
    let timeout = project
        .manifest
        .provider
        .request_timeout
        .filter(|t| t.is_finite() && *t > 0.0)
        .map_or(Duration::from_secs(120), Duration::from_secs_f64);
    let client = Client::with_timeout(
        &base_url,
        key,
        project.manifest.provider.workspace.clone(),
        timeout,
    )
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
) -> Result<Resumption> {
    let mut resumption = Resumption::default();
    let state_dir = project.manifest.state_dir();
    if !state_dir.join(crate::store::DB_FILE).exists() {
        return Ok(resumption);
    }
    let mut store = Store::open(&state_dir)?;
    let entries = store.journal_open()?;
    if entries.is_empty() {
        return Ok(resumption);
    }
    let tasks: HashSet<&str> = entries.iter().map(|e| e.key.as_str()).collect();
    printer.status(
        "Resuming",
        &format!(
            "{} task(s) journaled by an earlier build{}",
            tasks.len(),
            if tasks.len() == entries.len() {
                String::new()
            } else {
                format!(" ({} requests)", entries.len())
            }
        ),
    );
    // Warn first, then forget: a crash in between repeats the warning instead of losing it (the
    // executor would close these entries at once but their warnings print only after every other
    // journaled task has been resumed).
    let (unsent, entries): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .partition(|e| e.remote_task_id.is_none());
    for entry in unsent {
        warn_billed_twice(printer, &entry.task_id);
        store.journal_finish(&[entry.id])?;
    }
    if entries.is_empty() {
        return Ok(resumption);
    }
    let (client, emulator) = match connect(project, args.selection.emulate, printer).await {
        Ok(connected) => connected,
        Err(e) => {
            printer.warn(
                "Skipping",
                &format!("cannot resume journaled tasks now: {e}"),
            );
            return Ok(resumption);
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
        resumed: HashMap::new(),
        journaled: HashSet::new(),
    };
    for resumed in executor.resume(entries, &project.registry).await {
        resumption.spent += resumed.spent;
        resumption.images_billed += resumed.images_billed;
        let booked = if resumed.spent > Money::ZERO {
            format!("billed {}, counted in this build's spend", resumed.spent)
        } else {
            "paid for, and counted, by an earlier build".to_owned()
        };
        match resumed.outcome {
            Resumed::Recovered { task_id, images } => {
                printer.status(
                    "Recovered",
                    &format!("{task_id}: {images} image(s) of a task an earlier build submitted ({booked})"),
                );
                resumption
                    .keys
                    .insert(resumed.key, (resumed.spent, resumed.images_billed));
            }
            Resumed::Partial {
                task_id,
                images,
                of,
            } => {
                printer.status(
                    "Kept",
                    &format!(
                        "{task_id}: {images} of {of} images of a task an earlier build submitted ({booked}); only the {} missing will be requested",
                        of - images
                    ),
                );
            }
            Resumed::Lost { task_id, reason } => {
                printer.warn("Lost", &format!("{task_id}: {reason}"));
            }
            Resumed::MaybeBilledTwice { task_id } => warn_billed_twice(printer, &task_id),
            Resumed::Pending { task_id, reason } => {
                resumption.journaled.insert(resumed.key);
                printer.warn("Pending", &format!("{task_id}: {reason}; still journaled"));
            }
        }
    }
    if let Some(emu) = emulator {
        emu.shutdown().await;
    }
    Ok(resumption)
}

/// What resuming the journal booked, for the build's figures: a task an earlier build submitted is a
/// generation, paid once, by whichever build first saw the service bill it.
#[derive(Default)]
struct Resumption {
    /// Keys whose images the resume cached, with what this build booked for each.
    keys: HashMap<String, (Money, u32)>,
    /// Keys still journaled: not to be submitted again by this build.
    journaled: HashSet<String>,
    spent: Money,
    images_billed: u32,
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

fn event_printer(printer: &Printer) -> Arc<dyn Fn(Event) + Send + Sync> {
    let printer = *printer;
    Arc::new(move |event| print_event(&printer, event, None))
}

/// Why each restore was needed, when it is about one file (`potion_2.png` is missing): the restore
/// line names that file rather than the task's first output.
fn restore_reasons(decided: &[(Unit<'_>, Decision)]) -> HashMap<String, (String, &'static str)> {
    use crate::planner::reconcile::Reason;
    decided
        .iter()
        .filter(|(_, d)| matches!(d.action, Action::Restore { .. }))
        .filter_map(|(u, d)| match &d.reason {
            Reason::OutputMissing(p) => Some((u.task.id.clone(), (p.clone(), "was missing"))),
            Reason::OutputModified(p) => Some((u.task.id.clone(), (p.clone(), "was modified"))),
            _ => None,
        })
        .collect()
}

/// Prints events above the progress bar (a terminal only) and keeps its figures: tasks done, in
/// flight, images, money spent.
fn progress_printer(
    printer: &Printer,
    progress: Arc<Progress>,
    restore_reasons: HashMap<String, (String, &'static str)>,
    why: Arc<Mutex<HashMap<String, String>>>,
) -> Arc<dyn Fn(Event) + Send + Sync> {
    let printer = *printer;
    Arc::new(move |event| {
        match &event {
            Event::Submitted { .. } => progress.submitted(),
            Event::Finished(outcome) => {
                let (generation, images, spent) = match &outcome.result {
                    Ok(done) if done.generated => (true, done.entry.images, done.spent),
                    Ok(_) => (false, 0, Money::ZERO),
                    Err(failure) => (!failure.skipped, failure.images_billed, failure.spent),
                };
                progress.finished(generation, images, spent);
            }
            Event::Retrying { .. } => {}
        }
        let (reason, because) = match &event {
            Event::Finished(o) => (
                restore_reasons
                    .get(&o.id)
                    .map(|(file, what)| (file.as_str(), *what)),
                why.lock().expect("never poisoned").get(&o.id).cloned(),
            ),
            _ => (None, None),
        };
        progress.suspend(|| print_event_why(&printer, event, reason, because.as_ref()));
    })
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

/// Reports one executor event as a status line.
fn print_event(printer: &Printer, event: Event, restore_reason: Option<(&str, &str)>) {
    print_event_why(printer, event, restore_reason, None);
}

/// [`print_event`], saying why a task was built (src/planner/why.rs).
fn print_event_why(
    printer: &Printer,
    event: Event,
    restore_reason: Option<(&str, &str)>,
    why: Option<&String>,
) {
    let because = why.map(|w| format!(", because {w}")).unwrap_or_default();
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
            Ok(done) if done.resumed => {
                let paid = if done.spent > Money::ZERO {
                    format!("{}, a task resumed from the journal", done.spent)
                } else {
                    "a task resumed from the journal, paid for by an earlier build".to_owned()
                };
                printer.status(
                    "Generated",
                    &format!(
                        "{} → {} ({paid})",
                        outcome.id,
                        describe_outputs(&done.entry.outputs)
                    ),
                );
            }
            Ok(done) if done.generated => {
                printer.status(
                    "Generated",
                    &format!(
                        "{} → {} ({}){because}",
                        outcome.id,
                        describe_outputs(&done.entry.outputs),
                        done.spent
                    ),
                );
            }
            Ok(done) => printer.status(
                "Restored",
                &match restore_reason {
                    // The why line names the file and what happened to it already.
                    Some((file, _)) if !because.is_empty() => {
                        format!("{} → {file} (free){because}", outcome.id)
                    }
                    Some((file, what)) => format!("{} → {file} ({what}) (free)", outcome.id),
                    None => format!(
                        "{} → {} (free){because}",
                        outcome.id,
                        describe_outputs(&done.entry.outputs)
                    ),
                },
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
fn describe_outputs(outputs: &[crate::project::lock::LockOutput]) -> String {
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
