//! `run`: parses the command line, builds the runtime, dispatches one subcommand, prints an error
//! once (with its hint) and returns the exit code.

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;

use crate::build::{self, Project};
use std::collections::HashSet;

use crate::cli::{Cli, Command, EmulatorArgs, ExplainArgs};
use crate::compile::{LOWERING, compile};
use crate::emulator::{Emulator, EmulatorConfig};
use crate::error::{Error, Result, exit};
use crate::planner::MediaSource;
use crate::registry::Registry;
use crate::term::diagnostic::did_you_mean;
use crate::term::printer::Printer;

/// Threads for blocking work (see `run`).
const BLOCKING_THREADS: usize = 16;

pub fn run(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    install_tls_provider();
    let args: Vec<OsString> = args.into_iter().collect();
    // `COMPLETE=bash wanx …`: a shell asking for completions (task ids from the project).
    if crate::commands::completions::dynamic(&args) {
        return ExitCode::SUCCESS;
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::INVALID
            } else {
                exit::SUCCESS
            });
        }
    };
    let printer = Printer::with_color(cli.quiet, cli.verbose, cli.color);
    // A build with nothing to do, seen from the up-to-date record without loading the project.
    if let Command::Build(args) = &cli.command
        && let Some(summary) = build::uptodate::unchanged(cli.directory.as_deref(), args, &printer)
    {
        build::finish(&printer, &summary, false);
        return ExitCode::SUCCESS;
    }
    // Blocking work is SQLite (one connection, behind a mutex), file writes and PNG renders: a few
    // threads keep two cores busy, while tokio's default of 512 lets hundreds of generations each
    // park a thread (and a malloc arena) on the store's mutex.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            printer.fail("error", &format!("could not start the async runtime: {e}"));
            return ExitCode::from(exit::TASK_FAILED);
        }
    };
    match runtime.block_on(dispatch(&cli, &printer)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A build that ran printed its summary (with each task's error) already.
            // So did a verify that found problems (its report holds the error).
            let summarized = matches!(e, Error::Unverified { .. })
                || e.code() == exit::TASK_FAILED
                    && matches!(cli.command, Command::Build(_) | Command::Watch(_));
            if cli.command.wants_json() && !summarized {
                printer.data(&crate::term::json_error::to_json(&e).to_string());
            }
            printer.report_error(&e);
            ExitCode::from(e.code())
        }
    }
}

async fn dispatch(cli: &Cli, printer: &Printer) -> Result<()> {
    let dir = cli.directory.as_deref();
    match &cli.command {
        Command::Build(args) => {
            let project = Project::load(dir, printer)?;
            let cancel = Arc::new(AtomicBool::new(false));
            let interrupts = tokio::spawn(watch_interrupts(Arc::clone(&cancel), *printer));
            let built = build::build(&project, args, printer, cancel).await;
            interrupts.abort();
            // The process exits next: freeing every task one by one would only cost time (~5 % of
            // a large no-op). The project holds no file, lock or connection to release.
            std::mem::forget(project);
            let built = built?;
            if args.dry_run {
                return Ok(());
            }
            build::finish(printer, &built.summary, args.json);
            if let Some(fatal) = built.fatal {
                return Err(fatal);
            }
            if built.interrupted {
                return Err(Error::Interrupted);
            }
            if built.summary.failed > 0 {
                return Err(Error::TasksFailed {
                    failed: built.summary.failed,
                });
            }
            Ok(())
        }
        Command::Plan(args) => {
            let project = Project::load(dir, printer)?;
            let mut selection = args.selection.clone();
            selection.remote.usage = crate::remote::RemoteUse::Lookup(*printer);
            let mut planned = build::plan(&project, &selection, &HashSet::new())?;
            if let Some(budget) = args.max_spend {
                planned.budget = Some(crate::money::Money::from_yuan(budget));
            }
            if !args.json {
                project.print_notes(printer, None);
            }
            // With `--json`, a refused plan prints only the error object (one object on stdout).
            let refused = build::check_budget(&planned, printer);
            if !(args.json && refused.is_err()) {
                build::print_plan(&planned, printer, args.json);
            }
            let now = crate::tree::output_name::now_unix();
            let foreign = crate::planner::writes::foreign(&project.manifest.root, &planned, now);
            crate::tree::output_guard::warn(&foreign, printer);
            refused
        }
        Command::Explain(args) => explain(dir, args, printer),
        Command::Status(selection) => {
            let project = Project::load(dir, printer)?;
            crate::commands::status::status(&project, selection, printer)
        }
        Command::Graph(args) => {
            let project = Project::load(dir, printer)?;
            let text = crate::commands::graph::graph(&project, args.emulate, args.format)?;
            printer.data(text.trim_end());
            Ok(())
        }
        Command::Watch(args) => crate::watch::watch(dir, args, printer).await,
        Command::Emulator(args) => emulator(args, printer).await,
        Command::Verify(args) => {
            let report = crate::commands::verify::verify_with(
                dir,
                args.repair,
                args.force,
                !args.no_wait,
                printer,
            )?;
            if args.json {
                printer.data(&report.to_json(args.repair).to_string());
            }
            report.error(args.repair).map_or(Ok(()), Err)
        }
        Command::Clean(args) => {
            crate::tree::stale_outputs::clean(dir, args.dry_run, !args.no_wait, printer)
        }
        Command::Init(args) => {
            let here = match dir {
                Some(d) => d.to_path_buf(),
                None => std::env::current_dir().map_err(|e| Error::io("could not read", ".", e))?,
            };
            crate::commands::init::init(&here, args.from.as_deref(), printer)
        }
        Command::Gc(args) => {
            crate::commands::gc::gc(dir, args.dry_run, args.max_size.as_deref(), printer)
        }
        Command::Stats(args) => crate::commands::stats::stats(dir, args.json, printer),
        Command::Completions(args) => crate::commands::completions::completions(args.shell),
        Command::Man => crate::commands::completions::man(),
        Command::Gallery(args) => crate::gallery::files::gallery(dir, args, printer),
    }
}

