//! The plan cache: the loader's validated tasks, kept in `.wanx/plans.cache` in a compact binary
//! form read in one go (a [`binary_file`]), so that a plan file that did not change is neither
//! parsed nor validated again. It holds two things, both valid under one context digest (this
//! cache's format, this very wanx binary by its version, path, size, mtime and inode, the project
//! root and `wanx.toml`'s bytes, which the registry and the project's defaults follow from):
//!
//! - per plan file, its tasks and notes as validated, under the blake3 of its path and bytes. Only
//!   `.toml` files whose tasks have no local-file or task inputs are kept alone (see [`alone`]): an
//!   input's validation depends on the other files' task ids and on the disk, not on the file. A
//!   build that edits one file parses and validates that file only; the checks across files (unique
//!   ids, references, outputs) still run over every task.
//! - the whole project as last loaded (each file's entry, or its tasks inline when it may not be
//!   kept alone, and the notes of the checks across files) under the digest of every plan file's
//!   path and bytes in order: when no file changed, nothing is parsed or checked at all. Projects
//!   with seed (JSON) plans (their seed settings are not cached) or with local-file inputs (the
//!   loader checks those on disk) are not kept whole. A few earlier states (those whose entry is
//!   small: references to file entries) and the entries of a few earlier file versions are kept
//!   too, so that an undone edit (the common case under `wanx watch`) loads whole as well.
//!
//! The bytes are hashed, not stat-ed, so a same-second, same-size edit is seen. A cache that is
//! missing, truncated, corrupted or written by another binary is a miss, never trusted. It is
//! written only after a load that found no error, only where `.wanx/` already exists.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::Map;

use crate::plan::task::{
    Composer, Direction, Edit, EditKind, Extend, InputRef, Origin, OutputSpec, Prompt,
    PromptTemplate, QwenText, RefMode, Reference, Task,
};
use crate::project::binary_file::{self, Reader, Writer};
use crate::project::cache_digest::{file_digest, project};
use crate::size::Size;
use crate::term::diagnostic::{Diagnostic, Excerpt, Related, Severity};

/// The cache's file name, in the state directory.
pub const FILE_NAME: &str = "plans.cache";

/// The cache's kind; bump the digit when the encoding or what a digest covers changes.
const MAGIC: &[u8; 8] = b"WANXPC02";
/// Earlier states of the project kept besides the current one (an undone edit loads whole again),
/// each only while small: one that holds tasks of its own is not kept as an earlier state.
const EARLIER_WHOLES: usize = 3;
const EARLIER_WHOLE_BYTES: usize = 64 * 1024;
/// Entries of earlier versions of plan files kept besides the current ones (an undone edit parses
/// nothing).
const EARLIER_FILES: usize = 32;

/// A plan file as the loader read it: its project-relative path and the blake3 of its bytes.
pub type Source<'a> = (&'a Path, &'a [u8; 32]);

/// Validated tasks and the notes their validation gave.
pub type Validated = (Vec<Task>, Vec<Diagnostic>);

/// One plan file's part in a load that found no error: its tasks, its notes, and whether it may
/// be cached alone (see [`alone`]).
pub type FilePart<'a> = (&'a [Task], &'a [Diagnostic], bool);

/// The cache as read at the start of a load, against the plan files as they are now.
pub struct Lookup {
    path: PathBuf,
    context: [u8; 32],
    /// Per plan file (in load order): the digest its entry is valid under.
    digests: Vec<[u8; 32]>,
    /// The digest of the whole set of files, in order.
    whole: [u8; 32],
    /// The payload read, when the file was whole and for this context.
    payload: Vec<u8>,
    /// Where the whole project's entry is in `payload`, when it is valid now.
    whole_entry: Option<Range<usize>>,
    /// Every project state's entry in `payload` (the newest first), by its digest.
    wholes: Vec<([u8; 32], Range<usize>)>,
    /// Where each file's entry is in `payload`, by digest (the newest first in `order`).
    entries: HashMap<[u8; 32], Range<usize>>,
    order: Vec<[u8; 32]>,
}

