//! `Store`: the local build database `.wanx/wanx.db` (sqlite, through rusqlite). It holds what a
//! build learns and must not forget: results by request key (the request, its images with their
//! actual prompts, cost, provider task id), the index of blobs in the blob store, a stat cache
//! (path, size, mtime, inode → blake3, so a no-op build hashes nothing), the run ledger (spent and
//! saved per run), the charges (what the service billed per remote task, booked once, the moment wanx
//! first sees it succeed: cumulative spend is their sum), per-model latencies, the in-flight journal (a remote task id is recorded before
//! wanx waits for it, so a crash never makes a build pay twice for the same images) and partial
//! results (images paid for under a key that has not all its images yet: the next generation of
//! that key asks only for the missing ones).
//!
//! The API is blocking: callers on the async runtime use `spawn_blocking` or a dedicated thread.
//! Every write is one transaction, begun `IMMEDIATE` so concurrent `wanx` processes queue on the
//! busy timeout instead of failing on a lock upgrade. The schema is an append-only list of
//! migrations tracked by `pragma user_version`. Money is stored as integer micro-yuan. The API key
//! is never stored: only request bodies, which do not contain it.

pub mod blob_store;

use std::collections::HashMap;
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::Type;
use rusqlite::{
    Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params, params_from_iter,
};

use crate::error::{Error, Result};
use crate::money::Money;

/// The database's file name inside the state directory (`.wanx`).
pub const DB_FILE: &str = "wanx.db";

const RESULTS: &str = "results";
const BLOBS: &str = "blobs";
const STAT_CACHE: &str = "stat_cache";
const RUNS: &str = "runs";
const JOURNAL: &str = "journal";
const LATENCIES: &str = "latencies";
const PLAN_KEYS: &str = "plan_keys";
const PARTIALS: &str = "partials";
const CHARGES: &str = "charges";

/// How long a write waits for another `wanx` holding the database.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Keys per batched lookup; unused slots are bound to NULL so every batch reuses one statement.
const BATCH: usize = 500;

/// Latency samples kept per model.
const LATENCIES_KEPT: usize = 1000;

