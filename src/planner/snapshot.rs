//! The snapshot `reconcile` decides from: the lock, the outputs on disk (through the stat cache),
//! the store's results and partial pools, the blob store and the remote cache. Only what is not
//! fresh touches the store.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::project::Project;
use super::selection::Selection;
use super::unit::Unit;
use crate::compile::cache_key::Provider;
use crate::error::Result;
use crate::par::par_map;
use crate::planner::reconcile::{self, Action, Decision, Item, Recorded, Snapshot};
use crate::project::lock::LockFile;
use crate::remote::action_result::RemoteEntry;
use crate::remote::{RemoteCache, RemoteConfig, RemoteUse, Wanted};
use crate::store::blob_store::{BlobStore, hash_file};
use crate::store::{StatEntry, Store, StoredImage, StoredResult, stat_of};

/// The remote cache as planning uses it: looked up for what the local cache cannot supply.
#[derive(Clone)]
pub(super) struct Remote {
    pub(super) cache: RemoteCache,
    /// Download what is found (a build) or only look (`wanx plan`).
    pub(super) fetch: bool,
    /// The provider identity, recorded with fetched results.
    pub(super) provider: String,
}

impl Remote {
    pub(super) fn new(
        project: &Project,
        selection: &Selection,
        provider: &Provider,
    ) -> Result<Option<Remote>> {
        let (printer, fetch) = match selection.remote.usage {
            RemoteUse::Off => return Ok(None),
            RemoteUse::Lookup(printer) => (printer, false),
            RemoteUse::Fetch(printer) => (printer, true),
        };
        let config = RemoteConfig::resolve(
            &project.manifest,
            selection.remote.remote_cache.as_deref(),
            selection.remote.remote_cache_read_only,
        )?;
        Ok(config.map(|config| Remote {
            cache: RemoteCache::new(config, printer),
            fetch,
            provider: provider.identity(),
        }))
    }
}

/// The stat cache as planning reads it: every entry at once for a large selection, or only the
/// entries of the outputs a snapshot checks, looked up as they are needed, for a small one.
#[derive(Default)]
pub(super) struct StatCache {
    entries: HashMap<String, StatEntry>,
    /// Every entry is in `entries`: nothing more to look up.
    whole: bool,
}

/// Up to this many selected tasks, the stat cache is read per output rather than whole.
const STAT_LOOKUPS: usize = 512;

impl StatCache {
    /// Reads the whole stat cache for a selection of more than [`STAT_LOOKUPS`] tasks; for a
    /// smaller one, entries are read as [`StatCache::fill`] asks for them.
    pub(super) fn open(store: &Store, selected: usize) -> Result<StatCache> {
        if selected <= STAT_LOOKUPS {
            return Ok(StatCache::default());
        }
        Ok(StatCache {
            entries: store.stat_cache()?,
            whole: true,
        })
    }

    /// Makes sure the entries of `paths` the store has are here.
    fn fill<'p>(&mut self, store: &Store, paths: impl Iterator<Item = &'p str>) -> Result<()> {
        if self.whole {
            return Ok(());
        }
        let missing: Vec<&str> = paths.filter(|p| !self.entries.contains_key(*p)).collect();
        self.entries
            .extend(store.stat_entries(missing.into_iter())?);
        Ok(())
    }

    fn get(&self, path: &str) -> Option<&StatEntry> {
        self.entries.get(path)
    }
}

/// What the snapshot needs from the store, opened once per plan.
pub(super) struct Context<'p> {
    pub(super) root: &'p Path,
    pub(super) lock: LockFile,
    pub(super) lock_digest: Option<[u8; 32]>,
    pub(super) store: Store,
    pub(super) blobs: BlobStore,
    pub(super) stat_cache: StatCache,
    pub(super) new_stats: Vec<(String, StatEntry)>,
    /// Every output checked against the lock, with the stat its blake3 was vouched for under (what
    /// `build/uptodate.rs` records after a build with nothing to do).
    pub(super) observed: Vec<(String, Stat)>,
    pub(super) now: i64,
    pub(super) remote: Option<Remote>,
}

