//! What `wanx watch` attaches to a build (src/watch/mod.rs): a hook on the reconciled plan, one on
//! every executor event, and the gate each generation passes before it is submitted. A plain
//! build attaches none.

use std::sync::Arc;

use crate::executor::Event;
use crate::planner::Planned;

/// Called with the reconciled plan right before it is executed (after the budget checks).
pub type OnPlan = Arc<dyn Fn(&Planned<'_>) + Send + Sync>;
/// Called with every executor event, before it is printed.
pub type OnEvent = Arc<dyn Fn(&Event) + Send + Sync>;

/// What `wanx watch` attaches to a build. `Default` attaches nothing.
#[derive(Clone, Default)]
pub struct Hooks {
    pub on_plan: Option<OnPlan>,
    pub on_event: Option<OnEvent>,
    /// Passed to [`Executor::before_submit`](crate::executor::Executor::before_submit).
    pub before_submit: Option<crate::executor::SubmitGate>,
}
