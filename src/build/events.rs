//! Executor events as status lines: submitted, retrying, generated, restored (with why), dropped,
//! skipped, failed; above the progress bar on a terminal.

use crate::executor::{Event, FailureKind};
use crate::money::Money;
use crate::planner::Unit;
use crate::planner::reconcile::{Action, Decision};
use crate::term::printer::Printer;
use crate::term::progress::Progress;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub(super) fn event_printer(printer: &Printer) -> Arc<dyn Fn(Event) + Send + Sync> {
    let printer = *printer;
    Arc::new(move |event| print_event(&printer, event, None))
}

/// Why each restore was needed, when it is about one file (`potion_2.png` is missing): the restore
/// line names that file rather than the task's first output.
pub(super) fn restore_reasons(
    decided: &[(Unit<'_>, Decision)],
) -> HashMap<String, (String, &'static str)> {
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
pub(super) fn progress_printer(
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
                    Err(failure) => (!failure.unsent(), failure.images_billed, failure.spent),
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

/// Reports one executor event as a status line.
pub(super) fn print_event(printer: &Printer, event: Event, restore_reason: Option<(&str, &str)>) {
    print_event_why(printer, event, restore_reason, None);
}

/// [`print_event`], saying why a task was built (src/planner/why.rs).
pub(super) fn print_event_why(
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
            Err(error) if error.kind == FailureKind::Dropped => {
                printer.warn("Dropped", &format!("{}: {error}", outcome.id));
            }
            Err(error) if error.unsent() => {
                printer.warn("Skipped", &format!("{}: {error}", outcome.id));
            }
            Err(error) => printer.fail("Failed", &format!("{}: {error}", outcome.id)),
        },
    }
}

/// `a.png`, or `a_1.png (+3 more)`.
pub(super) fn describe_outputs(outputs: &[crate::project::lock::LockOutput]) -> String {
    match outputs {
        [] => "no files".to_owned(),
        [one] => one.path.clone(),
        [first, rest @ ..] => format!("{} (+{} more)", first.path, rest.len()),
    }
}
