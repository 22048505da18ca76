//! What the emulator was asked and what it billed: the [`Ledger`] that `GET /emulator/ledger`
//! serves and tests read (through HTTP or [`crate::emulator::Emulator::ledger`]). Plain data, so the
//! state that fills it and the routes that serve it both sit above it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the emulator was asked and what it billed, since it started or was reset.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Ledger {
    /// Task submissions accepted.
    pub submissions: u64,
    /// Task submissions answered with an error (throttled ones included).
    pub rejected: u64,
    /// Task submissions refused for a quota (`429 Throttling.RateQuota`).
    pub throttled: u64,
    /// Authorized `GET /tasks/{id}` requests.
    pub queries: u64,
    /// Authorized `GET /tasks` (task list) requests.
    pub task_lists: u64,
    /// Result images served (truncated ones included).
    pub downloads: u64,
    /// Tasks canceled while PENDING.
    pub canceled: u64,
    /// Upload credentials issued by `getPolicy`.
    pub upload_policies: u64,
    /// Files stored through `POST /oss`.
    pub uploads: u64,
    /// Faults injected by the configured rules, delays included.
    pub faults_injected: u64,
    pub images_billed: u64,
    /// CNY, the sum of registry price × images billed.
    pub amount: f64,
    pub per_model: BTreeMap<String, ModelLedger>,
    /// Every accepted submission, in order.
    pub requests: Vec<RecordedRequest>,
}

/// One model's share of the [`Ledger`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelLedger {
    pub submissions: u64,
    pub images_billed: u64,
    /// CNY.
    pub amount: f64,
    /// Submissions refused for this model's quota.
    pub throttled: u64,
    /// The most tasks PENDING or RUNNING at once.
    pub max_in_flight: u64,
    /// Every accepted task, in submission order.
    pub timeline: Vec<TaskSpan>,
}

/// When a task was in progress, in milliseconds since the emulator started (or was reset).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpan {
    pub task_id: String,
    pub submitted_ms: u64,
    /// When it succeeded, failed or was canceled; `None` while in progress.
    pub finished_ms: Option<u64>,
}

/// An accepted submission as it arrived.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub task_id: String,
    /// The HTTP path, e.g. `/api/v1/services/aigc/text2image/image-synthesis`.
    pub path: String,
    pub model: String,
    pub body: Value,
    /// The `X-DashScope-*` headers, names lowercased (as HTTP/2 and hyper write them).
    pub headers: BTreeMap<String, String>,
    /// The kind of each media input, in field order (`base_image_url` first): `url`, `data-uri`
    /// or `oss`.
    #[serde(default)]
    pub media: Vec<String>,
}

impl RecordedRequest {
    /// A recorded header by name, in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}
