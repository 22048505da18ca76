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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::Path;

use serde::Deserialize;

use crate::error::Error;
use crate::money::Money;
use crate::term::diagnostic::Diagnostic;

/// The format version this wanx reads and writes.
pub const LOCK_VERSION: u32 = 1;

/// The lock's file name, at the project root.
pub const FILE_NAME: &str = "wanx.lock";

const HEADER: &str = "# This file is written by wanx. It records, per task, the request key and the images it produced.\n";

/// The contents of `wanx.lock`: one entry per task id.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LockFile {
    pub tasks: BTreeMap<String, LockEntry>,
}

/// What one task last produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockEntry {
    /// The blake3 request key (hex).
    pub key: String,
    /// The real model id the request was sent to.
    pub model: String,
    /// How many images were requested and billed.
    pub images: u32,
    pub cost: Money,
    /// Unix seconds when the images were generated.
    pub generated_at: i64,
    pub outputs: Vec<LockOutput>,
}

/// One output file of a task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockOutput {
    /// Project-relative, `/`-separated.
    pub path: String,
    /// The blake3 of the file's bytes (hex).
    pub blake3: String,
    pub size: u64,
}

impl LockFile {
    /// Reads the lock at `path`. A missing file is an empty lock; a file that does not parse, or was
    /// written by a newer wanx, is an [`Error::Invalid`] located at the problem.
    ///
    /// A lock whose bytes hash as its mirror in `.wanx/` records is decoded from the mirror (see
    /// [`mirror`]); any other is parsed, then mirrored.
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
        let mirror = mirror::beside(path);
        let digest = *blake3::hash(&bytes).as_bytes();
        if let Some(lock) = mirror.as_deref().and_then(|m| mirror::read(m, &digest)) {
            return Ok((lock, Some(digest)));
        }
        let source = String::from_utf8(bytes).map_err(|_| {
            let e = io::Error::new(
                io::ErrorKind::InvalidData,
                "stream did not contain valid UTF-8",
            );
            Error::io("could not read", path, e)
        })?;
        let shown = path.file_name().map_or(path, Path::new);
        let lock = LockFile::parse(&source, shown)?;
        if let Some(m) = mirror {
            mirror::write(&m, &digest, &lock);
        }
        Ok((lock, Some(digest)))
    }

    /// Parses the text of a lock file; `shown` names it in diagnostics.
    pub fn parse(source: &str, shown: &Path) -> Result<LockFile, Error> {
        if let Some(lock) = fast::parse(source) {
            return Ok(lock);
        }
        parse_toml(source).map_err(|d| {
            let d = match d {
                Problem::At(message, span) => Diagnostic::error(shown, message).at(source, span),
                Problem::Whole(message) => Diagnostic::error(shown, message),
            };
            Error::Invalid {
                count: 1,
                diagnostics: vec![d.hint(
                    "`wanx.lock` is written by wanx: after a merge conflict, keep either side and run `wanx build` to rewrite it",
                )],
            }
        })
    }

    /// The canonical TOML text; equal locks give identical bytes.
    pub fn to_toml(&self) -> String {
        let mut out = String::with_capacity(128 + self.tasks.len() * 640);
        out.push_str(HEADER);
        let _ = writeln!(out, "version = {LOCK_VERSION}");
        for (id, entry) in &self.tasks {
            out.push_str("\n[task.");
            push_string(&mut out, id);
            out.push_str("]\nkey = ");
            push_string(&mut out, &entry.key);
            out.push_str("\nmodel = ");
            push_string(&mut out, &entry.model);
            let _ = write!(out, "\nimages = {}\ncost = \"", entry.images);
            push_money(&mut out, entry.cost);
            let _ = write!(
                out,
                "\"\ngenerated_at = {}\noutputs = [",
                entry.generated_at
            );
            if entry.outputs.is_empty() {
                out.push_str("]\n");
                continue;
            }
            out.push('\n');
            for output in &entry.outputs {
                out.push_str("  { path = ");
                push_string(&mut out, &output.path);
                out.push_str(", blake3 = ");
                push_string(&mut out, &output.blake3);
                let _ = writeln!(out, ", size = {} }},", output.size);
            }
            out.push_str("]\n");
        }
        out
    }

    /// Writes the lock to `path` atomically (temp file in the same directory, then rename). When the
    /// file already holds exactly these bytes nothing is written, so its mtime stays put.
    pub fn write_atomic(&self, path: &Path) -> io::Result<()> {
        let text = self.to_toml();
        match std::fs::read(path) {
            Ok(existing) if existing == text.as_bytes() => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        crate::store::blob_store::write_atomic(path, text.as_bytes())?;
        if let Some(m) = mirror::beside(path) {
            mirror::write(&m, blake3::hash(text.as_bytes()).as_bytes(), self);
        }
        Ok(())
    }
}

