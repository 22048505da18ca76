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

/// What the snapshot needs from the store, opened once per plan.
pub(super) struct Context<'p> {
    pub(super) root: &'p Path,
    pub(super) lock: LockFile,
    pub(super) store: Store,
    pub(super) blobs: BlobStore,
    pub(super) stat_cache: HashMap<String, StatEntry>,
    pub(super) new_stats: Vec<(String, StatEntry)>,
    pub(super) now: i64,
    pub(super) remote: Option<Remote>,
}

/// Snapshots what `units` need and reconciles them. Only what is not fresh touches the store.
#[allow(clippy::too_many_lines)] // split by the lead with its rewrite (issue 19)
pub(super) fn decide(
    cx: &mut Context<'_>,
    units: &[Unit<'_>],
    forced: &HashSet<String>,
) -> Result<Vec<Decision>> {
    let Context {
        root,
        lock,
        store,
        blobs,
        stat_cache,
        new_stats,
        now,
        remote,
    } = cx;
    let migrated = migrate(lock, store, units)?;
    let (root, lock, stat_cache, now) = (*root, &*lock, &*stat_cache, *now);
    // The snapshot borrows from the lock, the stat cache and the store's results: it copies no string.
    let mut snapshot = Snapshot::default();
    // Outputs the lock records under the current key: stat them (on every core), hashing only what the
    // stat cache cannot vouch for.
    let locked: Vec<&crate::project::lock::LockOutput> = units
        .iter()
        .filter_map(|u| {
            lock.tasks
                .get(&u.task.id)
                .filter(|e| *u.key.to_hex() == *e.key || migrated.contains_key(u.task.id.as_str()))
        })
        .flat_map(|e| &e.outputs)
        .collect();
    let observed = par_map(locked, |output| {
        let mut fresh_stat = Vec::new();
        let hash = observe(
            root,
            &output.path,
            stat_cache.get(&output.path),
            &mut fresh_stat,
        );
        (output.path.as_str(), hash, fresh_stat)
    });
    for (path, hash, fresh_stat) in observed {
        snapshot.disk.insert(path, hash);
        new_stats.extend(fresh_stat);
    }
    for unit in units {
        let Some(entry) = lock.tasks.get(&unit.task.id) else {
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
    snapshot
        .partial
        .extend(held.iter().map(|(k, n)| (k.as_str(), *n)));
    let keys: Vec<String> = unsettled.iter().map(|u| u.key.hex()).collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let results = store.results(&key_refs)?;
    for (key, result) in &results {
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
    for unit in &unsettled {
        if let Some(rec) = snapshot.lock.get(unit.task.id.as_str()) {
            wanted.extend(rec.images.iter().copied());
        }
    }
    let present: Vec<&str> = wanted.into_iter().filter(|h| blobs.contains(h)).collect();
    snapshot.blobs.extend(present);
    let decisions = reconcile::reconcile(&items, &snapshot, force, now);
    // Only what would otherwise be generated is asked of the remote cache.
    let Some(remote) = remote.as_ref() else {
        return Ok(decisions);
    };
    let hits = ask_remote(remote, units, &decisions, forced, store, blobs)?;
    if hits.is_empty() {
        return Ok(decisions);
    }
    for (key, entry) in &hits {
        let images: Vec<&str> = entry.images.iter().map(|i| i.blake3.as_str()).collect();
        // Fetched blobs are in the store now; a plan takes the entry's word for them.
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
    let from_remote: HashSet<&str> = hits.iter().map(|(k, _)| k.as_str()).collect();
    let mut decisions = reconcile::reconcile(&items, &snapshot, force, now);
    for (unit, d) in units.iter().zip(&mut decisions) {
        d.remote = matches!(d.action, Action::Restore { .. })
            && from_remote.contains(unit.key.hex().as_str());
    }
    Ok(decisions)
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
        let (Some(entry), Some(legacy)) = (lock.tasks.get(&unit.task.id), unit.legacy) else {
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

/// The blake3 of a file on disk, from the stat cache when size, mtime and inode still match.
pub(super) fn observe<'c>(
    root: &Path,
    path: &str,
    cached: Option<&'c StatEntry>,
    new_stats: &mut Vec<(String, StatEntry)>,
) -> Option<Cow<'c, str>> {
    let full = root.join(path);
    let meta = std::fs::metadata(&full).ok()?;
    let (size, mtime_ns, inode) = stat_of(&meta);
    if let Some(c) = cached
        && c.size == size
        && c.mtime_ns == mtime_ns
        && c.inode == inode
    {
        return Some(Cow::Borrowed(&c.blake3));
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
    Some(Cow::Owned(hash))
}