/// The schema, one migration per entry, applied in order. Append only: a released migration never
/// changes, since databases in the field have already run it. The SQL names tables literally so a
/// later rename of a constant cannot rewrite history; a test checks the constants against it.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    "
    CREATE TABLE results (
        key TEXT PRIMARY KEY,
        task_id TEXT NOT NULL,
        model TEXT NOT NULL,
        provider TEXT NOT NULL,
        request_json TEXT NOT NULL,
        remote_task_id TEXT,
        cost INTEGER NOT NULL,
        generated_at INTEGER NOT NULL,
        images TEXT NOT NULL
    );
    CREATE TABLE blobs (
        blake3 TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        added_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE stat_cache (
        path TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        inode INTEGER NOT NULL,
        blake3 TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        started_at INTEGER NOT NULL,
        finished_at INTEGER NOT NULL,
        command TEXT NOT NULL,
        emulated INTEGER NOT NULL,
        generated INTEGER NOT NULL,
        restored INTEGER NOT NULL,
        fresh INTEGER NOT NULL,
        failed INTEGER NOT NULL,
        images_generated INTEGER NOT NULL,
        spent INTEGER NOT NULL,
        saved INTEGER NOT NULL
    );
    CREATE TABLE journal (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL,
        task_id TEXT NOT NULL,
        model TEXT NOT NULL,
        request_json TEXT NOT NULL,
        images INTEGER NOT NULL,
        remote_task_id TEXT,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE latencies (
        id INTEGER PRIMARY KEY,
        model TEXT NOT NULL,
        seconds REAL NOT NULL
    );
    CREATE INDEX latencies_by_model ON latencies (model, id);
    ",
    // 2: the planner's key cache (src/planner/key_cache.rs), one row per plan file.
    "
    CREATE TABLE plan_keys (
        file TEXT PRIMARY KEY,
        digest BLOB NOT NULL,
        keys BLOB NOT NULL
    );
    ",
    // 3: images paid for under a key whose generation ended short (a partial failure whose
    // follow-ups failed, or a build stopped between them). Never served as a result.
    "
    CREATE TABLE partials (
        key TEXT PRIMARY KEY,
        images TEXT NOT NULL,
        cost INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    ",
    // 4: when a blob was last used (generated or restored), for evicting the least recently used
    // beyond `[cache] max_size` (src/commands/gc.rs). 0 means: as old as its `added_at`.
    "
    ALTER TABLE blobs ADD COLUMN used_at INTEGER NOT NULL DEFAULT 0;
    ",
    // 5: money. `charges` books each remote task the service billed, once, when wanx first sees
    // it succeed (in the transaction that marks its journal entry `billed`): cumulative `spent` is
    // their sum, so a build killed after paying still counts. A journal entry keeps the images of
    // its task already stored (`saved`, by result index) while the others could not be fetched.
    // Earlier runs' spend becomes one charge per run.
    "
    ALTER TABLE journal ADD COLUMN billed INTEGER;
    ALTER TABLE journal ADD COLUMN saved TEXT;
    CREATE TABLE charges (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        emulated INTEGER NOT NULL,
        task_id TEXT NOT NULL,
        model TEXT NOT NULL,
        remote_task_id TEXT,
        images INTEGER NOT NULL,
        cost INTEGER NOT NULL
    );
    INSERT INTO charges (at, emulated, task_id, model, remote_task_id, images, cost)
        SELECT finished_at, emulated, '', '', NULL, images_generated, spent FROM runs
        WHERE spent > 0;
    ",
    // 6: the canonical form of the last request built for each task (src/planner/why.rs), so a plan can
    // say what changed since.
    "
    CREATE TABLE built_requests (
        task_id TEXT PRIMARY KEY,
        key TEXT NOT NULL,
        request TEXT NOT NULL
    ) WITHOUT ROWID;
    ",
    // 7: what each finished build saved, by model (`wanx stats`): the price of the images it restored
    // instead of paying again. A run's `saved` is the sum of its rows.
    "
    CREATE TABLE savings (
        run_id INTEGER NOT NULL,
        model TEXT NOT NULL,
        images INTEGER NOT NULL,
        value INTEGER NOT NULL
    );
    ",
    // 8: each task's last failure (its key and message) until the task is built again: what
    // `wanx gallery` shows as a failed card.
    "
    CREATE TABLE failures (
        task_id TEXT PRIMARY KEY,
        key TEXT NOT NULL,
        message TEXT NOT NULL,
        at INTEGER NOT NULL
    ) WITHOUT ROWID;
    ",
];

mod cache;
pub use cache::{BlobUse, ModelFigures, MonthFigures};

/// The build database; see the module documentation.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

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
    /// Whether `meta` describes the file this entry was taken from, unchanged.
    #[cfg(test)]
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

impl Store {
    /// Opens (creating if needed) `state_dir/wanx.db` and brings its schema up to date.
    pub fn open(state_dir: &Path) -> Result<Store> {
        crate::project::state_dir::create(state_dir)
            .map_err(|e| Error::io("could not create", state_dir, e))?;
        let path = state_dir.join(DB_FILE);
        let conn = Connection::open(&path).map_err(|source| Error::Store {
            path: path.clone(),
            source,
        })?;
        Store::init(conn, path)
    }

    /// A private database in memory, for tests and `--dry-run`s.
    #[cfg(test)]
    pub fn open_in_memory() -> Result<Store> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| Error::Store {
            path: path.clone(),
            source,
        })?;
        Store::init(conn, path)
    }

    fn init(mut conn: Connection, path: PathBuf) -> Result<Store> {
        let configured = configure(&conn);
        let version = configured.and_then(|()| migrate(&mut conn));
        match version {
            Ok(Ok(())) => Ok(Store { conn, path }),
            Ok(Err(found)) => Err(Error::Usage {
                message: format!(
                    "the build database `{}` has schema version {found}, newer than this wanx knows ({})",
                    path.display(),
                    MIGRATIONS.len()
                ),
                hint: Some(
                    "upgrade wanx, or move `.wanx/` away to start a fresh cache (the lock and your images are kept)"
                        .to_owned(),
                ),
            }),
            Err(source) => Err(Error::Store { path, source }),
        }
    }

    /// The result stored for `key`.
    pub fn result(&self, key: &str) -> Result<Option<StoredResult>> {
        Ok(self.results(&[key])?.remove(key))
    }

    /// The stored results for those of `keys` that have one, in batches of [`BATCH`] keys.
    pub fn results(&self, keys: &[&str]) -> Result<HashMap<String, StoredResult>> {
        self.read(|conn| {
            let slots = vec!["?"; BATCH].join(",");
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT key, task_id, model, provider, request_json, remote_task_id, cost,
                   generated_at, images
                 FROM {RESULTS} WHERE key IN ({slots})"
            ))?;
            let mut found = HashMap::with_capacity(keys.len());
            for chunk in keys.chunks(BATCH) {
                let bound = chunk
                    .iter()
                    .map(|k| Some(*k))
                    .chain(std::iter::repeat(None))
                    .take(BATCH);
                let mut rows = stmt.query(params_from_iter(bound))?;
                while let Some(row) = rows.next()? {
                    let result = result_from_row(row)?;
                    found.insert(result.key.clone(), result);
                }
            }
            Ok(found)
        })
    }

    /// Every stored result, newest first: what `wanx gallery` shows as a task's earlier versions
    /// (each result names the task that first asked for it).
    pub fn all_results(&self) -> Result<Vec<StoredResult>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT key, task_id, model, provider, request_json, remote_task_id, cost,
                   generated_at, images
                 FROM {RESULTS} ORDER BY generated_at DESC, rowid DESC"
            ))?;
            let rows = stmt.query_map([], result_from_row)?;
            rows.collect()
        })
    }

    /// The last request built for each of `task_ids` that has one: its key and canonical form.
    pub fn built_requests(
        &self,
        task_ids: &[&str],
    ) -> Result<HashMap<String, (String, serde_json::Value)>> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT key, request FROM built_requests WHERE task_id = ?1")?;
            let mut found = HashMap::new();
            for id in task_ids {
                let row: Option<(String, String)> = stmt
                    .query_row([id], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()?;
                if let Some((key, text)) = row
                    && let Ok(value) = serde_json::from_str(&text)
                {
                    found.insert((*id).to_owned(), (key, value));
                }
            }
            Ok(found)
        })
    }

    /// Remembers the requests just built: `(task id, key hex, canonical form)`.
    pub fn put_built_requests(&mut self, rows: &[(String, String, String)]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let mut put = tx.prepare_cached(
                "INSERT OR REPLACE INTO built_requests (task_id, key, request) VALUES (?1, ?2, ?3)",
            )?;
            for (id, key, request) in rows {
                put.execute(params![id, key, request])?;
            }
            Ok(())
        })
    }

    /// The images paid for under `key` short of a whole result, if any.
    pub fn partial(&self, key: &str) -> Result<Option<Partial>> {
        self.read(|conn| {
            conn.prepare_cached(&format!(
                "SELECT images, cost FROM {PARTIALS} WHERE key = ?1"
            ))?
            .query_row([key], |row| {
                Ok(Partial {
                    images: serde_json::from_str(row.get_ref(0)?.as_str()?).map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(0, Type::Text, Box::new(e))
                    })?,
                    cost: Money(row.get(1)?),
                })
            })
            .optional()
        })
    }

    /// The pool of images paid for under `key` (which names a request without its `n`): its
    /// result, or its partial result when that holds more (images paid for by a request that fell
    /// short). Its images are in pool order: index `i` was made with seed `seed + i` when seeded.
    pub fn pool(&self, key: &str) -> Result<Option<Partial>> {
        let result = self.result(key)?.map(|r| Partial {
            images: r.images,
            cost: r.cost,
        });
        let partial = self.partial(key)?;
        Ok(match (result, partial) {
            (Some(r), Some(p)) if p.images.len() > r.images.len() => Some(p),
            (Some(r), _) => Some(r),
            (None, p) => p,
        })
    }

    /// How many images the pools of those of `keys` that have one hold.
    pub fn partials_held(&self, keys: &[&str]) -> Result<HashMap<String, u32>> {
        let mut held = HashMap::new();
        for key in keys {
            if let Some(pool) = self.pool(key)? {
                held.insert((*key).to_owned(), pool.images.len() as u32);
            }
        }
        Ok(held)
    }

    /// Records (replacing) the partial result of `key`, indexes its images as blobs and closes the
    /// `journal` entries that produced them, in one transaction: a crash keeps either the entries
    /// (resumed by the next build) or the partial.
    pub fn put_partial_closing(
        &mut self,
        key: &str,
        partial: &Partial,
        journal: &[i64],
        now: i64,
    ) -> Result<()> {
        let images = serde_json::to_string(&partial.images)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)));
        self.write(|tx| {
            close_journal(tx, journal)?;
            tx.prepare_cached(&format!(
                "INSERT INTO {PARTIALS} (key, images, cost, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (key) DO UPDATE SET images = excluded.images, cost = excluded.cost,
                   updated_at = excluded.updated_at"
            ))?
            .execute(params![key, images?, partial.cost.0, now])?;
            index_blobs(tx, &partial.images, now)
        })
    }

    /// Records a result and indexes its images as blobs, in one transaction. Replaces any earlier
    /// result for the same key. The caller stores only complete generations (invariant 6).
    pub fn put_result(&mut self, r: &StoredResult) -> Result<()> {
        self.put_result_closing(r, &[])
    }

    /// [`Store::put_result`] and [`Store::journal_finish`] of the entries that paid for it, in one
    /// transaction: a crash leaves the images either recorded or still journaled (the next build
    /// resumes them, free), never paid for and forgotten.
    pub fn put_result_closing(&mut self, r: &StoredResult, journal: &[i64]) -> Result<()> {
        let images = serde_json::to_string(&r.images)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)));
        self.write(|tx| {
            close_journal(tx, journal)?;
            tx.prepare_cached(&format!("DELETE FROM {PARTIALS} WHERE key = ?1"))?
                .execute([&r.key])?;
            tx.prepare_cached(&format!(
                "INSERT INTO {RESULTS} (key, task_id, model, provider, request_json,
                   remote_task_id, cost, generated_at, images)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (key) DO UPDATE SET task_id = excluded.task_id,
                   model = excluded.model, provider = excluded.provider,
                   request_json = excluded.request_json, remote_task_id = excluded.remote_task_id,
                   cost = excluded.cost, generated_at = excluded.generated_at,
                   images = excluded.images"
            ))?
            .execute(params![
                r.key,
                r.task_id,
                r.model,
                r.provider,
                r.request_json,
                r.remote_task_id,
                r.cost.0,
                r.generated_at,
                images?
            ])?;
            index_blobs(tx, &r.images, r.generated_at)
        })
    }

    /// Whether the blob index lists `hash` (the file itself may still need checking).
    #[cfg(test)]
    pub fn blob_known(&self, hash: &str) -> Result<bool> {
        self.read(|conn| {
            conn.prepare_cached(&format!("SELECT 1 FROM {BLOBS} WHERE blake3 = ?1"))?
                .query_row([hash], |_| Ok(()))
                .optional()
                .map(|found| found.is_some())
        })
    }

    /// Every entry of the planner's key cache.
    pub fn plan_keys(&self) -> Result<Vec<PlanKeys>> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT file, digest, keys FROM {PLAN_KEYS}"))?;
            stmt.query_map([], |row| {
                Ok(PlanKeys {
                    file: row.get(0)?,
                    digest: row.get(1)?,
                    keys: row.get(2)?,
                })
            })?
            .collect()
        })
    }

    /// Replaces the key cache's entries of `rows`' plan files and drops those of `removed`.
    pub fn put_plan_keys(&mut self, rows: &[PlanKeys], removed: &[String]) -> Result<()> {
        self.write(|tx| {
            let mut put = tx.prepare_cached(&format!(
                "INSERT OR REPLACE INTO {PLAN_KEYS} (file, digest, keys) VALUES (?1, ?2, ?3)"
            ))?;
            for row in rows {
                put.execute(params![row.file, row.digest, row.keys])?;
            }
            let mut drop =
                tx.prepare_cached(&format!("DELETE FROM {PLAN_KEYS} WHERE file = ?1"))?;
            for file in removed {
                drop.execute([file])?;
            }
            Ok(())
        })
    }

    /// The whole stat cache, by project-relative path, in one query.
    pub fn stat_cache(&self) -> Result<HashMap<String, StatEntry>> {
        self.read(|conn| {
            let count: i64 = conn
                .prepare_cached(&format!("SELECT count(*) FROM {STAT_CACHE}"))?
                .query_row([], |row| row.get(0))?;
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT path, size, mtime_ns, inode, blake3 FROM {STAT_CACHE}"
            ))?;
            let mut rows = stmt.query([])?;
            let mut cache = HashMap::with_capacity(count as usize);
            while let Some(row) = rows.next()? {
                let entry = StatEntry {
                    size: row.get::<_, i64>(1)? as u64,
                    mtime_ns: row.get(2)?,
                    inode: row.get::<_, i64>(3)? as u64,
                    blake3: row.get(4)?,
                };
                cache.insert(row.get(0)?, entry);
            }
            Ok(cache)
        })
    }

    /// Inserts or replaces stat cache entries, in one transaction.
    pub fn put_stats(&mut self, entries: &[(String, StatEntry)]) -> Result<()> {
        self.write(|tx| {
            let mut stmt = tx.prepare_cached(&format!(
                "INSERT INTO {STAT_CACHE} (path, size, mtime_ns, inode, blake3)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (path) DO UPDATE SET size = excluded.size,
                   mtime_ns = excluded.mtime_ns, inode = excluded.inode, blake3 = excluded.blake3"
            ))?;
            for (path, e) in entries {
                stmt.execute(params![
                    path,
                    e.size as i64,
                    e.mtime_ns,
                    e.inode as i64,
                    e.blake3
                ])?;
            }
            Ok(())
        })
    }

    /// Appends a run to the ledger, returning its id.
    pub fn record_run(&mut self, run: &RunRecord) -> Result<i64> {
        self.write(|tx| {
            tx.prepare_cached(&format!(
                "INSERT INTO {RUNS} (started_at, finished_at, command, emulated, generated, restored,
                   fresh, failed, images_generated, spent, saved)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
            ))?
            .execute(params![
                run.started_at,
                run.finished_at,
                run.command,
                run.emulated,
                run.generated,
                run.restored,
                run.fresh,
                run.failed,
                run.images_generated,
                run.spent.0,
                run.saved.0
            ])?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// Records what run `run_id` saved, by model: `(model, images restored, their price)`.
    pub fn record_savings(&mut self, run_id: i64, by_model: &[(String, u32, Money)]) -> Result<()> {
        if by_model.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let mut put = tx.prepare_cached(
                "INSERT INTO savings (run_id, model, images, value) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (model, images, value) in by_model {
                put.execute(params![run_id, model, images, value.0])?;
            }
            Ok(())
        })
    }

    /// Remembers the tasks that failed (`(task id, key hex, message)`) and forgets the failures of
    /// the tasks that were built.
    pub fn record_failures(
        &mut self,
        failed: &[(String, String, String)],
        built: &[String],
        at: i64,
    ) -> Result<()> {
        if failed.is_empty() && built.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let mut forget = tx.prepare_cached("DELETE FROM failures WHERE task_id = ?1")?;
            for id in built {
                forget.execute([id])?;
            }
            let mut put = tx.prepare_cached(
                "INSERT OR REPLACE INTO failures (task_id, key, message, at) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (id, key, message) in failed {
                put.execute(params![id, key, message, at])?;
            }
            Ok(())
        })
    }

    /// Each task's last failure: task id → (key hex, message).
    pub fn failures(&self) -> Result<HashMap<String, (String, String)>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT task_id, key, message FROM failures")?;
            stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?
                .collect()
        })
    }

    /// All-time sums of the ledger, real and emulated apart.
    pub fn ledger_totals(&self) -> Result<Ledger> {
        self.read(|conn| {
            let mut ledger = Ledger::default();
            let mut runs = conn.prepare_cached(&format!(
                "SELECT emulated, count(*), sum(saved) FROM {RUNS} GROUP BY emulated"
            ))?;
            let mut rows = runs.query([])?;
            while let Some(row) = rows.next()? {
                let totals = totals_of(&mut ledger, row.get(0)?);
                totals.runs = row.get::<_, i64>(1)? as u64;
                totals.saved = Money(row.get(2)?);
            }
            let mut charges = conn.prepare_cached(&format!(
                "SELECT emulated, sum(images), sum(cost) FROM {CHARGES} GROUP BY emulated"
            ))?;
            let mut rows = charges.query([])?;
            while let Some(row) = rows.next()? {
                let totals = totals_of(&mut ledger, row.get(0)?);
                totals.images_generated = row.get::<_, i64>(1)? as u64;
                totals.spent = Money(row.get(2)?);
            }
            Ok(ledger)
        })
    }

    /// Books `charge` for journal entry `id` and marks the entry billed, in one transaction, unless
    /// it was booked before. Returns whether it was booked now.
    pub fn journal_billed(&mut self, id: i64, charge: &Charge) -> Result<bool> {
        self.write(|tx| {
            let marked = tx
                .prepare_cached(&format!(
                    "UPDATE {JOURNAL} SET billed = ?2 WHERE id = ?1 AND billed IS NULL"
                ))?
                .execute(params![id, charge.images])?;
            if marked == 0 {
                return Ok(false);
            }
            insert_charge(tx, charge)?;
            Ok(true)
        })
    }

    /// Books a charge without a journal entry.
    #[cfg(test)]
    pub fn book(&mut self, charge: &Charge) -> Result<()> {
        self.write(|tx| insert_charge(tx, charge))
    }

    /// Records the images of journal entry `id` already stored, by result index.
    pub fn journal_saved(&mut self, id: i64, saved: &[Option<StoredImage>]) -> Result<()> {
        let saved = serde_json::to_string(saved)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)));
        self.write(|tx| {
            tx.prepare_cached(&format!("UPDATE {JOURNAL} SET saved = ?2 WHERE id = ?1"))?
                .execute(params![id, saved?])?;
            Ok(())
        })
    }

    /// Records, before submitting, a generation about to be paid for. Returns the journal id.
    pub fn journal_begin(&mut self, entry: &JournalIntent) -> Result<i64> {
        self.write(|tx| {
            tx.prepare_cached(&format!(
                "INSERT INTO {JOURNAL} (key, task_id, model, request_json, images, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            ))?
            .execute(params![
                entry.key,
                entry.task_id,
                entry.model,
                entry.request_json,
                entry.images,
                entry.created_at
            ])?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// Records the remote task id the provider gave journal entry `id`, before waiting for it.
    pub fn journal_submitted(&mut self, id: i64, remote_task_id: &str) -> Result<()> {
        self.write(|tx| {
            let changed = tx
                .prepare_cached(&format!(
                    "UPDATE {JOURNAL} SET remote_task_id = ?2 WHERE id = ?1"
                ))?
                .execute(params![id, remote_task_id])?;
            if changed == 0 {
                // A caller's bug: losing a remote task id could mean paying twice, so say so.
                return Err(rusqlite::Error::QueryReturnedNoRows);
            }
            Ok(())
        })
    }

    /// Closes the journal entries `ids`, in one transaction (their result is stored, or they
    /// definitely failed). Idempotent.
    pub fn journal_finish(&mut self, ids: &[i64]) -> Result<()> {
        self.write(|tx| close_journal(tx, ids))
    }

    /// The entries begun and not finished, oldest first.
    pub fn journal_open(&self) -> Result<Vec<JournalEntry>> {
        self.read(|conn| {
            conn.prepare_cached(&format!(
                "SELECT id, key, task_id, model, request_json, images, remote_task_id, created_at,
                   billed, saved
                 FROM {JOURNAL} ORDER BY id"
            ))?
            .query_map([], |row| {
                Ok(JournalEntry {
                    id: row.get(0)?,
                    key: row.get(1)?,
                    task_id: row.get(2)?,
                    model: row.get(3)?,
                    request_json: row.get(4)?,
                    images: row.get(5)?,
                    remote_task_id: row.get(6)?,
                    created_at: row.get(7)?,
                    billed: row.get(8)?,
                    saved: match row.get_ref(9)?.as_str_or_null()? {
                        Some(text) => serde_json::from_str(text).map_err(|e| {
                            rusqlite::Error::FromSqlConversionFailure(9, Type::Text, Box::new(e))
                        })?,
                        None => Vec::new(),
                    },
                })
            })?
            .collect()
        })
    }

    /// Remote task ids this project knows of since `since` (unix seconds): those of open journal
    /// entries and of results stored since then. A task found in the service's list is one of these,
    /// or someone else's (or an unanswered submission's).
    pub fn remote_ids_since(&self, since: i64) -> Result<std::collections::HashSet<String>> {
        self.read(|conn| {
            let mut ids = std::collections::HashSet::new();
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT remote_task_id FROM {JOURNAL} WHERE remote_task_id IS NOT NULL
                 UNION ALL
                 SELECT remote_task_id FROM {RESULTS}
                 WHERE remote_task_id IS NOT NULL AND generated_at >= ?1"
            ))?;
            let mut rows = stmt.query([since])?;
            while let Some(row) = rows.next()? {
                let joined: String = row.get(0)?;
                ids.extend(joined.split(',').map(str::to_owned));
            }
            Ok(ids)
        })
    }

    /// Records how long a task of `model` took from submit to result; the newest
    /// [`LATENCIES_KEPT`] samples per model are kept.
    pub fn record_latency(&mut self, model: &str, seconds: f64) -> Result<()> {
        self.write(|tx| {
            tx.prepare_cached(&format!(
                "INSERT INTO {LATENCIES} (model, seconds) VALUES (?1, ?2)"
            ))?
            .execute(params![model, seconds])?;
            tx.prepare_cached(&format!(
                "DELETE FROM {LATENCIES} WHERE model = ?1 AND id <= (
                   SELECT id FROM {LATENCIES} WHERE model = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)"
            ))?
            .execute(params![model, LATENCIES_KEPT as i64])?;
            Ok(())
        })
    }

    /// The newest `limit` latencies of `model`, in seconds, oldest first.
    pub fn latencies(&self, model: &str, limit: usize) -> Result<Vec<f64>> {
        self.read(|conn| {
            let mut newest_first: Vec<f64> = conn
                .prepare_cached(&format!(
                    "SELECT seconds FROM {LATENCIES} WHERE model = ?1 ORDER BY id DESC LIMIT ?2"
                ))?
                .query_map(
                    params![model, i64::try_from(limit).unwrap_or(i64::MAX)],
                    |row| row.get(0),
                )?
                .collect::<rusqlite::Result<_>>()?;
            newest_first.reverse();
            Ok(newest_first)
        })
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        f(&self.conn).map_err(|source| Error::Store {
            path: self.path.clone(),
            source,
        })
    }

    /// Runs `f` in one write transaction, committed if `f` succeeds.
    fn write<T>(&mut self, f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>) -> Result<T> {
        let run = |conn: &mut Connection| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        };
        run(&mut self.conn).map_err(|source| Error::Store {
            path: self.path.clone(),
            source,
        })
    }
}

