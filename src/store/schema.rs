//! The build database's schema: its tables' names, the append-only list of migrations tracked by
//! `pragma user_version`, and the connection's settings (WAL, busy timeout). A leaf that every
//! file of `store` reads its table names from.

use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

pub(crate) const RESULTS: &str = "results";
pub(crate) const BLOBS: &str = "blobs";
pub(crate) const STAT_CACHE: &str = "stat_cache";
pub(crate) const RUNS: &str = "runs";
pub(crate) const JOURNAL: &str = "journal";
pub(crate) const LATENCIES: &str = "latencies";
pub(crate) const PLAN_KEYS: &str = "plan_keys";
pub(crate) const PARTIALS: &str = "partials";
pub(crate) const CHARGES: &str = "charges";

/// How long a write waits for another `wanx` holding the database.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Keys per batched lookup; unused slots are bound to NULL so every batch reuses one statement.
pub(crate) const BATCH: usize = 500;

/// Latency samples kept per model.
pub(crate) const LATENCIES_KEPT: usize = 1000;

/// The schema, one migration per entry, applied in order. Append only: a released migration never
/// changes, since databases in the field have already run it. The SQL names tables literally so a
/// later rename of a constant cannot rewrite history; a test checks the constants against it.
pub(crate) const MIGRATIONS: &[&str] = &[
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
    // 9: the charges' running totals, real and emulated apart, kept by triggers: every build prints
    // them, and summing every charge at each build cost a large project's no-op a fifth of its time.
    "
    CREATE TABLE charge_totals (
        emulated INTEGER PRIMARY KEY,
        images INTEGER NOT NULL,
        cost INTEGER NOT NULL
    );
    INSERT INTO charge_totals (emulated, images, cost)
        SELECT emulated, sum(images), sum(cost) FROM charges GROUP BY emulated;
    CREATE TRIGGER charge_totals_insert AFTER INSERT ON charges BEGIN
        INSERT INTO charge_totals (emulated, images, cost) VALUES (NEW.emulated, NEW.images, NEW.cost)
        ON CONFLICT (emulated) DO UPDATE SET images = images + NEW.images, cost = cost + NEW.cost;
    END;
    CREATE TRIGGER charge_totals_delete AFTER DELETE ON charges BEGIN
        UPDATE charge_totals SET images = images - OLD.images, cost = cost - OLD.cost
        WHERE emulated = OLD.emulated;
    END;
    CREATE TRIGGER charge_totals_update AFTER UPDATE OF emulated, images, cost ON charges BEGIN
        UPDATE charge_totals SET images = images - OLD.images, cost = cost - OLD.cost
        WHERE emulated = OLD.emulated;
        INSERT INTO charge_totals (emulated, images, cost) VALUES (NEW.emulated, NEW.images, NEW.cost)
        ON CONFLICT (emulated) DO UPDATE SET images = images + NEW.images, cost = cost + NEW.cost;
    END;
    ",
    // 10: the blob store's total size and count, kept by triggers: every build compares the size
    // with `[cache] max_size`, and summing 10,000 rows cost each build under `wanx watch` a millisecond.
    "
    CREATE TABLE blob_totals (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        size INTEGER NOT NULL,
        count INTEGER NOT NULL
    );
    INSERT INTO blob_totals (id, size, count) SELECT 0, coalesce(sum(size), 0), count(*) FROM blobs;
    CREATE TRIGGER blob_totals_insert AFTER INSERT ON blobs BEGIN
        UPDATE blob_totals SET size = size + NEW.size, count = count + 1;
    END;
    CREATE TRIGGER blob_totals_delete AFTER DELETE ON blobs BEGIN
        UPDATE blob_totals SET size = size - OLD.size, count = count - 1;
    END;
    CREATE TRIGGER blob_totals_update AFTER UPDATE OF size ON blobs BEGIN
        UPDATE blob_totals SET size = size - OLD.size + NEW.size;
    END;
    ",
];

pub(crate) fn configure(conn: &Connection) -> rusqlite::Result<()> {
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
pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<Result<(), i64>> {
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
