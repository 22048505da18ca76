//! `KeyCache`: the planner's cache of compiled cache keys, one entry per plan file, kept in the store.
//! An entry is valid under one digest: blake3 over the cache format, the key version, this very wanx
//! binary (version, and the executable's size, mtime and inode, so a rebuilt wanx never trusts an old
//! entry), the provider's identity, the project root, `wanx.toml`'s bytes (the manifest and the
//! registry it extends follow from them), and the plan file's path and bytes. When it matches, the
//! file's tasks keep their keys without being compiled or keyed again; any change to any of those
//! inputs changes the digest and the file is compiled afresh. Only tasks without local-file or task
//! inputs are cached: the others' keys hold their inputs' bytes, so they are keyed on every build.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::compile::cache_key::{CacheKey, KEY_VERSION, Provider};
use crate::error::Result;
use crate::plan::Loaded;
use crate::plan::task::{InputRef, Task};
use crate::project::cache_digest::{field, file_digest, project};
use crate::project::manifest::Manifest;
use crate::store::{PlanKeys, Store};

/// Bump when an entry's encoding or what its digest covers changes.
const FORMAT: u32 = 1;

/// The keys of the plan files whose entry is still valid, and the digests to store new entries under.
pub struct KeyCache {
    /// Per plan file (relative path): its digest now.
    digests: HashMap<PathBuf, [u8; 32]>,
    /// Per plan file whose stored entry matches its digest: its tasks' keys by id.
    valid: HashMap<String, HashMap<String, CacheKey>>,
    /// Stored entries for files no longer in the project.
    stale: Vec<String>,
}

impl KeyCache {
    /// Reads the store's entries and keeps those still valid. `None` when this binary cannot be
    /// identified (then nothing is cached).
    pub fn open(
        store: &Store,
        manifest: &Manifest,
        loaded: &Loaded,
        provider: &Provider,
    ) -> Result<Option<KeyCache>> {
        let Some(context) = context(manifest, provider) else {
            return Ok(None);
        };
        let digests: HashMap<PathBuf, [u8; 32]> = loaded
            .digests
            .iter()
            .map(|(path, text)| (path.clone(), file_digest(&context, path, text)))
            .collect();
        let mut valid = HashMap::new();
        let mut stale = Vec::new();
        for row in store.plan_keys()? {
            let path = PathBuf::from(&row.file);
            match digests.get(&path) {
                Some(now) if now[..] == row.digest[..] => {
                    if let Some(keys) = decode(&row.keys) {
                        valid.insert(row.file, keys);
                    }
                }
                Some(_) => {}
                None => stale.push(row.file),
            }
        }
        Ok(Some(KeyCache {
            digests,
            valid,
            stale,
        }))
    }

    /// The key of `task` as its plan file's valid entry records it.
    pub fn get(&self, task: &Task) -> Option<CacheKey> {
        if !cacheable(task) {
            return None;
        }
        let file = task.origin.file.to_str()?;
        self.valid.get(file)?.get(&task.id).copied()
    }

    /// Stores an entry for every plan file with a cacheable task that was keyed without the cache,
    /// holding the keys of all of that file's cacheable tasks among `keyed` (each task with its key
    /// and whether it came from the cache); drops entries of removed files.
    pub fn save<'t>(
        &self,
        store: &mut Store,
        keyed: impl Iterator<Item = (&'t Task, CacheKey, bool)> + Clone,
    ) -> Result<()> {
        let missed = keyed.clone().any(|(task, _, hit)| !hit && cacheable(task));
        if !missed && self.stale.is_empty() {
            return Ok(());
        }
        let mut files: HashMap<&Path, FileKeys<'t>> = HashMap::new();
        for (task, key, hit) in keyed {
            if !cacheable(task) {
                continue;
            }
            let entry = files.entry(task.origin.file.as_path()).or_default();
            entry.missed |= !hit;
            entry.keys.push((task.id.as_str(), key));
        }
        let rows: Vec<PlanKeys> = files
            .into_iter()
            .filter(|(_, f)| f.missed)
            .filter_map(|(path, f)| {
                Some(PlanKeys {
                    file: path.to_string_lossy().into_owned(),
                    digest: self.digests.get(path)?.to_vec(),
                    keys: encode(&f.keys),
                })
            })
            .collect();
        if rows.is_empty() && self.stale.is_empty() {
            return Ok(());
        }
        store.put_plan_keys(&rows, &self.stale)
    }
}

