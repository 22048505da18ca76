//! `build` and `plan`: the pipeline end to end. Load and validate, compile and key every selected
//! task, take a snapshot (lock, stat cache, store, blobs), reconcile, then either print the plan or
//! execute it and report. The order guarantees the invariants: nothing is sent or written before the
//! whole project validated, and nothing is paid for under `--locked` or over budget.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::blob_store::{BlobStore, hash_file};
use crate::cache_key::{CacheKey, Provider};
use crate::cli::{BuildArgs, Selection};
use crate::compile::{Compiled, compile};
use crate::dashscope::Client;
use crate::diagnostic::{Diagnostic, did_you_mean};
use crate::emulator::{Emulator, EmulatorConfig};
use crate::error::{Error, Result};
use crate::executor::{Event, Executor, Job, JobKind, PollPolicy};
use crate::lock::LockFile;
use crate::manifest::{self, Manifest};
use crate::money::Money;
use crate::output_name::now_unix;
use crate::plan::{self, Loaded};
use crate::printer::Printer;
use crate::reconcile::{self, Action, Decision, Item, Recorded, Snapshot};
use crate::registry::Registry;
use crate::report::{Cumulative, Summary, TaskReport};
use crate::secret::ApiKey;
use crate::store::{RunRecord, StatEntry, Store, stat_of};
use crate::task::Task;

/// The project as loaded: manifest, registry and validated plans.
pub struct Project {
    pub manifest: Manifest,
    pub registry: Registry,
    pub loaded: Loaded,
}

impl Project {
    /// Finds and loads the project, printing plan notes. Any error stops here, before any effect.
    pub fn load(dir: Option<&Path>, printer: &Printer) -> Result<Project> {
        let cwd = match dir {
            Some(d) => d.to_path_buf(),
            None => std::env::current_dir().map_err(|e| Error::io("could not read", ".", e))?,
        };
        let path = Manifest::find(&cwd)?;
        let (manifest, registry) = Manifest::load(&path)?;
        let loaded = plan::load(&manifest, &registry)?;
        for note in &loaded.notes {
            printer.block(&note.render(printer.color), false);
        }
        Ok(Project {
            manifest,
            registry,
            loaded,
        })
    }

    /// The tasks named on the command line, in plan order (all when none are named).
    fn select(&self, selection: &Selection) -> Result<Vec<&Task>> {
        let ids: HashSet<&str> = self.loaded.tasks.iter().map(|t| t.id.as_str()).collect();
        let mut unknown = Vec::new();
        for wanted in &selection.tasks {
            if !ids.contains(wanted.as_str()) {
                let hint = did_you_mean(wanted, ids.iter().copied())
                    .map(|s| format!("did you mean `{s}`?"));
                unknown.push((wanted.clone(), hint));
            }
        }
        if let Some((first, hint)) = unknown.into_iter().next() {
            return Err(Error::Usage {
                message: format!("no task named `{first}` in this project"),
                hint: hint.or_else(|| Some("`wanx plan` lists every task".to_owned())),
            });
        }
        let wanted: HashSet<&str> = selection.tasks.iter().map(String::as_str).collect();
        Ok(self
            .loaded
            .tasks
            .iter()
            .filter(|t| wanted.is_empty() || wanted.contains(t.id.as_str()))
            .collect())
    }

    /// Where requests go: the emulator, `DASHSCOPE_HTTP_BASE_URL` (as the official SDK reads it),
    /// `[provider] base_url`, a seed plan's `api_endpoint`, or Beijing.
    fn base_url(&self) -> String {
        std::env::var("DASHSCOPE_HTTP_BASE_URL")
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| self.manifest.provider.base_url.clone())
            .or_else(|| self.loaded.seed.base_url.clone())
            .unwrap_or_else(|| manifest::DEFAULT_BASE_URL.to_owned())
    }

    fn provider(&self, emulate: bool) -> Provider {
        if emulate {
            Provider::Emulator
        } else {
            Provider::from_base_url(&self.base_url())
        }
    }

    /// The API key variable: `[provider] api_key_env`, unless left at its default and a seed plan names one.
    fn api_key_env(&self) -> String {
        let configured = &self.manifest.provider.api_key_env;
        match &self.loaded.seed.api_key_env {
            Some((var, _)) if configured == "DASHSCOPE_API_KEY" => var.clone(),
            _ => configured.clone(),
        }
    }
}

