//! The command line: `wanx build`, `wanx plan`, `wanx explain`, `wanx watch`, `wanx emulator`, `wanx gallery`. Parsing only; `run`
//! dispatches.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use crate::planner::selection::{RemoteArgs, Selection};
use crate::term::printer::ColorChoice;

#[derive(Parser, Debug)]
#[command(
    name = "wanx",
    version,
    about = "make for AI images: build DashScope (Tongyi Wanxiang / Wan, Qwen-Image) image plans, paying only for what changed",
    long_about = "wanx reads image tasks from plan files, compiles each to the exact DashScope request, keys it by \
content, and generates only the tasks whose requests changed. Everything else is fresh on disk or restored \
from the local cache for free.\n\nThe project is the nearest `wanx.toml` above the current directory.",
    after_help = "Examples:\n  wanx build --emulate        build everything against the local emulator (no API key, no cost)\n  wanx plan                    show what a build would do and what it would cost\n  wanx build hero banner       build two tasks\n  wanx build --locked          fail (exit 3) unless every image matches wanx.lock\n  wanx watch --emulate         rebuild what changed on every save\n\nExit codes: 0 success, 1 a task failed, 2 invalid usage/manifest/plan, 3 --locked and not fresh, 4 over budget, 5 another wanx holds the project (--no-wait), 6 wanx's own files or database failed, 130 interrupted."
)]
pub struct Cli {
    /// Run as if started in DIR.
    #[arg(short = 'C', long = "directory", value_name = "DIR", global = true)]
    pub directory: Option<PathBuf>,
    /// Print only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Say more: submissions, retries, timings.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// When to use colour: `auto` (a terminal, unless `NO_COLOR` is set; `CLICOLOR_FORCE` forces it),
    /// `always` or `never`.
    #[arg(
        long,
        value_name = "WHEN",
        global = true,
        env = "WANX_COLOR",
        default_value = "auto"
    )]
    pub color: ColorChoice,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Bring the images on disk up to date with the plans.
    Build(BuildArgs),
    /// Show what `build` would do: one line per task with its action, reason and price, then totals.
    Plan(PlanArgs),
    /// Print a task's compiled request, its inputs and its key; without a task, the lowering table.
    Explain(ExplainArgs),
    /// Build, then rebuild what changed on every save of `wanx.toml`, a plan file or a local input.
    Watch(WatchArgs),
    /// Run the DashScope emulator on its own, for CI or other tools.
    Emulator(EmulatorArgs),
    /// Rehash every output in `wanx.lock` and every cached blob; report (and with `--repair`, fix) damage.
    Verify(VerifyArgs),
    /// List the tasks that are not fresh, with their reason and price; exit 3 if any (sends nothing).
    Status(Selection),
    /// Print the task graph (which task consumes which), stale tasks marked.
    Graph(GraphArgs),
    /// Remove old outputs: files in output directories that wanx wrote (their bytes are in the cache)
    /// and no entry of `wanx.lock` claims.
    Clean(CleanArgs),
    /// Start a project here: a commented `wanx.toml`, an example plan and `.gitignore` lines.
    Init(InitArgs),
    /// Shrink the cache to `[cache] max_size`, least recently used first; never what `wanx.lock` needs.
    Gc(GcArgs),
    /// Cache size and entries, images generated and restored, money spent and saved.
    Stats(StatsArgs),
    /// Print a shell completion script (see the README for dynamic task-id completion).
    Completions(CompletionsArgs),
    /// Print wanx's man page (roff) on stdout.
    #[command(hide = true)]
    Man,
    /// Write a static page of every task: its images, prompt, cost, status and earlier versions.
    Gallery(GalleryArgs),
}

impl Command {
    /// Whether the command asked for JSON on stdout (`--json`).
    pub fn wants_json(&self) -> bool {
        match self {
            Command::Build(a) => a.json,
            Command::Plan(a) => a.json,
            Command::Explain(a) => a.json,
            Command::Watch(a) => a.json,
            Command::Verify(a) => a.json,
            _ => false,
        }
    }
}

