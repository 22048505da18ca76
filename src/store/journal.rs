//! The in-flight journal and the charges: a remote task id is recorded before wanx waits for it, so
//! a crash never makes a build pay twice for the same images; what the service billed is booked
//! once, the moment wanx first sees a task succeed.

use rusqlite::{Transaction, params};

use crate::error::Result;
use crate::store::db::{Store, json_column};
use crate::store::records::{Charge, JournalEntry, JournalIntent, StoredImage};
use crate::store::schema::{CHARGES, JOURNAL, RESULTS};

impl Store {
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

    #[cfg(test)]
    /// Books a charge without a journal entry.
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
                    saved: json_column(row, 9)?,
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
pub(crate) fn close_journal(tx: &Transaction<'_>, journal: &[i64]) -> rusqlite::Result<()> {
    let mut close = tx.prepare_cached(&format!("DELETE FROM {JOURNAL} WHERE id = ?1"))?;
    for id in journal {
        close.execute([id])?;
    }
    Ok(())
}