/// A selected task, compiled and keyed.
pub struct Unit<'a> {
    pub task: &'a Task,
    pub compiled: Compiled,
    pub key: CacheKey,
}

/// Everything decided, before any effect.
pub struct Planned<'a> {
    pub units: Vec<Unit<'a>>,
    pub decisions: Vec<Decision>,
    pub provider: Provider,
    pub lock: LockFile,
    pub store: Store,
    pub blobs: BlobStore,
    /// Lock entries of tasks no longer in any plan (pruned by a full build).
    pub stale_lock_entries: Vec<String>,
    /// Stats of outputs hashed while taking the snapshot, to remember.
    pub new_stats: Vec<(String, StatEntry)>,
}

/// Compiles, keys, snapshots and reconciles the selected tasks.
pub fn plan<'a>(project: &'a Project, selection: &Selection, force: bool) -> Result<Planned<'a>> {
    let provider = project.provider(selection.emulate);
    let tasks = project.select(selection)?;
    let root = &project.manifest.root;
    let mut units = Vec::with_capacity(tasks.len());
    let mut media_errors = Vec::new();
    for task in tasks {
        let compiled = compile(task, &project.registry);
        let mut digests = Vec::new();
        for slot in &compiled.media {
            match media_digest(root, &slot.source) {
                Ok(d) => digests.push(d),
                Err(message) => media_errors.push(
                    Diagnostic::error(&task.origin.file, message)
                        .at_line_col("", task.origin.line, task.origin.column)
                        .field(slot.pointer.trim_start_matches('/').replace('/', ".")),
                ),
            }
        }
        if digests.len() == compiled.media.len() {
            let key = CacheKey::new(&provider, &compiled, &digests);
            units.push(Unit {
                task,
                compiled,
                key,
            });
        }
    }
    if !media_errors.is_empty() {
        return Err(Error::Invalid {
            count: media_errors.len(),
            diagnostics: media_errors,
        });
    }
    let lock = LockFile::read(&project.manifest.lock_path())?;
    let store = Store::open(&project.manifest.state_dir())?;
    let blobs = BlobStore::new(project.manifest.state_dir().join("blobs"));
    let stat_cache = store.stat_cache()?;
    let now = now_unix();

    let mut snapshot = Snapshot::default();
    let mut new_stats = Vec::new();
    for unit in &units {
        let Some(entry) = lock.tasks.get(&unit.task.id) else {
            continue;
        };
        let recorded = Recorded {
            key: entry.key.clone(),
            generated_at: entry.generated_at,
            images: entry.outputs.iter().map(|o| o.blake3.clone()).collect(),
            outputs: entry.outputs.iter().map(|o| o.path.clone()).collect(),
        };
        if entry.key == unit.key.hex() {
            for output in &entry.outputs {
                let observed = observe(
                    root,
                    &output.path,
                    stat_cache.get(&output.path),
                    &mut new_stats,
                );
                snapshot.disk.insert(output.path.clone(), observed);
            }
        }
        snapshot.lock.insert(unit.task.id.clone(), recorded);
    }
    let items: Vec<Item<'_>> = units.iter().map(|u| item(u)).collect();
    let first = reconcile::reconcile(&items, &snapshot, force, now);
    // Only what is not fresh needs the store and the blob store.
    let unsettled: Vec<&Unit<'_>> = units
        .iter()
        .zip(&first)
        .filter(|(_, d)| d.action != Action::Fresh)
        .map(|(u, _)| u)
        .collect();
    let decisions = if unsettled.is_empty() || force {
        first
    } else {
        let keys: Vec<String> = unsettled.iter().map(|u| u.key.hex()).collect();
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        for (key, result) in store.results(&key_refs)? {
            let images = result.images.iter().map(|i| i.blake3.clone()).collect();
            snapshot.cached.insert(
                key.clone(),
                Recorded {
                    key,
                    generated_at: result.generated_at,
                    images,
                    outputs: vec![],
                },
            );
        }
        let mut wanted: HashSet<&String> =
            snapshot.cached.values().flat_map(|r| &r.images).collect();
        for unit in &unsettled {
            if let Some(rec) = snapshot.lock.get(&unit.task.id) {
                wanted.extend(&rec.images);
            }
        }
        let present: Vec<String> = wanted
            .into_iter()
            .filter(|h| blobs.contains(h))
            .cloned()
            .collect();
        snapshot.blobs.extend(present);
        reconcile::reconcile(&items, &snapshot, force, now)
    };
    let selected_all = selection.tasks.is_empty();
    let ids: HashSet<&str> = project.loaded.tasks.iter().map(|t| t.id.as_str()).collect();
    let stale_lock_entries = if selected_all {
        lock.tasks
            .keys()
            .filter(|id| !ids.contains(id.as_str()))
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    drop(items);
    Ok(Planned {
        units,
        decisions,
        provider,
        lock,
        store,
        blobs,
        stale_lock_entries,
        new_stats,
    })
}

