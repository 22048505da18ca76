//! `Summary`: what a build did, spent and saved, printed for people on stderr and, with `--json`, as
//! one documented JSON object on stdout.
//!
//! JSON fields: `generated`, `restored`, `fresh`, `failed`, `skipped` (task counts), `images_generated`, `spent`,
//! `saved` (CNY, numbers; defined once, in the README's "Spent and saved": money the service billed that
//! this build was the first to see, and the price of the images it restored instead of paying again),
//! `maybe_billed` (CNY: submissions whose fate is unknown, which the service may have billed;
//! `spent + maybe_billed` bounds what the build cost), `would_spend` and `would_save` (plans and dry runs only, which spend and save nothing),
//! `currency` (`"CNY"`), `emulated` (money is emulated, not real), `dry_run`,
//! `cumulative` (`runs`: finished builds that did something (a build with nothing to do is not recorded); `spent`: every charge booked; `saved`: the finished builds'
//! `saved`; of this kind, real or emulated), and `tasks`: one
//! object per selected task with `id`, `action` (`fresh` | `restore` | `generate`), `status`
//! (`fresh` | `restored` | `generated` | `failed` | `skipped` | `planned`), `reason`, `cost`, `saved`, `outputs`
//! (project-relative paths), `error` (a string, for failed tasks) and `remote` (`true` on a `restore`
//! whose images came from the remote cache). `restored_remote` counts those restores.
//!
//! [`print_plan`] prints what `wanx plan` (and a dry run) decided: a line per task, then the totals.

use std::fmt::Write as _;

use serde::Serialize;

use crate::money::Money;
use crate::planner::reconcile::{Action, Decision};
use crate::planner::{Planned, Unit, Waiting, waiting_reason};
use crate::term::printer::Printer;

#[derive(Serialize, Debug, Clone, Default)]
pub struct Summary {
    pub generated: usize,
    pub restored: usize,
    /// Of `restored`, those whose images came from the remote cache.
    pub restored_remote: usize,
    pub fresh: usize,
    pub failed: usize,
    /// Not submitted because the build was interrupted or stopped: nothing was paid for them.
    pub skipped: usize,
    /// Images the service billed that this build booked (see `spent`).
    pub images_generated: u32,
    #[serde(serialize_with = "yuan")]
    pub spent: Money,
    #[serde(serialize_with = "yuan")]
    pub saved: Money,
    /// Submissions that broke after they were sent and whose task could not be found: the service
    /// may have billed them. Not in `spent`; `spent + maybe_billed` is the most the build cost.
    #[serde(serialize_with = "yuan")]
    pub maybe_billed: Money,
    /// `wanx plan` and `--dry-run` only: what the build would spend and save.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "yuan_opt")]
    pub would_spend: Option<Money>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "yuan_opt")]
    pub would_save: Option<Money>,
    pub currency: &'static str,
    pub emulated: bool,
    pub dry_run: bool,
    pub cumulative: Cumulative,
    /// A plan's budget (`--max-spend` or `[build] max_spend`), in CNY, when one is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<f64>,
    pub tasks: Vec<TaskReport>,
}

#[derive(Serialize, Debug, Clone, Default)]
pub struct Cumulative {
    pub runs: u64,
    #[serde(serialize_with = "yuan")]
    pub spent: Money,
    #[serde(serialize_with = "yuan")]
    pub saved: Money,
}

#[derive(Serialize, Debug, Clone)]
pub struct TaskReport {
    pub id: String,
    pub action: &'static str,
    pub status: &'static str,
    pub reason: String,
    pub model: String,
    pub images: u32,
    #[serde(serialize_with = "yuan")]
    pub cost: Money,
    #[serde(serialize_with = "yuan")]
    pub saved: Money,
    pub outputs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A restore from the remote cache.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub remote: bool,
    /// Why the task is not fresh, one entry per difference (src/planner/why.rs); empty when fresh.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<crate::planner::why::Change>,
    /// Dropped unsent by `wanx watch` (a newer change made it obsolete): reported as skipped, counted
    /// apart by the watch loop.
    #[serde(skip)]
    pub dropped: bool,
}

impl TaskReport {
    /// Replaces the short reason with the field-level one, when known.
    #[must_use]
    pub fn with_why(mut self, why: Option<&Vec<crate::planner::why::Change>>) -> TaskReport {
        if let Some(changes) = why.filter(|c| !c.is_empty()) {
            self.reason = crate::planner::why::line(changes);
            self.changes.clone_from(changes);
        }
        self
    }
}