fn explain(dir: Option<&std::path::Path>, args: &ExplainArgs, printer: &Printer) -> Result<()> {
    let Some(id) = &args.task else {
        print_lowering(printer);
        return Ok(());
    };
    let project = Project::load(dir, printer)?;
    let Some(task) = project.loaded.tasks.iter().find(|t| &t.id == id) else {
        let hint = did_you_mean(id, project.loaded.tasks.iter().map(|t| t.id.as_str()))
            .map(|s| format!("did you mean `{s}`?"));
        return Err(Error::Usage {
            message: format!("no task named `{id}` in this project"),
            hint,
        });
    };
    project.print_notes(printer, Some(&HashSet::from([task.origin.file.as_path()])));
    let compiled = compile(task, &project.registry);
    let selection = crate::cli::Selection {
        tasks: vec![id.clone()],
        emulate: args.emulate,
        remote: crate::cli::RemoteArgs::default(),
    };
    let planned = build::plan(&project, &selection, &HashSet::new())?;
    if args.json {
        printer.data(&explain_json(task, &compiled, &planned).to_string());
        return Ok(());
    }
    printer.data(&format!(
        "task      {id}  ({}:{}:{})",
        task.origin.file.display(),
        task.origin.line,
        task.origin.column
    ));
    printer.data(&format!("provider  {}", planned.provider.identity()));
    printer.data(&format!("request   POST {}", compiled.endpoint));
    for (name, value) in &compiled.headers {
        printer.data(&format!("          {name}: {value}"));
    }
    let unit = planned
        .units
        .iter()
        .zip(&planned.decisions)
        .find(|(u, _)| &u.task.id == id);
    let inline = project.registry.takes_inline_media(&task.model);
    let how = if inline {
        "sent inline as a data URI"
    } else {
        "uploaded to DashScope's temporary storage (oss://)"
    };
    let body = shown_body(&compiled, inline);
    printer.data(&serde_json::to_string_pretty(&body).expect("JSON values serialize"));
    if let crate::plan::task::Prompt::Text(text) = &task.prompt
        && crate::plan::edit_prompt::is_default(text)
    {
        printer.data("prompt    the default instruction for this edit (the task has no `prompt`; write one to replace it)");
    }
    for (i, slot) in compiled.media.iter().enumerate() {
        let source = match unit.and_then(|(u, _)| u.media.get(i)) {
            Some(MediaSource::Blob(hash)) => format!("{} = blake3 {hash}", slot.source),
            _ => slot.source.to_string(),
        };
        printer.data(&format!("input     {} ← {source} ({how})", slot.pointer));
    }
    printer.data(&format!(
        "price     {} × {} = {}",
        compiled.n,
        compiled.price,
        compiled.cost()
    ));
    print_decision(&planned, id, printer)
}