/// One plan file's keyed tasks, and whether the cache missed any of them.
#[derive(Default)]
struct FileKeys<'t> {
    missed: bool,
    keys: Vec<(&'t str, CacheKey)>,
}

/// Whether a task's key follows from its plan file alone: no local-file or task inputs.
fn cacheable(task: &Task) -> bool {
    task.inputs().all(|input| matches!(input, InputRef::Url(_)))
}

/// What every entry of this project depends on besides its own plan file.
fn context(manifest: &Manifest, provider: &Provider) -> Option<[u8; 32]> {
    let mut h = blake3::Hasher::new();
    h.update(&FORMAT.to_le_bytes());
    h.update(&KEY_VERSION.to_le_bytes());
    project(&mut h, &manifest.root, &manifest.digest)?;
    field(&mut h, provider.identity().as_bytes());
    Some(*h.finalize().as_bytes())
}

/// Each task as its id's length (u32, little-endian), its id, and its 32-byte key.
fn encode(keys: &[(&str, CacheKey)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(keys.iter().map(|(id, _)| id.len() + 36).sum());
    for (id, key) in keys {
        out.extend_from_slice(&(id.len() as u32).to_le_bytes());
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(key.as_bytes());
    }
    out
}

/// The inverse of [`encode`]; `None` for anything malformed (the entry is then ignored).
fn decode(mut bytes: &[u8]) -> Option<HashMap<String, CacheKey>> {
    let mut keys = HashMap::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        let id = std::str::from_utf8(rest.get(..len)?).ok()?;
        let (key, rest) = rest.get(len..)?.split_first_chunk::<32>()?;
        keys.insert(id.to_owned(), CacheKey::from_bytes(*key));
        bytes = rest;
    }
    Some(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> CacheKey {
        CacheKey::from_bytes([b; 32])
    }

    #[test]
    fn entries_round_trip() {
        let keys = [("a", key(1)), ("p00001-t002", key(2)), ("", key(3))];
        let decoded = decode(&encode(&keys)).unwrap();
        assert_eq!(decoded.len(), 3);
        for (id, k) in keys {
            assert_eq!(decoded[id], k);
        }
    }

    #[test]
    fn a_truncated_entry_is_ignored() {
        let bytes = encode(&[("a", key(1)), ("b", key(2))]);
        let first = 4 + 1 + 32;
        for cut in (1..bytes.len()).filter(|c| *c != first) {
            assert!(decode(&bytes[..cut]).is_none(), "cut at {cut}");
        }
        assert!(decode(&[]).unwrap().is_empty());
    }

    #[test]
    fn the_digest_covers_the_path_the_text_and_the_context() {
        let (c1, c2) = ([1; 32], [2; 32]);
        let (t1, t2) = ([1; 32], [2; 32]);
        let a = Path::new("plans/a.toml");
        let b = Path::new("plans/b.toml");
        let base = file_digest(&c1, a, &t1);
        assert_eq!(base, file_digest(&c1, a, &t1));
        assert_ne!(base, file_digest(&c2, a, &t1));
        assert_ne!(base, file_digest(&c1, b, &t1));
        assert_ne!(base, file_digest(&c1, a, &t2));
    }

    #[test]
    fn the_context_covers_the_manifest_and_the_provider() {
        let m = crate::plan::tests::manifest(Path::new("/p"));
        let base = context(&m, &Provider::Emulator).unwrap();
        assert_eq!(base, context(&m, &Provider::Emulator).unwrap());
        assert_ne!(base, context(&m, &Provider::DashScope).unwrap());
        let edited = Manifest {
            digest: [9; 32],
            ..m.clone()
        };
        assert_ne!(base, context(&edited, &Provider::Emulator).unwrap());
        let moved = Manifest {
            root: PathBuf::from("/q"),
            ..m
        };
        assert_ne!(base, context(&moved, &Provider::Emulator).unwrap());
    }
}
