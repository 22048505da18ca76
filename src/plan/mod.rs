//! The plan: what the user asked wanx to make, read from the plan files that `wanx.toml` names. The
//! loader here runs the stages, each in its own file:
//!
//! - [`discover`] finds the plan files by the manifest's globs;
//! - each file is parsed by its format, `.toml` in wanx's ([`toml_format`]) and `.json` in the seed's
//!   ([`json_format`], located by [`json_spans`]), into format-neutral [`raw::RawTask`]s, reporting
//!   into the file's [`sink::Sink`]; seed settings are merged across files ([`seed`]);
//! - [`ids`] checks every task id and its uniqueness across the project;
//! - [`validate`] turns each raw task into a [`task::Task`], field by field ([`fields`], [`edit`],
//!   [`inputs`], [`output_path`], reporting through [`check::Check`]), against the registry and the
//!   seed's [`vocabulary`];
//! - [`refs`] checks the references between tasks once every task is known.
//!
//! Files are parsed and validated in parallel, each with its own sink. Every problem in every file is
//! collected, located by file, line and column, and returned at once; notes (aliases rewritten, sizes
//! moved, …) travel with the tasks. Nothing is written. The parsers and validation steps are leaves:
//! none of them imports this file, which only calls them.

mod cache;
mod check;
pub(crate) mod discover;
pub mod edit;
pub mod edit_prompt;
mod fields;
#[cfg(test)]
mod hostile_tests;
mod ids;
mod inputs;
pub mod json_format;
pub mod json_spans;
mod output_path;
pub mod raw;
mod refs;
pub mod seed;
pub(crate) mod sink;
pub mod task;
pub mod toml_format;
mod validate;
pub mod vocabulary;

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::par::par_map;
use crate::plan::discover::discover;
use crate::plan::ids::check_unique_id;
use crate::plan::raw::RawTask;
use crate::plan::refs::{RefUse, check_references};
use crate::plan::seed::{SeedPart, merge_seed};
use crate::plan::sink::{Sink, SourceFile};
use crate::plan::task::{InputRef, Task};
use crate::plan::validate::{FileCx, Validator};
use crate::project::manifest::Manifest;
use crate::registry::Registry;
use crate::term::diagnostic::{self, Diagnostic, LineIndex};

pub(crate) use crate::plan::discover::{SKIP_DIRS, glob_base};
pub use crate::plan::seed::SeedSettings;

/// A loaded, valid project plan.
#[derive(Debug)]
pub struct Loaded {
    /// Every task, in file order (files sorted by path, tasks as written).
    pub tasks: Vec<Task>,
    /// Notes and warnings the user should see; they do not stop the build.
    pub notes: Vec<Diagnostic>,
    /// Settings a seed JSON plan carried in its `execution_config`.
    pub seed: SeedSettings,
    /// blake3 of each plan file's text, as parsed (what the planner's key cache is keyed by).
    pub digests: HashMap<PathBuf, [u8; 32]>,
}

/// Finds plan files by the manifest's globs, parses and validates them all, and returns every task in
/// file order, or [`Error::Invalid`] with every error found in every file.
pub fn load(manifest: &Manifest, registry: &Registry) -> Result<Loaded, Error> {
    Sources::read(manifest).load(manifest, registry)
}

/// The plan files as they are now, found and read but not parsed: enough to tell whether a project
/// loaded before is still the one on disk ([`Sources::loaded_as`]).
pub struct Sources {
    files: Vec<SourceFile>,
    /// Files that could not be read.
    early: Vec<Diagnostic>,
    digests: HashMap<PathBuf, [u8; 32]>,
}

impl Sources {
    pub fn read(manifest: &Manifest) -> Sources {
        let mut early = Vec::new();
        let paths = discover(manifest, &mut early);
        let mut files = Vec::with_capacity(paths.len());
        for rel in paths {
            match std::fs::read_to_string(manifest.root.join(&rel)) {
                Ok(source) => files.push(SourceFile { path: rel, source }),
                Err(e) => early.push(Diagnostic::error(
                    &rel,
                    format!("could not read the plan: {e}"),
                )),
            }
        }
        let digests = text_digests(&files);
        Sources {
            files,
            early,
            digests,
        }
    }