impl Cumulative {
    /// The ledger's totals of the kind (real or emulated) the build is.
    pub fn of(ledger: &crate::store::Ledger, emulated: bool) -> Cumulative {
        let kind = if emulated {
            ledger.emulated
        } else {
            ledger.real
        };
        Cumulative {
            runs: kind.runs,
            spent: kind.spent,
            saved: kind.saved,
        }
    }
}

#[allow(
    clippy::ref_option,
    reason = "serde's serialize_with passes a reference"
)]
fn yuan_opt<S: serde::Serializer>(m: &Option<Money>, s: S) -> Result<S::Ok, S::Error> {
    match m {
        Some(m) => yuan(m, s),
        None => s.serialize_none(),
    }
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's serialize_with passes a reference"
)]
fn yuan<S: serde::Serializer>(m: &Money, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((m.as_yuan() * 1e6).round() / 1e6)
}

impl Summary {
    /// Whether the build did nothing: every task it looked at was fresh, and nothing was paid or
    /// may have been. Such a build is not recorded among the runs (as with ninja or cargo).
    pub fn did_nothing(&self) -> bool {
        self.generated + self.restored + self.failed + self.skipped == 0
            && self.images_generated == 0
            && self.spent == Money::ZERO
            && self.maybe_billed == Money::ZERO
    }

    /// The closing lines for people: what happened, then the money (one or two lines, as cargo's).
    pub fn human(&self) -> Vec<String> {
        let label = if self.emulated {
            " (emulated, no real money)"
        } else {
            ""
        };
        let plural = |n: u32| if n == 1 { "" } else { "s" };
        let mut parts = Vec::new();
        if self.generated > 0 {
            parts.push(format!(
                "{} generated ({} image{} billed)",
                self.generated,
                self.images_generated,
                plural(self.images_generated)
            ));
        }
        if self.restored_remote > 0 {
            parts.push(format!(
                "{} restored ({} from the remote cache)",
                self.restored, self.restored_remote
            ));
        } else if self.restored > 0 {
            parts.push(format!("{} restored", self.restored));
        }
        if self.fresh > 0 || (self.generated == 0 && self.restored == 0 && self.failed == 0) {
            parts.push(format!("{} fresh", self.fresh));
        }
        if self.failed > 0 {
            // Images paid for by tasks that failed (a partial result, kept for the next build).
            if self.generated == 0 && self.images_generated > 0 {
                parts.push(format!(
                    "{} failed ({} image{} paid for and kept for the next build)",
                    self.failed,
                    self.images_generated,
                    plural(self.images_generated)
                ));
            } else {
                parts.push(format!("{} failed", self.failed));
            }
        }
        if self.skipped > 0 {
            parts.push(format!(
                "{} not submitted (nothing paid for them)",
                self.skipped
            ));
        }
        let mut money = format!("spent {}, saved {}", self.spent, self.saved);
        // The totals, unless they are this build's own: a build that did something is among the
        // runs; one with nothing to do is not recorded.
        let runs = self.cumulative.runs;
        if runs > 1 || runs == 1 && self.did_nothing() {
            let builds = if runs == 1 { "build" } else { "builds" };
            let _ = write!(
                money,
                "; {runs} {builds} so far: spent {}, saved {}",
                self.cumulative.spent, self.cumulative.saved
            );
        }
        money.push_str(label);
        let mut lines = vec![parts.join(", "), money];
        if self.maybe_billed > Money::ZERO {
            lines.push(format!(
                "and up to {} more may have been billed for submissions whose answer was lost (see above): at most {} in all",
                self.maybe_billed,
                self.spent + self.maybe_billed
            ));
        }
        lines
    }
}