/// Snapshots what `units` need and reconciles them. Only what is not fresh touches the store: a
/// first reconcile from the lock and the disk settles what is fresh; the rest is decided again with
/// the store's pools and blobs, then with what the remote cache supplies.
pub(super) fn decide(
    cx: &mut Context<'_>,
    units: &[Unit<'_>],
    forced: &HashSet<String>,
) -> Result<Vec<Decision>> {
    let Context {
        root,
        lock,
        lock_digest: _,
        store,
        blobs,
        stat_cache,
        new_stats,
        observed,
        now,
        remote,
    } = cx;
    let migrated = migrate(lock, store, units)?;
    let (lock, now) = (&*lock, *now);
    // The snapshot borrows from the lock, the stat cache and the store's results: it copies no string.
    let mut snapshot = Snapshot::default();
    stat_cache.fill(
        store,
        locked_outputs(lock, units, &migrated).map(|o| o.path.as_str()),
    )?;
    let disk = Disk {
        root,
        stat_cache,
        new_stats,
        observed,
    };
    look_at_disk(&mut snapshot, disk, locked_outputs(lock, units, &migrated));
    record_lock(&mut snapshot, lock, units, &migrated);
    let items: Vec<Item<'_>> = units.iter().map(item).collect();
    let force = |id: &str| forced.contains(id);
    let first = reconcile::reconcile(&items, &snapshot, force, now);
    let unsettled: Vec<&Unit<'_>> = units
        .iter()
        .zip(&first)
        .filter(|(u, d)| d.action != Action::Fresh && !forced.contains(&u.task.id))
        .map(|(u, _)| u)
        .collect();
    // Generations (forced ones too) may start from images an earlier build paid for.
    let generating: Vec<String> = units
        .iter()
        .zip(&first)
        .filter(|(_, d)| d.action == Action::Generate)
        .map(|(u, _)| u.key.hex())
        .collect();
    if unsettled.is_empty() && generating.is_empty() {
        return Ok(first);
    }
    let generating: Vec<&str> = generating.iter().map(String::as_str).collect();
    let held = store.partials_held(&generating)?;
    let keys: Vec<String> = unsettled.iter().map(|u| u.key.hex()).collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let results = store.results(&key_refs)?;
    add_pools(&mut snapshot, &held, &results, &unsettled, blobs);
    let decisions = reconcile::reconcile(&items, &snapshot, force, now);
    // Only what would otherwise be generated is asked of the remote cache.
    let Some(remote) = remote.as_ref() else {
        return Ok(decisions);
    };
    let hits = ask_remote(remote, units, &decisions, forced, store, blobs)?;
    if hits.is_empty() {
        return Ok(decisions);
    }
    add_remote_hits(&mut snapshot, &hits);
    let from_remote: HashSet<&str> = hits.iter().map(|(k, _)| k.as_str()).collect();
    let mut decisions = reconcile::reconcile(&items, &snapshot, force, now);
    for (unit, d) in units.iter().zip(&mut decisions) {
        d.remote = matches!(d.action, Action::Restore { .. })
            && from_remote.contains(unit.key.hex().as_str());
    }
    Ok(decisions)
}

/// The outputs the lock records for `units` under their current key (or a migrated one).
fn locked_outputs<'l>(
    lock: &'l LockFile,
    units: &[Unit<'_>],
    migrated: &HashMap<&str, String>,
) -> impl Iterator<Item = &'l crate::project::lock::LockOutput> {
    units
        .iter()
        .filter_map(|u| {
            lock.tasks()
                .get(&u.task.id)
                .filter(|e| *u.key.to_hex() == *e.key || migrated.contains_key(u.task.id.as_str()))
        })
        .flat_map(|e| &e.outputs)
}

/// What looking at the outputs on disk reads and adds to.
struct Disk<'c> {
    root: &'c Path,
    stat_cache: &'c StatCache,
    /// Stats of files hashed now, for the stat cache.
    new_stats: &'c mut Vec<(String, StatEntry)>,
    /// Every output with the stat its hash is vouched for under (src/build/uptodate.rs).
    observed: &'c mut Vec<(String, Stat)>,
}

