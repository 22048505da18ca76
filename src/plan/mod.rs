//! The plan loader: finds the plan files named by `wanx.toml`, parses each one (`.toml` in wanx's
//! format, [`crate::plan::toml_format`]; `.json` in the seed's, [`crate::plan::json_format`]) into format-neutral
//! [`RawTask`]s, and validates them all here against the registry and the seed vocabulary. Every
//! problem in every file is collected, located by file, line and column, and returned at once; notes
//! (aliases rewritten, sizes moved, …) travel with the tasks. Nothing is written.

pub mod edit_prompt;
#[cfg(test)]
mod hostile_tests;
pub mod json_format;
pub mod json_spans;
pub mod task;
pub mod toml_format;
pub mod vocabulary;

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use globset::{GlobBuilder, GlobSetBuilder};
use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::{Map, Value};
use toml::Spanned;

use crate::error::Error;
use crate::par::par_map;
use crate::plan::task::{
    Composer, Direction, Edit, EditKind, Extend, InputRef, Origin, OutputSpec, Prompt,
    PromptTemplate, QwenText, RefMode, Reference, Task,
};
use crate::plan::vocabulary::{
    FONT_STYLES, LAYOUTS, MATERIALS, NEGATIVE_PRESETS, STYLES, TEXT_POSITIONS, WANX_V1_STYLES,
};
use crate::project::manifest::{self, Manifest};
use crate::registry::{Family, ModelSpec, Registry, SizeRule};
use crate::size::Size;
use crate::term::diagnostic::{self, Diagnostic, Severity, did_you_mean};

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

/// What a seed plan's `execution_config` says about the provider.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeedSettings {
    /// The API key variable, and the plan file that named it.
    pub api_key_env: Option<(String, PathBuf)>,
    pub timeout: Option<Duration>,
    /// The `api_endpoint` up to and including `/api/v1`.
    pub base_url: Option<String>,
}

/// The seed's image-edit types (`edit = …`).
pub const SEED_EDITS: [&str; 5] = [
    "extend",
    "remove_watermark",
    "style_transfer",
    "repair",
    "beautify",
];

/// The real `input.function` values of wanx2.1-imageedit (protocol §7).
pub const EDIT_FUNCTIONS: [&str; 10] = [
    "stylization_all",
    "stylization_local",
    "description_edit",
    "description_edit_with_mask",
    "remove_watermark",
    "expand",
    "super_resolution",
    "colorization",
    "doodle",
    "control_cartoon_feature",
];

/// The placeholders a file name pattern may use.
pub const PLACEHOLDERS: [&str; 6] = ["id", "task_id", "index", "n", "key", "timestamp"];

/// The edit model used when an edit task names none.
const DEFAULT_EDIT_MODEL: &str = "wanx2.1-imageedit";
/// The edit model used for `style_transfer` with a `style_reference` (it takes several images).
const STYLE_TRANSFER_MODEL: &str = "wan2.5-i2i-preview";
/// Directories never searched for plan files.
pub(crate) const SKIP_DIRS: [&str; 4] = [".git", ".wanx", "target", "node_modules"];
/// The service keeps this many characters of a negative prompt (protocol §2).
const NEGATIVE_PROMPT_LIMIT: usize = 500;

/// Finds plan files by the manifest's globs, parses and validates them all, and returns every task in
/// file order, or [`Error::Invalid`] with every error found in every file.
pub fn load(manifest: &Manifest, registry: &Registry) -> Result<Loaded, Error> {
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
    load_files(&files, early, manifest, registry)
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
    load_files(&files, Vec::new(), manifest, registry)
}

/// One plan file: its project-relative path and text.
pub(crate) struct SourceFile {
    pub path: PathBuf,
    pub source: String,
}

// ---------------------------------------------------------------------------------------------
// Finding plan files

fn discover(manifest: &Manifest, diags: &mut Vec<Diagnostic>) -> Vec<PathBuf> {
    let mut set = GlobSetBuilder::new();
    let mut bases = Vec::new();
    for pattern in &manifest.project.plans {
        if let Some(d) = escaping_glob(manifest, pattern) {
            diags.push(d);
            continue;
        }
        match GlobBuilder::new(pattern).literal_separator(true).build() {
            Ok(glob) => {
                set.add(glob);
                bases.push(glob_base(pattern));
            }
            Err(e) => diags.push(
                Diagnostic::error(
                    manifest::FILE_NAME,
                    format!("`{pattern}` is not a valid glob: {e}"),
                )
                .field("project.plans"),
            ),
        }
    }
    let set = match set.build() {
        Ok(set) => set,
        Err(e) => {
            diags.push(
                Diagnostic::error(manifest::FILE_NAME, format!("invalid plan globs: {e}"))
                    .field("project.plans"),
            );
            return Vec::new();
        }
    };
    bases.sort();
    bases.dedup();
    let mut walked: Vec<PathBuf> = Vec::new();
    let mut found = Vec::new();
    for base in bases {
        if walked.iter().any(|w| base.starts_with(w)) {
            continue;
        }
        let full = manifest.root.join(&base);
        if full.is_file() {
            if set.is_match(&base) {
                found.push(base.clone());
            }
        } else if full.is_dir() {
            walk(&manifest.root, &base, &set, &mut found);
        }
        walked.push(base);
    }
    found.sort();
    found.dedup();
    found
}

/// A plan glob that reaches outside the project (absolute, or climbing out with `..`), located in
/// `wanx.toml`: plans are loaded from inside the project only, like every other path.
fn escaping_glob(manifest: &Manifest, pattern: &str) -> Option<Diagnostic> {
    let absolute = pattern.starts_with('/') || Path::new(pattern).is_absolute();
    if !absolute && !pattern.split(['/', '\\']).any(|part| part == "..") {
        return None;
    }
    let d = Diagnostic::error(
        manifest::FILE_NAME,
        format!("the plan glob `{pattern}` reaches outside the project"),
    )
    .field("project.plans")
    .hint("plans are loaded from inside the project (the directory holding `wanx.toml`): use a relative glob without `..`");
    let source = std::fs::read_to_string(manifest.root.join(manifest::FILE_NAME)).ok();
    match source.and_then(|s| s.find(pattern).map(|at| (s, at))) {
        Some((source, at)) => Some(d.at(&source, at..at + pattern.len())),
        None => Some(d),
    }
}

/// The directory part of a glob before its first wildcard: only that subtree can match.
pub(crate) fn glob_base(pattern: &str) -> PathBuf {
    let mut base = PathBuf::new();
    let parts: Vec<&str> = pattern.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if part.contains(['*', '?', '[', '{', '\\']) {
            return base;
        }
        if i + 1 == parts.len() {
            // A literal last component names a file (or directory) itself.
            base.push(part);
            return base;
        }
        if !part.is_empty() && *part != "." {
            base.push(part);
        }
    }
    base
}

fn walk(root: &Path, rel: &Path, set: &globset::GlobSet, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(root.join(rel)) else {
        return;
    };
    let mut entries: Vec<_> = entries
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.file_type().ok()?)))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, kind) in entries {
        let path = rel.join(&name);
        if kind.is_dir() {
            if !name.starts_with('.') && !SKIP_DIRS.contains(&name.as_str()) {
                walk(root, &path, set, found);
            }
        } else if set.is_match(&path) {
            found.push(path);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The format-neutral task both parsers produce

/// A task as written, before validation: every field optional and located by its byte span. The TOML
/// parser deserializes it directly (it is the `[[task]]` wire struct); the JSON parser builds it from the
/// seed's wire structs.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTask {
    pub id: Option<Spanned<String>>,
    pub model: Option<Spanned<String>>,
    pub prompt: Option<Spanned<RawPrompt>>,
    pub negative_prompt: Option<Spanned<String>>,
    pub negative: Option<Spanned<Vec<Spanned<String>>>>,
    pub size: Option<Spanned<String>>,
    pub n: Option<Spanned<i64>>,
    /// `pick = 3` or `pick = [1, 3]` (TOML plans only).
    pub pick: Option<Spanned<RawPick>>,
    pub seed: Option<Spanned<i64>>,
    pub style: Option<Spanned<String>>,
    pub prompt_extend: Option<Spanned<bool>>,
    pub watermark: Option<Spanned<bool>>,
    pub ref_img: Option<Spanned<String>>,
    pub ref_strength: Option<Spanned<f64>>,
    pub ref_mode: Option<Spanned<String>>,
    pub composer: Option<Spanned<RawComposer>>,
    pub text: Option<Spanned<RawText>>,
    pub edit: Option<Spanned<String>>,
    pub function: Option<Spanned<String>>,
    pub input: Option<Spanned<String>>,
    pub extend: Option<Spanned<RawExtend>>,
    pub style_reference: Option<Spanned<String>>,
    pub mask: Option<Spanned<String>>,
    pub strength: Option<Spanned<f64>>,
    pub out_dir: Option<Spanned<String>>,
    pub filename: Option<Spanned<String>>,
    pub extra_input: Option<Spanned<Map<String, Value>>>,
    pub extra_parameters: Option<Spanned<Map<String, Value>>>,
    /// The task as a whole (its table or object), for problems about missing fields.
    #[serde(skip)]
    pub at: Range<usize>,
    /// How to name each field in diagnostics.
    #[serde(skip)]
    pub paths: FieldPaths,
    /// Fields that could not be read (already reported): not reported again as missing.
    #[serde(skip)]
    pub poisoned: Vec<String>,
    /// The task could not be read at all (already reported): its id is registered, nothing is checked.
    #[serde(skip)]
    pub broken: bool,
    /// Fields taken from `wanx.toml`'s `[defaults]` (see [`RawTask::inherit_project`]).
    #[serde(skip)]
    pub from_project: Vec<&'static str>,
}

/// `pick`: one candidate or a list of them.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawPick {
    One(i64),
    Many(Vec<i64>),
}