/// `wanx explain` without a task: the lowering table.
fn print_lowering(printer: &Printer) {
    printer.data("How wanx lowers the seed reference's vocabulary to the real DashScope API:\n");
    for rule in LOWERING {
        printer.data(&format!(
            "  {}\n      models: {}\n      wire:   {}",
            rule.seed, rule.models, rule.wire
        ));
    }
}

/// The request body as it will be sent: a media slot is filled only then, so show what will be
/// there (inline bytes or an upload of the named source), not `null`.
fn shown_body(compiled: &crate::compile::Compiled, inline: bool) -> serde_json::Value {
    let mut body = compiled.body.clone();
    for slot in &compiled.media {
        if let Some(value) = body.pointer_mut(&slot.pointer)
            && value.is_null()
        {
            *value = serde_json::Value::String(if inline {
                format!("data:image/…;base64,… (the bytes of {})", slot.source)
            } else {
                format!("oss://… (an upload of {})", slot.source)
            });
        }
    }
    body
}

/// `wanx explain TASK`'s last lines: the key, the action and why, and the pool; or, for a task that
/// waits for images this build generates, that its key is not yet known.
fn print_decision(planned: &build::Planned<'_>, id: &str, printer: &Printer) -> Result<()> {
    let unit = planned
        .units
        .iter()
        .zip(&planned.decisions)
        .find(|(u, _)| u.task.id == id);
    if let Some((unit, d)) = unit {
        printer.data(&format!("key       {}", unit.key));
        printer.data(&format!("action    {} ({})", d.action.name(), d.reason));
        for change in planned.why.get(id).into_iter().flatten() {
            printer.data(&format!("why       {}", change.text));
        }
        print_pool(planned, unit, printer)?;
    } else {
        let waiting = planned
            .waiting
            .iter()
            .find(|w| w.task.id == id)
            .map(build::waiting_reason)
            .unwrap_or_default();
        printer.data(&format!("key       not yet known: {waiting}"));
        printer.data("action    generate, unless the new inputs are byte-identical to the old");
    }
    Ok(())
}

/// `wanx explain TASK --json`: the request, its inputs, price, key, action and reasons.
fn explain_json(
    task: &crate::plan::task::Task,
    compiled: &crate::compile::Compiled,
    planned: &build::Planned<'_>,
) -> serde_json::Value {
    let id = &task.id;
    let decided = planned
        .units
        .iter()
        .zip(&planned.decisions)
        .find(|(u, _)| &u.task.id == id);
    let waiting = planned.waiting.iter().find(|w| &w.task.id == id);
    let inputs: Vec<serde_json::Value> = compiled
        .media
        .iter()
        .enumerate()
        .map(|(i, slot)| {
            let digest = match decided.and_then(|(u, _)| u.media.get(i)) {
                Some(MediaSource::Blob(hash)) => Some(hash.clone()),
                _ => None,
            };
            serde_json::json!({"pointer": slot.pointer, "source": slot.source.to_string(), "blake3": digest})
        })
        .collect();
    let changes = planned.why.get(id).cloned().unwrap_or_default();
    let (action, reason) = match (decided, waiting) {
        (Some((_, d)), _) if !changes.is_empty() => {
            (d.action.name(), crate::planner::why::line(&changes))
        }
        (Some((_, d)), _) => (d.action.name(), d.reason.to_string()),
        (None, Some(w)) => ("generate", build::waiting_reason(w)),
        (None, None) => ("generate", String::new()),
    };
    serde_json::json!({
        "task": id,
        "file": task.origin.file.display().to_string(),
        "line": task.origin.line,
        "provider": planned.provider.identity(),
        "endpoint": compiled.endpoint,
        "body": compiled.body,
        "inputs": inputs,
        "images": compiled.n,
        "price": compiled.price.as_yuan(),
        "cost": compiled.cost().as_yuan(),
        "key": decided.map(|(u, _)| u.key.hex()),
        "action": action,
        "reason": reason,
        "changes": changes,
    })
}

