//! How the [`crate::emulator`] behaves: latencies, quotas, expiry and the fault schedule, built in code
//! ([`EmulatorConfig`]) or read from a TOML file ([`EmulatorConfig::from_toml`], format in the
//! [`crate::emulator`] module doc).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::registry::{ModelOverride, ModelSpec, Registry};

/// How the emulator behaves.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// Which models exist, their rules, prices and quotas.
    pub registry: Registry,
    /// Time from submission to the end of a task (PENDING for the first tenth, then RUNNING), for
    /// models without an entry in `latency_per_model`.
    pub latency: Duration,
    /// Per real model id: a base latency plus a deterministic jitter.
    pub latency_per_model: BTreeMap<String, LatencySpec>,
    /// The accepted API keys; `None` accepts any non-empty Bearer token.
    pub valid_keys: Option<Vec<String>>,
    /// Enforce each model's concurrent-task and submit-rate quotas (protocol §5).
    pub enforce_quotas: bool,
    /// Per real model id: quota values that replace the registry's.
    pub quotas: BTreeMap<String, Quota>,
    /// How long a task stays queryable after submission, and a result URL valid after the task
    /// ends (24 h on the service); uploaded objects live twice as long (48 h on the service).
    pub task_ttl: Duration,
    /// Seeds the rate-based faults and the latency jitter: the same seed and the same sequence of
    /// requests give the same faults and latencies.
    pub fault_seed: u64,
    /// Faults to inject, first matching rule that fires wins.
    pub faults: Vec<FaultRule>,
}

impl Default for EmulatorConfig {
    fn default() -> EmulatorConfig {
        EmulatorConfig {
            registry: Registry::builtin(),
            latency: Duration::from_millis(300),
            latency_per_model: BTreeMap::new(),
            valid_keys: None,
            enforce_quotas: true,
            quotas: BTreeMap::new(),
            task_ttl: Duration::from_secs(24 * 3600),
            fault_seed: 0,
            faults: Vec::new(),
        }
    }
}

/// A latency distribution: `base_ms` plus a jitter in `0..=jitter_ms` drawn deterministically from
/// the fault seed, the model and the task's submission number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencySpec {
    pub base_ms: u64,
    #[serde(default)]
    pub jitter_ms: u64,
}

/// Quota values that replace the registry's for one model; `None` keeps the registry's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Tasks in progress (PENDING + RUNNING) at once.
    pub concurrency: Option<u32>,
    /// Accepted submissions in any sliding one-second window.
    pub submit_rps: Option<u32>,
}

/// The event a fault rule watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultEvent {
    /// A task submission that passed validation.
    Submit,
    /// An authorized `GET /tasks/{id}`.
    Query,
    /// A `GET` of a result image.
    Download,
    /// A multipart `POST /oss` upload.
    Upload,
}

/// One fault rule: on the `nth` occurrences of `on` (counted per rule, only occurrences for `model`
/// when it is set), and/or with probability `rate` on each occurrence, inject `fault`. With neither
/// `nth` nor `rate` the rule fires on every occurrence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    pub on: FaultEvent,
    #[serde(default)]
    pub model: Option<String>,
    /// 1-based occurrence numbers.
    #[serde(default)]
    pub nth: Option<Vec<u64>>,
    /// Probability in `[0, 1]`.
    #[serde(default)]
    pub rate: Option<f64>,
    pub fault: Fault,
}

/// What an injected fault does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// An error answer `{"code","message","request_id"}` with this status (an OSS-style XML error on
    /// downloads and uploads).
    Http {
        status: u16,
        code: String,
        #[serde(default = "default_fault_message")]
        message: String,
    },
    /// Submit only: the task is accepted but ends FAILED with `output.code`/`message`; nothing billed.
    /// `code` defaults to `InvalidParameter`: the task fails and is not retried.
    TaskFailed {
        #[serde(default = "default_task_failed_code")]
        code: String,
        #[serde(default = "default_fault_message")]
        message: String,
    },
    /// Submit only: the task SUCCEEDS, but the last `failed` results carry an error instead of a URL;
    /// only the successes are counted and billed (all failed: the task FAILS).
    PartialFailure { failed: u32 },
    /// Download only: the first half of the PNG, with a matching `content-length`.
    Truncate,
    /// Close the connection without an answer.
    Reset,
    /// Answer normally, `ms` late.
    Delay { ms: u64 },
    /// Submit only: the task is created (and billed as usual), then the connection closes without
    /// an answer: the client cannot know the task exists.
    ResetAfterAccept,
    /// Submit only: the task is created, and the answer sent `ms` late (past a client's read
    /// timeout).
    DelayAfterAccept { ms: u64 },
}