/// The totals of one kind in `ledger`.
fn totals_of(ledger: &mut Ledger, emulated: bool) -> &mut LedgerTotals {
    if emulated {
        &mut ledger.emulated
    } else {
        &mut ledger.real
    }
}

fn insert_charge(tx: &Transaction<'_>, charge: &Charge) -> rusqlite::Result<()> {
    tx.prepare_cached(&format!(
        "INSERT INTO {CHARGES} (at, emulated, task_id, model, remote_task_id, images, cost)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    ))?
    .execute(params![
        charge.at,
        charge.emulated,
        charge.task_id,
        charge.model,
        charge.remote_task_id,
        charge.images,
        charge.cost.0
    ])?;
    Ok(())
}

/// Closes the `journal` entries (their work is recorded in the same transaction).
fn close_journal(tx: &Transaction<'_>, journal: &[i64]) -> rusqlite::Result<()> {
    let mut close = tx.prepare_cached(&format!("DELETE FROM {JOURNAL} WHERE id = ?1"))?;
    for id in journal {
        close.execute([id])?;
    }
    Ok(())
}

/// Indexes `images` as blobs in the blob store, added at `at` (Unix seconds).
fn index_blobs(tx: &Transaction<'_>, images: &[StoredImage], at: i64) -> rusqlite::Result<()> {
    let mut blob = tx.prepare_cached(&format!(
        "INSERT INTO {BLOBS} (blake3, size, added_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (blake3) DO NOTHING"
    ))?;
    for img in images {
        blob.execute(params![img.blake3, img.size as i64, at])?;
    }
    Ok(())
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

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL lets readers (`wanx plan`, `wanx watch`) run beside a build. With synchronous = NORMAL
    // a commit survives the process being killed or crashing at any point (it is in the OS's
    // cache), though not a power cut in the instant after it; FULL would add an fsync to each of
    // the four commits per paid task (journal begin, submitted, result, finish), measured at
    // ~3 ms each, on the one thread all store writes share.
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}

/// Applies the migrations the database has not seen, in one exclusive transaction. The inner
/// `Err` carries the version of a database newer than this wanx.
fn migrate(conn: &mut Connection) -> rusqlite::Result<Result<(), i64>> {
    // Up to date (every build after the first): no exclusive transaction. A version only grows, so
    // a stale read can only send us into the transaction below, which reads it again.
    let current: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if current == MIGRATIONS.len() as i64 {
        return Ok(Ok(()));
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    let found: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let Some(version) = usize::try_from(found)
        .ok()
        .filter(|v| *v <= MIGRATIONS.len())
    else {
        return Ok(Err(found));
    };
    for migration in &MIGRATIONS[version..] {
        tx.execute_batch(migration)?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
    tx.commit()?;
    Ok(Ok(()))
}

fn result_from_row(row: &Row<'_>) -> rusqlite::Result<StoredResult> {
    Ok(StoredResult {
        key: row.get(0)?,
        task_id: row.get(1)?,
        model: row.get(2)?,
        provider: row.get(3)?,
        request_json: row.get(4)?,
        remote_task_id: row.get(5)?,
        cost: Money(row.get(6)?),
        generated_at: row.get(7)?,
        images: serde_json::from_str(row.get_ref(8)?.as_str()?)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(8, Type::Text, Box::new(e)))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(seed: &str) -> String {
        blake3::hash(seed.as_bytes()).to_hex().to_string()
    }

    fn result(key: &str, images: usize) -> StoredResult {
        StoredResult {
            key: key.to_owned(),
            task_id: format!("task-{key}"),
            model: "wan2.2-t2i-flash".to_owned(),
            provider: "dashscope".to_owned(),
            request_json: r#"{"model":"wan2.2-t2i-flash","input":{"prompt":"a cat"}}"#.to_owned(),
            remote_task_id: Some("0385dc79-5ff8-4d82-bcb6-5a8a7e4b8ad7".to_owned()),
            images: (0..images)
                .map(|i| StoredImage {
                    blake3: hex(&format!("{key}/{i}")),
                    size: 100_000 + i as u64,
                    actual_prompt: (i % 2 == 0).then(|| format!("a fluffy cat, #{i}")),
                    seed: None,
                    paid_at: None,
                })
                .collect(),
            cost: Money::from_yuan(0.14) * images as u32,
            generated_at: 1_763_300_000,
        }
    }

    #[test]
    fn plan_keys_are_replaced_per_file_and_dropped_by_name() {
        let mut store = Store::open_in_memory().unwrap();
        let row = |file: &str, b: u8| PlanKeys {
            file: file.to_owned(),
            digest: vec![b; 32],
            keys: vec![b; 40],
        };
        store
            .put_plan_keys(&[row("plans/a.toml", 1), row("plans/b.toml", 2)], &[])
            .unwrap();
        store
            .put_plan_keys(&[row("plans/a.toml", 3)], &["plans/b.toml".to_owned()])
            .unwrap();
        assert_eq!(store.plan_keys().unwrap(), vec![row("plans/a.toml", 3)]);
    }

    #[test]
    fn migrate_twice() {
        let mut store = Store::open_in_memory().unwrap();
        migrate(&mut store.conn).unwrap().unwrap();
        migrate(&mut store.conn).unwrap().unwrap();
        let version: i64 = store
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
    }

    #[test]
    fn table_constants_name_real_tables() {
        let store = Store::open_in_memory().unwrap();
        for table in [
            RESULTS, BLOBS, STAT_CACHE, RUNS, JOURNAL, LATENCIES, PLAN_KEYS, PARTIALS, CHARGES,
        ] {
            let count: i64 = store
                .conn
                .query_row(
                    "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
                    [table],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(count, 1, "{table}");
        }
    }

    #[test]
    fn a_newer_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", MIGRATIONS.len() as i64 + 1)
            .unwrap();
        drop(conn);
        let err = Store::open(dir.path()).err().unwrap();
        assert!(err.to_string().contains("newer than this wanx"), "{err}");
        assert!(err.hint().is_some());
    }

    #[test]
    fn results_round_trip_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let r = result(&hex("a"), 3);
        {
            let mut store = Store::open(&dir.path().join(".wanx")).unwrap();
            assert_eq!(store.result(&r.key).unwrap(), None);
            store.put_result(&r).unwrap();
        }
        let mut store = Store::open(&dir.path().join(".wanx")).unwrap();
        assert_eq!(store.result(&r.key).unwrap().as_ref(), Some(&r));
        for img in &r.images {
            assert!(store.blob_known(&img.blake3).unwrap());
        }
        assert!(!store.blob_known(&hex("nothing")).unwrap());

        let mut again = result(&r.key, 1);
        again.remote_task_id = None;
        store.put_result(&again).unwrap();
        assert_eq!(store.result(&r.key).unwrap(), Some(again));
        // The index keeps blobs of replaced results: the blob store still has them.
        assert!(store.blob_known(&r.images[2].blake3).unwrap());
    }

    #[test]
    fn batched_lookup_finds_what_exists_across_batches() {
        let mut store = Store::open_in_memory().unwrap();
        let keys: Vec<String> = (0..1_234).map(|i| hex(&i.to_string())).collect();
        for (i, key) in keys.iter().enumerate() {
            if i % 3 != 0 {
                store.put_result(&result(key, i % 5)).unwrap();
            }
        }
        let asked: Vec<&str> = keys.iter().map(String::as_str).collect();
        let found = store.results(&asked).unwrap();
        assert_eq!(found.len(), keys.len() - keys.len().div_ceil(3));
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(
                found.get(key),
                (i % 3 != 0).then(|| result(key, i % 5)).as_ref()
            );
        }
        assert!(store.results(&[]).unwrap().is_empty());
    }

    #[test]
    fn stat_cache_upserts() {
        let mut store = Store::open_in_memory().unwrap();
        let entry = |size, blake3: &str| StatEntry {
            size,
            mtime_ns: 1_763_300_000_123_456_789,
            // Inodes above i64::MAX exist on some filesystems.
            inode: u64::MAX - 1,
            blake3: blake3.to_owned(),
        };
        store
            .put_stats(&[
                ("generated/a.png".to_owned(), entry(1, "x")),
                ("generated/b.png".to_owned(), entry(2, "y")),
            ])
            .unwrap();
        store
            .put_stats(&[("generated/a.png".to_owned(), entry(3, "z"))])
            .unwrap();
        let cache = store.stat_cache().unwrap();
        assert_eq!(cache.len(), 2);
        assert_eq!(cache["generated/a.png"], entry(3, "z"));
        assert_eq!(cache["generated/b.png"], entry(2, "y"));
    }

    #[test]
    fn stat_entry_matches_the_file_it_came_from() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.png");
        std::fs::write(&path, b"one").unwrap();
        let (size, mtime_ns, inode) = stat_of(&std::fs::metadata(&path).unwrap());
        assert_eq!(size, 3);
        let entry = StatEntry {
            size,
            mtime_ns,
            inode,
            blake3: hex("one"),
        };
        assert!(entry.matches(&std::fs::metadata(&path).unwrap()));
        std::fs::write(&path, b"three").unwrap();
        assert!(!entry.matches(&std::fs::metadata(&path).unwrap()));
    }

    #[test]
    fn a_partial_closes_its_journal_entries_and_a_result_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let intent = JournalIntent {
            key: "k".to_owned(),
            task_id: "harbor".to_owned(),
            model: "wan2.2-t2i-flash".to_owned(),
            request_json: "{}".to_owned(),
            images: 4,
            created_at: 1_763_300_000,
        };
        let entry = store.journal_begin(&intent).unwrap();
        assert_eq!(store.partial("k").unwrap(), None);
        let whole = result("k", 4);
        let partial = Partial {
            images: whole.images[..3].to_vec(),
            cost: Money::from_yuan(0.42),
        };
        store
            .put_partial_closing("k", &partial, &[entry], 1_763_300_100)
            .unwrap();
        assert!(store.journal_open().unwrap().is_empty());
        assert_eq!(store.partial("k").unwrap(), Some(partial.clone()));
        assert!(store.results(&["k"]).unwrap().is_empty(), "never a result");
        assert!(store.blob_known(&partial.images[2].blake3).unwrap());

        store.put_result_closing(&whole, &[]).unwrap();
        assert_eq!(store.partial("k").unwrap(), None);
        assert_eq!(store.results(&["k"]).unwrap()["k"], whole);
    }

    #[test]
    fn journal_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let intent = |key: &str| JournalIntent {
            key: key.to_owned(),
            task_id: "scene-001".to_owned(),
            model: "wan2.2-t2i-flash".to_owned(),
            request_json: "{}".to_owned(),
            images: 4,
            created_at: 1_763_300_000,
        };
        let mut store = Store::open(dir.path()).unwrap();
        let first = store.journal_begin(&intent("k1")).unwrap();
        let second = store.journal_begin(&intent("k2")).unwrap();
        store.journal_submitted(first, "remote-1").unwrap();
        drop(store);

        // A crash here: the next process sees both, oldest first, one with its remote id.
        let mut store = Store::open(dir.path()).unwrap();
        let open = store.journal_open().unwrap();
        assert_eq!(open.len(), 2);
        assert_eq!(
            open[0],
            JournalEntry {
                id: first,
                key: "k1".to_owned(),
                task_id: "scene-001".to_owned(),
                model: "wan2.2-t2i-flash".to_owned(),
                request_json: "{}".to_owned(),
                images: 4,
                remote_task_id: Some("remote-1".to_owned()),
                created_at: 1_763_300_000,
                billed: None,
                saved: Vec::new(),
            }
        );
        assert_eq!(
            (open[1].id, open[1].remote_task_id.as_deref()),
            (second, None)
        );

        store.journal_finish(&[first]).unwrap();
        store.journal_finish(&[first]).unwrap();
        assert_eq!(store.journal_open().unwrap().len(), 1);
        store.journal_finish(&[second]).unwrap();
        assert!(store.journal_open().unwrap().is_empty());
        assert!(store.journal_submitted(second, "late").is_err());
        // Ids are never reused, so a stale id cannot close someone else's entry.
        assert!(store.journal_begin(&intent("k3")).unwrap() > second);
    }

    #[test]
    fn ledger_totals_keep_real_and_emulated_apart() {
        let mut store = Store::open_in_memory().unwrap();
        assert_eq!(store.ledger_totals().unwrap(), Ledger::default());
        let run = |emulated, saved| RunRecord {
            started_at: 1,
            finished_at: 2,
            command: "build".to_owned(),
            emulated,
            generated: 1,
            restored: 1,
            fresh: 10,
            failed: 0,
            images_generated: 4,
            spent: Money::from_yuan(9.99),
            saved: Money::from_yuan(saved),
        };
        let charge = |emulated, images: u32, cost| Charge {
            at: 1,
            emulated,
            task_id: "t".to_owned(),
            model: "m".to_owned(),
            remote_task_id: None,
            images,
            cost: Money::from_yuan(cost),
        };
        let a = store.record_run(&run(false, 0.56)).unwrap();
        let b = store.record_run(&run(false, 0.0)).unwrap();
        store.record_run(&run(true, 2.0)).unwrap();
        assert!(b > a);
        store.book(&charge(false, 8, 1.12)).unwrap();
        store.book(&charge(false, 4, 0.56)).unwrap();
        store.book(&charge(true, 40, 5.6)).unwrap();
        let ledger = store.ledger_totals().unwrap();
        assert_eq!(
            ledger.real,
            LedgerTotals {
                runs: 2,
                images_generated: 12,
                spent: Money::from_yuan(1.68),
                saved: Money::from_yuan(0.56),
            }
        );
        assert_eq!(
            ledger.emulated,
            LedgerTotals {
                runs: 1,
                images_generated: 40,
                spent: Money::from_yuan(5.6),
                saved: Money::from_yuan(2.0),
            }
        );
    }

    #[test]
    fn a_journal_entry_is_billed_once_and_keeps_the_images_already_saved() {
        let mut store = Store::open_in_memory().unwrap();
        let id = store
            .journal_begin(&JournalIntent {
                key: "k".to_owned(),
                task_id: "t".to_owned(),
                model: "m".to_owned(),
                request_json: "{}".to_owned(),
                images: 2,
                created_at: 1,
            })
            .unwrap();
        let charge = Charge {
            at: 1,
            emulated: false,
            task_id: "t".to_owned(),
            model: "m".to_owned(),
            remote_task_id: Some("r".to_owned()),
            images: 2,
            cost: Money::from_yuan(0.28),
        };
        assert!(store.journal_billed(id, &charge).unwrap());
        assert!(!store.journal_billed(id, &charge).unwrap(), "booked once");
        let saved = vec![Some(result("k", 1).images[0].clone()), None];
        store.journal_saved(id, &saved).unwrap();
        let open = store.journal_open().unwrap();
        assert_eq!((open[0].billed, &open[0].saved), (Some(2), &saved));
        assert_eq!(
            store.ledger_totals().unwrap().real.spent,
            Money::from_yuan(0.28)
        );
    }

    #[test]
    fn latencies_keep_the_newest() {
        let mut store = Store::open_in_memory().unwrap();
        for i in 0..(LATENCIES_KEPT + 5) {
            store.record_latency("wan2.2-t2i-flash", i as f64).unwrap();
        }
        store.record_latency("qwen-image", 9.5).unwrap();
        assert_eq!(
            store.latencies("wan2.2-t2i-flash", 3).unwrap(),
            vec![
                (LATENCIES_KEPT + 2) as f64,
                (LATENCIES_KEPT + 3) as f64,
                (LATENCIES_KEPT + 4) as f64
            ]
        );
        assert_eq!(
            store
                .latencies("wan2.2-t2i-flash", usize::MAX / 2)
                .unwrap()
                .len(),
            LATENCIES_KEPT
        );
        assert_eq!(store.latencies("qwen-image", 10).unwrap(), vec![9.5]);
        assert!(store.latencies("other", 10).unwrap().is_empty());
    }
}
