//! Results by request key, partial results, the blob index, the planner's key cache and the stat
//! cache: what a build reads to decide and writes once a generation is paid for.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, Row, Transaction, params, params_from_iter};

use crate::error::Result;
use crate::money::Money;
use crate::store::db::{Store, json_column};
use crate::store::journal::close_journal;
use crate::store::records::{Partial, PlanKeys, StatEntry, StoredImage, StoredResult};
use crate::store::schema::{BATCH, BLOBS, PARTIALS, PLAN_KEYS, RESULTS, STAT_CACHE};

impl Store {
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
                    images: json_column(row, 0)?,
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

    #[cfg(test)]
    /// Whether the blob index lists `hash` (the file itself may still need checking).
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
                "SELECT size, mtime_ns, inode, blake3, path FROM {STAT_CACHE}"
            ))?;
            let mut rows = stmt.query([])?;
            let mut cache = HashMap::with_capacity(count as usize);
            while let Some(row) = rows.next()? {
                cache.insert(row.get(4)?, stat_entry(row)?);
            }
            Ok(cache)
        })
    }

    /// The stat cache's entries for `paths` (those it has), one lookup each: for a build of a few
    /// tasks in a large project, where reading every entry would cost more.
    pub fn stat_entries<'p>(
        &self,
        paths: impl Iterator<Item = &'p str>,
    ) -> Result<HashMap<String, StatEntry>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT size, mtime_ns, inode, blake3 FROM {STAT_CACHE} WHERE path = ?1"
            ))?;
            let mut found = HashMap::new();
            for path in paths {
                let mut rows = stmt.query([path])?;
                if let Some(row) = rows.next()? {
                    found.insert(path.to_owned(), stat_entry(row)?);
                }
            }
            Ok(found)
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
}

/// Indexes `images` as blobs in the blob store, added at `at` (Unix seconds).
pub(crate) fn index_blobs(
    tx: &Transaction<'_>,
    images: &[StoredImage],
    at: i64,
) -> rusqlite::Result<()> {
    let mut blob = tx.prepare_cached(&format!(
        "INSERT INTO {BLOBS} (blake3, size, added_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (blake3) DO NOTHING"
    ))?;
    for img in images {
        blob.execute(params![img.blake3, img.size as i64, at])?;
    }
    Ok(())
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
        images: json_column(row, 8)?,
    })
}

/// A stat cache row whose first columns are `size, mtime_ns, inode, blake3`.
fn stat_entry(row: &Row<'_>) -> rusqlite::Result<StatEntry> {
    Ok(StatEntry {
        size: row.get::<_, i64>(0)? as u64,
        mtime_ns: row.get(1)?,
        inode: row.get::<_, i64>(2)? as u64,
        blake3: row.get(3)?,
    })
}