/// Puts the blake3 of each of `outputs` on disk into the snapshot: stat-ed on every core, hashed
/// only where the stat cache cannot vouch for it.
fn look_at_disk<'s>(
    snapshot: &mut Snapshot<'s>,
    disk: Disk<'s>,
    outputs: impl Iterator<Item = &'s crate::project::lock::LockOutput>,
) {
    let Disk {
        root,
        stat_cache,
        new_stats,
        observed,
    } = disk;
    let looked = par_map(outputs.collect(), |output| {
        let mut fresh_stat = Vec::new();
        let seen = observe(
            root,
            &output.path,
            stat_cache.get(&output.path),
            &mut fresh_stat,
        );
        (output.path.as_str(), seen, fresh_stat)
    });
    for (path, seen, fresh_stat) in looked {
        let hash = seen.map(|(hash, stat)| {
            observed.push((path.to_owned(), stat));
            hash
        });
        snapshot.disk.insert(path, hash);
        new_stats.extend(fresh_stat);
    }
}

/// The lock's record of each unit (under its migrated key, if any).
fn record_lock<'s>(
    snapshot: &mut Snapshot<'s>,
    lock: &'s LockFile,
    units: &'s [Unit<'_>],
    migrated: &'s HashMap<&str, String>,
) {
    for unit in units {
        let Some(entry) = lock.get(&unit.task.id) else {
            continue;
        };
        snapshot.lock.insert(
            unit.task.id.as_str(),
            Recorded {
                key: migrated.get(unit.task.id.as_str()).unwrap_or(&entry.key),
                generated_at: entry.generated_at,
                images: entry.outputs.iter().map(|o| o.blake3.as_str()).collect(),
                outputs: entry.outputs.iter().map(|o| o.path.as_str()).collect(),
            },
        );
    }
}

/// What the store holds for the units not fresh: images paid for under their keys without a
/// finished result, their results, and which of the images those and the lock name are in the blob
/// store.
fn add_pools<'s>(
    snapshot: &mut Snapshot<'s>,
    held: &'s HashMap<String, u32>,
    results: &'s HashMap<String, StoredResult>,
    unsettled: &[&Unit<'_>],
    blobs: &BlobStore,
) {
    snapshot
        .partial
        .extend(held.iter().map(|(k, n)| (k.as_str(), *n)));
    for (key, result) in results {
        snapshot.cached.insert(
            key,
            Recorded {
                key,
                generated_at: result.generated_at,
                images: result.images.iter().map(|i| i.blake3.as_str()).collect(),
                outputs: vec![],
            },
        );
    }
    let mut wanted: HashSet<&str> = snapshot
        .cached
        .values()
        .flat_map(|r| r.images.iter().copied())
        .collect();
    for unit in unsettled {
        if let Some(rec) = snapshot.lock.get(unit.task.id.as_str()) {
            wanted.extend(rec.images.iter().copied());
        }
    }
    let present: Vec<&str> = wanted.into_iter().filter(|h| blobs.contains(h)).collect();
    snapshot.blobs.extend(present);
}

/// What the remote cache supplied, by key: fetched blobs are in the store now, so a plan takes the
/// entry's word for them.
fn add_remote_hits<'s>(snapshot: &mut Snapshot<'s>, hits: &'s [(String, RemoteEntry)]) {
    for (key, entry) in hits {
        let images: Vec<&str> = entry.images.iter().map(|i| i.blake3.as_str()).collect();
        snapshot.blobs.extend(images.iter().copied());
        snapshot.cached.insert(
            key,
            Recorded {
                key,
                generated_at: entry.generated_at,
                images,
                outputs: vec![],
            },
        );
    }
}