fn default_task_failed_code() -> String {
    "InvalidParameter".to_owned()
}

fn default_fault_message() -> String {
    "Injected by the wanx emulator.".to_owned()
}

impl EmulatorConfig {
    /// Reads the TOML format described in the [`crate::emulator`] module doc. Unknown fields, unknown
    /// models and faults that cannot happen on their event are errors.
    pub fn from_toml(text: &str) -> Result<EmulatorConfig, String> {
        let settings: Settings = toml::from_str(text).map_err(|e| e.to_string())?;
        settings.into_config()
    }

    /// The concurrency and submit-rate quota of `spec`, with any override applied.
    pub(crate) fn quota(&self, spec: &ModelSpec) -> (u32, u32) {
        let o = self.quotas.get(&spec.id).copied().unwrap_or_default();
        (
            o.concurrency.unwrap_or(spec.concurrency),
            o.submit_rps.unwrap_or(spec.submit_rps),
        )
    }
}

/// The TOML file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    latency_ms: Option<u64>,
    #[serde(default)]
    latency_per_model: BTreeMap<String, LatencySpec>,
    valid_keys: Option<Vec<String>>,
    enforce_quotas: Option<bool>,
    #[serde(default)]
    quotas: BTreeMap<String, Quota>,
    task_ttl_ms: Option<u64>,
    #[serde(default)]
    fault_seed: u64,
    #[serde(default)]
    faults: Vec<FaultRule>,
    /// CNY per image, by model (as in `wanx.toml`).
    #[serde(default)]
    prices: BTreeMap<String, f64>,
    /// Registry entries, as `[models.NAME]` in `wanx.toml`.
    #[serde(default)]
    models: BTreeMap<String, ModelOverride>,
}

