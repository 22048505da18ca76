//! `build`: the pipeline's effects, after `planner` has decided. Resume journaled work, check
//! `--locked` and the budget, execute (a task that consumes images this build generates is decided,
//! and started, the moment the last of them exists), and report. The order guarantees the
//! invariants: nothing is sent or written before the whole project validated, and nothing is paid
//! for under `--locked` or over budget.
//!
//! Beside it, each used by this file and none using it: `build/execute.rs` (running the plan and
//! recording each outcome), `build/session.rs` (what the build has done so far, and the job each
//! decision needs), `build/hooks.rs` (what `wanx watch` attaches), `build/journal.rs` (resuming what
//! earlier builds journaled), `build/connect.rs` (the provider client and the executor's settings
//! from the project), `build/events.rs` (executor events as status lines) and `build/uptodate.rs`
//! (the record that lets a build with nothing to do stop early). Planning runs through
//! [`blocking`]: it reads SQLite and hashes files.

mod connect;
mod events;
mod execute;
mod hooks;
mod journal;
mod session;
pub mod uptodate;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cli::BuildArgs;
use crate::error::{Error, Result};
use crate::executor::dashscope::ProviderError;
use crate::money::Money;
use crate::planner::reconcile::Action;
pub use crate::planner::{Planned, Project, plan, waiting_reason};
use crate::project::lock::LockFile;
use crate::remote::RemoteUse;
pub use crate::report::print_plan;
use crate::report::{Cumulative, Summary};
use crate::store::blob_store::BlobStore;
use crate::store::{RunRecord, Store};
use crate::term::printer::Printer;
use crate::tree::output_name::now_unix;

use crate::par::blocking;
use execute::execute;
pub use hooks::Hooks;
use journal::{Resumption, resume_journal};
use session::Session;

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
    let built = build_with(project, args, printer, cancel, &Hooks::default()).await;
    // The process ends next: the lock it kept goes to the next one as the lock's mirror.
    crate::project::lock::LockFile::mirror_kept();
    built
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
    // Before planning hashes them: an input changed after this stat is a miss for the record
    // (which a dry or forced build never writes).
    let inputs = if args.dry_run || args.force {
        None
    } else {
        uptodate::local_inputs(project)
    };
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
    let (emulator, lock) = execute(
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
        prune_stale_outputs(project, &before, &lock, printer)?;
    }
    // The next build of this process (under `wanx watch`) starts from it.
    lock.keep(&project.manifest.lock_path());
    let interrupted = cancel.load(Ordering::SeqCst);
    let nothing_done = session.summary.did_nothing()
        && session.summary.fresh == selected
        && session.fatal.is_none()
        && !interrupted
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

/// Removes the outputs the lock as this build `left` it no longer claims (see
/// `tree::stale_outputs`).
fn prune_stale_outputs(
    project: &Project,
    before: &crate::tree::stale_outputs::Before,
    left: &LockFile,
    printer: &Printer,
) -> Result<()> {
    let blobs = BlobStore::new(project.manifest.state_dir().join("blobs"));
    crate::tree::stale_outputs::prune(&project.manifest.root, &blobs, before, left, printer)
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
            let lock_key = planned.lock.get(&u.task.id).map(|e| e.key.as_str());
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