    /// Whether loading these files would give `loaded` again: it was loaded from files with the
    /// same texts (under the same manifest, which the caller checks), and none of its tasks reads
    /// a local file, whose existence the loader checks.
    pub fn loaded_as(&self, loaded: &Loaded) -> bool {
        self.early.is_empty() && self.digests == loaded.digests && !reads_files(loaded)
    }

    /// Parses and validates the files, through the plan cache (see [`load`]).
    pub fn load(self, manifest: &Manifest, registry: &Registry) -> Result<Loaded, Error> {
        load_files(&self.files, self.early, self.digests, manifest, registry)
    }
}

/// Whether a task of `loaded` reads a local file.
fn reads_files(loaded: &Loaded) -> bool {
    loaded
        .tasks
        .iter()
        .any(|t| t.inputs().any(|i| matches!(i, InputRef::File(_))))
}

/// [`load`] for one in-memory plan file at `path` (relative to the project root).
#[cfg(test)]
pub fn load_source(
    path: &Path,
    source: &str,
    manifest: &Manifest,
    registry: &Registry,
) -> Result<Loaded, Error> {
    let files = [SourceFile {
        path: path.to_path_buf(),
        source: source.to_owned(),
    }];
    let digests = text_digests(&files);
    validate_files(&files, Vec::new(), digests, manifest, registry, None).map(|(loaded, _)| loaded)
}

/// [`validate_files`] through the plan cache (src/plan/cache.rs): the whole project as last loaded
/// when no file changed, else the unchanged files' validated tasks with the others parsed and
/// validated, and every check across files run again. A load through the cache that finds any
/// error is done again without it, so that errors read exactly as without a cache.
fn load_files(
    files: &[SourceFile],
    early: Vec<Diagnostic>,
    digests: HashMap<PathBuf, [u8; 32]>,
    manifest: &Manifest,
    registry: &Registry,
) -> Result<Loaded, Error> {
    let sources: Vec<cache::Source> = files
        .iter()
        .map(|f| (f.path.as_path(), &digests[&f.path]))
        .collect();
    let Some(lookup) = early
        .is_empty()
        .then(|| {
            let state = manifest.state_dir();
            cache::Lookup::open(&state, &manifest.root, &manifest.digest, &sources)
        })
        .flatten()
    else {
        return validate_files(files, early, digests, manifest, registry, None)
            .map(|(loaded, _)| loaded);
    };
    // Seed settings come from JSON plans, which the cache does not keep.
    let seeded = files
        .iter()
        .any(|f| f.path.extension().is_none_or(|e| e != "toml"));
    if !seeded && let Some((tasks, notes)) = lookup.whole() {
        return Ok(Loaded {
            tasks,
            notes,
            seed: SeedSettings::default(),
            digests,
        });
    }
    let (loaded, parts) = match validate_files(
        files,
        Vec::new(),
        digests.clone(),
        manifest,
        registry,
        Some(&lookup),
    ) {
        Err(_) => validate_files(files, Vec::new(), digests.clone(), manifest, registry, None)?,
        Ok(done) => done,
    };
    let per_file: Vec<cache::FilePart> = parts
        .files
        .iter()
        .zip(files)
        .map(|((range, notes), f)| {
            let tasks = &loaded.tasks[range.clone()];
            (tasks, notes.as_slice(), cache::alone(&f.path, tasks))
        })
        .collect();
    // A local input is checked on disk by the loader: a project with one is not kept whole.
    let whole = !seeded && !reads_files(&loaded);
    lookup.save(&per_file, whole.then_some(parts.across.as_slice()));
    Ok(loaded)
}

/// blake3 of each plan file's text, as parsed.
fn text_digests(files: &[SourceFile]) -> HashMap<PathBuf, [u8; 32]> {
    files
        .iter()
        .map(|f| {
            (
                f.path.clone(),
                *blake3::hash(f.source.as_bytes()).as_bytes(),
            )
        })
        .collect()
}

/// A load's notes as the plan cache keeps them: each file's tasks (their range in
/// [`Loaded::tasks`]) and notes, and the notes of the checks across files.
struct Parts {
    files: Vec<(Range<usize>, Vec<Diagnostic>)>,
    across: Vec<Diagnostic>,
}

