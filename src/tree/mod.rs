//! The user's tree: the files wanx writes into and reads from the project, and the promise that it
//! never loses one. [`output_name`] renders a task's output paths; [`output_claims`] refuses, before
//! anything is sent, outputs that collide or land on wanx's own files; [`project_path`] and
//! [`input_limit`] keep inputs inside the project and within the service's size; [`output_guard`]
//! never replaces bytes wanx did not write (`--force` moves them aside); [`stale_outputs`] removes
//! only the old outputs whose bytes match what the previous lock recorded.
//!
//! `tree` sits below the planner: the guards take paths and the lock, never a plan
//! (`planner::writes` reads the paths off one), and the clock is `crate::clock`.

pub mod input_limit;
pub mod output_claims;
pub mod output_guard;
pub mod output_name;
pub mod project_path;
pub mod stale_outputs;
