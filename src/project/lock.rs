//! `LockFile`: `wanx.lock`, the committed record of what each task's request key was and which images
//! it produced. With it a fresh clone (CI) knows its committed images are up to date without the
//! local database: a task is fresh when its key matches and each output's bytes hash to the recorded
//! blake3.
//!
//! The file is TOML written by [`LockFile::to_toml`] in one canonical form: tasks sorted by id, fields
//! in a fixed order, outputs in the order the images were returned. Equal values give identical
//! bytes, so the file diffs and merges well and rewriting an unchanged lock changes nothing:
//!
//! ```toml
//! # This file is written by wanx. It records, per task, the request key and the images it produced.
//! version = 1
//!
//! [task."scene-001-base"]
//! key = "<64 hex: the blake3 request key>"
//! model = "wan2.2-t2i-flash"
//! images = 4
//! cost = "0.56"                # CNY, a decimal string so it round-trips exactly (`Money`)
//! generated_at = 1763300000    # unix seconds of generation (feeds the `{timestamp}` name pattern)
//! outputs = [
//!   { path = "generated/scene-001-base_1.png", blake3 = "<64 hex>", size = 12345 },
//! ]
//! ```
//!
//! Output paths are project-relative and `/`-separated; a path that is absolute or climbs out of the
//! project with `..` is rejected when the lock is read.
//!
//! Reading has a fast path: a file in canonical form (the usual case, since wanx wrote it) is parsed
//! line by line and accepted only if writing the parsed value back reproduces the file byte for byte.
//! Anything else (a hand edit, a merge, CRLF line ends) goes through the `toml` crate, which also
//! reports errors with their line and column.

mod entry;
mod fast;
mod mirror;
mod text;

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use crate::error::Error;
use crate::money::Money;
use crate::term::diagnostic::Diagnostic;
pub use entry::{LOCK_VERSION, LockEntry, LockOutput};
use entry::{is_project_relative, parse_money};
use text::Text;

/// The lock's file name, at the project root.
pub const FILE_NAME: &str = "wanx.lock";

/// The contents of `wanx.lock`: one entry per task id. Equal locks are those with equal entries.
#[derive(Clone, Debug, Default)]
pub struct LockFile {
    tasks: BTreeMap<String, LockEntry>,
    /// The text of `wanx.lock` this value was read from or last written as, when it is in
    /// canonical form: the next write copies the unchanged entries' sections from it.
    text: Option<Arc<Text>>,
    /// The ids inserted or removed since `text`, each with whether `text` has an entry for it.
    changed: BTreeMap<String, bool>,
    /// Whether the mirror beside the file holds this value (it was read from it, or wrote it).
    mirrored: bool,
}

impl PartialEq for LockFile {
    fn eq(&self, other: &LockFile) -> bool {
        self.tasks == other.tasks
    }
}

impl Eq for LockFile {}

impl FromIterator<(String, LockEntry)> for LockFile {
    fn from_iter<I: IntoIterator<Item = (String, LockEntry)>>(entries: I) -> LockFile {
        LockFile::new(entries.into_iter().collect(), None)
    }
}

impl LockFile {
    fn new(tasks: BTreeMap<String, LockEntry>, text: Option<Text>) -> LockFile {
        LockFile {
            tasks,
            text: text.map(Arc::new),
            changed: BTreeMap::new(),
            mirrored: false,
        }
    }

    /// Every entry, by task id.
    pub fn tasks(&self) -> &BTreeMap<String, LockEntry> {
        &self.tasks
    }

    /// The entry of task `id`.
    pub fn get(&self, id: &str) -> Option<&LockEntry> {
        self.tasks.get(id)
    }

    /// Records what task `id` produced.
    pub fn insert(&mut self, id: String, entry: LockEntry) {
        if self.tasks.get(&id) == Some(&entry) {
            return;
        }
        self.note_change(&id);
        self.tasks.insert(id, entry);
    }

    /// Forgets task `id`.
    pub fn remove(&mut self, id: &str) -> Option<LockEntry> {
        if self.tasks.contains_key(id) {
            self.note_change(id);
        }
        self.tasks.remove(id)
    }

    /// Remembers, the first time `id` changes, whether the text has an entry for it.
    fn note_change(&mut self, id: &str) {
        if self.text.is_some() && !self.changed.contains_key(id) {
            let had = self.tasks.contains_key(id);
            self.changed.insert(id.to_owned(), had);
        }
    }

