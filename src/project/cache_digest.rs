//! The digests that wanx's own caches of derived data (the planner's key cache, the plan cache) are
//! valid under. An entry is trusted only when its digest matches: the digest covers this very binary
//! (a rebuilt wanx never trusts an old entry), what the entry was derived from, and each plan file's
//! path and bytes. A mismatch is a miss, never a wrong answer.

use std::path::Path;

/// A length-prefixed field, so that no two sequences of fields hash alike.
pub fn field(h: &mut blake3::Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// Hashes the identity of the running binary: wanx's version, its path, size, mtime and inode.
/// `None` when the binary cannot be found or stat-ed (the caller then keeps no cache).
fn this_binary(h: &mut blake3::Hasher) -> Option<()> {
    let exe = std::env::current_exe().ok()?;
    let meta = std::fs::metadata(&exe).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    field(h, env!("CARGO_PKG_VERSION").as_bytes());
    field(h, exe.as_os_str().as_encoded_bytes());
    h.update(&meta.len().to_le_bytes());
    h.update(&mtime.to_le_bytes());
    #[cfg(unix)]
    h.update(&std::os::unix::fs::MetadataExt::ino(&meta).to_le_bytes());
    Some(())
}

/// Hashes what every cache of a project depends on: this very binary (see [`this_binary`]), the
/// project root and the blake3 of `wanx.toml`'s bytes (the registry and the project's defaults
/// follow from it). `None` when the binary cannot be identified.
pub fn project(h: &mut blake3::Hasher, root: &Path, manifest: &[u8; 32]) -> Option<()> {
    this_binary(h)?;
    field(h, root.as_os_str().as_encoded_bytes());
    h.update(manifest);
    Some(())
}

/// The digest one plan file's entry is valid under: the cache's context, the file's path and the
/// blake3 of its bytes.
pub fn file_digest(context: &[u8; 32], path: &Path, text: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(context);
    field(&mut h, path.as_os_str().as_encoded_bytes());
    h.update(text);
    *h.finalize().as_bytes()
}
