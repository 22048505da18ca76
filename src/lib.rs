//! wanx: `make` for AI images. Plan files declare image tasks; `wanx build` compiles each to the exact
//! DashScope request, keys it by content, and generates only what the cache and the lock cannot supply.
//!
//! The pipeline, one folder per stage: [`project`] finds `wanx.toml` and holds `wanx.lock`, [`plan`]
//! loads and validates the plan files, [`compile`] lowers a task to the wire and names it by its key,
//! [`planner`] decides (the pure [`planner::reconcile`] at its heart), [`build`] acts on the decisions
//! through [`executor`] (DashScope over HTTP), recording into [`store`] and [`remote`] without ever
//! destroying what the user made ([`tree`]), and [`report`] tells the user through [`term`], the one
//! owner of the terminal. Around the pipeline: [`watch`] reruns it on every save, [`gallery`] shows its
//! images, [`commands`] holds the smaller subcommands, and [`emulator`] is a DashScope of our own for
//! tests and offline work. [`registry`], [`money`], [`size`] and [`media`] are the facts about the
//! service that the client and the emulator share.

mod build;
mod cli;
mod clock;
mod commands;
mod compile;
pub mod emulator;
mod error;
mod executor;
mod gallery;
mod media;
mod money;
mod par;
mod plan;
mod planner;
mod project;
mod registry;
mod remote;
mod report;
mod run;
mod size;
mod store;
mod term;
mod tree;
mod watch;

// Public: `run` (the binary is `wanx::run`) and the emulator, a DashScope of our own that tests and
// other tools start in-process. Everything else is the crate's own, so the compiler sees dead code.
pub use run::run;
