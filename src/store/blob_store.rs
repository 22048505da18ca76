//! `BlobStore`: the content-addressed image store under `.wanx/blobs`. A blob's name is the blake3 of
//! its bytes (`ab/cdef…`: the first two hex digits are a directory). Blobs enter the store only
//! through a rename of a file that was hashed as it was read, and leave it only through
//! [`BlobStore::materialize`], which checks the hash again while copying: a blob whose bytes do not
//! match its name is never written to the user's tree (DESIGN invariant 5); it is moved to
//! `.wanx/quarantine/` instead, so the next build sees it missing and generates the image again
//! rather than failing on it forever. Every write is a temp
//! file plus a rename, so no reader ever sees half a file (invariant 2).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

/// The length of a blake3 digest in hex.
pub const HASH_LEN: usize = 64;

const BUF_SIZE: usize = 64 * 1024;

/// The content-addressed store; see the module documentation.
#[derive(Clone, Debug)]
pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    /// A store rooted at `dir` (normally `.wanx/blobs`). Nothing is created until the first insert.
    pub fn new(dir: PathBuf) -> BlobStore {
        BlobStore { dir }
    }

    /// Where blob `hash` lives. `hash` should be a blake3 hex digest (see [`is_hash`]); anything else
    /// gets a path that is never written, so it cannot point outside the store.
    pub fn path(&self, hash: &str) -> PathBuf {
        if is_hash(hash) {
            self.dir.join(&hash[..2]).join(&hash[2..])
        } else {
            self.dir.join("invalid")
        }
    }

    /// Whether the store holds a file for `hash`. A metadata check only: the bytes are verified when
    /// the blob is materialized.
    pub fn contains(&self, hash: &str) -> bool {
        is_hash(hash) && fs::metadata(self.path(hash)).is_ok_and(|m| m.is_file())
    }

    /// The directory for temp files that will be inserted (`.wanx/tmp`, beside the blobs, so a rename
    /// into the store never crosses a filesystem). Created on demand.
    pub fn tmp_dir(&self) -> io::Result<PathBuf> {
        let tmp = self
            .dir
            .parent()
            .map_or_else(|| PathBuf::from("tmp"), |p| p.join("tmp"));
        fs::create_dir_all(&tmp)?;
        Ok(tmp)
    }

    /// Moves the finished file `tmp` (on the same filesystem, e.g. under [`BlobStore::tmp_dir`]) into
    /// the store, returning its blake3 hex and size. `tmp` is hashed as it is read. If the store
    /// already holds a good copy of the blob, `tmp` is removed instead; a damaged copy is replaced.
    pub fn insert_file(&self, tmp: &Path) -> io::Result<(String, u64)> {
        let (hash, size) = hash_file(tmp)?;
        let dest = self.path(&hash);
        if Self::holds_intact(&hash, &dest) {
            fs::remove_file(tmp)?;
        } else {
            create_parent(&dest)?;
            fs::rename(tmp, &dest)?;
        }
        Ok((hash, size))
    }

    /// Stores a copy of the file at `source` (through [`BlobStore::tmp_dir`]; `source` is left as it
    /// is), returning its blake3 hex and size.
    pub fn insert_copy(&self, source: &Path) -> io::Result<(String, u64)> {
        let tmp = tempfile::Builder::new()
            .prefix("copy-")
            .tempfile_in(self.tmp_dir()?)?
            .into_temp_path();
        fs::copy(source, &tmp)?;
        self.insert_file(&tmp)
    }

    /// Stores `bytes`, returning their blake3 hex and size.
    #[cfg(test)]
    pub fn insert_bytes(&self, bytes: &[u8]) -> io::Result<(String, u64)> {
        let hash = blake3::hash(bytes).to_hex().to_string();
        let size = bytes.len() as u64;
        let dest = self.path(&hash);
        if !Self::holds_intact(&hash, &dest) {
            let mut tmp = temp_file_in(&self.tmp_dir()?)?;
            tmp.write_all(bytes)?;
            create_parent(&dest)?;
            tmp.persist(&dest).map_err(|e| e.error)?;
        }
        Ok((hash, size))
    }

    /// Copies blob `hash` to `dest` atomically, returning its size. The bytes stream into a temp file
    /// in `dest`'s directory (created if needed) while being hashed; only if the hash matches is the
    /// temp file renamed over `dest`. Otherwise the temp file is deleted, `dest` is left as it was,
    /// and the error has kind [`io::ErrorKind::InvalidData`].
    pub fn materialize(&self, hash: &str, dest: &Path) -> io::Result<u64> {
        if !is_hash(hash) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{hash}` is not a blake3 digest"),
            ));
        }
        let mut source = File::open(self.path(hash))?;
        let dir = parent_dir(dest);
        fs::create_dir_all(dir)?;
        let mut tmp = temp_file_in(dir)?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0; BUF_SIZE];
        let mut size = 0u64;
        loop {
            let n = match source.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n])?;
            size += n as u64;
        }
        let actual = hasher.finalize().to_hex();
        if actual.as_str() != hash {
            // Dropping `tmp` deletes it.
            drop(source);
            let moved = match self.quarantine(hash) {
                Ok(to) => format!(
                    "; it was moved to `{}`, so the next build generates the image again (`wanx plan` shows the price)",
                    to.display()
                ),
                Err(e) => format!("; moving it to quarantine failed: {e}"),
            };
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "blob `{hash}` is corrupt (its bytes hash to `{actual}`) and was not copied to `{}`{moved}",
                    dest.display()
                ),
            ));
        }
        tmp.persist(dest).map_err(|e| e.error)?;
        Ok(size)
    }

    /// The directory the blobs live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where damaged or stray files are moved: `.wanx/quarantine`, beside the blobs.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.dir
            .parent()
            .map_or_else(|| PathBuf::from("quarantine"), |p| p.join("quarantine"))
    }

    /// Moves blob `hash` out of the store into the quarantine (kept for inspection, never served),
    /// returning where it went.
    pub fn quarantine(&self, hash: &str) -> io::Result<PathBuf> {
        if !is_hash(hash) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{hash}` is not a blake3 digest"),
            ));
        }
        self.quarantine_file(&self.path(hash), hash)
    }

    /// Moves the file at `path` into the quarantine as `name` (`name.1`, `name.2`, … if taken).
    pub fn quarantine_file(&self, path: &Path, name: &str) -> io::Result<PathBuf> {
        let dir = self.quarantine_dir();
        fs::create_dir_all(&dir)?;
        let mut dest = dir.join(name);
        let mut n = 0;
        while fs::symlink_metadata(&dest).is_ok() {
            n += 1;
            dest = dir.join(format!("{name}.{n}"));
        }
        fs::rename(path, &dest)?;
        Ok(dest)
    }

    /// Whether `dest` holds exactly the bytes named `hash`. Only called on inserts, which follow a
    /// paid download, so re-hashing an existing blob is cheap by comparison and heals a damaged one.
    fn holds_intact(hash: &str, dest: &Path) -> bool {
        hash_file(dest).is_ok_and(|(h, _)| h == hash)
    }
}

