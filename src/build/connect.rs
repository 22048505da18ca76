//! The executor's settings from the project: the provider client (DashScope, or the in-process
//! emulator), the poll policy, the task timeout and the models' recent latencies.

use crate::emulator::{Emulator, EmulatorConfig};
use crate::error::{Error, Result};
use crate::executor::PollPolicy;
use crate::executor::dashscope::Client;
use crate::executor::secret::ApiKey;
use crate::planner::Project;
use crate::store::Store;
use crate::term::printer::Printer;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A client for the provider the build talks to: the in-process emulator, or DashScope with the
/// API key from the environment.
pub(super) async fn connect(
    project: &Project,
    emulate: bool,
    printer: &Printer,
) -> Result<(Arc<Client>, Option<Emulator>)> {
    let mut emulator = None;
    let (base_url, key) = if emulate {
        let config = EmulatorConfig {
            registry: project.registry.clone(),
            ..EmulatorConfig::default()
        };
        let emu = Emulator::start(config, ([127, 0, 0, 1], 0).into())
            .await
            .map_err(Error::Emulator)?;
        let url = emu.base_url();
        printer.verbose("Emulator", &format!("listening at {url}"));
        emulator = Some(emu);
        (url, ApiKey::new("wanx-emulator-key"))
    } else {
        let var = project.api_key_env();
        let key = std::env::var(&var)
            .ok()
            .filter(|k| !k.trim().is_empty())
            .ok_or(Error::MissingApiKey { var })?;
        (project.base_url(), ApiKey::new(key.trim()))
    };
    let timeout = project
        .manifest
        .provider
        .request_timeout
        .filter(|t| t.is_finite() && *t > 0.0)
        .map_or(Duration::from_secs(120), Duration::from_secs_f64);
    let client = Client::with_timeout(
        &base_url,
        key,
        project.manifest.provider.workspace.clone(),
        timeout,
    )
    .map_err(Error::HttpClient)?;
    Ok((Arc::new(client), emulator))
}

/// Recent latencies per model, for aiming the polling.
pub(super) fn latency_history(store: &Store, models: &[&str]) -> Result<HashMap<String, Vec<f64>>> {
    let mut history = HashMap::new();
    for model in models {
        if !history.contains_key(*model) {
            history.insert((*model).to_owned(), store.latencies(model, 50)?);
        }
    }
    Ok(history)
}

pub(super) fn poll_policy(project: &Project) -> PollPolicy {
    match project.manifest.build.poll_interval {
        Some(secs) if secs > 0.0 => {
            let first = Duration::from_secs_f64(secs);
            PollPolicy {
                first,
                max: first.max(PollPolicy::REAL.max),
            }
        }
        _ => PollPolicy::REAL,
    }
}

pub(super) fn task_timeout(project: &Project) -> Duration {
    project
        .manifest
        .build
        .task_timeout
        .map_or(Duration::from_secs(600), Duration::from_secs_f64)
}