    /// Hands this lock, as it was last read from or written to `path`, to the next read of `path`
    /// in this process (the next build under `wanx watch`), which then decodes nothing. A lock
    /// changed since, or read from a text not in canonical form, is dropped.
    pub fn keep(self, path: &Path) {
        if self.changed.is_empty()
            && let Some(text) = &self.text
        {
            let digest = text.digest;
            memo::keep(path, digest, self);
        }
    }

    /// Writes the mirror of the lock this process kept (see [`LockFile::keep`]) for the next
    /// process, unless it is there already: a command that may have written the lock calls this
    /// when it is done (`wanx build` at its end, `wanx watch` when it stops), so the lock's writes
    /// in between cost no mirror each. Best effort.
    pub fn mirror_kept() {
        memo::with(|path, digest, lock| {
            if let Some(m) = mirror::beside(path).filter(|_| !lock.mirrored) {
                let starts = lock.text.as_deref().map(Text::starts);
                mirror::write(&m, digest, &lock.tasks, starts);
                lock.mirrored = true;
            }
        });
    }

    /// Reads the lock at `path`. A missing file is an empty lock; a file that does not parse, or was
    /// written by a newer wanx, is an [`Error::Invalid`] located at the problem.
    ///
    /// The lock this process last wrote or read, when the file still hashes the same, is taken as
    /// it is (see [`LockFile::keep`]); else a lock whose bytes hash as its mirror in `.wanx/` records
    /// is decoded from the mirror (see [`mirror`]); any other is parsed, then mirrored.
    pub fn read(path: &Path) -> Result<LockFile, Error> {
        LockFile::read_with_digest(path).map(|(lock, _)| lock)
    }

    /// [`LockFile::read`], with the blake3 of the bytes read (`None` when there is no lock file).
    pub fn read_with_digest(path: &Path) -> Result<(LockFile, Option<[u8; 32]>), Error> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok((LockFile::default(), None));
            }
            Err(e) => return Err(Error::io("could not read", path, e)),
        };
        let digest = *blake3::hash(&bytes).as_bytes();
        if let Some(lock) = memo::take(path, &digest) {
            return Ok((lock, Some(digest)));
        }
        let source = String::from_utf8(bytes).map_err(|_| {
            let e = io::Error::new(
                io::ErrorKind::InvalidData,
                "stream did not contain valid UTF-8",
            );
            Error::io("could not read", path, e)
        })?;
        let mirror = mirror::beside(path);
        if let Some((tasks, starts)) = mirror.as_deref().and_then(|m| mirror::read(m, &digest)) {
            let text = starts.and_then(|starts| Text::at(source, starts, tasks.len()));
            let mut lock = LockFile::new(tasks, text);
            lock.mirrored = true;
            return Ok((lock, Some(digest)));
        }
        let shown = path.file_name().map_or(path, Path::new);
        let mut lock = LockFile::parse(source, shown)?;
        if let Some(m) = mirror {
            let starts = lock.text.as_deref().map(Text::starts);
            mirror::write(&m, &digest, &lock.tasks, starts);
            lock.mirrored = true;
        }
        Ok((lock, Some(digest)))
    }

    /// Parses the text of a lock file, keeping it when it is in canonical form (for the next
    /// write); `shown` names the file in diagnostics.
    fn parse(source: String, shown: &Path) -> Result<LockFile, Error> {
        if let Some((tasks, starts)) = fast::parse(&source) {
            return Ok(LockFile::new(tasks, Some(Text::new(source, starts))));
        }
        match parse_toml(&source) {
            Ok(tasks) => Ok(LockFile::new(tasks, None)),
            Err(d) => {
                let d = match d {
                    Problem::At(message, span) => {
                        Diagnostic::error(shown, message).at(&source, span)
                    }
                    Problem::Whole(message) => Diagnostic::error(shown, message),
                };
                Err(Error::Invalid {
                    count: 1,
                    diagnostics: vec![d.hint(
                        "`wanx.lock` is written by wanx: after a merge conflict, keep either side and run `wanx build` to rewrite it",
                    )],
                })
            }
        }
    }

    /// The canonical TOML text; equal locks give identical bytes.
    #[cfg(test)]
    fn to_toml(&self) -> String {
        text::render(&self.tasks, None).source
    }

    /// Writes the lock to `path` atomically (temp file in the same directory, then rename). When the
    /// file already holds exactly these bytes nothing is written, so its mtime stays put. The text
    /// is made by copying from the one last read or written what did not change (see [`text`]).
    pub fn write_atomic(&mut self, path: &Path) -> io::Result<()> {
        let old = self.text.as_deref().map(|t| (t, &self.changed));
        let text = text::render(&self.tasks, old);
        // A text other than the one the file was read with or written as: no need to compare.
        let differs = old.is_some_and(|(old, _)| old.digest != text.digest);
        let existing = if differs {
            Ok(Vec::new())
        } else {
            std::fs::read(path)
        };
        match existing {
            Ok(existing) if existing == text.source.as_bytes() => {}
            Ok(_) => crate::store::blob_store::write_atomic(path, text.source.as_bytes())?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                crate::store::blob_store::write_atomic(path, text.source.as_bytes())?;
            }
            Err(e) => return Err(e),
        }
        // The mirror holds what this value was read as: only the same text keeps it current.
        self.mirrored &= self
            .text
            .as_ref()
            .is_some_and(|old| old.digest == text.digest);
        self.text = Some(Arc::new(text));
        self.changed.clear();
        Ok(())
    }
}