/// Whether `s` is a lowercase blake3 hex digest.
pub fn is_hash(s: &str) -> bool {
    s.len() == HASH_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The blake3 hex digest and size of the file at `path`, streamed.
pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(File::open(path)?)?;
    Ok((hasher.finalize().to_hex().to_string(), hasher.count()))
}

/// A temp file in `dir` named `.wanx-*.tmp`, so a leftover one is recognizable, created with the
/// permissions an ordinary new file gets (tempfile's default of 0600 would make outputs private).
fn temp_file_in(dir: &Path) -> io::Result<NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(".wanx-").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir)
}

/// Creates the directory `path` will live in.
fn create_parent(path: &Path) -> io::Result<()> {
    fs::create_dir_all(parent_dir(path))
}

/// The directory holding `path`; `.` for a bare file name.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to `path` atomically (temp file in the same directory + rename).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent_dir(path);
    fs::create_dir_all(dir)?;
    let mut tmp = temp_file_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, BlobStore) {
        let root = tempfile::tempdir().unwrap();
        let store = BlobStore::new(root.path().join(".wanx/blobs"));
        (root, store)
    }

    #[test]
    fn insert_contains_materialize_round_trip() {
        let (root, store) = store();
        let bytes = b"not really a png";
        let (hash, size) = store.insert_bytes(bytes).unwrap();
        assert_eq!(hash, blake3::hash(bytes).to_hex().as_str());
        assert_eq!(size, bytes.len() as u64);
        assert!(store.contains(&hash));
        let on_disk = root
            .path()
            .join(".wanx/blobs")
            .join(&hash[..2])
            .join(&hash[2..]);
        assert_eq!(store.path(&hash), on_disk);
        assert_eq!(fs::read(&on_disk).unwrap(), bytes);

        let dest = root.path().join("generated/deep/a.png");
        assert_eq!(store.materialize(&hash, &dest).unwrap(), size);
        assert_eq!(fs::read(&dest).unwrap(), bytes);
        // Only the output is left in its directory: the temp file was renamed, not copied.
        let names: Vec<_> = fs::read_dir(dest.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn insert_file_moves_the_temp_file_and_removes_duplicates() {
        let (_root, store) = store();
        let first = store.tmp_dir().unwrap().join("one");
        fs::write(&first, b"image").unwrap();
        let (hash, size) = store.insert_file(&first).unwrap();
        assert_eq!(
            (hash.as_str(), size),
            (blake3::hash(b"image").to_hex().as_str(), 5)
        );
        assert!(!first.exists());

        let second = store.tmp_dir().unwrap().join("two");
        fs::write(&second, b"image").unwrap();
        assert_eq!(store.insert_file(&second).unwrap(), (hash.clone(), 5));
        assert!(!second.exists(), "the duplicate temp file is removed");
        assert_eq!(store.insert_bytes(b"image").unwrap(), (hash.clone(), 5));
        assert_eq!(fs::read(store.path(&hash)).unwrap(), b"image");
    }

    #[test]
    fn corrupt_blob_is_not_materialized_and_dest_keeps_its_bytes() {
        let (root, store) = store();
        let (hash, _) = store.insert_bytes(b"the real image").unwrap();
        fs::write(store.path(&hash), b"bit rot").unwrap();

        let dest = root.path().join("generated/a.png");
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::write(&dest, b"old output").unwrap();
        let err = store.materialize(&hash, &dest).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(fs::read(&dest).unwrap(), b"old output");
        let names: Vec<_> = fs::read_dir(dest.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1, "the temp file was deleted");

        // The corrupt blob left the store for the quarantine, bytes intact.
        assert!(!store.contains(&hash));
        let quarantined = root.path().join(".wanx/quarantine").join(&hash);
        assert_eq!(fs::read(&quarantined).unwrap(), b"bit rot");
        assert!(err.to_string().contains("quarantine"), "{err}");

        let fresh = root.path().join("generated/b.png");
        assert!(store.materialize(&hash, &fresh).is_err());
        assert!(!fresh.exists());
    }

    #[test]
    fn inserting_again_heals_a_corrupt_blob() {
        let (_root, store) = store();
        let (hash, _) = store.insert_bytes(b"the real image").unwrap();
        fs::write(store.path(&hash), b"bit rot").unwrap();
        store.insert_bytes(b"the real image").unwrap();
        assert_eq!(fs::read(store.path(&hash)).unwrap(), b"the real image");
    }

    #[test]
    fn odd_hashes_never_leave_the_store() {
        let (root, store) = store();
        assert!(!store.contains("../../etc/passwd"));
        assert!(!store.contains(""));
        assert!(
            store
                .path("..")
                .starts_with(root.path().join(".wanx/blobs"))
        );
        let err = store
            .materialize("../x", &root.path().join("out.png"))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let missing = "0".repeat(HASH_LEN);
        assert!(!store.contains(&missing));
        let err = store
            .materialize(&missing, &root.path().join("out.png"))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn hash_file_streams_large_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&path, &bytes).unwrap();
        assert_eq!(
            hash_file(&path).unwrap(),
            (
                blake3::hash(&bytes).to_hex().to_string(),
                bytes.len() as u64
            )
        );
    }
}