impl Settings {
    fn into_config(self) -> Result<EmulatorConfig, String> {
        let defaults = EmulatorConfig::default();
        let mut registry = defaults.registry;
        registry
            .extend(&self.prices, &self.models)
            .map_err(|errors| {
                errors
                    .into_iter()
                    .map(|(at, why)| format!("models.{at}: {why}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            })?;
        let known = |section: &str, model: &str| {
            if registry.models().any(|spec| spec.id == model) {
                Ok(())
            } else {
                Err(format!(
                    "{section}: unknown model `{model}` (use the real model id, e.g. `wan2.2-t2i-flash`)"
                ))
            }
        };
        for model in self.latency_per_model.keys() {
            known("latency_per_model", model)?;
        }
        for model in self.quotas.keys() {
            known("quotas", model)?;
        }
        for (i, rule) in self.faults.iter().enumerate() {
            if let Some(model) = &rule.model {
                known(&format!("faults[{i}]"), model)?;
            }
            check_rule(rule).map_err(|why| format!("faults[{i}]: {why}"))?;
        }
        Ok(EmulatorConfig {
            registry,
            latency: self
                .latency_ms
                .map_or(defaults.latency, Duration::from_millis),
            latency_per_model: self.latency_per_model,
            valid_keys: self.valid_keys,
            enforce_quotas: self.enforce_quotas.unwrap_or(defaults.enforce_quotas),
            quotas: self.quotas,
            task_ttl: self
                .task_ttl_ms
                .map_or(defaults.task_ttl, Duration::from_millis),
            fault_seed: self.fault_seed,
            faults: self.faults,
        })
    }
}

/// A rule whose schedule and fault make sense together.
pub(crate) fn check_rule(rule: &FaultRule) -> Result<(), String> {
    if let Some(rate) = rule.rate
        && !(0.0..=1.0).contains(&rate)
    {
        return Err(format!("`rate` must be within 0 and 1, got {rate}"));
    }
    if rule.nth.as_ref().is_some_and(|nth| nth.contains(&0)) {
        return Err("`nth` counts from 1".to_owned());
    }
    let only = |event: FaultEvent, what: &str| {
        if rule.on == event {
            Ok(())
        } else {
            Err(format!("a `{what}` fault can only happen on `{event:?}`").to_lowercase())
        }
    };
    match &rule.fault {
        Fault::Http { status, .. } if !(400..=599).contains(status) => Err(format!(
            "an `http` fault needs a status within 400 and 599, got {status}"
        )),
        Fault::TaskFailed { .. } => only(FaultEvent::Submit, "task_failed"),
        Fault::PartialFailure { failed: 0 } => {
            Err("a `partial_failure` needs `failed` of at least 1".to_owned())
        }
        Fault::PartialFailure { .. } => only(FaultEvent::Submit, "partial_failure"),
        Fault::Truncate => only(FaultEvent::Download, "truncate"),
        Fault::ResetAfterAccept => only(FaultEvent::Submit, "reset_after_accept"),
        Fault::DelayAfterAccept { .. } => only(FaultEvent::Submit, "delay_after_accept"),
        Fault::Http { .. } | Fault::Reset | Fault::Delay { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
latency_ms = 200
task_ttl_ms = 60000
valid_keys = ["sk-test"]
fault_seed = 42

[latency_per_model."wan2.2-t2i-flash"]
base_ms = 1500
jitter_ms = 500

[quotas."wan2.2-t2i-flash"]
concurrency = 4

[[faults]]
on = "submit"
model = "wan2.2-t2i-flash"
nth = [2, 5]
fault = { kind = "http", status = 429, code = "Throttling", message = "Requests throttling triggered." }

[[faults]]
on = "submit"
nth = [3]
fault = { kind = "partial_failure", failed = 1 }

[[faults]]
on = "download"
rate = 0.1
fault = { kind = "truncate" }

[[faults]]
on = "query"
nth = [1]
fault = { kind = "delay", ms = 50 }
"#;

    #[test]
    fn parses_the_documented_example() {
        let config = EmulatorConfig::from_toml(EXAMPLE).unwrap();
        assert_eq!(config.latency, Duration::from_millis(200));
        assert_eq!(config.task_ttl, Duration::from_secs(60));
        assert_eq!(config.fault_seed, 42);
        assert!(config.enforce_quotas);
        assert_eq!(
            config.latency_per_model["wan2.2-t2i-flash"],
            LatencySpec {
                base_ms: 1500,
                jitter_ms: 500
            }
        );
        let flash = config.registry.get("wan2.2-t2i-flash").unwrap();
        assert_eq!(config.quota(flash), (4, 2), "rps stays the registry's");
        assert_eq!(config.faults.len(), 4);
        assert_eq!(
            config.faults[0],
            FaultRule {
                on: FaultEvent::Submit,
                model: Some("wan2.2-t2i-flash".into()),
                nth: Some(vec![2, 5]),
                rate: None,
                fault: Fault::Http {
                    status: 429,
                    code: "Throttling".into(),
                    message: "Requests throttling triggered.".into()
                },
            }
        );
        assert_eq!(config.faults[1].fault, Fault::PartialFailure { failed: 1 });
        assert_eq!(config.faults[2].rate, Some(0.1));
        assert_eq!(config.faults[3].fault, Fault::Delay { ms: 50 });
    }

    #[test]
    fn an_empty_file_is_the_default() {
        let config = EmulatorConfig::from_toml("").unwrap();
        assert_eq!(config.latency, EmulatorConfig::default().latency);
        assert_eq!(config.task_ttl, Duration::from_secs(86_400));
        assert!(config.faults.is_empty() && config.valid_keys.is_none());
    }

    #[test]
    fn rejects_what_cannot_happen() {
        let error = |text: &str| EmulatorConfig::from_toml(text).unwrap_err();
        assert!(error("latency = 3").contains("unknown field"));
        assert!(error("[quotas.nope]\nconcurrency = 1").contains("unknown model `nope`"));
        let rule = |on: &str, fault: &str| format!("[[faults]]\non = \"{on}\"\nfault = {fault}");
        assert!(
            error(&rule("query", "{ kind = \"truncate\" }")).contains("only happen on `download`")
        );
        assert!(
            error(&rule(
                "download",
                "{ kind = \"task_failed\", code = \"X\" }"
            ))
            .contains("only happen on `submit`")
        );
        assert!(
            error(&rule(
                "submit",
                "{ kind = \"http\", status = 200, code = \"X\" }"
            ))
            .contains("400")
        );
        assert!(error(&rule("submit", "{ kind = \"explode\" }")).contains("explode"));
        assert!(
            error(&rule("query", "{ kind = \"reset_after_accept\" }"))
                .contains("only happen on `submit`")
        );
        assert!(
            error(&rule(
                "download",
                "{ kind = \"delay_after_accept\", ms = 5 }"
            ))
            .contains("only happen on `submit`")
        );
        assert!(
            error(&format!(
                "{}\nrate = 2.0",
                rule("query", "{ kind = \"reset\" }")
            ))
            .contains("rate")
        );
        assert!(
            error(&format!(
                "{}\nnth = [0]",
                rule("query", "{ kind = \"reset\" }")
            ))
            .contains("from 1")
        );
    }
}
