//! `Summary`: what a build did, spent and saved, printed for people on stderr and, with `--json`, as
//! one documented JSON object on stdout.
//!
//! JSON fields: `generated`, `restored`, `fresh`, `failed`, `skipped` (task counts), `images_generated`, `spent`,
//! `saved` (CNY, numbers), `currency` (`"CNY"`), `emulated` (money is emulated, not real), `dry_run`,
//! `cumulative` (`runs`, `spent`, `saved` over every recorded build of this kind), and `tasks`: one
//! object per selected task with `id`, `action` (`fresh` | `restore` | `generate`), `status`
//! (`fresh` | `restored` | `generated` | `failed` | `skipped` | `planned`), `reason`, `cost`, `saved`, `outputs`
//! (project-relative paths) and `error` (a string, for failed tasks).

use serde::Serialize;

use crate::money::Money;

#[derive(Serialize, Debug, Clone, Default)]
pub struct Summary {
    pub generated: usize,
    pub restored: usize,
    pub fresh: usize,
    pub failed: usize,
    /// Not submitted because the build was interrupted or stopped: nothing was paid for them.
    pub skipped: usize,
    pub images_generated: u32,
    #[serde(serialize_with = "yuan")]
    pub spent: Money,
    #[serde(serialize_with = "yuan")]
    pub saved: Money,
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
    /// Why the task is not fresh, one entry per difference (src/why.rs); empty when fresh.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<crate::why::Change>,
}

impl TaskReport {
    /// Replaces the short reason with the field-level one, when known.
    #[must_use]
    pub fn with_why(mut self, why: Option<&Vec<crate::why::Change>>) -> TaskReport {
        if let Some(changes) = why.filter(|c| !c.is_empty()) {
            self.reason = crate::why::line(changes);
            self.changes.clone_from(changes);
        }
        self
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
    /// The closing lines for people.
    pub fn human(&self) -> Vec<String> {
        let label = if self.emulated {
            " (emulated, no real money)"
        } else {
            ""
        };
        let mut lines = vec![format!(
            "{} generated ({} image{}), {} restored, {} fresh, {} failed",
            self.generated,
            self.images_generated,
            if self.images_generated == 1 { "" } else { "s" },
            self.restored,
            self.fresh,
            self.failed
        )];
        if self.skipped > 0 {
            lines.push(format!(
                "{} not submitted (nothing paid for them)",
                self.skipped
            ));
        }
        lines.push(format!("spent {}, saved {}{label}", self.spent, self.saved));
        if self.cumulative.runs > 0 {
            lines.push(format!(
                "all builds of this project: spent {}, saved {} over {} build{}{label}",
                self.cumulative.spent,
                self.cumulative.saved,
                self.cumulative.runs,
                if self.cumulative.runs == 1 { "" } else { "s" }
            ));
        }
        lines
    }
}
