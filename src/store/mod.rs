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
//!
//! # Files
//! `schema` (table names, migrations, connection settings) and `records` (the plain data the rest
//! of wanx reads and writes) are leaves; `db` holds the connection and its `read`/`write`; the
//! queries are `impl Store` blocks by subject: `results` (results, partials, blobs, plan keys, stat
//! cache), `journal` (in-flight journal and charges), `runs` (run ledger, failures, latencies) and
//! `cache` (the cache's bound and `wanx stats`). No file imports this one. `blob_store` is the
//! content-addressed store of the images themselves.

pub mod blob_store;
mod cache;
mod db;
mod journal;
mod records;
mod results;
mod runs;
mod schema;

pub use crate::store::cache::{BlobUse, ModelFigures, MonthFigures};
pub use crate::store::db::{DB_FILE, Store};
pub use crate::store::records::{
    Charge, JournalEntry, JournalIntent, Ledger, Partial, PlanKeys, RunRecord, StatEntry,
    StoredImage, StoredResult, stat_of,
};

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;
    use crate::money::Money;
    use crate::store::records::LedgerTotals;
    use crate::store::schema::*;

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

    /// A database in `dir` with the schema of `version` (its first migrations only).
    fn database_at_version(dir: &std::path::Path, version: usize) -> Connection {
        let mut conn = Connection::open(dir.join(DB_FILE)).unwrap();
        let tx = conn.transaction().unwrap();
        for migration in &MIGRATIONS[..version] {
            tx.execute_batch(migration).unwrap();
        }
        tx.pragma_update(None, "user_version", version as i64)
            .unwrap();
        tx.commit().unwrap();
        conn
    }

    #[test]
    fn charge_totals_start_from_the_charges_and_follow_every_booking() {
        // A database of the schema before the totals (version 8) holding charges of both kinds.
        let dir = tempfile::tempdir().unwrap();
        let conn = database_at_version(dir.path(), 8);
        for (emulated, images, cost) in [(0, 2, 280_000), (1, 1, 140_000), (0, 4, 560_000)] {
            conn.execute(
                "INSERT INTO charges (at, emulated, task_id, model, images, cost) VALUES (1, ?1, 't', 'm', ?2, ?3)",
                rusqlite::params![emulated, images, cost],
            )
            .unwrap();
        }
        drop(conn);
        let mut store = Store::open(dir.path()).unwrap();
        let ledger = store.ledger_totals().unwrap();
        assert_eq!(
            (ledger.real.images_generated, ledger.real.spent),
            (6, Money(840_000))
        );
        assert_eq!(
            (ledger.emulated.images_generated, ledger.emulated.spent),
            (1, Money(140_000))
        );
        store
            .book(&Charge {
                at: 2,
                emulated: true,
                task_id: "u".to_owned(),
                model: "m".to_owned(),
                remote_task_id: None,
                images: 3,
                cost: Money(420_000),
            })
            .unwrap();
        let ledger = store.ledger_totals().unwrap();
        assert_eq!(
            (ledger.emulated.images_generated, ledger.emulated.spent),
            (4, Money(560_000))
        );
        assert_eq!(ledger.real.spent, Money(840_000));
    }

    #[test]
    fn blob_totals_start_from_the_blobs_and_follow_every_change() {
        // A database of the schema before the totals (version 9) holding two blobs.
        let dir = tempfile::tempdir().unwrap();
        let conn = database_at_version(dir.path(), 9);
        let add = "INSERT INTO blobs (blake3, size, added_at) VALUES (?1, ?2, 1) ON CONFLICT (blake3) DO NOTHING";
        for (hash, size) in [("a", 100), ("b", 250)] {
            conn.execute(add, rusqlite::params![hash, size]).unwrap();
        }
        drop(conn);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.blob_totals().unwrap(), (350, 2));
        // Added (once, however often it is indexed), resized, removed: the totals follow.
        for (hash, size) in [("c", 1000), ("c", 1000), ("a", 100)] {
            store
                .conn
                .execute(add, rusqlite::params![hash, size])
                .unwrap();
        }
        assert_eq!(store.blob_totals().unwrap(), (1350, 3));
        store
            .conn
            .execute("UPDATE blobs SET size = 300 WHERE blake3 = 'b'", [])
            .unwrap();
        store
            .conn
            .execute("DELETE FROM blobs WHERE blake3 = 'a'", [])
            .unwrap();
        assert_eq!(store.blob_totals().unwrap(), (1300, 2));
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
