//! `Error`: every way a wanx command can stop, with its exit code and a hint. Per-task failures are
//! not errors of the command: they are recorded in the report and turn into [`Error::TasksFailed`].

use std::path::PathBuf;

use crate::money::Money;
use crate::term::diagnostic::Diagnostic;

/// Exit codes, documented in the README.
pub mod exit {
    pub const SUCCESS: u8 = 0;
    /// Some task failed; the others were built. Also: `wanx verify` found a problem it did not repair.
    pub const TASK_FAILED: u8 = 1;
    /// Invalid usage, manifest or plan; nothing was sent or written.
    pub const INVALID: u8 = 2;
    /// `--locked` and some task is not fresh; nothing was generated.
    pub const NOT_LOCKED: u8 = 3;
    /// The planned generations cost more than the budget allows; nothing was sent.
    pub const OVER_BUDGET: u8 = 4;
    /// `--no-wait` and another wanx holds the project (`.wanx/lock`); nothing was done.
    pub const BUSY: u8 = 5;
    /// wanx's own files or build database failed (`.wanx/wanx.db`, `wanx.lock`, an output directory,
    /// the emulator's socket): not a task's failure, and no retry of the build fixes it.
    pub const IO: u8 = 6;
    /// Interrupted (Ctrl-C).
    pub const INTERRUPTED: u8 = 130;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not find `wanx.toml` in `{}` or any parent directory", cwd.display())]
    ManifestNotFound { cwd: PathBuf },

    #[error("{count} problem{} in the project's files", if *count == 1 { "" } else { "s" })]
    Invalid {
        count: usize,
        diagnostics: Vec<Diagnostic>,
    },

    #[error("{message}")]
    Usage {
        message: String,
        hint: Option<String>,
    },

    #[error("the API key variable `{var}` is not set")]
    MissingApiKey { var: String },

    #[error("{action} `{}`: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("the build database `{}` failed: {source}", path.display())]
    Store {
        path: PathBuf,
        source: rusqlite::Error,
    },

    #[error("DashScope refused the build: {code}: {message}")]
    ProviderFatal {
        code: String,
        message: String,
        request_id: Option<String>,
    },

    #[error("{}", not_locked(*stale, removed))]
    NotLocked {
        stale: usize,
        /// Tasks `wanx.lock` records that are no longer in the plans.
        removed: Vec<String>,
    },

    #[error("{stale} task{} not fresh", if *stale == 1 { " is" } else { "s are" })]
    Stale { stale: usize },

    #[error("the planned generations cost {planned}, more than the budget of {budget}")]
    OverBudget { planned: Money, budget: Money },

    #[error("{failed} task{} failed", if *failed == 1 { "" } else { "s" })]
    TasksFailed { failed: usize },

    #[error("another wanx{} is using this project", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Busy { pid: Option<u32> },

    #[error("{problems} problem{} {}", if *problems == 1 { "" } else { "s" }, if *repair { "could not be repaired" } else { "found" })]
    Unverified { problems: usize, repair: bool },

    #[error("{count} output{} would replace a file wanx did not write; nothing was sent or written", if *count == 1 { "" } else { "s" })]
    Foreign { count: usize, id: String },

    #[error("could not start the emulator: {0}")]
    Emulator(std::io::Error),

    #[error("{0}")]
    HttpClient(String),

