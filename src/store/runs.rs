//! The run ledger (each `wanx` command's outcome: spent and saved), the last failures by task, and
//! per-model latencies (the progress line's estimates).

use std::collections::HashMap;

use rusqlite::params;

use crate::error::Result;
use crate::money::Money;
use crate::store::db::Store;
use crate::store::records::{Ledger, LedgerTotals, RunRecord};
use crate::store::schema::{LATENCIES, LATENCIES_KEPT, RUNS};

impl Store {
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
            // Kept by triggers on the charges (migration 9): one row each, not a sum over all.
            let mut charges =
                conn.prepare_cached("SELECT emulated, images, cost FROM charge_totals")?;
            let mut rows = charges.query([])?;
            while let Some(row) = rows.next()? {
                let totals = totals_of(&mut ledger, row.get(0)?);
                totals.images_generated = row.get::<_, i64>(1)? as u64;
                totals.spent = Money(row.get(2)?);
            }
            Ok(ledger)
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
}

/// The totals of one kind in `ledger`.
fn totals_of(ledger: &mut Ledger, emulated: bool) -> &mut LedgerTotals {
    if emulated {
        &mut ledger.emulated
    } else {
        &mut ledger.real
    }
}
