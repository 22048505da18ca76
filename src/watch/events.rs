//! `Reporter`: what `wanx watch` tells its user. For people, one block per change on stderr (what
//! changed, what will be generated and its price, results as they land, the build's and the session's
//! totals). With `--json`, also one JSON object per line on stdout, for editors and scripts.
//!
//! Every line has `event` (its type) and `t_ms` (milliseconds since the watch started). Money is in
//! CNY as a number. The types:
//!
//! - `watching`: the watch is armed. `root`, `poll` (bool), `dirs` (the folders watched).
//! - `change`: a change was seen. `seq` (1, 2, … per change; 0 is the initial build), `paths`
//!   (project-relative), `during_build` (it arrived while a build ran: tasks it made obsolete and not
//!   yet submitted are dropped, the rest finish), `changed_at_ms` (when the first file event of it
//!   happened).
//! - `invalid`: the project does not load; the watch goes on with the last good plan. `seq`,
//!   `message`, `diagnostics` (each `file`, `line`, `column`, `message`, `hint`).
//! - `plan`: what the build of `seq` will do. `generate` (each `id`, `model`, `images`, `cost`),
//!   `restore` (ids), `fresh` (a count), `cost`, `saved`.
//! - `submitted`: a generation was accepted by the service (it is paid for). `seq`, `id`, `remote`.
//! - `result`: a task finished. `seq`, `id`, `status` (`generated` | `restored` | `failed` |
//!   `dropped`), `outputs`, `cost`, and `error` for `failed` and `dropped`.
//! - `built`: the build of `seq` ended. `generated`, `restored`, `fresh`, `failed`, `dropped`,
//!   `submissions`, `spent`, `saved`, the timings `changed_at_ms`, `first_request_at_ms` (the first
//!   submission's acceptance, `null` when nothing was sent) and `done_at_ms`, the latencies from the
//!   change `latency_ms` {`plan`, `first_request`, `done`}, and `session` {`builds`, `spent`,
//!   `saved`}.
//! - `error`: the build of `seq` stopped (over budget, a missing API key, the service refused it).
//!   `seq`, `message`, `hint`.
//! - `serving`: `--serve` only, before `watching`: the live gallery is at `url`.
//! - `stopped`: Ctrl-C (or SIGTERM) ended the watch. `interrupted` (always `true`: a signal stopped
//!   it), `cut_short` (a second Ctrl-C cut a build short, leaving its submissions journaled),
//!   `session`.
//!
//! `spent` and `saved` are the build's (see the README's "Spent and saved"): money the service billed
//! that the build was the first to see, and the price of the images it restored from the cache
//! instead of paying again; tasks that stayed fresh are not counted again on every save.

use std::fmt::Write as _;
use std::time::Instant;

use serde::Serialize;
use serde_json::{Value, json};

use crate::build::Planned;
use crate::error::Error;
use crate::executor::{Event, FailureKind};
use crate::money::Money;
use crate::planner::reconcile::Action;
use crate::report::Summary;
use crate::term::diagnostic::Diagnostic;
use crate::term::printer::Printer;
use crate::watch::sink::Sink;

/// What the watch did since it started.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Session {
    pub builds: u64,
    #[serde(serialize_with = "yuan")]
    pub spent: Money,
    #[serde(serialize_with = "yuan")]
    pub saved: Money,
}

/// One build's timings, as instants.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    pub changed: Instant,
    pub planned: Option<Instant>,
    pub first_request: Option<Instant>,
    pub done: Instant,
}

/// Emits events to people (stderr) and, with `--json`, to programs (stdout).
#[derive(Clone, Debug)]
pub struct Reporter {
    pub printer: Printer,
    pub json: bool,
    pub start: Instant,
    /// Also receives every event, as its JSON (the live gallery of `wanx watch --serve`).
    pub sink: Option<Sink>,
}

