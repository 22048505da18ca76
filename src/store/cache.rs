//! The store's side of the cache's bound (`wanx gc`, `[cache] max_size`) and of `wanx stats`: blob
//! sizes and last uses, eviction, and the ledger's figures by model and by month. A child of `store`
//! (it shares its connection), kept apart so the store's core stays about builds.

use std::collections::HashSet;

use rusqlite::params;

use crate::error::Result;
use crate::money::Money;
use crate::store::db::Store;
use crate::store::records::StoredImage;
use crate::store::schema::{BLOBS, PARTIALS, RESULTS, RUNS};

/// One indexed blob: its hash, size and when it was last used (Unix seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobUse {
    pub blake3: String,
    pub size: u64,
    pub last_used: i64,
}

/// One model's figures: its cached results, what the service billed for it and what restores saved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelFigures {
    pub model: String,
    pub emulated: bool,
    /// Stored results (one per request key) and their images.
    pub results: u64,
    pub images: u64,
    /// Images the service billed, and what it billed (every charge booked; charges booked before
    /// wanx recorded models have the model `""`).
    pub images_billed: u64,
    pub spent: Money,
    /// Images finished builds restored instead of paying again, and their price.
    pub images_restored: u64,
    pub saved: Money,
}

/// The run ledger summed over one calendar month (UTC), real and emulated apart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MonthFigures {
    /// `2026-11`.
    pub month: String,
    pub emulated: bool,
    pub runs: u64,
    pub generated: u64,
    pub restored: u64,
    pub images_generated: u64,
    pub spent: Money,
    pub saved: Money,
}

impl Store {
    /// Every blob of the index with its size and last use.
    pub fn blob_uses(&self) -> Result<Vec<BlobUse>> {
        self.read(|conn| {
            conn.prepare_cached(&format!(
                "SELECT blake3, size, max(added_at, used_at) FROM {BLOBS}"
            ))?
            .query_map([], |row| {
                Ok(BlobUse {
                    blake3: row.get(0)?,
                    size: row.get::<_, i64>(1)? as u64,
                    last_used: row.get(2)?,
                })
            })?
            .collect()
        })
    }