/// The lock's mirror, `.wanx/lock.cache`: the lock as last read or written, in the binary form of
/// [`crate::project::binary_file`], valid for the one text of `wanx.lock` whose blake3 it records. A lock read now
/// that hashes the same is decoded from it instead of being parsed as text (a large lock is mostly
/// parsing); a same-second, same-size edit of the lock hashes differently and is parsed. A mirror
/// that is missing, corrupted or for another text costs the parse, nothing more.
mod mirror {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use super::{LockEntry, LockFile, LockOutput};
    use crate::money::Money;
    use crate::project::binary_file::{self, Reader, Writer};

    const MAGIC: &[u8; 8] = b"WANXLK01";

    /// Where the mirror of the lock at `lock` lives, when its project has a state directory.
    pub(super) fn beside(lock: &Path) -> Option<PathBuf> {
        let state = lock.parent()?.join(".wanx");
        state.is_dir().then(|| state.join("lock.cache"))
    }

    /// The lock the mirror at `path` holds for a lock text whose blake3 is `text`.
    pub(super) fn read(path: &Path, text: &[u8; 32]) -> Option<LockFile> {
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
        // Written in id order: the map is built in one pass.
        r.done().then(|| LockFile {
            tasks: BTreeMap::from_iter(entries),
        })
    }