impl Reporter {
    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_millis() as u64
    }

    fn emit(&self, event: &str, mut fields: Value) {
        if !self.json && self.sink.is_none() {
            return;
        }
        fields["event"] = Value::from(event);
        fields["t_ms"] = Value::from(self.ms(Instant::now()));
        if let Some(sink) = &self.sink {
            (sink.0)(&fields);
        }
        if self.json {
            self.printer.data(&fields.to_string());
        }
    }

    /// `wanx watch --serve`: the live gallery is at `url`.
    pub fn serving(&self, url: &str) {
        self.emit("serving", json!({ "url": url }));
        self.printer
            .status("Serving", &format!("the live gallery at {url}"));
    }

    pub fn watching(
        &self,
        root: &std::path::Path,
        poll: bool,
        dirs: &[String],
        counts: (usize, usize),
    ) {
        self.emit(
            "watching",
            json!({ "root": root.display().to_string(), "poll": poll, "dirs": dirs }),
        );
        self.idle(counts, poll);
    }

    /// The "waiting" line after each build.
    pub fn idle(&self, (plans, inputs): (usize, usize), poll: bool) {
        self.printer.status(
            "Watching",
            &format!(
                "wanx.toml, {plans} plan file{} and {inputs} input{}{} (Ctrl-C to stop)",
                plural(plans),
                plural(inputs),
                if poll { ", polling" } else { "" }
            ),
        );
    }

    pub fn change(&self, seq: u64, paths: &[String], during_build: bool, changed: Instant) {
        self.emit(
            "change",
            json!({ "seq": seq, "paths": paths, "during_build": during_build,
                    "changed_at_ms": self.ms(changed) }),
        );
        if paths.is_empty() {
            // The initial build: nothing changed, and the build's own lines say what it does.
            return;
        }
        let what = paths.join(", ");
        if during_build {
            self.printer.warn(
                "Changed",
                &format!("{what} (during the build: what it made obsolete is dropped unless already submitted)"),
            );
        } else {
            self.printer.status("Changed", &what);
        }
    }

    pub fn invalid(&self, seq: u64, error: &Error) {
        let diagnostics: Vec<Value> = match error {
            Error::Invalid { diagnostics, .. } => diagnostics
                .iter()
                .filter(|d| d.severity == crate::term::diagnostic::Severity::Error)
                .map(diagnostic_json)
                .collect(),
            _ => Vec::new(),
        };
        self.emit(
            "invalid",
            json!({ "seq": seq, "message": error.to_string(), "diagnostics": diagnostics }),
        );
        self.printer.report_error(error);
        self.printer
            .warn("Keeping", "the last good plan; the next good save builds");
    }

    pub fn error(&self, seq: u64, error: &Error) {
        self.emit(
            "error",
            json!({ "seq": seq, "message": error.to_string(), "hint": error.hint() }),
        );
        self.printer.report_error(error);
    }

    /// The plan of a build; `beside` counts the tasks it does not plan because they are as the last
    /// build left them (reported as fresh).
    pub fn plan(&self, seq: u64, planned: &Planned<'_>, beside: usize) {
        let mut generate = Vec::new();
        let mut restore = Vec::new();
        let mut restore_remote = Vec::new();
        let (mut fresh, mut cost, mut saved) = (beside, Money::ZERO, Money::ZERO);
        for (unit, d) in planned.units.iter().zip(&planned.decisions) {
            match d.action {
                Action::Generate => {
                    cost += d.cost();
                    self.printer.status(
                        "To generate",
                        &format!(
                            "{} ({}, {} × {} = {})",
                            unit.task.id,
                            unit.compiled.model,
                            unit.compiled.n - d.held,
                            unit.compiled.price,
                            d.cost()
                        ),
                    );
                    let why = planned.why.get(&unit.task.id).cloned().unwrap_or_default();
                    generate.push(json!({ "id": unit.task.id, "model": unit.compiled.model,
                        "images": unit.compiled.n - d.held, "cost": yuan_value(d.cost()),
                        "reason": crate::planner::why::line(&why), "changes": why }));
                }
                Action::Restore { .. } => {
                    saved += d.saved();
                    restore.push(unit.task.id.clone());
                    if d.remote {
                        restore_remote.push(unit.task.id.clone());
                    }
                }
                Action::Fresh => fresh += 1,
            }
        }
        // Tasks consuming images this build generates: priced as generations until decided.
        for w in &planned.waiting {
            let upto = w.compiled.cost();
            cost += upto;
            self.printer.status(
                "To generate",
                &format!(
                    "{} ({}, {}, up to {upto})",
                    w.task.id,
                    w.compiled.model,
                    crate::planner::waiting_reason(w)
                ),
            );
            generate.push(json!({ "id": w.task.id, "model": w.compiled.model,
                "images": w.compiled.n, "cost": yuan_value(upto), "waits_for": w.upstream }));
        }
        self.emit(
            "plan",
            json!({ "seq": seq, "generate": generate, "restore": restore,
                    "restore_remote": restore_remote, "fresh": fresh,
                    "planned": planned.units.len() + planned.waiting.len(),
                    "cost": yuan_value(cost), "saved": yuan_value(saved) }),
        );
    }

    pub fn executor_event(&self, seq: u64, event: &Event) {
        match event {
            Event::Submitted { id, remote } => {
                self.emit(
                    "submitted",
                    json!({ "seq": seq, "id": id, "remote": remote }),
                );
            }
            Event::Retrying { .. } => {}
            Event::Finished(outcome) => {
                let fields = match &outcome.result {
                    Ok(done) => json!({
                        "status": if done.generated { "generated" } else { "restored" },
                        "outputs": done.entry.outputs.iter().map(|o| o.path.clone()).collect::<Vec<_>>(),
                        "cost": yuan_value(done.spent),
                    }),
                    Err(e) => json!({
                        "status": if e.kind == FailureKind::Dropped { "dropped" } else if e.unsent() { "skipped" } else { "failed" },
                        "outputs": [], "cost": yuan_value(e.spent), "error": e.message,
                    }),
                };
                let mut fields = fields;
                fields["seq"] = Value::from(seq);
                fields["id"] = Value::from(outcome.id.clone());
                self.emit("result", fields);
            }
        }
    }

    pub fn built(
        &self,
        seq: u64,
        summary: &Summary,
        submissions: u64,
        timings: &Timings,
        session: &Session,
    ) {
        let dropped = dropped(summary);
        let failed = summary.failed;
        let saved = summary.saved;
        let since = |at: Option<Instant>| {
            at.map(|at| at.saturating_duration_since(timings.changed).as_millis() as u64)
        };
        self.emit(
            "built",
            json!({
                "seq": seq,
                "generated": summary.generated, "restored": summary.restored,
                "fresh": summary.fresh, "failed": failed, "dropped": dropped,
                "submissions": submissions,
                "spent": yuan_value(summary.spent), "saved": yuan_value(saved),
                "changed_at_ms": self.ms(timings.changed),
                "first_request_at_ms": timings.first_request.map(|at| self.ms(at)),
                "done_at_ms": self.ms(timings.done),
                "latency_ms": { "plan": since(timings.planned),
                                "first_request": since(timings.first_request),
                                "done": since(Some(timings.done)) },
                "session": session,
            }),
        );
        let mut text = format!(
            "{} generated, {} restored, {} fresh, {failed} failed",
            summary.generated, summary.restored, summary.fresh
        );
        if dropped > 0 {
            let _ = write!(text, ", {dropped} dropped (obsolete, never sent)");
        }
        let _ = write!(text, "; spent {}, saved {saved}", summary.spent);
        if let Some(ms) = since(timings.first_request) {
            let _ = write!(text, " (save → first request {ms} ms)");
        } else if let Some(ms) = since(Some(timings.done)) {
            let _ = write!(text, " (save → done {ms} ms)");
        }
        self.printer.status("Built", &text);
        self.printer.status(
            "Session",
            &format!(
                "spent {}, saved {} over {} build{}{}",
                session.spent,
                session.saved,
                session.builds,
                plural(session.builds as usize),
                if summary.emulated {
                    " (emulated, no real money)"
                } else {
                    ""
                }
            ),
        );
    }

    pub fn stopping(&self) {
        self.printer.warn(
            "Stopping",
            "nothing new is submitted; waiting for the generations already submitted (paid) to be cached. Ctrl-C again leaves them in the journal",
        );
    }

    pub fn stopped(&self, cut_short: bool, session: &Session) {
        self.emit(
            "stopped",
            json!({ "interrupted": true, "cut_short": cut_short, "session": session }),
        );
        self.printer.status(
            "Stopped",
            &format!(
                "spent {}, saved {} over {} build{}",
                session.spent,
                session.saved,
                session.builds,
                plural(session.builds as usize)
            ),
        );
    }
}

/// Tasks the build dropped because a newer change made them obsolete.
pub fn dropped(summary: &Summary) -> usize {
    summary.tasks.iter().filter(|t| t.dropped).count()
}

fn diagnostic_json(d: &Diagnostic) -> Value {
    json!({
        "file": d.path.display().to_string(),
        "line": d.line,
        "column": d.column,
        "message": d.message,
        "hint": d.hint,
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn yuan_value(m: Money) -> f64 {
    (m.as_yuan() * 1e6).round() / 1e6
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's serialize_with passes a reference"
)]
fn yuan<S: serde::Serializer>(m: &Money, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(yuan_value(*m))
}
