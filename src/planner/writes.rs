//! What a planned build will write, for the guards in `tree/` that protect the working tree: the
//! foreign files it would write over (`tree::output_guard`), and what the old lock recorded, so the
//! outputs no task claims any more can be pruned after it (`tree::stale_outputs`). The guards take
//! plain paths; this file reads them off a [`Planned`], so `tree` never imports the planner.

use crate::compile::cache_key::CacheKey;
use crate::planner::Planned;
use crate::planner::reconcile::Action;
use crate::tree::output_guard::{self, Foreign};
use crate::tree::stale_outputs::Before;

/// Every foreign file the planned restores and generations (waiting ones included, where their
/// names do not depend on their keys) would write over.
pub fn foreign(root: &std::path::Path, planned: &Planned<'_>, now: i64) -> Vec<Foreign> {
    let mut targets: Vec<(&str, String)> = Vec::new();
    for (unit, d) in planned.units.iter().zip(&planned.decisions) {
        if d.action != Action::Fresh {
            targets.extend(d.outputs.iter().map(|p| (unit.task.id.as_str(), p.clone())));
        }
    }
    for w in &planned.waiting {
        if !w.task.output.filename.contains("{key}") {
            let key = CacheKey::from_bytes([0; 32]);
            let paths = crate::tree::output_name::render(
                &w.task.output,
                &w.task.id,
                w.task.written(),
                &key,
                now,
            );
            targets.extend(paths.into_iter().map(|p| (w.task.id.as_str(), p)));
        }
    }
    output_guard::find(root, targets, &planned.lock, &planned.blobs)
}

/// What the lock recorded and what the build will write; `None` when the build changes no output
/// (a no-op): nothing can go stale.
pub fn before(planned: &Planned<'_>) -> Option<Before> {
    let changes = !planned.waiting.is_empty()
        || !planned.stale_lock_entries.is_empty()
        || planned.decisions.iter().any(|d| d.action != Action::Fresh);
    if !changes {
        return None;
    }
    // The entries the build may change: those of the tasks it builds, and those it removes.
    let changing = planned
        .units
        .iter()
        .zip(&planned.decisions)
        .filter(|(_, d)| d.action != Action::Fresh)
        .map(|(u, _)| u.task.id.as_str())
        .chain(planned.waiting.iter().map(|w| w.task.id.as_str()))
        .chain(planned.stale_lock_entries.iter().map(String::as_str));
    Some(Before::new(
        changing
            .filter_map(|id| planned.lock.get(id))
            .flat_map(|e| &e.outputs)
            .map(|o| (o.path.clone(), o.blake3.clone()))
            .collect(),
        planned
            .decisions
            .iter()
            .flat_map(|d| d.outputs.iter().cloned())
            .collect(),
    ))
}