#[derive(Args, Debug, Clone, Default)]
pub struct InitArgs {
    /// Import this seed JSON plan (`plan_id`, `batches[].tasks[]`) as the project's first TOML plan.
    #[arg(long, value_name = "SEED_JSON")]
    pub from: Option<PathBuf>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct GcArgs {
    /// Say what would be removed, remove nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Use this bound instead of `[cache] max_size` (e.g. `500MB`, `0`).
    #[arg(long, value_name = "SIZE")]
    pub max_size: Option<String>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct StatsArgs {
    /// Print the figures as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: clap_complete::Shell,
}

/// A non-negative, finite amount of CNY (`--max-spend`).
fn parse_budget(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(_) => Err(format!(
            "`{text}` is not an amount of CNY: write a number, 0 or more"
        )),
        Err(_) => Err(format!("`{text}` is not a number")),
    }
}

#[derive(Args, Debug, Clone, Default)]
pub struct GalleryArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// Write the page into DIR (default `.wanx/gallery`): `index.html`, `thumbs/`, `images/`.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct BuildArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// Decide and print, but send and write nothing (same as `wanx plan`).
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Generate the named tasks (all tasks when none is named) even if they are fresh or cached
    /// (paid); the tasks whose images they consume are only built if they need to be.
    #[arg(long)]
    pub force: bool,
    /// Fail with exit code 3, sending nothing, unless every task is fresh and `wanx.lock` would not change.
    #[arg(long)]
    pub locked: bool,
    /// Print a machine-readable summary on stdout.
    #[arg(long)]
    pub json: bool,
    /// Tasks in flight at once (each model also keeps its own quota).
    #[arg(short, long, value_name = "N", env = "WANX_JOBS")]
    pub jobs: Option<usize>,
    /// Refuse to start if the planned generations cost more than this many CNY.
    #[arg(long, value_name = "CNY", env = "WANX_MAX_SPEND", value_parser = parse_budget)]
    pub max_spend: Option<f64>,
    /// If another wanx is using this project, stop at once (exit 5) instead of waiting for it.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Args, Debug, Clone, Default)]
pub struct WatchArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// Poll the files instead of using OS notifications (network mounts, some containers).
    #[arg(long)]
    pub poll: bool,
    /// Print one JSON object per event on stdout (see the README's Watch section).
    #[arg(long)]
    pub json: bool,
    /// Tasks in flight at once (each model also keeps its own quota).
    #[arg(short, long, value_name = "N", env = "WANX_JOBS")]
    pub jobs: Option<usize>,
    /// Refuse any rebuild whose generations cost more than this many CNY.
    #[arg(long, value_name = "CNY", env = "WANX_MAX_SPEND", value_parser = parse_budget)]
    pub max_spend: Option<f64>,
    /// Serve the gallery live at ADDR (default 127.0.0.1 and a free port, printed): cards update in
    /// place as tasks are planned, generated, restored or fail. ADDR is `HOST`, `HOST:PORT` or `PORT`.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:0")]
    pub serve: Option<String>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct PlanArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// Print the plan as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Say whether a build would be refused for costing more than this many CNY (exit 4 if so).
    #[arg(long, value_name = "CNY")]
    pub max_spend: Option<f64>,
}

#[derive(Args, Debug, Clone)]
pub struct ExplainArgs {
    /// The task to explain.
    pub task: Option<String>,
    /// Key the request as the emulator would.
    #[arg(long)]
    pub emulate: bool,
    /// Print the explanation as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct EmulatorArgs {
    /// Port to listen on (0 picks a free one; the URL is printed).
    #[arg(long, default_value_t = 8701)]
    pub port: u16,
    /// Address to bind. Loopback by default.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Milliseconds from submission to result (default 300, or the configuration's).
    #[arg(long)]
    pub latency_ms: Option<u64>,
    /// A TOML file with latencies, quotas, expiry and a fault schedule (see the README).
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Accept only these API keys (repeatable); by default any non-empty key is accepted.
    #[arg(long = "key", value_name = "KEY")]
    pub keys: Vec<String>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct VerifyArgs {
    /// Restore missing or modified outputs from intact blobs, heal or quarantine damaged blobs.
    #[arg(long)]
    pub repair: bool,
    /// With `--repair`: also restore outputs edited by hand, moving each to `.wanx/replaced/` first.
    #[arg(long, requires = "repair")]
    pub force: bool,
    /// If another wanx is using this project, stop at once (exit 5) instead of waiting for it.
    #[arg(long)]
    pub no_wait: bool,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone, Default)]
pub struct GraphArgs {
    /// `text` (a tree), `dot` (Graphviz) or `mermaid`.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Decide staleness as against the emulator.
    #[arg(long)]
    pub emulate: bool,
}

/// Output formats of `wanx graph`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Dot,
    Mermaid,
}

#[derive(Args, Debug, Clone, Default)]
pub struct CleanArgs {
    /// List what would be removed, removing nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// If another wanx is using this project, stop at once (exit 5) instead of waiting for it.
    #[arg(long)]
    pub no_wait: bool,
}