fn validate_files(
    files: &[SourceFile],
    early: Vec<Diagnostic>,
    digests: HashMap<PathBuf, [u8; 32]>,
    manifest: &Manifest,
    registry: &Registry,
    cached: Option<&cache::Lookup>,
) -> Result<(Loaded, Parts), Error> {
    let Parsed {
        mut per_file,
        mut sinks,
        hits,
        seed,
    } = parse_files(files, cached);
    let ids = register_ids(&mut per_file, &hits, &mut sinks, manifest);
    let count = per_file.iter().map(Vec::len).sum();
    let validator = Validator::new(manifest, registry, &ids);
    let mut last = Sink::new(files);
    validator.check_manifest_output(&mut last);
    let validated = par_map(
        per_file
            .into_iter()
            .zip(sinks)
            .zip(hits)
            .enumerate()
            .collect(),
        |(file, ((raw, sink), hit))| match hit {
            Some((tasks, notes)) => FileTasks {
                tasks,
                refs: Vec::new(),
                sink,
                failed: Vec::new(),
                cached_notes: notes,
            },
            None => validate_file(&validator, file, raw, sink),
        },
    );
    let mut tasks = Vec::with_capacity(count);
    let mut refs = Vec::new();
    let mut errors = early;
    let mut notes = Vec::new();
    let mut failed = HashMap::new();
    let mut per_file = Vec::with_capacity(files.len());
    for file in validated {
        let offset = tasks.len();
        refs.extend(file.refs.into_iter().map(|r| RefUse {
            from: r.from.map(|from| from + offset),
            ..r
        }));
        failed.extend(file.failed);
        tasks.extend(file.tasks);
        let (e, mut n) = file.sink.finish();
        n.extend(file.cached_notes);
        errors.extend(e);
        per_file.push((offset..tasks.len(), n.clone()));
        notes.extend(n);
    }
    check_references(&tasks, &failed, &refs, &mut last);
    let (e, n) = last.finish();
    errors.extend(e);
    errors.extend(check_output_claims(files, &tasks));
    let across = n.clone();
    notes.extend(n);
    diagnostic::sort(&mut errors);
    diagnostic::sort(&mut notes);
    if !errors.is_empty() {
        return Err(Error::Invalid {
            count: errors.len(),
            diagnostics: errors,
        });
    }
    let loaded = Loaded {
        tasks,
        notes,
        seed,
        digests,
    };
    let parts = Parts {
        files: per_file,
        across,
    };
    Ok((loaded, parts))
}

/// Every plan file parsed: its raw tasks and sink, or what the cache holds for it, and the seed's
/// settings merged across the files.
struct Parsed<'f> {
    per_file: Vec<Vec<RawTask>>,
    sinks: Vec<Sink<'f>>,
    hits: Vec<Option<cache::Validated>>,
    seed: SeedSettings,
}

/// Parses each file on its own: in parallel, with its own sink. A file the cache holds is neither
/// parsed nor (later) validated.
fn parse_files<'f>(files: &'f [SourceFile], cached: Option<&cache::Lookup>) -> Parsed<'f> {
    let parsed = par_map((0..files.len()).collect(), |index| {
        let mut sink = Sink::new(files);
        if let Some(hit) = cached.and_then(|c| c.file(index)) {
            return (Vec::new(), None, sink, Some(hit));
        }
        let (tasks, part) = parse_file(index, &mut sink);
        (tasks, part, sink, None)
    });
    let mut out = Parsed {
        per_file: Vec::with_capacity(files.len()),
        sinks: Vec::with_capacity(files.len() + 1),
        hits: Vec::with_capacity(files.len()),
        seed: SeedSettings::default(),
    };
    for (index, (tasks, part, mut sink, hit)) in parsed.into_iter().enumerate() {
        if let Some(part) = part {
            merge_seed(&mut out.seed, part, index, &mut sink);
        }
        out.per_file.push(tasks);
        out.sinks.push(sink);
        out.hits.push(hit);
    }
    out
}

