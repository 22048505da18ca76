//! Integration tests: each drives the real `wanx` binary in a temp project against wanx's DashScope
//! emulator over HTTP on 127.0.0.1, and asserts what a user would notice: exit codes, files on disk,
//! and what the emulator was asked for and billed.

mod browser;
mod build;
mod chain;
mod cli;
mod crash;
mod gallery;
mod hostile;
mod integrity;
mod invalid;
mod json_budget;
mod key_cache;
mod locked;
mod modules;
mod money;
mod one_writer;
mod paths;
mod plan_cache;
mod pool;
mod provider;
mod remote_cache;
mod result_urls;
mod setup;
mod tree;
mod uptodate;
mod util;
mod watch;
mod webdav;
mod why;