/// The images paid for under the task's key (its pool): index, seed, when paid for, and which are
/// its outputs.
fn print_pool(
    planned: &build::Planned<'_>,
    unit: &crate::planner::Unit<'_>,
    printer: &Printer,
) -> Result<()> {
    let Some(pool) = planned.store.pool(&unit.key.hex())? else {
        printer.data("pool      empty: nothing paid for under this key yet");
        return Ok(());
    };
    let generated_at = planned
        .store
        .result(&unit.key.hex())?
        .map(|r| r.generated_at);
    let outputs: Vec<(&str, &str)> = planned
        .lock
        .tasks()
        .get(&unit.task.id)
        .filter(|e| *e.key == *unit.key.to_hex())
        .map(|e| {
            e.outputs
                .iter()
                .map(|o| (o.blake3.as_str(), o.path.as_str()))
                .collect()
        })
        .unwrap_or_default();
    printer.data(&format!(
        "pool      {} image(s) paid for under this key ({} used by `n = {}`)",
        pool.images.len(),
        unit.compiled.n.min(pool.images.len() as u32),
        unit.compiled.n
    ));
    for (i, image) in pool.images.iter().enumerate() {
        let seed = image.seed.map_or_else(
            || "seed unknown (none was set; the service chose it)".to_owned(),
            |s| format!("seed {s}"),
        );
        let paid = image.paid_at.or(generated_at).map_or_else(
            || "paid at an unknown time".to_owned(),
            |t| format!("paid {}", crate::tree::output_name::format_timestamp(t)),
        );
        let output = outputs
            .iter()
            .find(|(hash, _)| *hash == image.blake3)
            .map_or_else(|| "cached".to_owned(), |(_, path)| format!("output {path}"));
        printer.data(&format!("          #{}  {seed}  {paid}  {output}", i + 1));
    }
    Ok(())
}

async fn emulator(args: &EmulatorArgs, printer: &Printer) -> Result<()> {
    let mut config = match &args.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| Error::io("could not read", path, e))?;
            EmulatorConfig::from_toml(&text).map_err(|message| Error::Usage {
                message: format!(
                    "`{}` is not a valid emulator configuration: {message}",
                    path.display()
                ),
                hint: Some(
                    "the format is in the README's \"The emulator\" section (`latency_ms`, `quotas`, `[[faults]]`, …)"
                        .to_owned(),
                ),
            })?
        }
        None => EmulatorConfig {
            registry: Registry::builtin(),
            ..EmulatorConfig::default()
        },
    };
    if let Some(ms) = args.latency_ms {
        config.latency = std::time::Duration::from_millis(ms);
    }
    if !args.keys.is_empty() {
        config.valid_keys = Some(args.keys.clone());
    }
    let emu = Emulator::start(config, (args.host, args.port).into())
        .await
        .map_err(|e| {
            Error::Other(format!(
                "could not listen on {}:{}: {e}",
                args.host, args.port
            ))
        })?;
    // The URL goes to stdout so scripts can read it; the rest is for people.
    printer.data(&emu.base_url());
    printer.status(
        "Emulating",
        &format!(
            "DashScope at {} (ledger: GET /emulator/ledger); Ctrl-C stops",
            emu.base_url()
        ),
    );
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| Error::Other(format!("could not wait for Ctrl-C: {e}")))?;
    emu.shutdown().await;
    Ok(())
}

/// The first Ctrl-C stops new submissions and lets tasks in flight finish (they are paid for); the
/// second exits at once, leaving them journaled for the next build to resume. Outputs are written
/// atomically, so neither leaves a half-written file.
async fn watch_interrupts(cancel: Arc<AtomicBool>, printer: Printer) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    cancel.store(true, Ordering::SeqCst);
    printer.warn(
        "Interrupted",
        "submitting nothing more; waiting for the tasks in flight (they are paid for). Ctrl-C again leaves them journaled for the next build",
    );
    if tokio::signal::ctrl_c().await.is_ok() {
        printer.warn(
            "Interrupted",
            "leaving the tasks in flight journaled; `wanx build` resumes them",
        );
        std::process::exit(i32::from(exit::INTERRUPTED));
    }
}

/// TLS is rustls with ring as its crypto (Cargo.toml says why), which reqwest needs installed as the
/// process's provider before any client is built. Installing twice keeps the first: not an error.
fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
