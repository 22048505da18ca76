//! `Selection`: which tasks a command works on (named tasks and what they consume, or all), against
//! which provider, and how it uses the remote cache. Parsed by clap as part of each command's
//! arguments; the planner reads it. The TASK argument completes from the project's task ids.

use clap::Args;
use clap_complete::engine::CompletionCandidate;

#[derive(Args, Debug, Clone, Default)]
pub struct Selection {
    /// Only these tasks, and the tasks whose images they consume (default: every task).
    #[arg(value_name = "TASK", add = clap_complete::engine::ArgValueCandidates::new(task_ids))]
    pub tasks: Vec<String>,
    /// Build against wanx's in-process DashScope emulator: no API key, no cost, placeholder images.
    #[arg(long)]
    pub emulate: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// The remote cache (see the README's "Sharing the cache").
#[derive(Args, Debug, Clone, Default)]
pub struct RemoteArgs {
    /// A Bazel-protocol HTTP cache to restore from and upload to (overrides `[cache] remote`).
    #[arg(long = "remote-cache", value_name = "URL", env = "WANX_REMOTE_CACHE")]
    pub remote_cache: Option<String>,
    /// Restore from the remote cache but upload nothing.
    #[arg(long)]
    pub remote_cache_read_only: bool,
    /// How the command uses it: set by the command.
    #[arg(skip)]
    pub usage: crate::remote::RemoteUse,
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