impl Lookup {
    /// Reads the cache for `files`. `None` when this binary cannot be identified or the project has
    /// no state directory (then nothing is cached); an unreadable or invalid cache reads as empty.
    /// `state` is the project's state directory, `root` its root and `manifest` the blake3 of
    /// `wanx.toml`'s bytes.
    pub fn open(
        state: &Path,
        root: &Path,
        manifest: &[u8; 32],
        files: &[Source<'_>],
    ) -> Option<Lookup> {
        if !state.is_dir() {
            return None;
        }
        let context = context(root, manifest)?;
        let digests: Vec<[u8; 32]> = files
            .iter()
            .map(|(path, text)| file_digest(&context, path, text))
            .collect();
        let mut h = blake3::Hasher::new();
        h.update(&context);
        for d in &digests {
            h.update(d);
        }
        let whole = *h.finalize().as_bytes();
        let path = state.join(FILE_NAME);
        let payload = binary_file::read(&path, MAGIC, &context).unwrap_or_default();
        let Index {
            wholes,
            entries,
            order,
        } = index(&payload).unwrap_or_default();
        let whole_entry = wholes
            .iter()
            .find(|(digest, _)| *digest == whole)
            .map(|(_, range)| range.clone());
        Some(Lookup {
            path,
            context,
            digests,
            whole,
            payload,
            whole_entry,
            wholes,
            entries,
            order,
        })
    }

    /// The whole project's tasks and notes as last loaded, when no plan file changed since.
    pub fn whole(&self) -> Option<Validated> {
        let mut r = Reader::new(self.payload.get(self.whole_entry.clone()?)?);
        let mut parts = Vec::with_capacity(self.digests.len());
        for index in 0..self.digests.len() {
            parts.push(match r.u8()? {
                0 => self.file(index)?,
                1 => get_validated(&mut r)?,
                _ => return None,
            });
        }
        // Sized once: a task is large, and a vector grown by doubling would hold twice the tasks.
        let mut tasks = Vec::with_capacity(parts.iter().map(|(t, _)| t.len()).sum());
        let mut notes = Vec::new();
        for (file_tasks, file_notes) in parts {
            tasks.extend(file_tasks);
            notes.extend(file_notes);
        }
        notes.extend(r.list(get_diagnostic)?);
        // As the loader sorts them: the same notes in the same order sort alike.
        crate::term::diagnostic::sort(&mut notes);
        r.done().then_some((tasks, notes))
    }

    /// The tasks and notes of file `index` (in load order), when its entry is valid now.
    pub fn file(&self, index: usize) -> Option<Validated> {
        let range = self.entries.get(self.digests.get(index)?)?.clone();
        let mut r = Reader::new(self.payload.get(range)?);
        let validated = get_validated(&mut r)?;
        r.done().then_some(validated)
    }

    /// Writes the cache after a load that found no error: each file's part (in load order) and,
    /// when the project may be cached whole, the notes of the checks across files. Best effort: a
    /// cache that cannot be written costs the next load its parsing, nothing more.
    pub fn save(&self, files: &[FilePart<'_>], across: Option<&[Diagnostic]>) {
        let mut entries = Writer::default();
        let mut kept = 0;
        let mut whole = Writer::default();
        for (digest, (tasks, notes, alone)) in self.digests.iter().zip(files) {
            let mut entry = Writer::default();
            if put_validated(&mut entry, tasks, notes).is_none() {
                return;
            }
            if *alone {
                entries.0.extend_from_slice(digest);
                entries.bytes(&entry.0);
                kept += 1;
                whole.u8(0);
            } else {
                whole.u8(1);
                whole.0.extend_from_slice(&entry.0);
            }
        }
        let mut wholes: Vec<([u8; 32], &[u8])> = Vec::new();
        match across {
            Some(notes) if files.len() == self.digests.len() => {
                whole.count(notes.len());
                for d in notes {
                    if put_diagnostic(&mut whole, d).is_none() {
                        return;
                    }
                }
                wholes.push((self.whole, &whole.0));
            }
            _ => {}
        }
        // Earlier states and earlier file versions, newest first, so an undo finds its own.
        let earlier = self
            .wholes
            .iter()
            .filter(|(digest, range)| *digest != self.whole && range.len() <= EARLIER_WHOLE_BYTES)
            .filter_map(|(digest, range)| Some((*digest, self.payload.get(range.clone())?)))
            .take(EARLIER_WHOLES);
        wholes.extend(earlier);
        let current: HashSet<&[u8; 32]> = self.digests.iter().collect();
        for digest in self
            .order
            .iter()
            .filter(|d| !current.contains(d))
            .take(EARLIER_FILES)
        {
            let Some(entry) = self
                .entries
                .get(digest)
                .and_then(|r| self.payload.get(r.clone()))
            else {
                continue;
            };
            entries.0.extend_from_slice(digest);
            entries.bytes(entry);
            kept += 1;
        }
        let mut w = Writer::default();
        w.count(wholes.len());
        for (digest, bytes) in wholes {
            w.0.extend_from_slice(&digest);
            w.bytes(bytes);
        }
        w.count(kept);
        w.0.extend_from_slice(&entries.0);
        binary_file::write(&self.path, MAGIC, &self.context, &w.0);
    }
}

/// Whether a file's validated tasks follow from its own bytes (and the context) alone: a wanx-format
/// plan whose tasks read no local file and no other task's images (an input's validation depends on
/// the other files' task ids and on the disk), and carry no verbatim extra fields (their JSON numbers
/// need not round-trip bit for bit).
pub fn alone(path: &Path, tasks: &[Task]) -> bool {
    path.extension().is_some_and(|e| e == "toml")
        && tasks.iter().all(|t| {
            t.inputs().all(|i| matches!(i, InputRef::Url(_)))
                && t.extra_input.is_empty()
                && t.extra_parameters.is_empty()
        })
}

/// What every entry depends on besides the plan files: this cache's format, this very binary (a
/// rebuilt wanx never trusts an old entry), the project root and `wanx.toml`'s bytes.
fn context(root: &Path, manifest: &[u8; 32]) -> Option<[u8; 32]> {
    let mut h = blake3::Hasher::new();
    h.update(MAGIC);
    project(&mut h, root, manifest)?;
    Some(*h.finalize().as_bytes())
}

/// Where a payload's entries are: the project states', newest first, and each file's by digest
/// (with the digests in the order written, newest first).
#[derive(Default)]
struct Index {
    wholes: Vec<([u8; 32], Range<usize>)>,
    entries: HashMap<[u8; 32], Range<usize>>,
    order: Vec<[u8; 32]>,
}

/// The [`Index`] of a payload; `None` for anything malformed.
fn index(payload: &[u8]) -> Option<Index> {
    let mut r = Reader::new(payload);
    let count = r.usize()?;
    let mut wholes = Vec::with_capacity(count.min(EARLIER_WHOLES + 1));
    for _ in 0..count {
        let digest = r.digest()?;
        wholes.push((digest, r.span()?));
    }
    let count = r.usize()?;
    let mut entries = HashMap::with_capacity(count.min(payload.len()));
    let mut order = Vec::with_capacity(count.min(payload.len()));
    for _ in 0..count {
        let digest = r.digest()?;
        entries.insert(digest, r.span()?);
        order.push(digest);
    }
    r.done().then_some(Index {
        wholes,
        entries,
        order,
    })
}

// --- encoding ------------------------------------------------------------------------------------

fn get_validated(r: &mut Reader<'_>) -> Option<Validated> {
    Some((r.list(get_task)?, r.list(get_diagnostic)?))
}

fn put_validated(w: &mut Writer, tasks: &[Task], notes: &[Diagnostic]) -> Option<()> {
    w.count(tasks.len());
    for t in tasks {
        put_task(w, t)?;
    }
    w.count(notes.len());
    for d in notes {
        put_diagnostic(w, d)?;
    }
    Some(())
}

/// A path, which must be UTF-8 to be cached.
fn put_path(w: &mut Writer, p: &Path) -> Option<()> {
    w.str(p.to_str()?);
    Some(())
}

fn put_task(w: &mut Writer, t: &Task) -> Option<()> {
    if !t.extra_input.is_empty() || !t.extra_parameters.is_empty() {
        return None;
    }
    let mut ok = true;
    w.str(&t.id);
    ok &= put_path(w, &t.origin.file).is_some();
    w.count(t.origin.line);
    w.count(t.origin.column);
    w.str(&t.model);
    match &t.prompt {
        Prompt::Text(s) => {
            w.u8(0);
            w.str(s);
        }
        Prompt::Template(p) => {
            w.u8(1);
            w.str(&p.subject);
            for f in [
                &p.details,
                &p.environment,
                &p.lighting,
                &p.style,
                &p.quality,
            ] {
                w.opt_str(f.as_ref());
            }
        }
    }
    w.opt_str(t.negative_prompt.as_ref());
    w.strs(&t.negative_presets);
    w.opt(t.size.as_ref(), |w, s| {
        w.u32(s.width);
        w.u32(s.height);
    });
    w.u32(t.n);
    w.opt(t.pick.as_ref(), |w, p| {
        w.count(p.len());
        for k in p {
            w.u32(*k);
        }
    });
    w.opt(t.seed.as_ref(), |w, s| w.u32(*s));
    w.opt_str(t.style.as_ref());
    w.opt(t.prompt_extend.as_ref(), |w, b| w.bool(*b));
    w.opt(t.watermark.as_ref(), |w, b| w.bool(*b));
    w.opt(t.reference.as_ref(), |w, r| {
        ok &= put_input(w, &r.image).is_some();
        w.opt(r.strength.as_ref(), |w, v| w.f64(*v));
        w.opt(r.mode.as_ref(), |w, m| {
            w.u8(match m {
                RefMode::Repaint => 0,
                RefMode::Refonly => 1,
            });
        });
    });
    w.opt(t.composer.as_ref(), |w, c| {
        w.strs(&c.color_palette);
        w.opt_str(c.layout.as_ref());
        w.opt_str(c.material.as_ref());
        w.opt_str(c.semantic.as_ref());
    });
    w.opt(t.text.as_ref(), |w, q| {
        for f in [&q.title, &q.subtitle, &q.text_position, &q.font_style] {
            w.opt_str(f.as_ref());
        }
    });
    w.opt(t.edit.as_ref(), |w, e| {
        match &e.kind {
            EditKind::Extend => w.u8(0),
            EditKind::RemoveWatermark => w.u8(1),
            EditKind::StyleTransfer => w.u8(2),
            EditKind::Repair => w.u8(3),
            EditKind::Beautify => w.u8(4),
            EditKind::Function(f) => {
                w.u8(5);
                w.str(f);
            }
        }
        ok &= put_input(w, &e.input).is_some();
        w.opt(e.extend.as_ref(), |w, x| {
            w.u8(match x.direction {
                Direction::Top => 0,
                Direction::Bottom => 1,
                Direction::Left => 2,
                Direction::Right => 3,
                Direction::All => 4,
            });
            w.f64(x.ratio);
        });
        for i in [&e.style_reference, &e.mask] {
            w.opt(i.as_ref(), |w, i| ok &= put_input(w, i).is_some());
        }
        w.opt(e.strength.as_ref(), |w, v| w.f64(*v));
    });
    w.str(&t.output.dir);
    w.str(&t.output.filename);
    ok.then_some(())
}

fn put_input(w: &mut Writer, i: &InputRef) -> Option<()> {
    match i {
        InputRef::Task { id, index } => {
            w.u8(0);
            w.str(id);
            w.opt(index.as_ref(), |w, k| w.u32(*k));
        }
        InputRef::File(p) => {
            w.u8(1);
            put_path(w, p)?;
        }
        InputRef::Url(u) => {
            w.u8(2);
            w.str(u);
        }
    }
    Some(())
}

fn put_diagnostic(w: &mut Writer, d: &Diagnostic) -> Option<()> {
    w.u8(match d.severity {
        Severity::Error => 0,
        Severity::Warning => 1,
        Severity::Note => 2,
    });
    put_path(w, &d.path)?;
    w.count(d.line);
    w.count(d.column);
    w.opt_str(d.field.as_ref());
    w.str(&d.message);
    w.opt_str(d.hint.as_ref());
    w.opt(d.excerpt.as_ref(), put_excerpt);
    w.count(d.related.len());
    for related in &d.related {
        put_path(w, &related.path)?;
        w.str(&related.label);
        put_excerpt(w, &related.excerpt);
    }
    Some(())
}

fn put_excerpt(w: &mut Writer, e: &Excerpt) {
    w.str(&e.text);
    w.count(e.line);
    w.count(e.span.start);
    w.count(e.span.end);
}

fn get_excerpt(r: &mut Reader<'_>) -> Option<Excerpt> {
    Some(Excerpt {
        text: r.str()?,
        line: r.usize()?,
        span: r.usize()?..r.usize()?,
    })
}

fn get_task(r: &mut Reader<'_>) -> Option<Task> {
    let id = r.str()?;
    let origin = Origin {
        file: PathBuf::from(r.str()?),
        line: r.usize()?,
        column: r.usize()?,
    };
    let model = r.str()?;
    let prompt = get_prompt(r)?;
    let negative_prompt = r.opt_str()?;
    let negative_presets = r.strs()?;
    let size = r.opt(|r| Some(Size::new(r.u32()?, r.u32()?)))?;
    let n = r.u32()?;
    let pick = r.opt(|r| r.list(Reader::u32))?;
    let seed = r.opt(Reader::u32)?;
    let style = r.opt_str()?;
    let prompt_extend = r.opt(Reader::bool)?;
    let watermark = r.opt(Reader::bool)?;
    let reference = r.opt(get_reference)?;
    let composer = r.opt(|r| {
        Some(Composer {
            color_palette: r.strs()?,
            layout: r.opt_str()?,
            material: r.opt_str()?,
            semantic: r.opt_str()?,
        })
    })?;
    let text = r.opt(|r| {
        Some(QwenText {
            title: r.opt_str()?,
            subtitle: r.opt_str()?,
            text_position: r.opt_str()?,
            font_style: r.opt_str()?,
        })
    })?;
    let edit = r.opt(get_edit)?;
    let output = OutputSpec {
        dir: r.str()?,
        filename: r.str()?,
    };
    Some(Task {
        id,
        origin,
        model,
        prompt,
        negative_prompt,
        negative_presets,
        size,
        n,
        pick,
        seed,
        style,
        prompt_extend,
        watermark,
        reference,
        composer,
        text,
        edit,
        extra_input: Map::new(),
        extra_parameters: Map::new(),
        output,
    })
}

fn get_prompt(r: &mut Reader<'_>) -> Option<Prompt> {
    Some(match r.u8()? {
        0 => Prompt::Text(r.str()?),
        1 => Prompt::Template(PromptTemplate {
            subject: r.str()?,
            details: r.opt_str()?,
            environment: r.opt_str()?,
            lighting: r.opt_str()?,
            style: r.opt_str()?,
            quality: r.opt_str()?,
        }),
        _ => return None,
    })
}

fn get_reference(r: &mut Reader<'_>) -> Option<Reference> {
    Some(Reference {
        image: get_input(r)?,
        strength: r.opt(Reader::f64)?,
        mode: r.opt(|r| match r.u8()? {
            0 => Some(RefMode::Repaint),
            1 => Some(RefMode::Refonly),
            _ => None,
        })?,
    })
}

fn get_edit(r: &mut Reader<'_>) -> Option<Edit> {
    let kind = match r.u8()? {
        0 => EditKind::Extend,
        1 => EditKind::RemoveWatermark,
        2 => EditKind::StyleTransfer,
        3 => EditKind::Repair,
        4 => EditKind::Beautify,
        5 => EditKind::Function(r.str()?),
        _ => return None,
    };
    Some(Edit {
        kind,
        input: get_input(r)?,
        extend: r.opt(|r| {
            let direction = match r.u8()? {
                0 => Direction::Top,
                1 => Direction::Bottom,
                2 => Direction::Left,
                3 => Direction::Right,
                4 => Direction::All,
                _ => return None,
            };
            Some(Extend {
                direction,
                ratio: r.f64()?,
            })
        })?,
        style_reference: r.opt(get_input)?,
        mask: r.opt(get_input)?,
        strength: r.opt(Reader::f64)?,
    })
}

fn get_input(r: &mut Reader<'_>) -> Option<InputRef> {
    match r.u8()? {
        0 => Some(InputRef::Task {
            id: r.str()?,
            index: r.opt(Reader::u32)?,
        }),
        1 => Some(InputRef::File(PathBuf::from(r.str()?))),
        2 => Some(InputRef::Url(r.str()?)),
        _ => None,
    }
}

fn get_diagnostic(r: &mut Reader<'_>) -> Option<Diagnostic> {
    let severity = match r.u8()? {
        0 => Severity::Error,
        1 => Severity::Warning,
        2 => Severity::Note,
        _ => return None,
    };
    let mut d = Diagnostic::new(severity, PathBuf::from(r.str()?), "");
    d.line = r.usize()?;
    d.column = r.usize()?;
    d.field = r.opt_str()?;
    d.message = r.str()?;
    d.hint = r.opt_str()?;
    d.excerpt = r.opt(get_excerpt)?;
    for _ in 0..r.usize()? {
        d.related.push(Related {
            path: PathBuf::from(r.str()?),
            label: r.str()?,
            excerpt: get_excerpt(r)?,
        });
    }
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str) -> Task {
        Task {
            id: id.to_owned(),
            origin: Origin {
                file: PathBuf::from("plans/a.toml"),
                line: 3,
                column: 1,
            },
            model: "wanx2.1-imageedit".to_owned(),
            prompt: Prompt::Template(PromptTemplate {
                subject: "a fox".to_owned(),
                details: Some("red".to_owned()),
                environment: None,
                lighting: Some("dusk".to_owned()),
                style: None,
                quality: Some("sharp".to_owned()),
            }),
            negative_prompt: Some("blur".to_owned()),
            negative_presets: vec!["general".to_owned(), "people".to_owned()],
            size: Some(Size::new(1024, 768)),
            n: 4,
            pick: Some(vec![2, 4]),
            seed: Some(42),
            style: Some("<watercolor>".to_owned()),
            prompt_extend: Some(false),
            watermark: Some(true),
            reference: Some(Reference {
                image: InputRef::Url("https://example.com/a.png".to_owned()),
                strength: Some(0.3),
                mode: Some(RefMode::Refonly),
            }),
            composer: Some(Composer {
                color_palette: vec!["#FF0000".to_owned()],
                layout: Some("grid".to_owned()),
                material: None,
                semantic: Some("calm".to_owned()),
            }),
            text: Some(QwenText {
                title: Some("Title".to_owned()),
                subtitle: None,
                text_position: Some("top".to_owned()),
                font_style: None,
            }),
            edit: Some(Edit {
                kind: EditKind::Function("super_resolution".to_owned()),
                input: InputRef::Task {
                    id: "base".to_owned(),
                    index: Some(2),
                },
                extend: Some(Extend {
                    direction: Direction::All,
                    ratio: 1.5,
                }),
                style_reference: Some(InputRef::File(PathBuf::from("ref/style.png"))),
                mask: None,
                strength: Some(0.1 + 0.2),
            }),
            extra_input: Map::new(),
            extra_parameters: Map::new(),
            output: OutputSpec {
                dir: "generated/a".to_owned(),
                filename: "{id}_{index}.png".to_owned(),
            },
        }
    }

    fn note() -> Diagnostic {
        let mut d = Diagnostic::new(Severity::Note, "plans/a.toml", "a note");
        d.line = 4;
        d.column = 9;
        d.field = Some("task[0].size".to_owned());
        d.hint = Some("a hint".to_owned());
        d.excerpt = Some(Excerpt {
            text: "size = \"1*1\"".to_owned(),
            line: 4,
            span: 7..12,
        });
        d.related.push(Related {
            path: "plans/b.toml".into(),
            label: "first defined here".to_owned(),
            excerpt: Excerpt {
                text: "id = \"x\"".to_owned(),
                line: 2,
                span: 5..8,
            },
        });
        d
    }

    #[test]
    fn tasks_and_notes_round_trip_exactly() {
        let plain = Task {
            prompt: Prompt::Text("a lighthouse".to_owned()),
            reference: None,
            composer: None,
            text: None,
            edit: None,
            pick: None,
            size: None,
            ..task("plain")
        };
        let tasks = vec![task("full"), plain];
        let notes = vec![note()];
        let mut w = Writer::default();
        put_validated(&mut w, &tasks, &notes).unwrap();
        let mut r = Reader::new(&w.0);
        assert_eq!(get_validated(&mut r), Some((tasks, notes)));
        assert!(r.done());
    }

    #[test]
    fn tasks_with_verbatim_fields_are_not_cached() {
        let mut t = task("extra");
        t.extra_parameters
            .insert("x".to_owned(), serde_json::json!(0.1));
        assert!(put_task(&mut Writer::default(), &t).is_none());
    }

    #[test]
    fn only_plain_wanx_plans_are_kept_alone() {
        let url = Task {
            edit: None,
            ..task("url")
        };
        assert!(alone(Path::new("plans/a.toml"), std::slice::from_ref(&url)));
        assert!(!alone(
            Path::new("plans/a.json"),
            std::slice::from_ref(&url)
        ));
        // A task input and a file input depend on more than the file.
        assert!(!alone(Path::new("plans/a.toml"), &[task("edit")]));
    }

    #[test]
    fn an_entry_is_found_only_for_the_same_files() {
        let dir = tempfile::tempdir().unwrap();
        let (root, digest) = (Path::new("/p"), [7; 32]);
        let (a, b) = ([1; 32], [2; 32]);
        let files = [
            (Path::new("plans/a.toml"), &a),
            (Path::new("plans/b.toml"), &b),
        ];
        let lookup = Lookup::open(dir.path(), root, &digest, &files).unwrap();
        assert!(lookup.whole().is_none() && lookup.file(0).is_none());
        let tasks = [Task {
            edit: None,
            ..task("one")
        }];
        lookup.save(&[(&tasks, &[], true), (&[], &[note()], true)], Some(&[]));
        let lookup = Lookup::open(dir.path(), root, &digest, &files).unwrap();
        assert_eq!(lookup.whole(), Some((tasks.to_vec(), vec![note()])));
        assert_eq!(lookup.file(0), Some((tasks.to_vec(), vec![])));
        // `b.toml` changed: `a.toml`'s entry stands, the whole project's does not.
        let c = [3; 32];
        let changed = [
            (Path::new("plans/a.toml"), &a),
            (Path::new("plans/b.toml"), &c),
        ];
        let lookup = Lookup::open(dir.path(), root, &digest, &changed).unwrap();
        assert!(lookup.whole().is_none() && lookup.file(1).is_none());
        assert_eq!(lookup.file(0), Some((tasks.to_vec(), vec![])));
        // Another `wanx.toml`: nothing stands.
        let lookup = Lookup::open(dir.path(), root, &[8; 32], &files).unwrap();
        assert!(lookup.whole().is_none() && lookup.file(0).is_none());
    }

    #[test]
    fn an_undone_edit_finds_the_earlier_state_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (root, digest) = (Path::new("/p"), [7; 32]);
        let (a, b, edited) = ([1; 32], [2; 32], [3; 32]);
        let before = [
            (Path::new("plans/a.toml"), &a),
            (Path::new("plans/b.toml"), &b),
        ];
        let after = [
            (Path::new("plans/a.toml"), &a),
            (Path::new("plans/b.toml"), &edited),
        ];
        let one = [Task {
            edit: None,
            ..task("one")
        }];
        let two = [Task {
            edit: None,
            ..task("two")
        }];
        let lookup = Lookup::open(dir.path(), root, &digest, &before).unwrap();
        lookup.save(&[(&one, &[], true), (&two, &[], true)], Some(&[note()]));
        // The edit: saved as the current state.
        let lookup = Lookup::open(dir.path(), root, &digest, &after).unwrap();
        assert!(lookup.whole().is_none());
        let three = [Task {
            edit: None,
            ..task("three")
        }];
        lookup.save(&[(&one, &[], true), (&three, &[], true)], Some(&[]));
        // The undo: the earlier state, whole, with its own notes and the file's earlier tasks.
        let lookup = Lookup::open(dir.path(), root, &digest, &before).unwrap();
        let (tasks, notes) = lookup.whole().expect("the earlier state is kept");
        assert_eq!(tasks, [one[0].clone(), two[0].clone()]);
        assert_eq!(notes, [note()]);
        // And the edit again: both states stand.
        lookup.save(&[(&one, &[], true), (&two, &[], true)], Some(&[note()]));
        let lookup = Lookup::open(dir.path(), root, &digest, &after).unwrap();
        assert_eq!(
            lookup.whole().unwrap().0,
            [one[0].clone(), three[0].clone()]
        );
    }
}
