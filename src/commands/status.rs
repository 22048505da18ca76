//! `wanx status`: the tasks that are not fresh, one line each with its reason and price, then a
//! total; nothing for fresh tasks. Sends nothing and writes nothing; exits 3 when a build would
//! change something (as `wanx build --locked` would), so it doubles as a CI check.

use std::collections::HashSet;

use crate::build::{self, Project};
use crate::cli::Selection;
use crate::error::{Error, Result};
use crate::money::Money;
use crate::planner::reconcile::Action;
use crate::term::printer::Printer;

pub fn status(project: &Project, selection: &Selection, printer: &Printer) -> Result<()> {
    let planned = build::plan(project, selection, &HashSet::new())?;
    let mut stale = 0usize;
    let mut cost = Money::ZERO;
    for (unit, d) in planned.units.iter().zip(&planned.decisions) {
        if d.action == Action::Fresh {
            continue;
        }
        stale += 1;
        cost += d.cost();
        let reason = match planned.why.get(&unit.task.id) {
            Some(changes) if !changes.is_empty() => crate::planner::why::line(changes),
            _ => d.reason.to_string(),
        };
        let price = if d.action == Action::Generate {
            d.cost().to_string()
        } else {
            "free".to_owned()
        };
        printer.data(&format!(
            "{:<8}  {}  {price}  {reason}",
            d.action.name(),
            unit.task.id
        ));
    }
    for w in &planned.waiting {
        stale += 1;
        cost += w.compiled.cost();
        printer.data(&format!(
            "generate  {}  up to {}  {}",
            w.task.id,
            w.compiled.cost(),
            build::waiting_reason(w)
        ));
    }
    let dropped = planned.stale_lock_entries.len();
    if stale == 0 && dropped == 0 {
        printer.status("Fresh", "every task is up to date");
        return Ok(());
    }
    printer.data(&format!(
        "{stale} task{} not fresh, {cost} to build{}",
        if stale == 1 { "" } else { "s" },
        if dropped > 0 {
            format!("; {dropped} lock entries to drop")
        } else {
            String::new()
        }
    ));
    Err(Error::Stale {
        stale: stale + dropped,
    })
}
