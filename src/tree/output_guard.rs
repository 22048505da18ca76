//! Bytes wanx did not write are never destroyed. Before a build (or `wanx verify --repair`) writes
//! an output, the file already at that path must be wanx's: missing, holding the bytes `wanx.lock`
//! records there, or holding bytes the cache holds (an image wanx wrote, and can write again). An
//! output edited by hand, or a file of the user's that happens to sit at an output path, is
//! *foreign*: the build refuses before sending anything, naming it, unless `--force` covers its
//! task; then the file is first moved to `.wanx/replaced/` and named, as DVC keeps modified outputs.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::project::lock::LockFile;
use crate::store::blob_store::{BlobStore, hash_file};
use crate::term::printer::Printer;

/// A file at an output path that wanx did not write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Foreign {
    /// The task that would write over it.
    pub id: String,
    /// Project-relative.
    pub path: String,
    /// `wanx.lock` records other bytes at this path (an output edited by hand); otherwise wanx never
    /// recorded it (a file of the user's).
    pub modified: bool,
}

impl Foreign {
    pub fn describe(&self) -> String {
        if self.modified {
            format!(
                "`{}` (task `{}`): modified by hand, its bytes are not the image wanx wrote",
                self.path, self.id
            )
        } else {
            format!(
                "`{}` (task `{}`): a file wanx did not write",
                self.path, self.id
            )
        }
    }
}

/// Whether the file at `full` may be replaced: missing, or holding bytes wanx wrote (`locked`, the
/// hash `wanx.lock` records at that path, or any blob in the cache).
pub fn is_ours(full: &Path, locked: Option<&str>, blobs: &BlobStore) -> bool {
    match std::fs::symlink_metadata(full) {
        Err(_) => true,
        Ok(meta) if !meta.is_file() => false,
        Ok(_) => match hash_file(full) {
            Ok((hash, _)) => locked == Some(hash.as_str()) || blobs.contains(&hash),
            Err(_) => false,
        },
    }
}

/// The hash `lock` records at each of the output paths `at`.
fn locked_hashes<'l>(lock: &'l LockFile, at: &HashSet<&str>) -> HashMap<&'l str, &'l str> {
    lock.tasks()
        .values()
        .flat_map(|e| &e.outputs)
        .filter(|o| at.contains(o.path.as_str()))
        .map(|o| (o.path.as_str(), o.blake3.as_str()))
        .collect()
}

/// Every foreign file among `targets` (task id, project-relative path: what a build's restores
/// and generations would write), given the hashes `lock` records and the blobs the cache holds.
pub fn find(
    root: &Path,
    targets: Vec<(&str, String)>,
    lock: &LockFile,
    blobs: &BlobStore,
) -> Vec<Foreign> {
    if targets.is_empty() {
        return Vec::new();
    }
    let at: HashSet<&str> = targets.iter().map(|(_, path)| path.as_str()).collect();
    let locked = locked_hashes(lock, &at);
    targets
        .into_iter()
        .filter(|(_, path)| !is_ours(&root.join(path), locked.get(path.as_str()).copied(), blobs))
        .map(|(id, path)| Foreign {
            id: id.to_owned(),
            modified: locked.contains_key(path.as_str()),
            path,
        })
        .collect()
}

/// Moves the file at project-relative `path` to `.wanx/replaced/<time>/<path>`, returning where
/// (project-relative) it now is.
pub fn keep(root: &Path, state_dir: &Path, path: &str, now: i64) -> std::io::Result<PathBuf> {
    let stamp = crate::clock::format_timestamp(now);
    let mut to = state_dir.join("replaced").join(&stamp).join(path);
    let mut n = 1;
    while std::fs::symlink_metadata(&to).is_ok() {
        n += 1;
        to = state_dir
            .join("replaced")
            .join(format!("{stamp}.{n}"))
            .join(path);
    }
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::rename(root.join(path), &to)?;
    Ok(to
        .strip_prefix(root)
        .map_or_else(|_| to.clone(), Path::to_path_buf))
}

/// Prints what `wanx plan` and `--dry-run` should say about foreign files.
pub fn warn(foreign: &[Foreign], printer: &Printer) {
    for f in foreign {
        printer.warn(
            "Foreign",
            &format!(
                "{}; `wanx build` will not replace it (`--force` would, keeping it under `.wanx/replaced/`)",
                f.describe()
            ),
        );
    }
}

/// Before a build writes: refuses (naming each) the foreign files of tasks `--force` does not
/// cover; moves those of forced tasks to `.wanx/replaced/`, naming where.
pub fn guard(
    root: &Path,
    state_dir: &Path,
    forced: &std::collections::HashSet<String>,
    foreign: &[Foreign],
    printer: &Printer,
) -> crate::error::Result<()> {
    let refused: Vec<&Foreign> = foreign.iter().filter(|f| !forced.contains(&f.id)).collect();
    if !refused.is_empty() {
        for f in &refused {
            printer.fail("Refusing", &format!("to replace {}", f.describe()));
        }
        return Err(crate::error::Error::Foreign {
            count: refused.len(),
            id: refused[0].id.clone(),
        });
    }
    let now = crate::clock::now_unix();
    for f in foreign {
        let kept = keep(root, state_dir, &f.path, now)
            .map_err(|e| crate::error::Error::io("could not move aside", root.join(&f.path), e))?;
        printer.warn(
            "Kept",
            &format!("`{}` (not wanx's) as `{}`", f.path, kept.display()),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_locked_and_cached_bytes_are_ours_anything_else_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::new(dir.path().join(".wanx/blobs"));
        let file = dir.path().join("a.png");
        assert!(is_ours(&file, None, &blobs));
        std::fs::write(&file, b"hand made").unwrap();
        let (hash, _) = hash_file(&file).unwrap();
        assert!(!is_ours(&file, None, &blobs));
        assert!(!is_ours(&file, Some("00"), &blobs));
        assert!(is_ours(&file, Some(&hash), &blobs));
        let kept = keep(dir.path(), &dir.path().join(".wanx"), "a.png", 0).unwrap();
        assert_eq!(kept, Path::new(".wanx/replaced/19700101-000000/a.png"));
        assert!(!file.exists());
        std::fs::write(&file, b"again").unwrap();
        let kept = keep(dir.path(), &dir.path().join(".wanx"), "a.png", 0).unwrap();
        assert_eq!(kept, Path::new(".wanx/replaced/19700101-000000.2/a.png"));
    }
}