/// Asks the remote cache for what would otherwise be generated (forced tasks excepted); a build
/// fetches what it finds into the store. Returns what it supplied, by key.
fn ask_remote(
    remote: &Remote,
    units: &[Unit<'_>],
    decisions: &[Decision],
    forced: &HashSet<String>,
    store: &mut Store,
    blobs: &BlobStore,
) -> Result<Vec<(String, RemoteEntry)>> {
    let (indices, asked): (Vec<usize>, Vec<Wanted>) = units
        .iter()
        .zip(decisions)
        .enumerate()
        .filter(|(_, (u, d))| d.action == Action::Generate && !forced.contains(&u.task.id))
        .map(|(i, (u, _))| {
            let wanted = Wanted {
                task: u.task.id.clone(),
                key: u.key.hex(),
                n: u.compiled.n,
            };
            (i, wanted)
        })
        .unzip();
    if asked.is_empty() {
        return Ok(Vec::new());
    }
    let found = remote.cache.lookup(&asked, remote.fetch.then_some(blobs));
    indices
        .iter()
        .zip(asked)
        .zip(found)
        .filter_map(|((i, w), entry)| Some((*i, w.key, entry?)))
        .map(|(i, key, entry)| {
            if remote.fetch {
                let unit = &units[i];
                let result = StoredResult {
                    key: key.clone(),
                    task_id: unit.task.id.clone(),
                    model: unit.compiled.model.clone(),
                    provider: remote.provider.clone(),
                    request_json: unit.compiled.body.to_string(),
                    remote_task_id: None,
                    images: entry
                        .images
                        .iter()
                        .map(|i| StoredImage {
                            blake3: i.blake3.clone(),
                            size: i.size,
                            actual_prompt: None,
                            seed: None,
                            paid_at: None,
                        })
                        .collect(),
                    cost: unit.compiled.price.times(unit.compiled.n),
                    generated_at: entry.generated_at,
                };
                store.put_result(&result).map(|()| (key, entry))
            } else {
                Ok((key, entry))
            }
        })
        .collect()
}

/// Lock entries an earlier wanx wrote under a version-1 key (`n` in it), by task id → the current
/// key (hex); the store's result and partial result under the old key are copied to the new one,
/// so the pool holds what was paid for. Nothing is regenerated, nothing paid again.
pub(super) fn migrate<'u>(
    lock: &LockFile,
    store: &mut Store,
    units: &'u [Unit<'_>],
) -> Result<HashMap<&'u str, String>> {
    let mut migrated = HashMap::new();
    for unit in units {
        let (Some(entry), Some(legacy)) = (lock.get(&unit.task.id), unit.legacy) else {
            continue;
        };
        if *legacy.to_hex() != *entry.key || legacy == unit.key {
            continue;
        }
        let key = unit.key.hex();
        if store.pool(&key)?.is_none()
            && let Some(mut result) = store.result(&legacy.hex())?
        {
            result.key.clone_from(&key);
            store.put_result(&result)?;
        }
        migrated.insert(unit.task.id.as_str(), key);
    }
    Ok(migrated)
}

pub(super) fn item<'a>(unit: &'a Unit<'_>) -> Item<'a> {
    Item {
        id: &unit.task.id,
        key: unit.key,
        n: unit.compiled.n,
        pick: unit.task.pick.as_deref(),
        price: unit.compiled.price,
        output: &unit.task.output,
    }
}

/// A file's size, mtime (ns) and inode: what the stat cache trusts a file unchanged by.
pub type Stat = (u64, i64, u64);

/// The blake3 of a file on disk, from the stat cache when size, mtime and inode still match, and
/// the stat it is vouched for under.
pub(super) fn observe<'c>(
    root: &Path,
    path: &str,
    cached: Option<&'c StatEntry>,
    new_stats: &mut Vec<(String, StatEntry)>,
) -> Option<(Cow<'c, str>, Stat)> {
    let full = root.join(path);
    let meta = std::fs::metadata(&full).ok()?;
    let (size, mtime_ns, inode) = stat_of(&meta);
    if let Some(c) = cached
        && c.size == size
        && c.mtime_ns == mtime_ns
        && c.inode == inode
    {
        return Some((Cow::Borrowed(&c.blake3), (size, mtime_ns, inode)));
    }
    let (hash, _) = hash_file(&full).ok()?;
    new_stats.push((
        path.to_owned(),
        StatEntry {
            size,
            mtime_ns,
            inode,
            blake3: hash.clone(),
        },
    ));
    Some((Cow::Owned(hash), (size, mtime_ns, inode)))
}