/// The lock this process last read or wrote, for the one text of `wanx.lock` whose blake3 it
/// records: under `wanx watch` each build hands its lock to the next (see [`LockFile::keep`]), which
/// takes it when the file still hashes the same. Anything else (another process wrote the lock, a
/// same-size edit within the second) hashes differently and decodes the file.
mod memo {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    use super::LockFile;

    static LAST: Mutex<Option<(PathBuf, [u8; 32], LockFile)>> = Mutex::new(None);

    /// The lock kept for `path` when its text hashes to `text`; taken, so it is never shared.
    pub(super) fn take(path: &Path, text: &[u8; 32]) -> Option<LockFile> {
        let mut last = LAST
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match last.take() {
            Some((p, t, lock)) if p == path && t == *text => Some(lock),
            other => {
                *last = other;
                None
            }
        }
    }

    pub(super) fn keep(path: &Path, text: [u8; 32], lock: LockFile) {
        let mut last = LAST
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *last = Some((path.to_path_buf(), text, lock));
    }

    /// Calls `f` with the kept lock, if any (its path and the blake3 of its text).
    pub(super) fn with(f: impl FnOnce(&Path, &[u8; 32], &mut LockFile)) {
        let mut last = LAST
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((path, text, lock)) = last.as_mut() {
            f(path, text, lock);
        }
    }
}

enum Problem {
    At(String, std::ops::Range<usize>),
    Whole(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    version: toml::Spanned<u32>,
    #[serde(default)]
    task: BTreeMap<String, WireEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEntry {
    key: String,
    model: String,
    images: u32,
    #[serde(deserialize_with = "de_money")]
    cost: Money,
    generated_at: i64,
    #[serde(default)]
    outputs: Vec<WireOutput>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireOutput {
    #[serde(deserialize_with = "de_path")]
    path: String,
    blake3: String,
    size: u64,
}

/// Only the version, read when the full parse fails: a lock from a newer wanx should say so rather
/// than complain about the fields it does not know.
#[derive(Deserialize)]
struct VersionProbe {
    version: Option<toml::Spanned<toml::Value>>,
}

fn de_money<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Money, D::Error> {
    let s = String::deserialize(d)?;
    parse_money(&s).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "`{s}` is not an amount of yuan (a decimal with at most six places, such as \"0.56\")"
        ))
    })
}

fn de_path<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if is_project_relative(&s) {
        Ok(s)
    } else {
        Err(serde::de::Error::custom(format!(
            "output path `{s}` must be relative to the project root, `/`-separated, without `..`"
        )))
    }
}

fn version_problem(version: &toml::Spanned<toml::Value>) -> Option<Problem> {
    if version.get_ref().as_integer() == Some(i64::from(LOCK_VERSION)) {
        return None;
    }
    Some(Problem::At(
        format!(
            "`wanx.lock` has version {}, but this wanx reads version {LOCK_VERSION}: upgrade wanx",
            version.get_ref()
        ),
        version.span(),
    ))
}

