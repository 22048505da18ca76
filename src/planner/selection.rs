//! `Selection`: which tasks a command works on (named tasks and what they consume, or all), against
//! which provider, and how it uses the remote cache. Parsed by clap as part of each command's
//! arguments; the planner reads it.

use clap::Args;

#[derive(Args, Debug, Clone, Default)]
pub struct Selection {
    /// Only these tasks, and the tasks whose images they consume (default: every task).
    #[arg(value_name = "TASK")]
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