/// Ids: checks their format and uniqueness across every file (a cached file's count too), before
/// inputs are resolved against them, and fills what each task leaves out from `wanx.toml`'s
/// `[defaults]`. Returns every id with its file and span.
fn register_ids(
    per_file: &mut [Vec<RawTask>],
    hits: &[Option<cache::Validated>],
    sinks: &mut [Sink],
    manifest: &Manifest,
) -> HashMap<String, (usize, Range<usize>)> {
    let count = per_file.iter().map(Vec::len).sum();
    let mut ids: HashMap<String, (usize, Range<usize>)> = HashMap::with_capacity(count);
    for (file, tasks) in per_file.iter_mut().enumerate() {
        // A cached file's ids count too; one used twice fails this load (done again uncached).
        for task in hits[file].iter().flat_map(|(tasks, _)| tasks) {
            if ids.insert(task.id.clone(), (file, 0..0)).is_some() {
                sinks[file].error(file, None, "a task id is used twice", None, None);
            }
        }
        for task in tasks {
            check_unique_id(task, file, &mut ids, sinks);
            if let Some(defaults) = &manifest.defaults {
                task.inherit_project(defaults);
            }
        }
    }
    ids
}

/// One file's validated tasks, the references they make, its sink, and the ids (with `n`) of the
/// tasks that failed; or, for a file the cache holds, its tasks and notes.
struct FileTasks<'f> {
    tasks: Vec<Task>,
    refs: Vec<RefUse>,
    sink: Sink<'f>,
    failed: Vec<(String, u32)>,
    cached_notes: Vec<Diagnostic>,
}

/// Validates one file's raw tasks (a broken one was reported by its parser and is skipped).
fn validate_file<'f>(
    validator: &Validator<'_>,
    file: usize,
    raw: Vec<RawTask>,
    mut sink: Sink<'f>,
) -> FileTasks<'f> {
    let files = sink.files;
    let lines = LineIndex::new(&files[file].source);
    let plan_dir = files[file]
        .path
        .parent()
        .map_or_else(PathBuf::new, Path::to_path_buf);
    let mut tasks = Vec::with_capacity(raw.len());
    let mut refs = Vec::new();
    let mut failed = Vec::new();
    for task in raw {
        if task.broken {
            continue;
        }
        let cx = FileCx {
            index: file,
            lines: &lines,
            plan_dir: &plan_dir,
        };
        let first_ref = refs.len();
        match validator.validate(task, &cx, &mut sink, &mut refs, tasks.len()) {
            Ok(t) => tasks.push(t),
            Err(failed_task) => {
                // Its references are still checked, but it is no node of the graph.
                for r in &mut refs[first_ref..] {
                    r.from = None;
                }
                failed.extend(failed_task);
            }
        }
    }
    FileTasks {
        tasks,
        refs,
        sink,
        failed,
        cached_notes: Vec::new(),
    }
}

/// Outputs claimed by two tasks, or by a task and a plan file.
fn check_output_claims(files: &[SourceFile], tasks: &[Task]) -> Vec<Diagnostic> {
    let plans: Vec<crate::tree::output_claims::PlanFile> = files
        .iter()
        .map(|f| crate::tree::output_claims::PlanFile {
            path: &f.path,
            source: &f.source,
        })
        .collect();
    crate::tree::output_claims::check(tasks, &plans)
}

/// Parses one file by its extension.
fn parse_file(index: usize, sink: &mut Sink) -> (Vec<RawTask>, Option<SeedPart>) {
    let path = &sink.files[index].path;
    match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => (crate::plan::toml_format::parse(index, sink), None),
        Some("json") => {
            let (tasks, part) = crate::plan::json_format::parse(index, sink);
            (tasks, Some(part))
        }
        _ => {
            let message = format!("`{}` is not a plan file", path.display());
            sink.error(
                index,
                None,
                message,
                None,
                Some("wanx reads `.toml` plans (wanx's format) and `.json` plans (the seed's format); narrow `project.plans` in `wanx.toml`".to_owned()),
            );
            (Vec::new(), None)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use crate::project::manifest::{BuildSection, ProjectSection, ProviderSection};

    pub(crate) fn manifest(root: &Path) -> Manifest {
        Manifest {
            root: root.to_path_buf(),
            project: ProjectSection::default(),
            provider: ProviderSection::default(),
            build: BuildSection::default(),
            prices: BTreeMap::new(),
            models: BTreeMap::new(),
            defaults: None,
            cache: crate::project::manifest::CacheSection::default(),
            digest: [0; 32],
        }
    }
}