/// `wanx plan`: one line per task in graph order with its action, reason and price, then totals.
pub fn print_plan(planned: &Planned<'_>, printer: &Printer, json: bool) {
    let totals = planned.totals();
    if json {
        let summary = plan_summary(planned, &totals);
        printer.data(&serde_json::to_string_pretty(&summary).expect("a summary always serializes"));
        return;
    }
    let width = planned
        .units
        .iter()
        .map(|u| u.task.id.len())
        .chain(planned.waiting.iter().map(|w| w.task.id.len()))
        .max()
        .unwrap_or(0);
    let action_width = if planned.decisions.iter().any(|d| d.remote) {
        16
    } else {
        8
    };
    let line = |action: &str, id: &str, model: &str, reason: &str, price: String| {
        printer.data(&format!(
            "{action:<action_width$}  {id:<width$}  {model:<18}  {reason:<28}  {price}"
        ));
    };
    for (unit, d) in planned.units.iter().zip(&planned.decisions) {
        let price = match d.action {
            Action::Generate if d.held > 0 => format!(
                "n {} → {}: {} more images, {} ({} × {}; {} paid earlier, kept)",
                d.held,
                unit.compiled.n,
                unit.compiled.n - d.held,
                d.cost(),
                unit.compiled.n - d.held,
                unit.compiled.price,
                d.held
            ),
            Action::Generate => format!(
                "{} ({} × {})",
                d.cost(),
                unit.compiled.n,
                unit.compiled.price
            ),
            _ => "free".to_owned(),
        };
        let reason = match planned.why.get(&unit.task.id) {
            Some(changes) if !changes.is_empty() => crate::planner::why::line(changes),
            _ => d.reason.to_string(),
        };
        line(
            if d.remote {
                "restore (remote)"
            } else {
                d.action.name()
            },
            &unit.task.id,
            &unit.compiled.model,
            &reason,
            price,
        );
    }
    for w in &planned.waiting {
        let price = format!(
            "up to {} ({} × {})",
            w.compiled.cost(),
            w.compiled.n,
            w.compiled.price
        );
        line(
            "generate",
            &w.task.id,
            &w.compiled.model,
            &waiting_reason(w),
            price,
        );
    }
    let budget = match planned.budget {
        Some(b) if totals.cost > b => {
            format!("; {} of {b} budget: a build would be refused", totals.cost)
        }
        Some(b) => format!("; {} of {b} budget", totals.cost),
        None => String::new(),
    };
    printer.data(&format!(
        "\n{}; saving {}{budget}",
        totals.describe(planned.provider.is_emulated()),
        totals.saved
    ));
    if !planned.waiting.is_empty() {
        printer.data(&format!(
            "{} of them consume images generated first; if those come out byte-identical, they cost nothing",
            planned.waiting.len()
        ));
    }
    if !planned.stale_lock_entries.is_empty() {
        let n = planned.stale_lock_entries.len();
        printer.data(&format!(
            "{n} lock entr{} for tasks no longer in any plan will be dropped",
            if n == 1 { "y" } else { "ies" }
        ));
    }
}

/// `wanx plan --json`: the summary of a plan, which spends and saves nothing (what it would is
/// under its own names).
fn plan_summary(planned: &Planned<'_>, totals: &crate::planner::reconcile::Totals) -> Summary {
    let mut tasks: Vec<TaskReport> = planned
        .units
        .iter()
        .zip(&planned.decisions)
        .map(|(u, d)| task_report(u, d, "planned", None).with_why(planned.why.get(&u.task.id)))
        .collect();
    tasks.extend(
        planned
            .waiting
            .iter()
            .map(|w| waiting_report(w, "planned", None)),
    );
    Summary {
        generated: totals.generate,
        restored: totals.restore,
        restored_remote: totals.restore_remote,
        fresh: totals.fresh,
        images_generated: totals.images_to_generate,
        // Nothing is spent or saved by planning: what would be is under its own names.
        would_spend: Some(totals.cost),
        would_save: Some(totals.saved),
        currency: "CNY",
        emulated: planned.provider.is_emulated(),
        dry_run: true,
        cumulative: planned
            .store
            .ledger_totals()
            .map(|ledger| Cumulative::of(&ledger, planned.provider.is_emulated()))
            .unwrap_or_default(),
        tasks,
        budget: planned.budget.map(Money::as_yuan),
        ..Summary::default()
    }
}

/// A decided task's line in the JSON summary.
pub fn task_report(
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
        remote: d.remote,
        changes: Vec::new(),
        dropped: false,
    }
}

/// A waiting task's line in the JSON summary.
pub fn waiting_report(w: &Waiting<'_>, status: &'static str, error: Option<String>) -> TaskReport {
    TaskReport {
        id: w.task.id.clone(),
        action: "generate",
        status,
        reason: waiting_reason(w),
        model: w.compiled.model.clone(),
        images: w.compiled.n,
        cost: if status == "planned" {
            w.compiled.cost()
        } else {
            Money::ZERO
        },
        saved: Money::ZERO,
        outputs: Vec::new(),
        error,
        remote: false,
        changes: Vec::new(),
        dropped: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_paid_by_a_failed_task_are_not_reported_as_generated() {
        let summary = Summary {
            failed: 1,
            images_generated: 1,
            ..Summary::default()
        };
        let lines = summary.human();
        assert!(!lines[0].contains("generated"), "{lines:?}");
        assert!(lines[0].contains("1 failed (1 image paid for"), "{lines:?}");
    }

    #[test]
    fn a_no_op_is_two_lines() {
        let summary = Summary {
            fresh: 14,
            cumulative: Cumulative {
                runs: 2,
                ..Cumulative::default()
            },
            ..Summary::default()
        };
        assert_eq!(summary.human().len(), 2);
        assert_eq!(summary.human()[0], "14 fresh");
    }
}