fn item<'a>(unit: &'a Unit<'_>) -> Item<'a> {
    Item {
        id: &unit.task.id,
        key: unit.key,
        n: unit.compiled.n,
        price: unit.compiled.price,
        output: &unit.task.output,
    }
}

/// The blake3 of a file on disk, from the stat cache when size, mtime and inode still match.
fn observe(
    root: &Path,
    path: &str,
    cached: Option<&StatEntry>,
    new_stats: &mut Vec<(String, StatEntry)>,
) -> Option<String> {
    let full = root.join(path);
    let meta = std::fs::metadata(&full).ok()?;
    let (size, mtime_ns, inode) = stat_of(&meta);
    if let Some(c) = cached
        && c.size == size
        && c.mtime_ns == mtime_ns
        && c.inode == inode
    {
        return Some(c.blake3.clone());
    }
    let (hash, _) = hash_file(&full).ok()?;
    new_stats.push((
        path.to_owned(),
        StatEntry {
            size,
            mtime_ns,
            inode,
            blake3: hash.clone(),
        },
    ));
    Some(hash)
}

/// The content digest of a media input that is not a URL.
fn media_digest(
    root: &Path,
    source: &crate::task::InputRef,
) -> std::result::Result<String, String> {
    match source {
        crate::task::InputRef::File(path) => hash_file(&root.join(path))
            .map(|(h, _)| h)
            .map_err(|e| format!("cannot read input `{}`: {e}", path.display())),
        crate::task::InputRef::Task { id, .. } => Err(format!(
            "this task consumes the output of task `{id}`; edit chains between tasks are not built by this version of wanx yet"
        )),
        crate::task::InputRef::Url(_) => {
            unreachable!("URL inputs are placed in the body, not in media slots")
        }
    }
}

/// `wanx plan`: prints one line per task and the totals.
pub fn print_plan(project: &Project, planned: &Planned<'_>, printer: &Printer, json: bool) {
    let totals = reconcile::totals(
        planned
            .decisions
            .iter()
            .zip(&planned.units)
            .map(|(d, u)| (d, u.compiled.n)),
    );
    if json {
        let tasks: Vec<TaskReport> = planned
            .units
            .iter()
            .zip(&planned.decisions)
            .map(|(u, d)| task_report(u, d, "planned", None))
            .collect();
        let summary = Summary {
            generated: totals.generate,
            restored: totals.restore,
            fresh: totals.fresh,
            images_generated: totals.images_to_generate,
            spent: totals.cost,
            saved: totals.saved,
            currency: "CNY",
            emulated: planned.provider.is_emulated(),
            dry_run: true,
            tasks,
            ..Summary::default()
        };
        printer.data(&serde_json::to_string_pretty(&summary).expect("a summary always serializes"));
        return;
    }
    let width = planned
        .units
        .iter()
        .map(|u| u.task.id.len())
        .max()
        .unwrap_or(0);
    for (unit, d) in planned.units.iter().zip(&planned.decisions) {
        let price = match d.action {
            Action::Generate => format!(
                "{} ({} × {})",
                d.cost(),
                unit.compiled.n,
                unit.compiled.price
            ),
            _ => "free".to_owned(),
        };
        printer.data(&format!(
            "{:<8}  {:<width$}  {:<18}  {:<28}  {price}",
            d.action.name(),
            unit.task.id,
            unit.compiled.model,
            d.reason.to_string()
        ));
    }
    let label = if planned.provider.is_emulated() {
        " (emulated)"
    } else {
        ""
    };
    printer.data(&format!(
        "\n{} to generate ({} image{}, {}{label}), {} to restore, {} fresh; saving {}",
        totals.generate,
        totals.images_to_generate,
        if totals.images_to_generate == 1 {
            ""
        } else {
            "s"
        },
        totals.cost,
        totals.restore,
        totals.fresh,
        totals.saved
    ));
    if !planned.stale_lock_entries.is_empty() {
        printer.data(&format!(
            "{} lock entr{} for tasks no longer in any plan will be dropped",
            planned.stale_lock_entries.len(),
            if planned.stale_lock_entries.len() == 1 {
                "y"
            } else {
                "ies"
            }
        ));
    }
    let _ = project;
}

