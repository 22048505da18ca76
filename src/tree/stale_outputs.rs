//! Outputs no task claims any more. A build removes the files the previous `wanx.lock` recorded and
//! the new one does not (a renamed pattern, a removed task, a lower `n`, an earlier `{timestamp}`),
//! when their bytes are still the ones recorded: they stay in the cache, so bringing the task back
//! restores them for free. A file edited by hand since is kept and reported. `wanx verify` reports
//! leftovers (files in output directories whose bytes wanx cached but no lock entry claims), and
//! `wanx clean` removes them, like ninja's `-t cleandead`; neither touches a byte wanx did not
//! write.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use crate::error::{Error, Result};
use crate::project::lock::LockFile;
use crate::store::blob_store::{BlobStore, hash_file};
use crate::term::printer::Printer;

/// What the lock recorded before a build, and what the build intends to write.
pub struct Before {
    /// The output paths the old lock records for the tasks whose entries the build may change or
    /// remove, with their blake3 (an entry the build leaves alone keeps its outputs).
    recorded: Vec<(String, String)>,
    /// Every path the build's restores and generations will write.
    claimed: HashSet<String>,
}

impl Before {
    /// `recorded`: the output paths the old lock records for the entries the build may change or
    /// remove, with their blake3; `claimed`: every path the build's restores and generations will
    /// write.
    pub fn new(recorded: Vec<(String, String)>, claimed: HashSet<String>) -> Before {
        Before { recorded, claimed }
    }
}

/// After a build: removes what `before` recorded and neither the new lock nor the build claims,
/// if its bytes are still the recorded ones (caching them first if the cache lacks them); keeps and
/// reports a modified one.
pub fn prune(
    root: &Path,
    blobs: &BlobStore,
    before: &Before,
    after: &LockFile,
    printer: &Printer,
) -> Result<()> {
    let unclaimed: HashSet<&str> = before
        .recorded
        .iter()
        .map(|(path, _)| path.as_str())
        .filter(|path| !before.claimed.contains(*path))
        .collect();
    if unclaimed.is_empty() {
        return Ok(());
    }
    // Those the new lock still records (under any task) are kept.
    let kept: HashSet<&str> = after
        .tasks()
        .values()
        .flat_map(|e| &e.outputs)
        .map(|o| o.path.as_str())
        .filter(|path| unclaimed.contains(path))
        .collect();
    let mut stale: Vec<&(String, String)> = before
        .recorded
        .iter()
        .filter(|(path, _)| unclaimed.contains(path.as_str()) && !kept.contains(path.as_str()))
        .collect();
    stale.sort();
    stale.dedup();
    for (path, recorded) in stale {
        let full = root.join(path);
        if !std::fs::symlink_metadata(&full).is_ok_and(|m| m.is_file()) {
            continue;
        }
        match hash_file(&full) {
            Ok((hash, _)) if hash == *recorded => {
                if !blobs.contains(&hash) {
                    blobs
                        .insert_copy(&full)
                        .map_err(|e| Error::io("could not cache", &full, e))?;
                }
                std::fs::remove_file(&full).map_err(|e| Error::io("could not remove", &full, e))?;
                printer.status(
                    "Removed",
                    &format!("old output {path} (no task writes it now; it stays in the cache)"),
                );
            }
            _ => printer.warn(
                "Kept",
                &format!(
                    "old output {path}: no task writes it now, but it was modified, so it is yours"
                ),
            ),
        }
    }
    Ok(())
}

/// Files in the directories of the lock's outputs (and `extra_dirs`) that no lock entry records
/// and whose bytes the cache holds: images wanx wrote that nothing claims. Project-relative, sorted.
pub fn leftovers(
    root: &Path,
    lock: &LockFile,
    blobs: &BlobStore,
    extra_dirs: &[&str],
) -> Vec<String> {
    let recorded = output_paths(lock);
    let mut dirs: BTreeSet<String> = recorded
        .iter()
        .map(|p| p.rsplit_once('/').map_or("", |(dir, _)| dir).to_owned())
        .collect();
    dirs.extend(
        extra_dirs
            .iter()
            .map(|d| crate::tree::output_claims::normalize(d)),
    );
    let mut found = Vec::new();
    for dir in dirs {
        // Never wanx's own state, git's, or the project root's own files.
        if dir.is_empty() || dir.starts_with(".wanx") || dir.starts_with(".git") {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(root.join(&dir)) else {
            continue;
        };
        for entry in entries.filter_map(std::result::Result::ok) {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let rel = format!("{dir}/{name}");
            if recorded.contains(rel.as_str()) || !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            if let Ok((hash, _)) = hash_file(&entry.path())
                && blobs.contains(&hash)
            {
                found.push(rel);
            }
        }
    }
    found.sort();
    found
}

/// `wanx clean`: removes the [`leftovers`] (or, with `dry_run`, lists them).
pub fn clean(dir: Option<&Path>, dry_run: bool, wait: bool, printer: &Printer) -> Result<()> {
    let cwd = match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::current_dir().map_err(|e| Error::io("could not read", ".", e))?,
    };
    let (manifest, _) =
        crate::project::manifest::Manifest::load(&crate::project::manifest::Manifest::find(&cwd)?)?;
    let root = &manifest.root;
    let _lock = if dry_run {
        None
    } else {
        Some(crate::project::one_writer::ProjectLock::acquire(
            &manifest.state_dir(),
            wait,
            printer,
        )?)
    };
    let lock = LockFile::read(&manifest.lock_path())?;
    let blobs = BlobStore::new(manifest.state_dir().join("blobs"));
    let found = leftovers(root, &lock, &blobs, &[&manifest.project.out_dir]);
    for path in &found {
        if dry_run {
            printer.status("Would remove", path);
        } else {
            let full = root.join(path);
            std::fs::remove_file(&full).map_err(|e| Error::io("could not remove", &full, e))?;
            printer.status("Removed", &format!("{path} (it stays in the cache)"));
        }
    }
    let verb = if dry_run {
        "would be removed"
    } else {
        "removed"
    };
    printer.status(
        "Cleaned",
        &format!(
            "{} old output{} {verb}",
            found.len(),
            if found.len() == 1 { "" } else { "s" }
        ),
    );
    Ok(())
}

/// Every output path `lock` records.
fn output_paths(lock: &LockFile) -> HashSet<&str> {
    lock.tasks()
        .values()
        .flat_map(|e| &e.outputs)
        .map(|o| o.path.as_str())
        .collect()
}
