//! What the build database holds, as the rest of wanx sees it: results and their images, partial
//! results, stat-cache entries, plan keys, runs, charges, the ledger's totals and the journal's
//! entries. Plain data; the queries that read and write them are in the sibling files.

use std::fs::Metadata;

use crate::money::Money;

/// What one generation produced, by request key.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredResult {
    pub key: String,
    /// The task that first asked for it (a later task with the same key reuses it).
    pub task_id: String,
    pub model: String,
    /// The provider identity (the emulator's differs from the real service's).
    pub provider: String,
    /// The request body as sent; never headers, so never the API key.
    pub request_json: String,
    pub remote_task_id: Option<String>,
    pub images: Vec<StoredImage>,
    pub cost: Money,
    /// Unix seconds.
    pub generated_at: i64,
}

/// Images paid for under a key that has fewer than its `n` (see the module documentation).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Partial {
    pub images: Vec<StoredImage>,
    /// What they cost.
    pub cost: Money,
}

/// One image of a result, in the order the provider returned them. Stored as a JSON array in the
/// result's row, so a batch of results is one indexed query.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredImage {
    pub blake3: String,
    pub size: u64,
    /// The prompt the service actually used (after `prompt_extend`), when it reported one.
    pub actual_prompt: Option<String>,
    /// The seed it was made with, when known: the request's seed plus its offset in the batch.
    /// Without a seed the service picks one and does not say which.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Unix seconds when it was paid for (downloaded), when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<i64>,
}

/// What the stat cache knows about a file: if its size, mtime and inode are unchanged, its bytes
/// still hash to `blake3`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatEntry {
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
    pub blake3: String,
}

impl StatEntry {
    #[cfg(test)]
    /// Whether `meta` describes the file this entry was taken from, unchanged.
    pub fn matches(&self, meta: &Metadata) -> bool {
        stat_of(meta) == (self.size, self.mtime_ns, self.inode)
    }
}

/// One plan file's entry in the planner's key cache (src/planner/key_cache.rs), as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanKeys {
    /// The plan file, relative to the project root.
    pub file: String,
    /// The digest the entry is valid under.
    pub digest: Vec<u8>,
    /// Its tasks' keys, encoded.
    pub keys: Vec<u8>,
}

/// One `wanx` command's outcome, for the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunRecord {
    /// Unix seconds.
    pub started_at: i64,
    pub finished_at: i64,
    /// The subcommand (`build`, `watch`, …).
    pub command: String,
    pub emulated: bool,
    /// Task counts by action.
    pub generated: u32,
    pub restored: u32,
    pub fresh: u32,
    pub failed: u32,
    pub images_generated: u32,
    /// What the service billed that this run was the first to see (see [`Charge`]).
    pub spent: Money,
    /// What the restored tasks would have cost to generate (fresh tasks save nothing new).
    pub saved: Money,
}

/// What the service billed for one remote task, booked once (see migration 4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charge {
    /// Unix seconds.
    pub at: i64,
    pub emulated: bool,
    pub task_id: String,
    pub model: String,
    pub remote_task_id: Option<String>,
    pub images: u32,
    pub cost: Money,
}

/// All-time sums of one kind: runs and what they saved from the runs, images billed and money
/// spent from the charges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LedgerTotals {
    pub runs: u64,
    pub images_generated: u64,
    pub spent: Money,
    pub saved: Money,
}

/// The ledger's totals, real and emulated apart: emulated money was never spent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    pub real: LedgerTotals,
    pub emulated: LedgerTotals,
}

/// A generation about to be submitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalIntent {
    pub key: String,
    pub task_id: String,
    pub model: String,
    pub request_json: String,
    pub images: u32,
    /// Unix seconds.
    pub created_at: i64,
}

/// A generation that was begun and not finished: submitted (with a remote task id to poll) or
/// possibly submitted (without one: the process stopped between sending and recording).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    pub id: i64,
    pub key: String,
    pub task_id: String,
    pub model: String,
    pub request_json: String,
    pub images: u32,
    pub remote_task_id: Option<String>,
    pub created_at: i64,
    /// Images the service billed for it, once wanx saw it succeed (and booked the charge).
    pub billed: Option<u32>,
    /// Its images already in the blob store, by result index (the rest could not be fetched).
    pub saved: Vec<Option<StoredImage>>,
}

/// Size, mtime (nanoseconds since the epoch) and inode of a file, as the stat cache compares them.
/// Off unix the inode is 0.
pub fn stat_of(meta: &Metadata) -> (u64, i64, u64) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let mtime_ns = meta
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.mtime_nsec());
        (meta.len(), mtime_ns, meta.ino())
    }
    #[cfg(not(unix))]
    {
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        (meta.len(), mtime_ns, 0)
    }
}