    /// Mirrors `lock`, whose text hashes to `text`, at `path` (best effort).
    pub(super) fn write(path: &Path, text: &[u8; 32], lock: &LockFile) {
        let mut w = Writer(Vec::with_capacity(16 + lock.tasks.len() * 320));
        w.count(lock.tasks.len());
        for (id, e) in &lock.tasks {
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
        binary_file::write(path, MAGIC, text, &w.0);
    }
}

/// Appends `s` as a TOML basic string, escaping what TOML requires (quote, backslash, control
/// characters) and nothing else, so ids in any script stay readable.
fn push_string(out: &mut String, s: &str) {
    out.push('"');
    if !s
        .bytes()
        .any(|b| b < b' ' || matches!(b, b'"' | b'\\' | 0x7f))
    {
        // The common case (hex digests, ordinary ids and paths): nothing to escape.
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c < ' ' || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends `0.56`, `2.00`, `0.183481`: the digits of `Money`'s display, without the currency sign.
fn push_money(out: &mut String, m: Money) {
    if m.0 < 0 {
        out.push('-');
    }
    let abs = m.0.unsigned_abs();
    let (whole, mut frac, mut places) = (abs / 1_000_000, abs % 1_000_000, 6);
    while places > 2 && frac % 10 == 0 {
        frac /= 10;
        places -= 1;
    }
    let _ = write!(out, "{whole}.{frac:0places$}");
}

/// Parses a decimal yuan amount with at most six decimals into exact `Money`.
fn parse_money(s: &str) -> Option<Money> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(frac) || frac.len() > 6 {
        return None;
    }
    if digits.contains('.') && frac.is_empty() {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let mut micros: i64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    for _ in frac.len()..6 {
        micros *= 10;
    }
    let abs = whole.checked_mul(1_000_000)?.checked_add(micros)?;
    Some(Money(if negative { -abs } else { abs }))
}

/// Whether `path` is project-relative and stays inside the project.
fn is_project_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && !path.contains(':')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != ".." && part != ".")
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

fn parse_toml(source: &str) -> Result<LockFile, Problem> {
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
    Ok(LockFile { tasks })
}

/// The fast path: a strict line parser for exactly the text [`LockFile::to_toml`] writes. It returns
/// `None` at the first surprise; in particular it accepts only what `to_toml` would have written
/// itself (ids in strictly ascending order, strings without escapes or control characters, numbers
/// in canonical decimal), so its result serializes back to the same bytes. Debug builds check that.
mod fast {
    use super::{
        HEADER, LOCK_VERSION, LockEntry, LockFile, LockOutput, is_project_relative, parse_money,
        push_money,
    };

    pub(super) fn parse(source: &str) -> Option<LockFile> {
        let body = source.strip_prefix(HEADER)?;
        let mut lines = body.split('\n');
        if lines.next()? != format!("version = {LOCK_VERSION}") {
            return None;
        }
        let mut lock = LockFile::default();
        let mut scratch = String::new();
        let mut previous: Option<&str> = None;
        loop {
            // A blank line before each task; the file's last newline leaves one more blank piece.
            if !lines.next()?.is_empty() {
                return None;
            }
            let Some(header) = lines.next() else {
                break;
            };
            let id = string(header.strip_prefix("[task.")?.strip_suffix(']')?)?;
            if previous.is_some_and(|p| p >= id) {
                return None;
            }
            previous = Some(id);
            let entry = entry(&mut lines, &mut scratch)?;
            lock.tasks.insert(id.to_owned(), entry);
        }
        debug_assert_eq!(
            lock.to_toml(),
            source,
            "the fast path accepted a non-canonical lock"
        );
        Some(lock)
    }

    fn entry<'a>(
        lines: &mut impl Iterator<Item = &'a str>,
        scratch: &mut String,
    ) -> Option<LockEntry> {
        let key = string(lines.next()?.strip_prefix("key = ")?)?.to_owned();
        let model = string(lines.next()?.strip_prefix("model = ")?)?.to_owned();
        let images = u32::try_from(unsigned(lines.next()?.strip_prefix("images = ")?)?).ok()?;
        let cost_text = string(lines.next()?.strip_prefix("cost = ")?)?;
        let cost = parse_money(cost_text)?;
        scratch.clear();
        push_money(scratch, cost);
        if scratch != cost_text {
            return None;
        }
        let generated_at = signed(lines.next()?.strip_prefix("generated_at = ")?)?;
        let mut outputs = Vec::new();
        match lines.next()? {
            "outputs = []" => {}
            "outputs = [" => {
                loop {
                    let line = lines.next()?;
                    if line == "]" {
                        break;
                    }
                    outputs.push(output(line)?);
                }
                // `to_toml` writes no outputs as `[]`.
                if outputs.is_empty() {
                    return None;
                }
            }
            _ => return None,
        }
        Some(LockEntry {
            key,
            model,
            images,
            cost,
            generated_at,
            outputs,
        })
    }

    fn output(line: &str) -> Option<LockOutput> {
        let rest = line.strip_prefix("  { path = ")?;
        let (path, rest) = string_prefix(rest)?;
        let rest = rest.strip_prefix(", blake3 = ")?;
        let (blake3, rest) = string_prefix(rest)?;
        let size = unsigned(rest.strip_prefix(", size = ")?.strip_suffix(" },")?)?;
        if !is_project_relative(path) {
            return None;
        }
        Some(LockOutput {
            path: path.to_owned(),
            blake3: blake3.to_owned(),
            size,
        })
    }

    /// The contents of a quoted string that is all of `s`.
    fn string(s: &str) -> Option<&str> {
        match string_prefix(s)? {
            (inner, "") => Some(inner),
            _ => None,
        }
    }

    /// A quoted string at the start of `s`, and what follows it. Strings `to_toml` would escape
    /// (a backslash or a control character inside) are left to the slow path.
    fn string_prefix(s: &str) -> Option<(&str, &str)> {
        let rest = s.strip_prefix('"')?;
        let end = rest.find('"')?;
        let inner = &rest[..end];
        if inner.bytes().any(|b| b < b' ' || b == b'\\' || b == 0x7f) {
            return None;
        }
        Some((inner, &rest[end + 1..]))
    }

    /// A decimal as `to_toml` writes it: digits only, no leading zero.
    fn unsigned(s: &str) -> Option<u64> {
        let canonical = !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_digit())
            && (s == "0" || !s.starts_with('0'));
        if canonical { s.parse().ok() } else { None }
    }

    fn signed(s: &str) -> Option<i64> {
        match s.strip_prefix('-') {
            Some(digits) if digits != "0" => {
                unsigned(digits)?;
                s.parse().ok()
            }
            Some(_) => None,
            None => i64::try_from(unsigned(s)?).ok(),
        }
    }
}

#[cfg(test)]
mod tests {
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
        lock.tasks.insert("scene-002".to_owned(), entry(1));
        lock.tasks.insert("scene-001-base".to_owned(), entry(4));
        lock.tasks.insert("empty".to_owned(), entry(0));
        lock
    }

    fn parse(text: &str) -> Result<LockFile, Error> {
        LockFile::parse(text, Path::new("wanx.lock"))
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
        assert_eq!(fast::parse(&text).as_ref(), Some(&lock));
        assert_eq!(parse_toml(&text).ok().as_ref(), Some(&lock));
        assert_eq!(parse(&text).unwrap(), lock);
        assert_eq!(
            parse(&LockFile::default().to_toml()).unwrap(),
            LockFile::default()
        );
    }

    #[test]
    fn equal_locks_write_identical_bytes() {
        let a = sample();
        let mut b = LockFile::default();
        // Inserted in another order.
        for (id, e) in sample().tasks.into_iter().rev() {
            b.tasks.insert(id, e);
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
            push_money(&mut out, m);
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
