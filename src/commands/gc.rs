//! `wanx gc` and the cache's bound: `[cache] max_size` (default 5 GB, ccache's) caps `.wanx/blobs`.
//! Beyond it, the blobs used least recently go first, and never one the current `wanx.lock` references
//! (nor a partial result's paid images): a committed project always stays restorable. A build applies
//! the bound when it ends (one indexed query when under it); `wanx gc` applies it now, and
//! `wanx gc --dry-run` only says what it would remove. A stored result is served whole or not at all,
//! so evicting one of its images forgets the result too: the next build of that request pays again.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::project::byte_size::{human_size, parse_size};
use crate::project::lock::LockFile;
use crate::project::manifest::Manifest;
use crate::project::one_writer::ProjectLock;
use crate::store::blob_store::BlobStore;
use crate::store::{BlobUse, Store};
use crate::term::printer::Printer;

/// What applying the bound removes, and what is left.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Eviction {
    pub evict: Vec<BlobUse>,
    pub freed: u64,
    /// Size of the cache after eviction.
    pub remaining: u64,
    /// Size of the blobs that may not be evicted.
    pub protected: u64,
}

/// Chooses the blobs to evict (pure): the least recently used first, skipping `protected`, until the
/// total is at most `max`. If the protected blobs alone exceed `max`, everything else goes.
pub fn choose(blobs: &[BlobUse], protected: &HashSet<String>, max: u64) -> Eviction {
    let total: u64 = blobs.iter().map(|b| b.size).sum();
    let protected_size = blobs
        .iter()
        .filter(|b| protected.contains(&b.blake3))
        .map(|b| b.size)
        .sum();
    let mut candidates: Vec<&BlobUse> = blobs
        .iter()
        .filter(|b| !protected.contains(&b.blake3))
        .collect();
    candidates.sort_by(|a, b| a.last_used.cmp(&b.last_used).then(a.blake3.cmp(&b.blake3)));
    let mut remaining = total;
    let mut evict = Vec::new();
    for b in candidates {
        if remaining <= max {
            break;
        }
        remaining -= b.size;
        evict.push(b.clone());
    }
    Eviction {
        freed: total - remaining,
        evict,
        remaining,
        protected: protected_size,
    }
}

/// The blobs that may never be evicted: every output `wanx.lock` records, and partial results.
fn protected(manifest: &Manifest, store: &Store) -> Result<HashSet<String>> {
    let lock = LockFile::read(&manifest.lock_path())?;
    let mut keep: HashSet<String> = lock
        .tasks()
        .values()
        .flat_map(|e| e.outputs.iter().map(|o| o.blake3.clone()))
        .collect();
    keep.extend(store.partial_blobs()?);
    Ok(keep)
}

/// Applies the bound with the store already open (the caller holds the project lock). Returns the
/// eviction (nothing removed when `dry_run`).
pub fn apply(manifest: &Manifest, store: &mut Store, max: u64, dry_run: bool) -> Result<Eviction> {
    let blobs = store.blob_uses()?;
    let keep = protected(manifest, store)?;
    let eviction = choose(&blobs, &keep, max);
    if dry_run || eviction.evict.is_empty() {
        return Ok(eviction);
    }
    let hashes: HashSet<String> = eviction.evict.iter().map(|b| b.blake3.clone()).collect();
    // Forget first, then delete: a crash in between leaves unindexed files (harmless), never an
    // index entry without its file.
    store.forget_blobs(&hashes)?;
    let files = BlobStore::new(manifest.state_dir().join("blobs"));
    for hash in &hashes {
        let path = files.path(hash);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("could not remove", &path, e)),
        }
    }
    Ok(eviction)
}

/// After a build: evict beyond `[cache] max_size`, saying so only when something went.
pub fn after_build(manifest: &Manifest, store: &mut Store, printer: &Printer) -> Result<()> {
    let max = manifest.cache_max_size();
    let (size, _) = store.blob_totals()?;
    if size <= max {
        return Ok(());
    }
    let eviction = apply(manifest, store, max, false)?;
    if !eviction.evict.is_empty() {
        printer.status(
            "Evicted",
            &format!(
                "{} cached image(s), {} (`[cache] max_size` is {}); `wanx gc` runs this now",
                eviction.evict.len(),
                human_size(eviction.freed),
                human_size(max)
            ),
        );
    }
    Ok(())
}

/// `wanx gc [--dry-run] [--max-size SIZE]`.
pub fn gc(
    dir: Option<&std::path::Path>,
    dry_run: bool,
    max_size: Option<&str>,
    printer: &Printer,
) -> Result<()> {
    let manifest = Manifest::in_dir(dir)?;
    let max = match max_size {
        Some(text) => parse_size(text).map_err(|message| Error::Usage {
            message,
            hint: Some("write a size such as `5GB`, `500MB` or `0`".to_owned()),
        })?,
        None => manifest.cache_max_size(),
    };
    let _lock = ProjectLock::acquire(&manifest.state_dir(), true, printer)?;
    let mut store = Store::open(&manifest.state_dir())?;
    let eviction = apply(&manifest, &mut store, max, dry_run)?;
    let verb = if dry_run { "Would remove" } else { "Removed" };
    if eviction.evict.is_empty() && eviction.remaining <= max {
        printer.status(
            "Finished",
            &format!(
                "nothing to remove: the cache holds {}, within {}",
                human_size(eviction.remaining),
                human_size(max)
            ),
        );
    } else if eviction.evict.is_empty() {
        printer.status("Finished", "nothing can be removed");
    } else {
        for b in &eviction.evict {
            printer.verbose(verb, &format!("{} ({})", b.blake3, human_size(b.size)));
        }
        printer.status(
            if dry_run { "Would remove" } else { "Removed" },
            &format!(
                "{} cached image(s), {}; {} left ({} of it referenced by `wanx.lock`)",
                eviction.evict.len(),
                human_size(eviction.freed),
                human_size(eviction.remaining),
                human_size(eviction.protected)
            ),
        );
    }
    if eviction.remaining > max {
        printer.warn(
            "Warning",
            &format!(
                "the images `wanx.lock` references alone take {}, more than `max_size` ({}): they are kept",
                human_size(eviction.protected),
                human_size(max)
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(hash: &str, size: u64, last_used: i64) -> BlobUse {
        BlobUse {
            blake3: hash.to_owned(),
            size,
            last_used,
        }
    }

    #[test]
    fn the_least_recently_used_go_first_and_locked_blobs_never() {
        let blobs = [
            blob("a", 10, 1),
            blob("b", 10, 5),
            blob("c", 10, 2),
            blob("d", 10, 9),
        ];
        let locked: HashSet<String> = ["a".to_owned()].into();
        let e = choose(&blobs, &locked, 20);
        let gone: Vec<&str> = e.evict.iter().map(|b| b.blake3.as_str()).collect();
        assert_eq!(gone, ["c", "b"]);
        assert_eq!(e.remaining, 20);
        // A bound below the locked blobs keeps them and removes everything else.
        let e = choose(&blobs, &locked, 0);
        assert_eq!(e.remaining, 10);
        assert!(e.evict.iter().all(|b| b.blake3 != "a"));
    }

    #[test]
    fn under_the_bound_nothing_goes() {
        let blobs = [blob("a", 10, 1)];
        assert!(choose(&blobs, &HashSet::new(), 10).evict.is_empty());
    }
}