    /// The blobs' total size and count, from the index (one query: cheap enough for every build).
    pub fn blob_totals(&self) -> Result<(u64, u64)> {
        self.read(|conn| {
            // Kept by triggers on the blobs (migration 10): one row, not a sum over all.
            conn.prepare_cached("SELECT size, count FROM blob_totals")?
                .query_row([], |row| {
                    Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64))
                })
        })
    }

    /// Records that `hashes` were used (restored) at `at`.
    pub fn touch_blobs(&mut self, hashes: &[&str], at: i64) -> Result<()> {
        if hashes.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let mut touch = tx.prepare_cached(&format!(
                "UPDATE {BLOBS} SET used_at = ?2 WHERE blake3 = ?1"
            ))?;
            for hash in hashes {
                touch.execute(params![hash, at])?;
            }
            Ok(())
        })
    }

    /// The blobs held by partial results: paid-for images waiting for their siblings, never evicted.
    pub fn partial_blobs(&self) -> Result<HashSet<String>> {
        self.read(|conn| {
            let mut held = HashSet::new();
            let mut stmt = conn.prepare_cached(&format!("SELECT images FROM {PARTIALS}"))?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let text: String = row.get(0)?;
                let images: Vec<StoredImage> = serde_json::from_str(&text).unwrap_or_default();
                held.extend(images.into_iter().map(|i| i.blake3));
            }
            Ok(held)
        })
    }

    /// Forgets `evicted` blobs and every stored result that needs one of them (a result is only
    /// served whole). Returns how many results were forgotten. The files are the caller's to remove.
    pub fn forget_blobs(&mut self, evicted: &HashSet<String>) -> Result<u64> {
        if evicted.is_empty() {
            return Ok(0);
        }
        self.write(|tx| {
            let mut doomed = Vec::new();
            {
                let mut stmt = tx.prepare_cached(&format!("SELECT key, images FROM {RESULTS}"))?;
                let mut rows = stmt.query([])?;
                while let Some(row) = rows.next()? {
                    let key: String = row.get(0)?;
                    let text: String = row.get(1)?;
                    let images: Vec<StoredImage> = serde_json::from_str(&text).unwrap_or_default();
                    if images.iter().any(|i| evicted.contains(&i.blake3)) {
                        doomed.push(key);
                    }
                }
            }
            let mut forget = tx.prepare_cached(&format!("DELETE FROM {RESULTS} WHERE key = ?1"))?;
            for key in &doomed {
                forget.execute([key])?;
            }
            let mut drop = tx.prepare_cached(&format!("DELETE FROM {BLOBS} WHERE blake3 = ?1"))?;
            for hash in evicted {
                drop.execute([hash])?;
            }
            Ok(doomed.len() as u64)
        })
    }

    /// Stored results by model: how many, their images and what they cost.
    pub fn figures_by_model(&self) -> Result<Vec<ModelFigures>> {
        self.read(|conn| {
            let mut by: std::collections::BTreeMap<(bool, String), ModelFigures> =
                std::collections::BTreeMap::new();
            let mut rows: Vec<(String, bool, u8, i64, i64)> = Vec::new();
            // Cached results (one per request key) and their images.
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT model, provider = 'wanx-emulator', count(*), sum(json_array_length(images))
                 FROM {RESULTS} GROUP BY 1, 2"
            ))?;
            for row in
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, 0, r.get(2)?, r.get(3)?)))?
            {
                rows.push(row?);
            }
            // Money the service billed (every charge booked), and the images it billed.
            let mut stmt = conn.prepare_cached(
                "SELECT model, emulated, sum(images), sum(cost) FROM charges GROUP BY 1, 2",
            )?;
            for row in
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, 1, r.get(2)?, r.get(3)?)))?
            {
                rows.push(row?);
            }
            // What finished builds restored instead of paying again.
            let mut stmt = conn.prepare_cached(
                "SELECT s.model, r.emulated, sum(s.images), sum(s.value)
                 FROM savings s JOIN runs r ON r.id = s.run_id GROUP BY 1, 2",
            )?;
            for row in
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, 2, r.get(2)?, r.get(3)?)))?
            {
                rows.push(row?);
            }
            for (model, emulated, what, a, b) in rows {
                let f = by
                    .entry((emulated, model.clone()))
                    .or_insert_with(|| ModelFigures {
                        model,
                        emulated,
                        ..ModelFigures::default()
                    });
                match what {
                    0 => {
                        f.results = a as u64;
                        f.images = b as u64;
                    }
                    1 => {
                        f.images_billed = a as u64;
                        f.spent = Money(b);
                    }
                    _ => {
                        f.images_restored = a as u64;
                        f.saved = Money(b);
                    }
                }
            }
            Ok(by.into_values().collect())
        })
    }

    /// The run ledger by month (UTC), newest first.
    pub fn figures_by_month(&self) -> Result<Vec<MonthFigures>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT strftime('%Y-%m', started_at, 'unixepoch'), emulated, count(*), sum(generated),
                        sum(restored), sum(images_generated), sum(spent), sum(saved)
                 FROM {RUNS} GROUP BY 1, 2 ORDER BY 1 DESC, 2"
            ))?;
            stmt.query_map([], |row| {
                Ok(MonthFigures {
                    month: row.get(0)?,
                    emulated: row.get(1)?,
                    runs: row.get::<_, i64>(2)? as u64,
                    generated: row.get::<_, i64>(3)? as u64,
                    restored: row.get::<_, i64>(4)? as u64,
                    images_generated: row.get::<_, i64>(5)? as u64,
                    spent: Money(row.get(6)?),
                    saved: Money(row.get(7)?),
                })
            })?
            .collect()
        })
    }
}
