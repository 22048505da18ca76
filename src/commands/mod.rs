//! The subcommands around the build: `wanx init` starts a project, `wanx verify` rehashes what the lock
//! records, `wanx status` and `wanx graph` show what a build would do without doing it, `wanx gc` and
//! `wanx stats` keep and describe the local cache, and `wanx completions` / `wanx man` are generated
//! from the one clap definition. Each file is one command: it borrows the pipeline's stages (the
//! planner's decisions, the store, the lock) and adds no rule of its own that a build could disagree
//! with; `build`, `plan`, `explain` and `watch` are the pipeline itself and live beside it.

pub mod completions;
pub mod gc;
pub mod graph;
pub mod init;
pub mod stats;
pub mod status;
pub mod verify;