/// `prompt`: a string, or the seed's structured template as a table.
#[derive(Clone, Debug)]
pub(crate) enum RawPrompt {
    Text(String),
    Template(RawTemplate),
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTemplate {
    pub subject: Option<Spanned<String>>,
    pub details: Option<String>,
    pub environment: Option<String>,
    pub lighting: Option<String>,
    pub style: Option<String>,
    pub quality: Option<String>,
}

impl<'de> Deserialize<'de> for RawPrompt {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RawPrompt, D::Error> {
        struct PromptVisitor;
        impl<'de> Visitor<'de> for PromptVisitor {
            type Value = RawPrompt;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string, or a table with `subject` and optionally `details`, `environment`, `lighting`, `style`, `quality`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawPrompt, E> {
                Ok(RawPrompt::Text(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<RawPrompt, E> {
                Ok(RawPrompt::Text(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawPrompt, A::Error> {
                RawTemplate::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawPrompt::Template)
            }
        }
        d.deserialize_any(PromptVisitor)
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawComposer {
    pub color_palette: Option<Vec<Spanned<String>>>,
    pub layout: Option<Spanned<String>>,
    pub material: Option<Spanned<String>>,
    pub semantic: Option<Spanned<String>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawText {
    pub title: Option<String>,
    pub subtitle: Option<String>,
    pub text_position: Option<Spanned<String>>,
    pub font_style: Option<Spanned<String>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExtend {
    pub direction: Option<Spanned<String>>,
    pub ratio: Option<Spanned<f64>>,
}

/// How diagnostics name a task's fields: `task[2].size` or `defaults.size` in TOML,
/// `batches[0].tasks[2].parameters.size` in the seed's JSON.
#[derive(Clone, Debug, Default)]
pub(crate) enum FieldPaths {
    #[default]
    Plain,
    Toml {
        /// `None` for `[defaults]`.
        task: Option<usize>,
        /// Fields taken from `[defaults]`.
        inherited: Vec<&'static str>,
    },
    Json {
        /// `batches[0].tasks[2]`.
        base: String,
        /// Field name → the seed's full dotted path, where it differs from `base.name`.
        map: Vec<(&'static str, String)>,
    },
}

impl FieldPaths {
    pub fn path(&self, name: &str) -> String {
        let top = name.split(['.', '[']).next().unwrap_or(name);
        match self {
            FieldPaths::Plain => name.to_owned(),
            FieldPaths::Toml { task, inherited } => match task {
                Some(_) if inherited.contains(&top) => format!("defaults.{name}"),
                Some(i) => format!("task[{i}].{name}"),
                None => format!("defaults.{name}"),
            },
            FieldPaths::Json { base, map } => match map.iter().find(|(n, _)| *n == top) {
                Some((_, full)) => format!("{full}{}", &name[top.len()..]),
                None => format!("{base}.{name}"),
            },
        }
    }

    fn inherited(&self, name: &str) -> bool {
        matches!(self, FieldPaths::Toml { inherited, .. } if inherited.contains(&name))
    }
}

/// Calls `$merge!` with every task field a `[defaults]` table can give (the plan's and the
/// project's alike), so the two kinds of inheritance cannot drift apart.
macro_rules! inheritable_fields {
    ($merge:ident) => {
        $merge!(
            model,
            prompt,
            negative_prompt,
            negative,
            size,
            n,
            pick,
            seed,
            style,
            prompt_extend,
            watermark,
            ref_img,
            ref_strength,
            ref_mode,
            composer,
            text,
            edit,
            function,
            input,
            extend,
            style_reference,
            mask,
            strength,
            out_dir,
            filename,
            extra_input,
            extra_parameters
        )
    };
}

impl RawTask {
    /// Fills every field the task leaves out from `[defaults]` (tables replace as a whole).
    pub fn inherit(&mut self, defaults: &RawTask) {
        let mut inherited = Vec::new();
        macro_rules! merge {
            ($($f:ident),*) => {$(
                if self.$f.is_none() && defaults.$f.is_some() {
                    self.$f.clone_from(&defaults.$f);
                    inherited.push(stringify!($f));
                }
            )*};
        }
        inheritable_fields!(merge);
        if let FieldPaths::Toml {
            inherited: list, ..
        } = &mut self.paths
        {
            *list = inherited;
        }
    }

    /// Fills what the task and its plan's `[defaults]` leave out from `wanx.toml`'s `[defaults]`.
    /// The values are located at the task (their spans in `wanx.toml` mean nothing in the plan file).
    pub fn inherit_project(&mut self, defaults: &RawTask) {
        let at = self.at.clone();
        macro_rules! merge {
            ($($f:ident),*) => {$(
                if self.$f.is_none() && let Some(v) = &defaults.$f {
                    self.$f = Some(Spanned::new(at.clone(), v.get_ref().clone()));
                    self.from_project.push(stringify!($f));
                }
            )*};
        }
        inheritable_fields!(merge);
    }
}

// ---------------------------------------------------------------------------------------------
// Collecting diagnostics

/// Collects diagnostics from every file. Identical errors (a bad value in `[defaults]` inherited by many
/// tasks) are reported once; identical notes once per file, with a count.
pub(crate) struct Sink<'f> {
    pub files: &'f [SourceFile],
    errors: Vec<Diagnostic>,
    notes: Vec<Diagnostic>,
    seen: HashSet<(usize, usize, String)>,
    note_counts: HashMap<(usize, String), (usize, usize)>,
}

impl<'f> Sink<'f> {
    fn new(files: &'f [SourceFile]) -> Sink<'f> {
        Sink {
            files,
            errors: Vec::new(),
            notes: Vec::new(),
            seen: HashSet::new(),
            note_counts: HashMap::new(),
        }
    }

    /// An error in file `file` at byte `span` (or about the whole file).
    pub fn error(
        &mut self,
        file: usize,
        span: Option<Range<usize>>,
        message: impl Into<String>,
        field: Option<String>,
        hint: Option<String>,
    ) {
        let message = message.into();
        let key = (
            file,
            span.as_ref().map_or(usize::MAX, |s| s.start),
            message.clone(),
        );
        if !self.seen.insert(key) {
            return;
        }
        let d = self.build(Severity::Error, file, span, message, field, hint);
        self.errors.push(d);
    }

    /// A note (or warning) the user should see; it does not stop the build.
    pub fn note(
        &mut self,
        severity: Severity,
        file: usize,
        span: Option<Range<usize>>,
        message: impl Into<String>,
        field: Option<String>,
        hint: Option<String>,
    ) {
        let message = message.into();
        if let Some((_, count)) = self.note_counts.get_mut(&(file, message.clone())) {
            *count += 1;
            return;
        }
        let d = self.build(severity, file, span, message.clone(), field, hint);
        self.note_counts
            .insert((file, message), (self.notes.len(), 1));
        self.notes.push(d);
    }

    fn build(
        &self,
        severity: Severity,
        file: usize,
        span: Option<Range<usize>>,
        message: String,
        field: Option<String>,
        hint: Option<String>,
    ) -> Diagnostic {
        let f = &self.files[file];
        let mut d = Diagnostic::new(severity, &f.path, message);
        if let Some(span) = span {
            d = d.at(&f.source, span);
        }
        d.field = field;
        d.hint = hint;
        d
    }

    fn finish(mut self) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
        for (index, count) in self.note_counts.values() {
            if *count > 1 {
                let more = count - 1;
                let d = &mut self.notes[*index];
                d.message = format!("{} (and {more} more like it in this file)", d.message);
            }
        }
        diagnostic::sort(&mut self.errors);
        diagnostic::sort(&mut self.notes);
        (self.errors, self.notes)
    }
}

/// Line starts of one file, for locating many tasks without rescanning the file for each.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(source: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(
            source
                .bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        LineIndex { starts }
    }

    /// 1-based line and column (in characters) of byte `offset`.
    fn line_col(&self, source: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(source.len());
        let line = self.starts.partition_point(|s| *s <= offset);
        let start = self.starts[line - 1];
        let column = source
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line, column + 1)
    }
}

// ---------------------------------------------------------------------------------------------
// Loading: parse every file, check ids, validate every task, then check references between tasks

/// One use of another task's output, checked once every task is known.
struct RefUse {
    file: usize,
    span: Range<usize>,
    field: String,
    /// The task using it (its index in the loaded tasks), `None` if it failed validation.
    from: Option<usize>,
    id: String,
    index: Option<u32>,
}

fn load_files(
    files: &[SourceFile],
    early: Vec<Diagnostic>,
    manifest: &Manifest,
    registry: &Registry,
) -> Result<Loaded, Error> {
    // Each file is parsed, and later validated, on its own: in parallel, with its own sink.
    let parsed = par_map((0..files.len()).collect(), |index| {
        let mut sink = Sink::new(files);
        let (tasks, part) = parse_file(index, &mut sink);
        (tasks, part, sink)
    });
    let mut sinks = Vec::with_capacity(files.len() + 1);
    let mut per_file = Vec::with_capacity(files.len());
    let mut seed = SeedSettings::default();
    for (index, (tasks, part, mut sink)) in parsed.into_iter().enumerate() {
        if let Some(part) = part {
            merge_seed(&mut seed, part, index, &mut sink);
        }
        per_file.push(tasks);
        sinks.push(sink);
    }

    // Ids: format and uniqueness across every file, before inputs are resolved against them.
    let count = per_file.iter().map(Vec::len).sum();
    let mut ids: HashMap<String, (usize, Range<usize>)> = HashMap::with_capacity(count);
    for (file, tasks) in per_file.iter_mut().enumerate() {
        for task in tasks {
            check_unique_id(task, file, &mut ids, &mut sinks);
            if let Some(defaults) = &manifest.defaults {
                task.inherit_project(defaults);
            }
        }
    }

    let validator = Validator::new(manifest, registry, &ids);
    let mut last = Sink::new(files);
    validator.check_manifest_output(&mut last);
    let validated = par_map(
        per_file.into_iter().zip(sinks).enumerate().collect(),
        |(file, (raw, mut sink))| {
            let lines = LineIndex::new(&files[file].source);
            let plan_dir = files[file]
                .path
                .parent()
                .map_or_else(PathBuf::new, Path::to_path_buf);
            let mut tasks = Vec::with_capacity(raw.len());
            let mut refs = Vec::new();
            let mut failed_tasks = Vec::new();
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
                    Err(failed) => {
                        // Its references are still checked, but it is no node of the graph.
                        for r in &mut refs[first_ref..] {
                            r.from = None;
                        }
                        failed_tasks.extend(failed);
                    }
                }
            }
            (tasks, refs, sink, failed_tasks)
        },
    );
    let mut tasks = Vec::with_capacity(count);
    let mut refs = Vec::new();
    let mut errors = early;
    let mut notes = Vec::new();
    let mut failed = HashMap::new();
    for (file_tasks, file_refs, sink, file_failed) in validated {
        let offset = tasks.len();
        refs.extend(file_refs.into_iter().map(|r| RefUse {
            from: r.from.map(|from| from + offset),
            ..r
        }));
        failed.extend(file_failed);
        tasks.extend(file_tasks);
        let (e, n) = sink.finish();
        errors.extend(e);
        notes.extend(n);
    }
    check_references(&tasks, &failed, &refs, &mut last);
    let (e, n) = last.finish();
    errors.extend(e);
    let plans: Vec<crate::tree::output_claims::PlanFile> = files
        .iter()
        .map(|f| crate::tree::output_claims::PlanFile {
            path: &f.path,
            source: &f.source,
        })
        .collect();
    errors.extend(crate::tree::output_claims::check(&tasks, &plans));
    notes.extend(n);
    diagnostic::sort(&mut errors);
    diagnostic::sort(&mut notes);
    if errors.is_empty() {
        let digests = files
            .iter()
            .map(|f| {
                (
                    f.path.clone(),
                    *blake3::hash(f.source.as_bytes()).as_bytes(),
                )
            })
            .collect();
        Ok(Loaded {
            tasks,
            notes,
            seed,
            digests,
        })
    } else {
        Err(Error::Invalid {
            count: errors.len(),
            diagnostics: errors,
        })
    }
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

/// Registers a task's id, or reports it (malformed, or already used) and marks the task broken.
fn check_unique_id(
    task: &mut RawTask,
    file: usize,
    ids: &mut HashMap<String, (usize, Range<usize>)>,
    sinks: &mut [Sink],
) {
    let Some(id) = &task.id else { return };
    let span = id.span();
    let value = id.get_ref();
    if let Err((message, hint)) = check_id(value) {
        sinks[file].error(
            file,
            Some(span),
            message,
            Some(task.paths.path("id")),
            Some(hint),
        );
        task.broken = true;
        return;
    }
    if let Some((first_file, first_span)) = ids.get(value) {
        let f = &sinks[file].files[*first_file];
        let (line, column) = LineIndex::new(&f.source).line_col(&f.source, first_span.start);
        let hint = format!(
            "first defined at {}:{line}:{column}; task ids must be unique across the project",
            f.path.display()
        );
        sinks[file].error(
            file,
            Some(span),
            format!("task id `{value}` is used twice"),
            Some(task.paths.path("id")),
            Some(hint),
        );
        task.broken = true;
        return;
    }
    ids.insert(value.clone(), (file, span));
}

/// The file a task is validated in.
struct FileCx<'a> {
    index: usize,
    lines: &'a LineIndex,
    /// The plan file's directory, relative to the root: local inputs are resolved from it.
    plan_dir: &'a Path,
}

/// Seed settings from one JSON plan: the first file to set a value wins; a different value later is
/// a warning.
pub(crate) struct SeedPart {
    pub api_key_env: Option<Spanned<String>>,
    pub timeout: Option<Spanned<Duration>>,
    pub base_url: Option<Spanned<String>>,
}

fn merge_seed(seed: &mut SeedSettings, part: SeedPart, file: usize, sink: &mut Sink) {
    let path = sink.files[file].path.clone();
    let conflict = |sink: &mut Sink, span: Range<usize>, what: &str, kept: String| {
        sink.note(
            Severity::Warning,
            file,
            Some(span),
            format!("another seed plan already set `{what}` to `{kept}`; this value is ignored"),
            Some(format!("execution_config.{what}")),
            None,
        );
    };
    if let Some(v) = part.api_key_env {
        match &seed.api_key_env {
            None => seed.api_key_env = Some((v.get_ref().clone(), path)),
            Some((kept, _)) if kept != v.get_ref() => {
                conflict(sink, v.span(), "api_key_env", kept.clone());
            }
            Some(_) => {}
        }
    }
    if let Some(v) = part.timeout {
        match seed.timeout {
            None => seed.timeout = Some(*v.get_ref()),
            Some(kept) if kept != *v.get_ref() => {
                conflict(sink, v.span(), "timeout", format!("{}", kept.as_secs_f64()));
            }
            Some(_) => {}
        }
    }
    if let Some(v) = part.base_url {
        match &seed.base_url {
            None => seed.base_url = Some(v.get_ref().clone()),
            Some(kept) if kept != v.get_ref() => {
                conflict(sink, v.span(), "api_endpoint", kept.clone());
            }
            Some(_) => {}
        }
    }
}

/// `[A-Za-z0-9._-]+`, not starting with `.`: ids go into file names.
fn check_id(id: &str) -> Result<(), (String, String)> {
    let hint = "ids may use letters, digits, `.`, `_` and `-` (they go into file names), and cannot start with `.`".to_owned();
    if id.is_empty() {
        return Err(("a task id cannot be empty".to_owned(), hint));
    }
    if id.starts_with('.') {
        return Err((format!("task id `{id}` starts with `.`"), hint));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err((format!("task id `{id}` contains `{c}`"), hint));
    }
    Ok(())
}

/// `#K` within the referenced task's `n`, a bare id only for a task of one image, and no cycles.
fn check_references(
    tasks: &[Task],
    failed: &HashMap<String, u32>,
    refs: &[RefUse],
    sink: &mut Sink,
) {
    let by_id: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    let mut edges: Vec<Vec<(usize, usize)>> = vec![Vec::new(); tasks.len()];
    for (r_index, r) in refs.iter().enumerate() {
        // A task that failed validation is still checked against its `n`, if that was valid.
        let target = by_id.get(r.id.as_str()).copied();
        let Some(n) = target
            .map(|t| tasks[t].written())
            .or_else(|| failed.get(&r.id).copied())
        else {
            continue;
        };
        match r.index {
            Some(k) if k > n => sink.error(
                r.file,
                Some(r.span.clone()),
                format!(
                    "`{}#{k}` asks for image {k}, but task `{}` makes {n} image{}",
                    r.id,
                    r.id,
                    if n == 1 { "" } else { "s" }
                ),
                Some(r.field.clone()),
                Some(format!(
                    "images are numbered from 1 to the task's `n` ({n})"
                )),
            ),
            None if n > 1 => sink.error(
                r.file,
                Some(r.span.clone()),
                format!("task `{}` makes {n} images; say which one", r.id),
                Some(r.field.clone()),
                Some(format!("write `{}#1` … `{}#{n}`", r.id, r.id)),
            ),
            _ => {}
        }
        if let (Some(from), Some(target)) = (r.from, target) {
            edges[from].push((target, r_index));
        }
    }
    // Iterative depth-first search; a back edge closes a cycle.
    let mut state = vec![0u8; tasks.len()]; // 0 new, 1 on the stack, 2 done
    for start in 0..tasks.len() {
        if state[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&(target, r_index)) = edges[node].get(*next) {
                *next += 1;
                match state[target] {
                    0 => {
                        state[target] = 1;
                        stack.push((target, 0));
                    }
                    1 => {
                        let from = stack.iter().position(|(n, _)| *n == target).unwrap_or(0);
                        let mut names: Vec<&str> = stack[from..]
                            .iter()
                            .map(|(n, _)| tasks[*n].id.as_str())
                            .collect();
                        names.push(tasks[target].id.as_str());
                        let r = &refs[r_index];
                        sink.error(
                            r.file,
                            Some(r.span.clone()),
                            format!("tasks depend on each other in a cycle: {}", names.join(" → ")),
                            Some(r.field.clone()),
                            Some("an edit task can only use images of tasks that do not depend on it".to_owned()),
                        );
                    }
                    _ => {}
                }
            } else {
                state[node] = 2;
                stack.pop();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validating one task

struct Validator<'a> {
    manifest: &'a Manifest,
    registry: &'a Registry,
    ids: &'a HashMap<String, (usize, Range<usize>)>,
    canonical_root: Option<PathBuf>,
    /// `project.out_dir`, normalised once.
    default_dir: String,
    /// Output directories already resolved against symlinks: dir → the problem, if any.
    resolved_dirs: std::sync::Mutex<HashMap<String, Option<(String, String)>>>,
}

/// Per-task reporting: names fields through the task's [`FieldPaths`] and counts errors.
struct Check<'s, 'f> {
    sink: &'s mut Sink<'f>,
    file: usize,
    paths: FieldPaths,
    at: Range<usize>,
    errors: usize,
    /// Fields inherited from `wanx.toml`'s `[defaults]`.
    from_project: Vec<&'static str>,
}

impl Check<'_, '_> {
    /// Whether `name` came from a `[defaults]` table (the plan's or the project's), not the task.
    fn inherited(&self, name: &str) -> bool {
        self.paths.inherited(name) || self.from_project.contains(&name)
    }

    /// How diagnostics name `field`: values from `wanx.toml` are named there.
    fn field_path(&self, field: &str) -> String {
        let top = field.split(['.', '[']).next().unwrap_or(field);
        if self.from_project.contains(&top) {
            format!("defaults.{field} in `wanx.toml`")
        } else {
            self.paths.path(field)
        }
    }

    fn err(
        &mut self,
        span: Range<usize>,
        field: &str,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.errors += 1;
        let field = self.field_path(field);
        self.sink
            .error(self.file, Some(span), message, Some(field), hint);
    }

    fn note(
        &mut self,
        span: Range<usize>,
        field: &str,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let field = self.field_path(field);
        self.sink.note(
            Severity::Note,
            self.file,
            Some(span),
            message,
            Some(field),
            hint,
        );
    }
}

fn hint_from(candidates: &[&str], word: &str) -> String {
    match did_you_mean(word, candidates.iter().copied()) {
        Some(name) => format!("did you mean `{name}`?"),
        None => format!(
            "expected one of {}",
            candidates
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

impl<'a> Validator<'a> {
    fn new(
        manifest: &'a Manifest,
        registry: &'a Registry,
        ids: &'a HashMap<String, (usize, Range<usize>)>,
    ) -> Validator<'a> {
        Validator {
            manifest,
            registry,
            ids,
            canonical_root: std::fs::canonicalize(&manifest.root).ok(),
            default_dir: normalize_dir(&manifest.project.out_dir),
            resolved_dirs: std::sync::Mutex::default(),
        }
    }

    /// Whether output directory `dir` (project-relative, `..`-free) stays inside the project once
    /// symlinks are followed: `(message, hint)` when it does not. Resolved once per directory.
    fn escapes(&self, dir: &str) -> Option<(String, String)> {
        let root = self.canonical_root.as_ref()?;
        let mut cache = self
            .resolved_dirs
            .lock()
            .expect("the directory cache is never poisoned: nothing panics while it is held");
        cache
            .entry(dir.to_owned())
            .or_insert_with(|| {
                let hint = "outputs are written inside the project: point `out_dir` at a real directory there, or remove the symlink".to_owned();
                match crate::tree::project_path::check_inside(root, Path::new(dir)) {
                    Ok(()) => None,
                    Err(crate::tree::project_path::Escape::Outside(real)) => Some((
                        format!("the directory `{dir}` leads outside the project through a symlink (to `{}`)", real.display()),
                        hint,
                    )),
                    Err(crate::tree::project_path::Escape::Unresolvable(e)) => Some((
                        format!("the directory `{dir}` cannot be resolved: {e}"),
                        hint,
                    )),
                }
            })
            .clone()
    }

    /// The manifest's default output naming, checked once.
    fn check_manifest_output(&self, sink: &mut Sink) {
        let project = &self.manifest.project;
        for (field, value, result) in [
            (
                "project.out_dir",
                &project.out_dir,
                check_relative(&project.out_dir, true),
            ),
            (
                "project.filename",
                &project.filename,
                check_relative(&project.filename, false),
            ),
        ] {
            if let Err((message, hint)) = result.and_then(|()| {
                if field == "project.filename" {
                    scan_placeholders(value).map(|_| ())
                } else {
                    Ok(())
                }
            }) {
                sink.errors.push(
                    Diagnostic::error(manifest::FILE_NAME, message)
                        .field(field)
                        .hint(hint),
                );
            } else if field == "project.out_dir"
                && let Some((message, hint)) = self.escapes(&self.default_dir)
            {
                sink.errors.push(
                    Diagnostic::error(manifest::FILE_NAME, message)
                        .field(field)
                        .hint(hint),
                );
            }
        }
    }

    fn validate(
        &self,
        raw: RawTask,
        cx: &FileCx,
        sink: &mut Sink,
        refs: &mut Vec<RefUse>,
        task_index: usize,
    ) -> Result<Task, Option<(String, u32)>> {
        let files = sink.files;
        let file = cx.index;
        let source = &files[file].source;
        let plan_dir = cx.plan_dir;
        let lines = cx.lines;
        let RawTask {
            id,
            model,
            prompt,
            negative_prompt,
            negative,
            size,
            n,
            pick,
            seed,
            style,
            prompt_extend,
            watermark,
            ref_img,
            ref_strength,
            ref_mode,
            composer,
            text,
            edit,
            function,
            input,
            extend,
            style_reference,
            mask,
            strength,
            out_dir,
            filename,
            extra_input,
            extra_parameters,
            at,
            paths,
            poisoned,
            broken: _,
            from_project,
        } = raw;
        let mut c = Check {
            sink,
            file,
            paths,
            at,
            errors: 0,
            from_project,
        };
        let id_span = id.as_ref().map_or(c.at.clone(), Spanned::span);
        let id = if let Some(id) = id {
            id.into_inner()
        } else {
            if !poisoned.iter().any(|p| p == "id") {
                c.err(
                    c.at.clone(),
                    "id",
                    "this task has no `id`",
                    Some("add `id = \"…\"`: a name unique across the project, used in output file names".to_owned()),
                );
            }
            String::new()
        };

        // The edit kind decides which model a task without one gets.
        let kind = Self::edit_kind(edit.as_ref(), function.as_ref(), &mut c);
        let is_edit = edit.is_some() || function.is_some();
        let spec = self.model(
            model.as_ref(),
            is_edit,
            kind.as_ref(),
            style_reference.is_some(),
            &poisoned,
            &mut c,
        );
        let (model_name, spec) = match spec {
            Some((name, spec)) => (Some(name), Some(spec)),
            None => (None, None),
        };
        let family = spec.map(|s| s.family);

        let prompt = match (prompt, kind.as_ref()) {
            (None, Some(kind)) if !poisoned.iter().any(|p| p == "prompt") => {
                crate::plan::edit_prompt::default_for(kind, style_reference.is_some())
                    .map(|text| Prompt::Text(text.to_owned()))
                    .or_else(|| Self::prompt(None, spec, &poisoned, is_edit, &mut c))
            }
            (prompt, _) => Self::prompt(prompt, spec, &poisoned, is_edit, &mut c),
        };
        let negative_prompt = negative_prompt.map(|p| {
            if p.get_ref().chars().count() > NEGATIVE_PROMPT_LIMIT {
                c.note(
                    p.span(),
                    "negative_prompt",
                    format!("the negative prompt is longer than {NEGATIVE_PROMPT_LIMIT} characters; the service drops the rest"),
                    None,
                );
            }
            p.into_inner()
        });
        let negative_presets = negative.map_or_else(Vec::new, |list| {
            let mut out = Vec::new();
            for (i, item) in list.into_inner().into_iter().enumerate() {
                if vocabulary::negative_preset(item.get_ref()).is_some() {
                    out.push(item.into_inner());
                } else {
                    c.err(
                        item.span(),
                        &format!("negative[{i}]"),
                        format!("unknown negative-prompt preset `{}`", item.get_ref()),
                        Some(hint_from(
                            &vocabulary::names(&NEGATIVE_PRESETS),
                            item.get_ref(),
                        )),
                    );
                }
            }
            out
        });

        let size = spec.and_then(|s| Self::size(size, s, &mut c));
        let errors_before_n = c.errors;
        let n = Self::count(n, spec, &mut c);
        let n_valid = c.errors == errors_before_n && spec.is_some();
        let pick = pick.and_then(|p| {
            let span = p.span();
            let picks = match p.into_inner() {
                RawPick::One(v) => vec![v],
                RawPick::Many(v) => v,
            };
            let mut seen = HashSet::new();
            let valid = !picks.is_empty()
                && picks
                    .iter()
                    .all(|v| (1..=i64::from(n)).contains(v) && seen.insert(*v));
            if valid {
                Some(picks.into_iter().map(|v| v as u32).collect())
            } else {
                c.err(
                    span,
                    "pick",
                    format!("`pick` must name distinct candidates from 1 to {n}"),
                    Some(format!(
                        "the task generates `n = {n}` candidates; `pick = 2` keeps the second, `pick = [1, 3]` two of them"
                    )),
                );
                None
            }
        });
        let seed = seed.and_then(|s| {
            let v = *s.get_ref();
            if (0..=2_147_483_647).contains(&v) {
                Some(v as u32)
            } else {
                c.err(
                    s.span(),
                    "seed",
                    format!("seed {v} is out of range"),
                    Some("a seed is a whole number from 0 to 2147483647".to_owned()),
                );
                None
            }
        });
        let style = style.and_then(|s| Self::style(&s, family, &mut c));
        let mut inputs = Inputs {
            validator: self,
            plan_dir,
            refs,
            task_index,
        };
        let reference =
            Self::reference(ref_img, ref_strength, ref_mode, family, &mut inputs, &mut c);
        let composer = composer.and_then(|comp| check_composer(comp.into_inner(), &mut c));
        let text = text.map(|t| check_text(t.into_inner(), &mut c));
        let edit = Self::edit(
            kind,
            EditFields {
                input,
                extend,
                style_reference,
                mask,
                strength,
            },
            function.as_ref().map(Spanned::get_ref),
            &mut inputs,
            &mut c,
        );
        // Named by the outputs it writes: one picked candidate is `{id}.png`.
        let written = pick.as_ref().map_or(n, |p: &Vec<u32>| p.len() as u32);
        let output = self.output(out_dir, filename, written, &mut c);
        let extra_input = extra_input.map_or_else(Map::new, |m| toml_datetimes(m.into_inner()));
        let extra_parameters =
            extra_parameters.map_or_else(Map::new, |m| toml_datetimes(m.into_inner()));

        let (Some(model), Some(prompt), Some(output), 0) = (model_name, prompt, output, c.errors)
        else {
            // Tasks using this one can still be checked against its `n`.
            return Err((n_valid && !id.is_empty()).then_some((id, n)));
        };
        let (line, column) = lines.line_col(source, id_span.start);
        Ok(Task {
            id,
            origin: Origin {
                file: files[file].path.clone(),
                line,
                column,
            },
            model,
            prompt,
            negative_prompt,
            negative_presets,
            size,
            n,
            pick,
            seed,
            style,
            prompt_extend: prompt_extend.map(Spanned::into_inner),
            watermark: watermark.map(Spanned::into_inner),
            reference,
            composer,
            text,
            edit,
            extra_input,
            extra_parameters,
            output,
        })
    }

    fn edit_kind(
        edit: Option<&Spanned<String>>,
        function: Option<&Spanned<String>>,
        c: &mut Check,
    ) -> Option<EditKind> {
        if let (Some(_), Some(f)) = (edit, function) {
            c.err(
                f.span(),
                "function",
                "`edit` and `function` are both set",
                Some("use `edit` for the seed's edit types, or `function` for a real edit function, not both".to_owned()),
            );
            return None;
        }
        if let Some(e) = edit {
            let kind = match e.get_ref().as_str() {
                "extend" => EditKind::Extend,
                "remove_watermark" => EditKind::RemoveWatermark,
                "style_transfer" => EditKind::StyleTransfer,
                "repair" => EditKind::Repair,
                "beautify" => EditKind::Beautify,
                other => {
                    let hint = if EDIT_FUNCTIONS.contains(&other) {
                        format!("`{other}` is a real edit function: write `function = \"{other}\"`")
                    } else {
                        hint_from(&SEED_EDITS, other)
                    };
                    c.err(
                        e.span(),
                        "edit",
                        format!("unknown edit type `{other}`"),
                        Some(hint),
                    );
                    return None;
                }
            };
            return Some(kind);
        }
        let f = function?;
        let name = f.get_ref();
        if EDIT_FUNCTIONS.contains(&name.as_str()) {
            Some(EditKind::Function(name.clone()))
        } else {
            let hint = if SEED_EDITS.contains(&name.as_str()) {
                format!("`{name}` is one of the seed's edit types: write `edit = \"{name}\"`")
            } else {
                hint_from(&EDIT_FUNCTIONS, name)
            };
            c.err(
                f.span(),
                "function",
                format!("unknown edit function `{name}`"),
                Some(hint),
            );
            None
        }
    }

    /// Resolves the model: the task's, `[defaults]`' (not a text-to-image one for an edit task), or the
    /// default edit model. Returns the registry name and the spec.
    fn model(
        &self,
        model: Option<&Spanned<String>>,
        is_edit: bool,
        kind: Option<&EditKind>,
        has_style_reference: bool,
        poisoned: &[String],
        c: &mut Check,
    ) -> Option<(String, &'a ModelSpec)> {
        let mut model = model;
        // `[defaults]` names a text-to-image model for the generation tasks: edit tasks use an edit model.
        if let Some(m) = model
            && is_edit
            && c.inherited("model")
            && let Some(r) = self.registry.resolve(m.get_ref())
            && !r.spec.family.is_edit()
        {
            model = None;
        }
        let Some(m) = model else {
            if is_edit {
                let name = if matches!(kind, Some(EditKind::StyleTransfer)) && has_style_reference {
                    STYLE_TRANSFER_MODEL
                } else {
                    DEFAULT_EDIT_MODEL
                };
                if let Some(r) = self.registry.resolve(name) {
                    return Some((name.to_owned(), r.spec));
                }
                c.err(
                    c.at.clone(),
                    "model",
                    format!("the default edit model `{name}` is not in the registry"),
                    Some("name an edit model with `model = \"…\"`".to_owned()),
                );
                return None;
            }
            if !poisoned.iter().any(|p| p == "model") {
                c.err(
                    c.at.clone(),
                    "model",
                    "this task has no `model`",
                    Some("set `model` in the task or in `[defaults]`, e.g. `model = \"wan2.2-t2i-flash\"`".to_owned()),
                );
            }
            return None;
        };
        let name = m.get_ref();
        let Some(resolved) = self.registry.resolve(name) else {
            let hint = match did_you_mean(name, self.registry.names()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!(
                    "known models: {}",
                    self.registry
                        .models()
                        .map(|s| format!("`{}`", s.id))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            c.err(
                m.span(),
                "model",
                format!("unknown model `{name}`"),
                Some(hint),
            );
            return None;
        };
        let spec = resolved.spec;
        let registry_name = if resolved.alias_of.is_some() {
            let real = spec.id.clone();
            c.note(
                m.span(),
                "model",
                format!("`{name}` is the seed's name for `{real}`; wanx sends `{real}`"),
                None,
            );
            if self.registry.get(&real).is_some() {
                real
            } else {
                name.clone()
            }
        } else {
            name.clone()
        };
        if is_edit && !spec.family.is_edit() {
            c.err(
                m.span(),
                "model",
                format!("`{name}` is a text-to-image model and cannot run an edit"),
                Some(format!("leave `model` out to use `{DEFAULT_EDIT_MODEL}`, or name an image-edit model (`{DEFAULT_EDIT_MODEL}`, `{STYLE_TRANSFER_MODEL}`)")),
            );
            return None;
        }
        if !is_edit && spec.family.is_edit() {
            c.err(
                m.span(),
                "model",
                format!("`{name}` is an image-edit model"),
                Some(format!(
                    "an edit task needs `edit = \"…\"` ({}) or `function = \"…\"`, and `input`",
                    SEED_EDITS.join(", ")
                )),
            );
            return None;
        }
        Some((registry_name, spec))
    }

    fn prompt(
        prompt: Option<Spanned<RawPrompt>>,
        spec: Option<&ModelSpec>,
        poisoned: &[String],
        is_edit: bool,
        c: &mut Check,
    ) -> Option<Prompt> {
        let Some(prompt) = prompt else {
            if !poisoned.iter().any(|p| p == "prompt") {
                let hint = if is_edit {
                    "the edit API needs a prompt describing the result, e.g. `prompt = \"extend the background\"`"
                } else {
                    "add `prompt = \"…\"`, or the structured form `prompt = { subject = \"…\", style = \"…\" }`"
                };
                c.err(
                    c.at.clone(),
                    "prompt",
                    "this task has no `prompt`",
                    Some(hint.to_owned()),
                );
            }
            return None;
        };
        let span = prompt.span();
        let (result, length) = match prompt.into_inner() {
            RawPrompt::Text(text) => {
                if text.trim().is_empty() {
                    c.err(
                        span,
                        "prompt",
                        "the prompt is empty",
                        Some("describe the image to generate".to_owned()),
                    );
                    return None;
                }
                let length = text.chars().count();
                (Prompt::Text(text), length)
            }
            RawPrompt::Template(t) => {
                let subject = match t.subject {
                    Some(s) if !s.get_ref().trim().is_empty() => s.into_inner(),
                    Some(s) => {
                        c.err(
                            s.span(),
                            "prompt.subject",
                            "the prompt's `subject` is empty",
                            Some("describe the main subject of the image".to_owned()),
                        );
                        return None;
                    }
                    None => {
                        c.err(span, "prompt", "a structured prompt needs a `subject`", Some("add `subject = \"…\"`; `details`, `environment`, `lighting`, `style` and `quality` are optional".to_owned()));
                        return None;
                    }
                };
                let template = PromptTemplate {
                    subject,
                    details: t.details,
                    environment: t.environment,
                    lighting: t.lighting,
                    style: t.style,
                    quality: t.quality,
                };
                let length = [
                    Some(&template.subject),
                    template.details.as_ref(),
                    template.environment.as_ref(),
                    template.lighting.as_ref(),
                    template.style.as_ref(),
                    template.quality.as_ref(),
                ]
                .into_iter()
                .flatten()
                .map(|s| s.chars().count() + 2)
                .sum::<usize>()
                    - 2;
                (Prompt::Template(template), length)
            }
        };
        if let Some(spec) = spec
            && length > spec.prompt_limit
        {
            c.note(
                span,
                "prompt",
                format!(
                    "the prompt has {length} characters; `{}` keeps the first {} and the service drops the rest",
                    spec.id, spec.prompt_limit
                ),
                None,
            );
        }
        Some(result)
    }

    fn size(size: Option<Spanned<String>>, spec: &ModelSpec, c: &mut Check) -> Option<Size> {
        let Some(written) = size else {
            return spec.default_size;
        };
        let span = written.span();
        let parsed: Size = match written.get_ref().parse() {
            Ok(s) => s,
            Err(message) => {
                c.err(span, "size", message, Some(spec.sizes.describe()));
                return None;
            }
        };
        match &spec.sizes {
            SizeRule::FromInput if c.inherited("size") => {
                c.note(
                    span,
                    "size",
                    format!(
                        "`{}` takes its size from the input image: the inherited `size` is ignored for this task",
                        spec.id
                    ),
                    None,
                );
                None
            }
            SizeRule::FromInput => {
                c.err(
                    span,
                    "size",
                    format!("`{}` takes its size from the input image", spec.id),
                    Some("remove `size`".to_owned()),
                );
                None
            }
            rule @ SizeRule::Listed(_) => {
                if rule.check(parsed).is_ok() {
                    return Some(parsed);
                }
                let nearest = rule.nearest_listed(parsed)?;
                c.note(
                    span,
                    "size",
                    format!(
                        "size `{parsed}` is not one `{}` accepts; using `{nearest}`, the listed size closest in aspect ratio",
                        spec.id
                    ),
                    Some(rule.describe()),
                );
                Some(nearest)
            }
            rule => match rule.check(parsed) {
                Ok(()) => Some(parsed),
                Err((message, hint)) => {
                    c.err(
                        span,
                        "size",
                        format!("{message} (`{}`)", spec.id),
                        Some(hint),
                    );
                    None
                }
            },
        }
    }

    fn count(n: Option<Spanned<i64>>, spec: Option<&ModelSpec>, c: &mut Check) -> u32 {
        let Some(n) = n else { return 1 };
        let v = *n.get_ref();
        let Some(spec) = spec else {
            return u32::try_from(v).unwrap_or(1).max(1);
        };
        if v >= i64::from(spec.n_min) && v <= i64::from(spec.n_max) {
            return v as u32;
        }
        let hint = if spec.n_min == spec.n_max {
            format!(
                "`{}` generates exactly {} image{} per task",
                spec.id,
                spec.n_min,
                if spec.n_min == 1 { "" } else { "s" }
            )
        } else {
            format!(
                "`n` must be between {} and {} for `{}`",
                spec.n_min, spec.n_max, spec.id
            )
        };
        c.err(
            n.span(),
            "n",
            format!("`n = {v}` is out of range"),
            Some(hint),
        );
        1
    }

    fn style(style: &Spanned<String>, family: Option<Family>, c: &mut Check) -> Option<String> {
        let name = style.get_ref().as_str();
        if name == "auto" || (name == "<auto>" && family == Some(Family::WanxV1)) {
            return None;
        }
        if name.starts_with('<') {
            if family == Some(Family::WanxV1) {
                if WANX_V1_STYLES.contains(&name) {
                    return Some(name.to_owned());
                }
                c.err(
                    style.span(),
                    "style",
                    format!("unknown wanx-v1 style `{name}`"),
                    Some(hint_from(&WANX_V1_STYLES, name)),
                );
                return None;
            }
            let hint = match STYLES.iter().find(|s| s.wanx_v1 == Some(name)) {
                Some(preset) => format!("write `style = \"{}\"`, which works on every model", preset.name),
                None => "native `<…>` styles need `model = \"wanx-v1\"`; the seed's presets (`watercolor`, `anime`, …) work on every model".to_owned(),
            };
            if family.is_some() {
                c.err(
                    style.span(),
                    "style",
                    format!("`{name}` is a wanx-v1 style"),
                    Some(hint),
                );
            }
            return None;
        }
        if vocabulary::style_preset(name).is_some() {
            return Some(name.to_owned());
        }
        let mut names: Vec<&str> = STYLES.iter().map(|s| s.name).collect();
        names.push("auto");
        c.err(
            style.span(),
            "style",
            format!("unknown style `{name}`"),
            Some(hint_from(&names, name)),
        );
        None
    }

    fn reference(
        ref_img: Option<Spanned<String>>,
        ref_strength: Option<Spanned<f64>>,
        ref_mode: Option<Spanned<String>>,
        family: Option<Family>,
        inputs: &mut Inputs,
        c: &mut Check,
    ) -> Option<Reference> {
        if family.is_some_and(|f| f != Family::WanxV1) {
            for (field, span) in [
                ("ref_img", ref_img.as_ref().map(Spanned::span)),
                ("ref_strength", ref_strength.as_ref().map(Spanned::span)),
                ("ref_mode", ref_mode.as_ref().map(Spanned::span)),
            ] {
                if let Some(span) = span {
                    if c.inherited(field) {
                        c.note(
                            span,
                            field,
                            format!("`{field}` is a wanx-v1 parameter: the inherited value is ignored for this task"),
                            None,
                        );
                        continue;
                    }
                    c.err(
                        span,
                        field,
                        format!("`{field}` is a wanx-v1 parameter"),
                        Some("use `model = \"wanx-v1\"`, or an edit task (`edit = \"style_transfer\"` with `input` and `style_reference`)".to_owned()),
                    );
                }
            }
            return None;
        }
        let strength = ref_strength.and_then(|s| {
            let v = *s.get_ref();
            if (0.0..=1.0).contains(&v) {
                Some(v)
            } else {
                c.err(
                    s.span(),
                    "ref_strength",
                    format!("`ref_strength = {v}` is out of range"),
                    Some("`ref_strength` is between 0.0 and 1.0".to_owned()),
                );
                None
            }
        });
        let mode = ref_mode.and_then(|m| match m.get_ref().as_str() {
            "repaint" => Some(RefMode::Repaint),
            "refonly" => Some(RefMode::Refonly),
            other => {
                c.err(
                    m.span(),
                    "ref_mode",
                    format!("unknown `ref_mode` `{other}`"),
                    Some(hint_from(&["repaint", "refonly"], other)),
                );
                None
            }
        });
        let Some(img) = ref_img else {
            if strength.is_some() || mode.is_some() {
                c.err(
                    c.at.clone(),
                    "ref_img",
                    "`ref_strength` and `ref_mode` need `ref_img`",
                    Some("add `ref_img` (a URL, a file, or a task id)".to_owned()),
                );
            }
            return None;
        };
        let image = inputs.resolve(&img, "ref_img", c)?;
        Some(Reference {
            image,
            strength,
            mode,
        })
    }

    fn edit(
        kind: Option<EditKind>,
        fields: EditFields,
        function: Option<&String>,
        inputs: &mut Inputs,
        c: &mut Check,
    ) -> Option<Edit> {
        let EditFields {
            input,
            extend,
            style_reference,
            mask,
            strength,
        } = fields;
        let Some(kind) = kind else {
            // Not an edit task (or its kind was already reported): edit fields make no sense.
            if function.is_none() {
                for (field, span) in [
                    ("input", input.as_ref().map(Spanned::span)),
                    ("extend", extend.as_ref().map(Spanned::span)),
                    (
                        "style_reference",
                        style_reference.as_ref().map(Spanned::span),
                    ),
                    ("mask", mask.as_ref().map(Spanned::span)),
                    ("strength", strength.as_ref().map(Spanned::span)),
                ] {
                    if let Some(span) = span {
                        c.err(
                            span,
                            field,
                            format!("`{field}` only applies to edit tasks"),
                            Some(format!(
                                "add `edit = \"…\"` ({}) or `function = \"…\"`",
                                SEED_EDITS.join(", ")
                            )),
                        );
                    }
                }
            }
            return None;
        };
        let input_ref = if let Some(i) = &input {
            inputs.resolve(i, "input", c)
        } else {
            c.err(c.at.clone(), "input", "an edit task needs `input`", Some("set `input` to a task id (`hero` or `hero#2`), a file relative to the plan, or a URL".to_owned()));
            None
        };
        let extend = extend.and_then(|e| {
            let span = e.span();
            let allowed = matches!(kind, EditKind::Extend)
                || matches!(&kind, EditKind::Function(f) if f == "expand");
            if !allowed {
                c.err(
                    span.clone(),
                    "extend",
                    "`extend` applies only to `edit = \"extend\"`",
                    Some("remove `extend`, or set `edit = \"extend\"`".to_owned()),
                );
                return None;
            }
            check_extend(e.into_inner(), span, c)
        });
        let style_reference =
            style_reference.and_then(|s| inputs.resolve(&s, "style_reference", c));
        let mask = mask.and_then(|m| inputs.resolve(&m, "mask", c));
        if matches!(&kind, EditKind::Function(f) if f == "description_edit_with_mask")
            && mask.is_none()
            && c.errors == 0
        {
            c.err(
                c.at.clone(),
                "mask",
                "`description_edit_with_mask` needs `mask`",
                Some(
                    "set `mask` to a black-and-white image the size of the input (white = edit)"
                        .to_owned(),
                ),
            );
        }
        let strength = strength.and_then(|s| {
            let v = *s.get_ref();
            if (0.0..=1.0).contains(&v) {
                Some(v)
            } else {
                c.err(
                    s.span(),
                    "strength",
                    format!("`strength = {v}` is out of range"),
                    Some("`strength` is between 0.0 and 1.0".to_owned()),
                );
                None
            }
        });
        Some(Edit {
            kind,
            input: input_ref?,
            extend,
            style_reference,
            mask,
            strength,
        })
    }

    fn output(
        &self,
        out_dir: Option<Spanned<String>>,
        filename: Option<Spanned<String>>,
        n: u32,
        c: &mut Check,
    ) -> Option<OutputSpec> {
        let dir_span = out_dir.as_ref().map(Spanned::span);
        let dir = match out_dir {
            None => self.default_dir.clone(),
            Some(d) => match check_relative(d.get_ref(), true) {
                Ok(()) => normalize_dir(d.get_ref()),
                Err((message, hint)) => {
                    c.err(d.span(), "out_dir", message, Some(hint));
                    return None;
                }
            },
        };
        let (pattern, span) = match filename {
            None => (self.manifest.project.filename.clone(), None),
            Some(f) => {
                let span = f.span();
                let pattern = f.into_inner();
                if let Err((message, hint)) = check_relative(&pattern, false)
                    .and_then(|()| scan_placeholders(&pattern).map(|_| ()))
                {
                    c.err(span, "filename", message, Some(hint));
                    return None;
                }
                (pattern, Some(span))
            }
        };
        // A symlinked directory on the way out (the manifest's default is checked once, on its own).
        let fixed = static_dir(&dir, &pattern);
        if (dir_span.is_some() || fixed != dir)
            && let Some((message, hint)) = self.escapes(&fixed)
        {
            let (span, field) = match (dir_span, &span) {
                (Some(s), _) => (s, "out_dir"),
                (None, Some(s)) => (s.clone(), "filename"),
                (None, None) => (c.at.clone(), "out_dir"),
            };
            c.err(span, field, message, Some(hint));
            return None;
        }
        let has_index = scan_placeholders(&pattern).unwrap_or(true);
        let filename = if n > 1 && !has_index {
            let with_index = add_index(&pattern);
            if let Some(span) = span {
                c.note(
                    span,
                    "filename",
                    format!("the file name pattern `{pattern}` has no `{{index}}`, so a task that makes several images writes `{with_index}`"),
                    None,
                );
            }
            with_index
        } else {
            pattern
        };
        Some(OutputSpec { dir, filename })
    }
}

struct EditFields {
    input: Option<Spanned<String>>,
    extend: Option<Spanned<RawExtend>>,
    style_reference: Option<Spanned<String>>,
    mask: Option<Spanned<String>>,
    strength: Option<Spanned<f64>>,
}

/// Resolves image inputs of one task.
struct Inputs<'v, 'a, 'r> {
    validator: &'v Validator<'a>,
    plan_dir: &'v Path,
    refs: &'r mut Vec<RefUse>,
    task_index: usize,
}

impl Inputs<'_, '_, '_> {
    /// A URL, a task id (`ID` or `ID#K`), or a file relative to the plan file's directory that exists
    /// inside the project.
    fn resolve(&mut self, value: &Spanned<String>, field: &str, c: &mut Check) -> Option<InputRef> {
        let text = value.get_ref().as_str();
        let span = value.span();
        if ["http://", "https://", "oss://", "data:"]
            .iter()
            .any(|p| text.starts_with(p))
        {
            return Some(InputRef::Url(text.to_owned()));
        }
        let ids = self.validator.ids;
        let task = if ids.contains_key(text) {
            Some((text, None))
        } else {
            match text.rsplit_once('#') {
                Some((id, k)) if ids.contains_key(id) => match k.parse::<u32>() {
                    Ok(k) if k >= 1 => Some((id, Some(k))),
                    _ => {
                        c.err(
                            span,
                            field,
                            format!("`#{k}` is not an image number"),
                            Some(format!("write `{id}#1` for the first image of task `{id}`")),
                        );
                        return None;
                    }
                },
                _ => None,
            }
        };
        if let Some((id, index)) = task {
            self.refs.push(RefUse {
                file: c.file,
                span,
                field: c.paths.path(field),
                from: Some(self.task_index),
                id: id.to_owned(),
                index,
            });
            return Some(InputRef::Task {
                id: id.to_owned(),
                index,
            });
        }
        self.file(text, span, field, c).map(InputRef::File)
    }

    fn file(&self, text: &str, span: Range<usize>, field: &str, c: &mut Check) -> Option<PathBuf> {
        let root = &self.validator.manifest.root;
        let outside = |c: &mut Check| {
            c.err(
                span.clone(),
                field,
                format!("`{text}` is outside the project"),
                Some("inputs must be inside the project directory (the one holding `wanx.toml`), or URLs".to_owned()),
            );
        };
        let written = Path::new(text);
        let joined = if written.is_absolute() {
            let Ok(rel) = written.strip_prefix(root) else {
                outside(c);
                return None;
            };
            rel.to_path_buf()
        } else {
            self.plan_dir.join(written)
        };
        let mut rel = PathBuf::new();
        for part in joined.components() {
            match part {
                Component::Normal(p) => rel.push(p),
                Component::CurDir => {}
                Component::ParentDir => {
                    if !rel.pop() {
                        outside(c);
                        return None;
                    }
                }
                Component::RootDir | Component::Prefix(_) => {
                    outside(c);
                    return None;
                }
            }
        }
        let full = root.join(&rel);
        if !full.is_file() {
            let id_part = text.split('#').next().unwrap_or(text);
            let hint = match did_you_mean(id_part, self.validator.ids.keys().map(String::as_str)) {
                Some(id) => format!("did you mean the task `{id}`?"),
                None => format!(
                    "a file is looked up relative to the plan file's directory (`{}`); an input can also be a task id (`ID` or `ID#K`) or an http(s)://, oss:// or data: URL",
                    if self.plan_dir.as_os_str().is_empty() {
                        ".".to_owned()
                    } else {
                        self.plan_dir.display().to_string()
                    }
                ),
            };
            c.err(
                span,
                field,
                format!("no task or file named `{text}`"),
                Some(hint),
            );
            return None;
        }
        // A symlink must not lead out of the project either.
        if let (Some(croot), Ok(real)) =
            (&self.validator.canonical_root, std::fs::canonicalize(&full))
            && !real.starts_with(croot)
        {
            outside(c);
            return None;
        }
        if let Some((message, hint)) = crate::tree::input_limit::check(&full, text) {
            c.err(span, field, message, Some(hint));
            return None;
        }
        Some(rel)
    }
}

fn check_composer(raw: RawComposer, c: &mut Check) -> Option<Composer> {
    let mut composer = Composer::default();
    for (i, colour) in raw.color_palette.into_iter().flatten().enumerate() {
        match normalize_colour(colour.get_ref()) {
            Some(hex) => composer.color_palette.push(hex),
            None => c.err(
                colour.span(),
                &format!("composer.color_palette[{i}]"),
                format!("`{}` is not a colour", colour.get_ref()),
                Some("write colours as `#RRGGBB` (or `#RGB`), e.g. `#00F5FF`".to_owned()),
            ),
        }
    }
    let mut pick = |value: Option<Spanned<String>>,
                    table: &[(&'static str, &'static str)],
                    field: &str,
                    what: &str| {
        let value = value?;
        if vocabulary::lookup(table, value.get_ref()).is_some() {
            Some(value.into_inner())
        } else {
            c.err(
                value.span(),
                field,
                format!("unknown {what} `{}`", value.get_ref()),
                Some(hint_from(&vocabulary::names(table), value.get_ref())),
            );
            None
        }
    };
    composer.layout = pick(raw.layout, &LAYOUTS, "composer.layout", "layout");
    composer.material = pick(raw.material, &MATERIALS, "composer.material", "material");
    composer.semantic = raw.semantic.map(Spanned::into_inner);
    if composer == Composer::default() {
        None
    } else {
        Some(composer)
    }
}

fn check_text(raw: RawText, c: &mut Check) -> QwenText {
    let mut pick = |value: Option<Spanned<String>>, list: &[&str], field: &str| {
        let value = value?;
        if list.contains(&value.get_ref().as_str()) {
            Some(value.into_inner())
        } else {
            c.err(
                value.span(),
                field,
                format!(
                    "unknown `{}` `{}`",
                    field.rsplit('.').next().unwrap_or(field),
                    value.get_ref()
                ),
                Some(hint_from(list, value.get_ref())),
            );
            None
        }
    };
    QwenText {
        title: raw.title,
        subtitle: raw.subtitle,
        text_position: pick(raw.text_position, &TEXT_POSITIONS, "text.text_position"),
        font_style: pick(raw.font_style, &FONT_STYLES, "text.font_style"),
    }
}

fn check_extend(raw: RawExtend, span: Range<usize>, c: &mut Check) -> Option<Extend> {
    let directions = ["top", "bottom", "left", "right", "all"];
    let direction = match raw.direction {
        None => {
            c.err(
                span.clone(),
                "extend",
                "`extend` needs a `direction`",
                Some("`direction` is one of `top`, `bottom`, `left`, `right`, `all`".to_owned()),
            );
            None
        }
        Some(d) => match d.get_ref().as_str() {
            "top" => Some(Direction::Top),
            "bottom" => Some(Direction::Bottom),
            "left" => Some(Direction::Left),
            "right" => Some(Direction::Right),
            "all" => Some(Direction::All),
            other => {
                c.err(
                    d.span(),
                    "extend.direction",
                    format!("unknown direction `{other}`"),
                    Some(hint_from(&directions, other)),
                );
                None
            }
        },
    };
    let ratio = match raw.ratio {
        None => {
            c.err(
                span,
                "extend",
                "`extend` needs a `ratio`",
                Some("`ratio` is the side's scale, from 1.0 to 2.0".to_owned()),
            );
            None
        }
        Some(r) => {
            let v = *r.get_ref();
            if (1.0..=2.0).contains(&v) {
                Some(v)
            } else {
                c.err(
                    r.span(),
                    "extend.ratio",
                    format!("`ratio = {v}` is out of range"),
                    Some("`ratio` is the side's scale, from 1.0 to 2.0".to_owned()),
                );
                None
            }
        }
    };
    Some(Extend {
        direction: direction?,
        ratio: ratio?,
    })
}

/// `#RRGGBB` or `#RGB` → upper-case `#RRGGBB`.
fn normalize_colour(s: &str) -> Option<String> {
    let hex = s.strip_prefix('#')?;
    if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    match hex.len() {
        6 => Some(format!("#{}", hex.to_ascii_uppercase())),
        3 => Some(
            std::iter::once('#')
                .chain(hex.chars().flat_map(|c| {
                    let c = c.to_ascii_uppercase();
                    [c, c]
                }))
                .collect(),
        ),
        _ => None,
    }
}

/// The part of an output path known before rendering: `dir` and the directories of `pattern` up to
/// the first placeholder.
fn static_dir(dir: &str, pattern: &str) -> String {
    let mut out = dir.trim_end_matches('/').to_owned();
    let mut parts: Vec<&str> = pattern.split('/').collect();
    parts.pop();
    for part in parts.into_iter().take_while(|p| !p.contains('{')) {
        if part.is_empty() || part == "." {
            continue;
        }
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(part);
    }
    out
}

/// A project-relative path: not absolute, no `..`, `/`-separated.
fn check_relative(path: &str, is_dir: bool) -> Result<(), (String, String)> {
    let what = if is_dir {
        "directory"
    } else {
        "file name pattern"
    };
    let hint =
        "outputs are written inside the project: use a relative path without `..`".to_owned();
    if path.contains('\\') {
        return Err((
            format!("the {what} `{path}` contains `\\`"),
            "separate directories with `/`".to_owned(),
        ));
    }
    if path.starts_with('/') || Path::new(path).is_absolute() || path.get(1..2) == Some(":") {
        return Err((format!("the {what} `{path}` is absolute"), hint));
    }
    if path.split('/').any(|part| part == "..") {
        return Err((
            format!("the {what} `{path}` leaves its directory with `..`"),
            hint,
        ));
    }
    if is_dir {
        if let Some(first) = path.split('/').find(|p| !p.is_empty() && *p != ".")
            && (first == ".wanx" || first == ".git")
        {
            return Err((
                format!("the directory `{path}` is inside `{first}`"),
                "choose a directory outside wanx's and git's own state".to_owned(),
            ));
        }
    } else if path.is_empty() || path.ends_with('/') {
        return Err((
            format!("the file name pattern `{path}` names no file"),
            "e.g. `{id}_{index}.png`".to_owned(),
        ));
    }
    Ok(())
}

/// `a/./b/` → `a/b`; `.` → the empty string (the project root).
fn normalize_dir(dir: &str) -> String {
    dir.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Checks `{placeholder}`s; returns whether `{index}` is present.
fn scan_placeholders(pattern: &str) -> Result<bool, (String, String)> {
    let mut has_index = false;
    let mut rest = pattern;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err((
                format!("unmatched `}}` in `{pattern}`"),
                placeholder_hint(None),
            ));
        }
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err((
                format!("unclosed `{{` in `{pattern}`"),
                placeholder_hint(None),
            ));
        };
        let name = &after[..close];
        if !PLACEHOLDERS.contains(&name) {
            return Err((
                format!("unknown placeholder `{{{name}}}` in `{pattern}`"),
                placeholder_hint(Some(name)),
            ));
        }
        has_index |= name == "index";
        rest = &after[close + 1..];
    }
    Ok(has_index)
}

fn placeholder_hint(name: Option<&str>) -> String {
    // `{idx}` means `{index}`, though `{id}` is fewer edits away: prefer a name the word abbreviates.
    let abbreviates = |word: &str, name: &str| {
        let mut chars = name.chars();
        word.len() < name.len() && word.chars().all(|w| chars.any(|c| c == w))
    };
    let close = name.and_then(|n| {
        PLACEHOLDERS
            .iter()
            .copied()
            .find(|p| abbreviates(n, p))
            .or_else(|| did_you_mean(n, PLACEHOLDERS))
    });
    if let Some(close) = close {
        return format!("did you mean `{{{close}}}`?");
    }
    format!(
        "placeholders: {}",
        PLACEHOLDERS
            .iter()
            .map(|p| format!("`{{{p}}}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// `{id}.png` → `{id}_{index}.png`; `{id}` → `{id}_{index}`.
fn add_index(pattern: &str) -> String {
    let name_start = pattern.rfind('/').map_or(0, |i| i + 1);
    match pattern[name_start..].rfind('.') {
        Some(dot) if dot > 0 => {
            let at = name_start + dot;
            format!("{}_{{index}}{}", &pattern[..at], &pattern[at..])
        }
        _ => format!("{pattern}_{{index}}"),
    }
}

/// TOML datetimes reach `serde_json` as `{"$__toml_private_datetime": "…"}`: make them strings.
fn toml_datetimes(map: Map<String, Value>) -> Map<String, Value> {
    fn fix(value: Value) -> Value {
        match value {
            Value::Object(map) => {
                if let (1, Some(Value::String(s))) =
                    (map.len(), map.get("$__toml_private_datetime"))
                {
                    return Value::String(s.clone());
                }
                Value::Object(map.into_iter().map(|(k, v)| (k, fix(v))).collect())
            }
            Value::Array(items) => Value::Array(items.into_iter().map(fix).collect()),
            other => other,
        }
    }
    map.into_iter().map(|(k, v)| (k, fix(v))).collect()
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

    #[test]
    fn colours_are_normalised() {
        assert_eq!(normalize_colour("#00f5ff").as_deref(), Some("#00F5FF"));
        assert_eq!(normalize_colour("#abc").as_deref(), Some("#AABBCC"));
        assert_eq!(normalize_colour("00F5FF"), None);
        assert_eq!(normalize_colour("#GG0000"), None);
        assert_eq!(normalize_colour("#1234"), None);
    }

    #[test]
    fn index_goes_before_the_extension() {
        assert_eq!(add_index("{id}.png"), "{id}_{index}.png");
        assert_eq!(
            add_index("{task_id}_{timestamp}.png"),
            "{task_id}_{timestamp}_{index}.png"
        );
        assert_eq!(add_index("a.b/{id}"), "a.b/{id}_{index}");
    }

    #[test]
    fn placeholders_are_checked() {
        assert_eq!(scan_placeholders("{id}_{index}.png"), Ok(true));
        assert_eq!(scan_placeholders("{id}.png"), Ok(false));
        let (message, hint) = scan_placeholders("{id}_{idx}.png").unwrap_err();
        assert!(message.contains("{idx}"), "{message}");
        assert_eq!(hint, "did you mean `{index}`?");
        assert!(scan_placeholders("{id").is_err());
    }

    #[test]
    fn glob_bases_limit_the_walk() {
        assert_eq!(glob_base("plans/**/*.toml"), PathBuf::from("plans"));
        assert_eq!(glob_base("**/*.toml"), PathBuf::new());
        assert_eq!(
            glob_base("plans/main.toml"),
            PathBuf::from("plans/main.toml")
        );
    }

    #[test]
    fn output_paths_stay_inside_the_project() {
        assert!(check_relative("generated/heroes", true).is_ok());
        assert!(check_relative("../out", true).is_err());
        assert!(check_relative("/tmp/out", true).is_err());
        assert!(check_relative("a/../../b", true).is_err());
        assert!(check_relative(".wanx/blobs", true).is_err());
        assert!(check_relative("{id}/../x.png", false).is_err());
        assert_eq!(normalize_dir("output/x/"), "output/x");
    }
}
