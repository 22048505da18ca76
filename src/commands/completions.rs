//! `wanx completions SHELL` and `wanx man`: both generated from the one clap definition in `cli.rs`
//! (clap_complete, clap_mangen), so they never drift from the real flags.
//!
//! Task ids are completed from the project in the current directory through clap_complete's dynamic
//! engine: `source <(COMPLETE=bash wanx)` (zsh, fish, powershell alike) registers wanx itself as the
//! completer, and each completion runs `wanx` with `COMPLETE` set, which answers from the plans
//! ([`task_ids`]) before anything else runs. The static scripts `wanx completions SHELL` prints
//! complete subcommands and flags only: a script written once cannot know a project's tasks.

use std::io::Write;

use clap::CommandFactory;
use clap_complete::engine::{ArgValueCandidates, CompletionCandidate};

use crate::cli::Cli;
use crate::error::{Error, Result};

/// Answers a dynamic completion request (`COMPLETE=SHELL wanx …`) and returns `true`, or returns
/// `false` for a normal run.
pub fn dynamic(args: &[std::ffi::OsString]) -> bool {
    let cwd = std::env::current_dir().ok();
    clap_complete::CompleteEnv::with_factory(|| with_task_ids(Cli::command()))
        .try_complete(args.iter().cloned(), cwd.as_deref())
        .unwrap_or_else(|e| e.exit())
}

/// The command line with [`task_ids`] as the candidates of every `TASK` argument (`tasks`, `task`),
/// in every subcommand. Attached here, not in `cli.rs`, so the command line's definition stays
/// parsing only and does not reach into the project.
fn with_task_ids(cmd: clap::Command) -> clap::Command {
    let cmd = cmd.mut_args(|arg| {
        if matches!(arg.get_id().as_str(), "tasks" | "task") {
            arg.add(ArgValueCandidates::new(task_ids))
        } else {
            arg
        }
    });
    cmd.mut_subcommands(with_task_ids)
}

/// The ids of the project's tasks (none when there is no valid project here): quietly, since this
/// runs on every Tab.
pub fn task_ids() -> Vec<CompletionCandidate> {
    let Ok(cwd) = std::env::current_dir() else {
        return Vec::new();
    };
    let Ok(path) = crate::project::manifest::Manifest::find(&cwd) else {
        return Vec::new();
    };
    let Ok((manifest, registry)) = crate::project::manifest::Manifest::load(&path) else {
        return Vec::new();
    };
    let Ok(loaded) = crate::plan::load(&manifest, &registry) else {
        return Vec::new();
    };
    loaded
        .tasks
        .iter()
        .map(|t| CompletionCandidate::new(t.id.clone()).help(Some(t.model.clone().into())))
        .collect()
}

/// `wanx completions SHELL`: the static script on stdout.
#[allow(clippy::unnecessary_wraps, reason = "every command returns a Result")]
pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "wanx", &mut out);
    write_stdout(&out);
    Ok(())
}

/// `wanx man`: the man page (roff) on stdout, e.g. `wanx man > wanx.1`.
pub fn man() -> Result<()> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .map_err(|e| Error::Other(format!("could not render the man page: {e}")))?;
    write_stdout(&out);
    Ok(())
}

fn write_stdout(bytes: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`wanx man | head`) is not an error.
    let _ = stdout.write_all(bytes);
}