fn task_report(
    unit: &Unit<'_>,
    d: &Decision,
    status: &'static str,
    error: Option<String>,
) -> TaskReport {
    TaskReport {
        id: unit.task.id.clone(),
        action: d.action.name(),
        status,
        reason: d.reason.to_string(),
        model: unit.compiled.model.clone(),
        images: unit.compiled.n,
        cost: d.cost(),
        saved: d.saved(),
        outputs: d.outputs.clone(),
        error,
    }
}

/// `wanx build`.
pub async fn build(project: &Project, args: &BuildArgs, printer: &Printer) -> Result<Built> {
    build_with(project, args, printer, &Hooks::default()).await
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
    hooks: &Hooks,
) -> Result<Built> {
    let started_at = now_unix();
    let mut planned = plan(project, &args.selection, args.force)?;
    // Remember hashes computed while looking, so the next no-op hashes nothing.
    if !planned.new_stats.is_empty() {
        planned.store.put_stats(&planned.new_stats)?;
    }
    let emulated = planned.provider.is_emulated();
    let totals = reconcile::totals(
        planned
            .decisions
            .iter()
            .zip(&planned.units)
            .map(|(d, u)| (d, u.compiled.n)),
    );
    if args.dry_run {
        print_plan(project, &planned, printer, args.json);
        return Ok(Built {
            summary: Summary {
                dry_run: true,
                emulated,
                currency: "CNY",
                ..Summary::default()
            },
            fatal: None,
        });
    }
    if args.locked {
        let changed = planned
            .units
            .iter()
            .zip(&planned.decisions)
            .filter(|(u, d)| {
                let lock_key = planned.lock.tasks.get(&u.task.id).map(|e| e.key.as_str());
                d.action == Action::Generate || lock_key != Some(u.key.hex().as_str())
            })
            .count()
            + planned.stale_lock_entries.len();
        if changed > 0 {
            print_plan(project, &planned, printer, false);
            return Err(Error::NotLocked { stale: changed });
        }
    }
    let budget = args
        .max_spend
        .or(project.manifest.build.max_spend)
        .map(Money::from_yuan);
    if let Some(budget) = budget
        && totals.cost > budget
    {
        let mut costly: Vec<(&Unit<'_>, &Decision)> = planned
            .units
            .iter()
            .zip(&planned.decisions)
            .filter(|(_, d)| d.cost() > Money::ZERO)
            .collect();
        costly.sort_by_key(|(_, d)| std::cmp::Reverse(d.cost()));
        for (u, d) in costly.iter().take(5) {
            printer.warn(
                "costly",
                &format!(
                    "{} {} ({} images of {})",
                    u.task.id,
                    d.cost(),
                    u.compiled.n,
                    u.compiled.model
                ),
            );
        }
        return Err(Error::OverBudget {
            planned: totals.cost,
            budget,
        });
    }

    if let Some(on_plan) = &hooks.on_plan {
        on_plan(&planned);
    }
    let needs_provider = totals.generate > 0;
    let mut emulator = None;
    let client = if needs_provider {
        let (base_url, key) = if args.selection.emulate {
            let config = EmulatorConfig {
                registry: project.registry.clone(),
                ..EmulatorConfig::default()
            };
            let emu = Emulator::start(config, ([127, 0, 0, 1], 0).into())
                .await
                .map_err(|e| Error::Other(format!("could not start the emulator: {e}")))?;
            let url = emu.base_url();
            printer.verbose("emulator", &format!("listening at {url}"));
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
        Some(Arc::new(client))
    } else {
        None
    };

    if totals.generate > 0 {
        let label = if emulated { " (emulated)" } else { "" };
        printer.status(
            "Planning",
            &format!(
                "{} to generate ({} images, {}{label}), {} to restore, {} fresh",
                totals.generate,
                totals.images_to_generate,
                totals.cost,
                totals.restore,
                totals.fresh
            ),
        );
    }

    let root = project.manifest.root.clone();
    let Planned {
        units,
        decisions,
        lock,
        store,
        blobs,
        stale_lock_entries,
        ..
    } = planned;
    let mut lock = lock;
    for id in &stale_lock_entries {
        lock.tasks.remove(id);
    }
    let lock = Arc::new(Mutex::new(lock));
    let store = Arc::new(Mutex::new(store));
    let by_id: HashMap<String, (&Unit<'_>, &Decision)> = units
        .iter()
        .zip(&decisions)
        .map(|(u, d)| (u.task.id.clone(), (u, d)))
        .collect();
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
            Some(Job {
                id: u.task.id.clone(),
                key: u.key,
                compiled: u.compiled.clone(),
                output: u.task.output.clone(),
                kind,
            })
        })
        .collect();
    let printer_copy = *printer;
    let hook = hooks.on_event.clone();
    let on_event: Arc<dyn Fn(Event) + Send + Sync> = Arc::new(move |event| {
        if let Some(hook) = &hook {
            hook(&event);
        }
        print_event(&printer_copy, event);
    });
    let executor = Executor {
        root,
        store: Arc::clone(&store),
        blobs: Arc::new(blobs),
        lock: Arc::clone(&lock),
        lock_path: project.manifest.lock_path(),
        client,
        provider: planned_provider_identity(emulated, project),
        poll: if emulated {
            PollPolicy::EMULATED
        } else {
            poll_policy(project)
        },
        task_timeout: task_timeout(project),
        jobs: args.jobs.or(project.manifest.build.jobs).unwrap_or(16),
        on_event,
        before_submit: hooks.before_submit.clone(),
    };
    let execution = executor.run(jobs, &project.registry).await;
    if let Some(emu) = emulator {
        emu.shutdown().await;
    }
    // Stale entries are gone and fresh ones unchanged: write once more so a build with nothing to do
    // still prunes, byte-identical otherwise (write_atomic skips identical content).
    lock.lock()
        .expect("never poisoned")
        .write_atomic(&project.manifest.lock_path())
        .map_err(|e| Error::io("could not write", project.manifest.lock_path(), e))?;

    let outcomes: HashMap<&str, &crate::executor::Outcome> = execution
        .outcomes
        .iter()
        .map(|o| (o.id.as_str(), o))
        .collect();
    let mut summary = Summary {
        currency: "CNY",
        emulated,
        ..Summary::default()
    };
    for unit in &units {
        let (_, d) = by_id[&unit.task.id];
        let report = match outcomes.get(unit.task.id.as_str()) {
            None => {
                summary.fresh += 1;
                summary.saved += d.saved();
                task_report(unit, d, "fresh", None)
            }
            Some(o) => match &o.result {
                Ok(done) if done.generated => {
                    summary.generated += 1;
                    summary.images_generated += done.entry.images;
                    summary.spent += done.spent;
                    let mut r = task_report(unit, d, "generated", None);
                    r.cost = done.spent;
                    r.outputs = done.entry.outputs.iter().map(|o| o.path.clone()).collect();
                    r
                }
                Ok(done) => {
                    summary.restored += 1;
                    summary.saved += d.saved();
                    let mut r = task_report(unit, d, "restored", None);
                    r.outputs = done.entry.outputs.iter().map(|o| o.path.clone()).collect();
                    r
                }
                Err(e) => {
                    summary.failed += 1;
                    let mut r = task_report(unit, d, "failed", Some(e.clone()));
                    r.cost = Money::ZERO;
                    r
                }
            },
        };
        summary.tasks.push(report);
    }
    let mut store = store.lock().expect("never poisoned");
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
    let fatal = execution.fatal.map(|f| match f {
        crate::dashscope::ProviderError::Fatal {
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
    Ok(Built { summary, fatal })
}

/// A finished build: its summary, and the stop-class provider error that cut it short, if any.
pub struct Built {
    pub summary: Summary,
    pub fatal: Option<Error>,
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
            Err(error) if error == crate::executor::NOT_SUBMITTED => {
                printer.warn("Dropped", &format!("{}: {error}", outcome.id));
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

fn planned_provider_identity(emulated: bool, project: &Project) -> String {
    project.provider(emulated).identity()
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