    #[error("interrupted")]
    Interrupted,

    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// The process exit status for this error.
    pub fn code(&self) -> u8 {
        match self {
            Error::ManifestNotFound { .. }
            | Error::Invalid { .. }
            | Error::Usage { .. }
            | Error::MissingApiKey { .. } => exit::INVALID,
            Error::NotLocked { .. } | Error::Stale { .. } => exit::NOT_LOCKED,
            Error::OverBudget { .. } => exit::OVER_BUDGET,
            Error::Interrupted => exit::INTERRUPTED,
            Error::Busy { .. } => exit::BUSY,
            Error::Io { .. } | Error::Store { .. } | Error::Emulator(_) => exit::IO,
            Error::HttpClient(_)
            | Error::ProviderFatal { .. }
            | Error::TasksFailed { .. }
            | Error::Unverified { .. }
            | Error::Foreign { .. }
            | Error::Other(_) => exit::TASK_FAILED,
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::ManifestNotFound { .. } => Some(
                "create one with `touch wanx.toml` (an empty file is valid), or point at a project with `-C DIR`".to_owned(),
            ),
            Error::Invalid { .. } => Some("nothing was sent and no file was changed; fix the problems above and run again".to_owned()),
            Error::Usage { hint, .. } => hint.clone(),
            Error::MissingApiKey { var } => Some(format!(
                "export {var}=… with a DashScope API key, or run with `--emulate` to build against wanx's local emulator at no cost"
            )),
            Error::Io { .. } => Some("check the path's permissions and the free space, then run again: what was paid for is kept in `.wanx/`".to_owned()),
            Error::Emulator(_) => Some("the emulator listens on a free port of 127.0.0.1: check that the loopback interface is up".to_owned()),
            Error::Store { .. } => Some("`.wanx/` is a cache: if it is damaged, move it away and build again (the lock and your images are kept)".to_owned()),
            Error::ProviderFatal { code, .. } => Some(provider_hint(code).to_owned()),
            Error::NotLocked { .. } => Some("run `wanx plan` to see what changed, then `wanx build` without `--locked` and commit `wanx.lock`".to_owned()),
            Error::Unverified { repair: false, .. } => Some("`wanx verify --repair` restores outputs from intact blobs and quarantines damaged ones".to_owned()),
            Error::Unverified { repair: true, .. } => Some("`wanx build` generates what the cache could not restore (`wanx plan` shows the price)".to_owned()),
            Error::Busy { .. } => Some("nothing was sent or written; run again without `--no-wait` to wait for it to finish".to_owned()),
            Error::Foreign { id, .. } => Some(format!(
                "move the file away and build again (a modified output is then restored free), or `wanx build --force {id}` to generate over it; `wanx verify --repair --force` restores the cached image over it. `--force` keeps the replaced file under `.wanx/replaced/`"
            )),
            Error::Stale { .. } => Some("`wanx build` brings them up to date; nothing was sent".to_owned()),
            Error::OverBudget { .. } => Some("raise `--max-spend` or `[build] max_spend`, or build fewer tasks (`wanx build ID…`)".to_owned()),
            _ => None,
        }
    }
}

fn provider_hint(code: &str) -> &'static str {
    match code {
        "InvalidApiKey" => {
            "check the API key and that it belongs to the region of `provider.base_url` (Beijing, Singapore and US keys differ)"
        }
        "Workspace.AccessDenied" | "AccessDenied.Workspace" | "WorkSpaceNotFound" => {
            "the key cannot use this workspace: check `provider.workspace` and the key's workspace in the console"
        }
        "Redirected" => {
            "check `provider.base_url`: it must be the API's own address (e.g. `https://dashscope.aliyuncs.com/api/v1`), not one that redirects"
        }
        "Arrearage" | "PrepaidBillOverdue" | "PostpaidBillOverdue" => {
            "the account is in arrears: top it up in the Alibaba Cloud console"
        }
        "Throttling.AllocationQuota" => {
            "the account's quota is used up: wait for it to reset or raise it in the console"
        }
        "ModelNotFound" => {
            "the model id is not served in this region: check `model` and `provider.base_url`"
        }
        _ => "no new tasks were submitted after this error; tasks already paid for were kept",
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `--locked`'s message: tasks that are not fresh, and lock entries of tasks no longer in the plans.
fn not_locked(stale: usize, removed: &[String]) -> String {
    let mut parts = Vec::new();
    if stale > 0 {
        parts.push(format!(
            "{stale} task{} not fresh",
            if stale == 1 { " is" } else { "s are" }
        ));
    }
    if !removed.is_empty() {
        let names: Vec<String> = removed.iter().take(3).map(|id| format!("`{id}`")).collect();
        let more = removed.len().saturating_sub(3);
        parts.push(format!(
            "`wanx.lock` still records {} task{} no longer in the plans ({}{})",
            removed.len(),
            if removed.len() == 1 { "" } else { "s" },
            names.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
    }
    format!(
        "{} and `--locked` forbids changing `wanx.lock`",
        parts.join("; ")
    )
}