fn parse_toml(source: &str) -> Result<BTreeMap<String, LockEntry>, Problem> {
    let wire: Wire = match toml::from_str(source) {
        Ok(wire) => wire,
        Err(e) => {
            if let Ok(VersionProbe {
                version: Some(version),
            }) = toml::from_str(source)
                && let Some(problem) = version_problem(&version)
            {
                return Err(problem);
            }
            return Err(match e.span() {
                Some(span) => Problem::At(e.message().to_owned(), span),
                None => Problem::Whole(e.message().to_owned()),
            });
        }
    };
    if *wire.version.get_ref() != LOCK_VERSION {
        let value = toml::Value::Integer(i64::from(*wire.version.get_ref()));
        let spanned = toml::Spanned::new(wire.version.span(), value);
        if let Some(problem) = version_problem(&spanned) {
            return Err(problem);
        }
    }
    let tasks = wire
        .task
        .into_iter()
        .map(|(id, e)| {
            let outputs = e
                .outputs
                .into_iter()
                .map(|o| LockOutput {
                    path: o.path,
                    blake3: o.blake3,
                    size: o.size,
                })
                .collect();
            let entry = LockEntry {
                key: e.key,
                model: e.model,
                images: e.images,
                cost: e.cost,
                generated_at: e.generated_at,
                outputs,
            };
            (id, entry)
        })
        .collect();
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::entry::HEADER;
    use super::*;

    fn hex(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    fn entry(n: u32) -> LockEntry {
        LockEntry {
            key: hex('a'),
            model: "wan2.2-t2i-flash".to_owned(),
            images: n,
            cost: Money::from_yuan(0.14) * n,
            generated_at: 1_763_300_000,
            outputs: (1..=n)
                .map(|i| LockOutput {
                    path: format!("generated/scene-001-base_{i}.png"),
                    blake3: hex('b'),
                    size: 12_345 + u64::from(i),
                })
                .collect(),
        }
    }

    fn sample() -> LockFile {
        let mut lock = LockFile::default();
        lock.insert("scene-002".to_owned(), entry(1));
        lock.insert("scene-001-base".to_owned(), entry(4));
        lock.insert("empty".to_owned(), entry(0));
        lock
    }

    fn parse(text: &str) -> Result<LockFile, Error> {
        LockFile::parse(text.to_owned(), Path::new("wanx.lock"))
    }

    fn diagnostic(err: Error) -> Diagnostic {
        match err {
            Error::Invalid {
                mut diagnostics, ..
            } => diagnostics.remove(0),
            other => panic!("expected Error::Invalid, got {other:?}"),
        }
    }

    #[test]
    fn writes_the_documented_format() {
        let mut lock = LockFile::default();
        lock.tasks.insert("scene-001-base".to_owned(), entry(1));
        let expected = format!(
            "{HEADER}version = 1\n\n[task.\"scene-001-base\"]\nkey = \"{a}\"\nmodel = \"wan2.2-t2i-flash\"\nimages = 1\ncost = \"0.14\"\ngenerated_at = 1763300000\noutputs = [\n  {{ path = \"generated/scene-001-base_1.png\", blake3 = \"{b}\", size = 12346 }},\n]\n",
            a = hex('a'),
            b = hex('b')
        );
        assert_eq!(lock.to_toml(), expected);
    }

    #[test]
    fn round_trips_through_both_parsers() {
        let lock = sample();
        let text = lock.to_toml();
        assert_eq!(
            fast::parse(&text).map(|(t, _)| t).as_ref(),
            Some(&lock.tasks)
        );
        assert_eq!(parse_toml(&text).ok().as_ref(), Some(&lock.tasks));
        assert_eq!(parse(&text).unwrap(), lock);
        assert_eq!(
            parse(&LockFile::default().to_toml()).unwrap(),
            LockFile::default()
        );
    }

    #[test]
    fn equal_locks_write_identical_bytes() {
        let mut a = sample();
        let mut b = LockFile::default();
        // Inserted in another order.
        for (id, e) in sample().tasks.into_iter().rev() {
            b.insert(id, e);
        }
        assert_eq!(a.to_toml(), b.to_toml());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wanx.lock");
        a.write_atomic(&path).unwrap();
        let first = std::fs::read(&path).unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        b.write_atomic(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), first);
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            mtime,
            "a no-op write leaves the file alone"
        );
        assert_eq!(LockFile::read(&path).unwrap(), a);
    }

    /// A project folder with a state directory (so the lock is mirrored), and its lock's path.
    fn project() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".wanx")).unwrap();
        let path = dir.path().join("wanx.lock");
        (dir, path)
    }

    /// Writes `lock` at `path` and checks the file is its full canonical rendering.
    fn write_and_check(lock: &mut LockFile, path: &Path) {
        lock.write_atomic(path).unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), lock.to_toml());
    }

    #[test]
    fn a_changed_lock_is_written_as_its_full_rendering() {
        let (_dir, path) = project();
        let mut lock = sample();
        for id in ["]", "a.b", "场景", "zz"] {
            lock.insert(id.to_owned(), entry(2));
        }
        write_and_check(&mut lock, &path);
        // Read back through each path: parsed (which mirrors it), then from the mirror.
        for _ in 0..2 {
            let mut read = LockFile::read(&path).unwrap();
            assert_eq!(read, lock);
            assert!(
                read.text.is_some(),
                "a canonical text is kept for the next write"
            );
            // Changed, added before, between and after the others, removed at both ends.
            read.insert("scene-002".to_owned(), entry(3));
            read.insert("0-first".to_owned(), entry(1));
            read.insert("m".to_owned(), entry(0));
            read.insert("zzz".to_owned(), entry(1));
            read.remove("]");
            read.remove("场景");
            read.remove("m");
            read.insert("empty".to_owned(), entry(0));
            write_and_check(&mut read, &path);
            // And again from the text it just wrote.
            read.remove("0-first");
            read.insert("a.b".to_owned(), entry(5));
            write_and_check(&mut read, &path);
            write_and_check(&mut lock, &path);
        }
        // A hand-edited (non-canonical) lock is written whole.
        let edited = lock.to_toml().replace("images = 4", "images =   4");
        std::fs::write(&path, &edited).unwrap();
        let mut read = LockFile::read(&path).unwrap();
        assert!(read.text.is_none());
        read.insert("new".to_owned(), entry(1));
        write_and_check(&mut read, &path);
    }

    #[test]
    fn a_mirror_with_unsound_offsets_costs_the_copying_only() {
        let (_dir, path) = project();
        let mut lock = sample();
        write_and_check(&mut lock, &path);
        let digest = *blake3::hash(&std::fs::read(&path).unwrap()).as_bytes();
        let m = mirror::beside(&path).unwrap();
        for starts in [vec![0, 1, 2], vec![5], vec![]] {
            mirror::write(&m, &digest, &lock.tasks, Some(&starts));
            let mut read = LockFile::read(&path).unwrap();
            assert_eq!(read, lock);
            assert!(read.text.is_none(), "{starts:?}");
            read.insert("new".to_owned(), entry(1));
            write_and_check(&mut read, &path);
            write_and_check(&mut lock, &path);
        }
    }

    #[test]
    fn a_kept_lock_is_never_taken_for_a_changed_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wanx.lock");
        let mut lock = sample();
        lock.write_atomic(&path).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        lock.clone().keep(&path);
        assert_eq!(LockFile::read(&path).unwrap(), lock, "taken as kept");
        assert_eq!(LockFile::read(&path).unwrap(), lock, "decoded again");
        // Kept, then the file is edited to the same size: the edit is what is read.
        lock.clone().keep(&path);
        let edited = written.replacen("images = 4", "images = 5", 1);
        assert_eq!(edited.len(), written.len());
        std::fs::write(&path, &edited).unwrap();
        let read = LockFile::read(&path).unwrap();
        assert_eq!(read.get("scene-001-base").unwrap().images, 5);
        // A lock changed after its write is not kept.
        let mut changed = read;
        changed.insert("other".to_owned(), entry(1));
        changed.keep(&path);
        assert!(LockFile::read(&path).unwrap().get("other").is_none());
    }

    #[test]
    fn odd_ids_are_escaped_and_read_back() {
        let mut lock = LockFile::default();
        for id in [
            "quote\"d",
            "back\\slash",
            "tab\tnew\nline",
            "场景-001",
            "emoji 🎨",
            "ctl\u{1}\u{7f}",
            "]",
            "a.b",
            "",
        ] {
            lock.tasks.insert(id.to_owned(), entry(1));
        }
        let text = lock.to_toml();
        assert!(text.contains("[task.\"quote\\\"d\"]"), "{text}");
        assert!(text.contains("[task.\"ctl\\u0001\\u007F\"]"), "{text}");
        assert!(text.contains("[task.\"场景-001\"]"), "{text}");
        assert_eq!(parse(&text).unwrap(), lock);
        // And a standard TOML reader agrees.
        let value: toml::Table = toml::from_str(&text).unwrap();
        assert!(
            value["task"]
                .as_table()
                .unwrap()
                .contains_key("tab\tnew\nline")
        );
    }

    #[test]
    fn hand_edited_locks_are_read_by_the_slow_path() {
        let text = sample()
            .to_toml()
            .replace("images = 4", "images   =   4 # edited");
        assert!(fast::parse(&text).is_none());
        assert_eq!(parse(&text).unwrap(), sample());
        let crlf = sample().to_toml().replace('\n', "\r\n");
        assert_eq!(parse(&crlf).unwrap(), sample());
    }

    #[test]
    fn non_canonical_text_takes_the_slow_path() {
        let canonical = sample().to_toml();
        let swapped = {
            // The same tasks, in the wrong order.
            let (head, rest) = canonical.split_once("\n\n").unwrap();
            let mut blocks: Vec<&str> = rest.trim_end().split("\n\n").collect();
            blocks.reverse();
            format!("{head}\n\n{}\n", blocks.join("\n\n"))
        };
        for text in [
            swapped,
            canonical.replace("images = 4", "images = +4"),
            canonical.replace("generated_at = 1763300000", "generated_at = 1_763_300_000"),
            canonical.replacen("cost = \"0.56\"", "cost = \"0.560\"", 1),
            canonical.replace("size = 12346", "size = 0x303A"),
            canonical.replace("model = \"wan2.2-t2i-flash\"", "model = 'wan2.2-t2i-flash'"),
        ] {
            assert!(fast::parse(&text).is_none(), "{text}");
            assert_eq!(parse(&text).unwrap(), sample(), "{text}");
        }
    }

    #[test]
    fn parse_errors_name_line_and_column() {
        let text = sample()
            .to_toml()
            .replace("images = 4", "images = <<<<<<< HEAD");
        let line = text
            .lines()
            .position(|l| l.starts_with("images = <"))
            .unwrap()
            + 1;
        let d = diagnostic(parse(&text).unwrap_err());
        assert_eq!(d.path, Path::new("wanx.lock"));
        assert_eq!((d.line, d.column), (line, 10), "{}", d.render(false));
        assert!(d.hint.is_some());
    }

    #[test]
    fn bad_values_are_located() {
        let text = sample()
            .to_toml()
            .replacen("cost = \"0.56\"", "cost = \"0.5x\"", 1);
        let d = diagnostic(parse(&text).unwrap_err());
        assert!(d.message.contains("`0.5x`"), "{}", d.message);
        let line = text.lines().position(|l| l.contains("0.5x")).unwrap() + 1;
        assert_eq!(d.line, line);

        let text =
            sample()
                .to_toml()
                .replacen("generated/scene-001-base_1.png", "../../etc/passwd", 1);
        let d = diagnostic(parse(&text).unwrap_err());
        assert!(d.message.contains("../../etc/passwd"), "{}", d.message);
    }

    #[test]
    fn newer_versions_are_refused_clearly() {
        let text = format!("{HEADER}version = 2\n\n[task.a]\nwhatever = true\n");
        let d = diagnostic(parse(&text).unwrap_err());
        assert!(d.message.contains("version 2"), "{}", d.message);
        assert_eq!((d.line, d.column), (2, 11));
        let text = format!("{HEADER}version = 7\n");
        let d = diagnostic(parse(&text).unwrap_err());
        assert!(d.message.contains("version 7"), "{}", d.message);
    }

    #[test]
    fn missing_lock_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            LockFile::read(&dir.path().join("wanx.lock")).unwrap(),
            LockFile::default()
        );
    }

    #[test]
    fn money_strings_are_exact() {
        let format_money = |m| {
            let mut out = String::new();
            entry::push_money(&mut out, m);
            out
        };
        for (text, micros) in [
            ("0.56", 560_000),
            ("2", 2_000_000),
            ("2.00", 2_000_000),
            ("0.183481", 183_481),
            ("-1.5", -1_500_000),
        ] {
            assert_eq!(parse_money(text), Some(Money(micros)), "{text}");
        }
        for bad in ["", ".5", "1.", "1.1234567", "1e3", "+1", "0x10", "1.-5"] {
            assert_eq!(parse_money(bad), None, "{bad}");
        }
        for micros in [0, 1, 560_000, 2_000_000, 183_481, -1_500_000, i64::MAX] {
            let text = format_money(Money(micros));
            assert_eq!(text, Money(micros).to_string().replace('¥', ""));
            assert_eq!(parse_money(&text), Some(Money(micros)));
        }
    }
}
