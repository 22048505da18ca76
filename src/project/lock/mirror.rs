//! The lock's mirror, `.wanx/lock.cache`: `wanx.lock` decoded, in the binary form of
//! [`crate::project::binary_file`], valid for the one text of `wanx.lock` whose blake3 it records. A
//! process reading a lock that hashes the same decodes the mirror instead of parsing the text; a
//! same-second, same-size edit of the lock hashes differently and is parsed. A mirror that is
//! missing, corrupted or for another text costs the parse, nothing more.
//!
//! It is written by the read that had to parse the text, and for the lock a `wanx build` or a
//! `wanx watch` kept when it ends ([`super::LockFile::mirror_kept`]), not at every write of the
//! lock: at 10,000 entries that write cost 4 ms, a large build writes the lock every half second,
//! and under `wanx watch` the next build takes the lock from memory anyway (BENCHMARKS.md, session
//! 6). The entries' section offsets travel with it, so a lock read from it is written back by
//! copying its unchanged sections (see [`super::text`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::entry::{LockEntry, LockOutput};
use crate::money::Money;
use crate::project::binary_file::{self, Reader, Writer};

const MAGIC: &[u8; 8] = b"WANXLK02";

/// Where the mirror of the lock at `lock` lives, when its project has a state directory.
pub(super) fn beside(lock: &Path) -> Option<PathBuf> {
    let state = lock.parent()?.join(".wanx");
    state.is_dir().then(|| state.join("lock.cache"))
}

/// What a mirror holds: the entries, and where their sections start when the text is canonical.
pub(super) type Mirrored = (BTreeMap<String, LockEntry>, Option<Vec<usize>>);

/// The lock the mirror at `path` holds for a lock text whose blake3 is `text`.
pub(super) fn read(path: &Path, text: &[u8; 32]) -> Option<Mirrored> {
    let payload = binary_file::read(path, MAGIC, text)?;
    let mut r = Reader::new(&payload);
    let entries = r.list(|r| {
        let id = r.str()?;
        let entry = LockEntry {
            key: r.str()?,
            model: r.str()?,
            images: r.u32()?,
            cost: Money(r.i64()?),
            generated_at: r.i64()?,
            outputs: r.list(|r| {
                Some(LockOutput {
                    path: r.str()?,
                    blake3: r.str()?,
                    size: r.u64()?,
                })
            })?,
        };
        Some((id, entry))
    })?;
    let starts = r.opt(|r| r.list(Reader::usize))?;
    // Written in id order: the map is built in one pass.
    r.done().then(|| (BTreeMap::from_iter(entries), starts))
}

/// Mirrors `tasks`, whose text hashes to `text` (with its sections at `starts` when canonical), at
/// `path`. Best effort.
pub(super) fn write(
    path: &Path,
    text: &[u8; 32],
    tasks: &BTreeMap<String, LockEntry>,
    starts: Option<&[usize]>,
) {
    let mut w = Writer(Vec::with_capacity(16 + tasks.len() * 330));
    w.count(tasks.len());
    for (id, e) in tasks {
        w.str(id);
        w.str(&e.key);
        w.str(&e.model);
        w.u32(e.images);
        w.i64(e.cost.0);
        w.i64(e.generated_at);
        w.count(e.outputs.len());
        for o in &e.outputs {
            w.str(&o.path);
            w.str(&o.blake3);
            w.u64(o.size);
        }
    }
    match starts {
        None => w.u8(0),
        Some(starts) => {
            w.u8(1);
            w.count(starts.len());
            for s in starts {
                w.count(*s);
            }
        }
    }
    binary_file::write(path, MAGIC, text, &w.0);
}
