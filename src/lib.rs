//! wanx: `make` for AI images. Plan files declare image tasks; `wanx build` compiles each to the exact
//! DashScope request, keys it by content, and generates only what the cache and the lock cannot supply.
//!
//! The pipeline, one module per stage: [`manifest`] and [`plan`] load and validate, [`compile`] lowers a
//! task to the wire, [`cache_key`] names it, [`reconcile`] decides (pure), [`executor`] acts through
//! [`dashscope`] and records into [`store`], [`blob_store`] and [`lock`], and [`report`] tells the user.

pub mod action_result;
pub mod blob_store;
pub mod build;
pub mod cache_key;
pub mod cli;
pub mod compile;
pub mod completions;
pub mod dashscope;
pub mod diagnostic;
pub mod edit_prompt;
pub mod emulator;
pub mod emulator_config;
mod emulator_faults;
mod emulator_media;
mod emulator_request;
mod emulator_state;
#[cfg(test)]
mod emulator_tests;
pub mod error;
pub mod executor;
pub mod gallery;
pub mod gallery_files;
pub mod gallery_page;
pub mod gallery_server;
pub mod gc;
pub mod graph;
pub mod image_check;
pub mod init;
pub mod input_limit;
pub mod json_error;
pub mod json_spans;
pub mod key_cache;
pub mod lock;
pub mod manifest;
pub mod media;
pub mod money;
pub mod output_claims;
pub mod output_guard;
pub mod output_name;
mod par;
pub mod placeholder_png;
pub mod plan;
pub mod plan_json;
#[cfg(test)]
mod plan_proptest;
pub mod plan_toml;
pub mod planner;
pub mod printer;
pub mod progress;
pub mod project_lock;
pub mod project_path;
pub mod reconcile;
pub mod registry;
pub mod remote_cache;
pub mod report;
mod run;
pub mod secret;
pub mod size;
pub mod stale_outputs;
pub mod state_dir;
pub mod stats;
pub mod status;
pub mod store;
pub mod task;
pub mod verify;
pub mod vocabulary;
pub mod watch;
pub mod watch_events;
pub mod watch_set;
pub mod why;
pub mod word_diff;

pub use run::run;
