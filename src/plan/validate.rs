//! Validating one task: the [`Validator`] holds what every task is checked against (the manifest,
//! the registry, every task id) and turns a [`RawTask`] into a [`Task`] step by step: id, edit kind,
//! model, prompt, size and count, inputs, edit, output naming.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use toml::Spanned;

use crate::plan::check::Check;
use crate::plan::edit::{self, EditFields, SEED_EDITS};
use crate::plan::fields;
use crate::plan::inputs::Inputs;
use crate::plan::output_path::{
    add_index, check_relative, normalize_dir, scan_placeholders, static_dir,
};
use crate::plan::raw::RawTask;
use crate::plan::refs::RefUse;
use crate::plan::sink::Sink;
use crate::plan::task::{EditKind, Origin, OutputSpec, Prompt, Task};
use crate::project::manifest::{self, Manifest};
use crate::registry::{ModelSpec, Registry};
use crate::term::diagnostic::{Diagnostic, LineIndex, did_you_mean};

/// The edit model used when an edit task names none.
const DEFAULT_EDIT_MODEL: &str = "wanx2.1-imageedit";
/// The edit model used for `style_transfer` with a `style_reference` (it takes several images).
const STYLE_TRANSFER_MODEL: &str = "wan2.5-i2i-preview";

/// The file a task is validated in.
pub(super) struct FileCx<'a> {
    pub(super) index: usize,
    pub(super) lines: &'a LineIndex,
    /// The plan file's directory, relative to the root: local inputs are resolved from it.
    pub(super) plan_dir: &'a Path,
}
impl FileCx<'_> {
    /// The task defined at byte `at` of this file, as a place to point at.
    fn origin(&self, files: &[crate::plan::sink::SourceFile], at: usize) -> Origin {
        let (line, column) = self.lines.line_col(&files[self.index].source, at);
        Origin {
            file: files[self.index].path.clone(),
            line,
            column,
        }
    }
}

pub(super) struct Validator<'a> {
    manifest: &'a Manifest,
    registry: &'a Registry,
    ids: &'a HashMap<String, (usize, Range<usize>)>,
    canonical_root: Option<PathBuf>,
    /// `project.out_dir`, normalised once.
    default_dir: String,
    /// Output directories already resolved against symlinks: dir → the problem, if any.
    resolved_dirs: std::sync::Mutex<HashMap<String, Option<(String, String)>>>,
}

impl<'a> Validator<'a> {
    pub(super) fn new(
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
    pub(super) fn escapes(&self, dir: &str) -> Option<(String, String)> {
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
    pub(super) fn check_manifest_output(&self, sink: &mut Sink) {
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

    /// Checks one task's fields (every field of [`RawTask`] but `broken`, which the caller reads, is read here) and builds the
    /// task. On failure, returns the id and `n` of a task whose `n` is valid, so tasks using it can
    /// still be checked against it.
    pub(super) fn validate(
        &self,
        raw: RawTask,
        cx: &FileCx,
        sink: &mut Sink,
        refs: &mut Vec<RefUse>,
        task_index: usize,
    ) -> Result<Task, Option<(String, u32)>> {
        let sink_files = sink.files;
        let poisoned = raw.poisoned;
        let mut c = Check {
            sink,
            file: cx.index,
            paths: raw.paths,
            at: raw.at,
            errors: 0,
            from_project: raw.from_project,
        };
        let id_span = raw.id.as_ref().map_or(c.at.clone(), Spanned::span);
        let id = fields::task_id(raw.id, &poisoned, &mut c);

        // The edit kind decides which model a task without one gets.
        let kind = edit::edit_kind(raw.edit.as_ref(), raw.function.as_ref(), &mut c);
        let is_edit = raw.edit.is_some() || raw.function.is_some();
        let style_reference = raw.style_reference.is_some();
        let spec = self.model(
            raw.model.as_ref(),
            is_edit,
            kind.as_ref(),
            style_reference,
            &poisoned,
            &mut c,
        );
        let (model_name, spec) = spec.map_or((None, None), |(name, spec)| (Some(name), Some(spec)));
        let family = spec.map(|s| s.family);

        let prompt = match (raw.prompt, kind.as_ref()) {
            (None, Some(kind)) if !poisoned.iter().any(|p| p == "prompt") => {
                edit_prompt(kind, style_reference, spec, &poisoned, &mut c)
            }
            (prompt, _) => fields::prompt(prompt, spec, &poisoned, is_edit, &mut c),
        };
        let negative_prompt = raw
            .negative_prompt
            .map(|p| fields::negative_prompt(p, &mut c));
        let negative_presets = raw
            .negative
            .map_or_else(Vec::new, |list| fields::negative_presets(list, &mut c));

        let size = spec.and_then(|s| fields::size(raw.size, s, &mut c));
        let errors_before_n = c.errors;
        let n = fields::count(raw.n, spec, &mut c);
        let n_valid = c.errors == errors_before_n && spec.is_some();
        let pick = raw.pick.and_then(|p| fields::pick(p, n, &mut c));
        let seed = raw.seed.and_then(|s| fields::seed(&s, &mut c));
        let style = raw.style.and_then(|s| fields::style(&s, family, &mut c));
        let mut inputs = self.inputs(cx, refs, task_index);
        let reference = fields::reference(
            raw.ref_img,
            raw.ref_strength,
            raw.ref_mode,
            family,
            &mut inputs,
            &mut c,
        );
        let composer = raw
            .composer
            .and_then(|comp| fields::check_composer(comp.into_inner(), &mut c));
        let text = raw.text.map(|t| fields::check_text(t.into_inner(), &mut c));
        let edit = edit::edit(
            kind,
            EditFields {
                input: raw.input,
                extend: raw.extend,
                style_reference: raw.style_reference,
                mask: raw.mask,
                strength: raw.strength,
            },
            raw.function.as_ref().map(Spanned::get_ref),
            &mut inputs,
            &mut c,
        );
        // Named by the outputs it writes: one picked candidate is `{id}.png`.
        let written = pick.as_ref().map_or(n, |p: &Vec<u32>| p.len() as u32);
        let output = self.output(raw.out_dir, raw.filename, written, &mut c);

        let (Some(model), Some(prompt), Some(output), 0) = (model_name, prompt, output, c.errors)
        else {
            // Tasks using this one can still be checked against its `n`.
            return Err((n_valid && !id.is_empty()).then_some((id, n)));
        };
        Ok(Task {
            id,
            origin: cx.origin(sink_files, id_span.start),
            model,
            prompt,
            negative_prompt,
            negative_presets,
            size,
            n,
            pick,
            seed,
            style,
            prompt_extend: raw.prompt_extend.map(Spanned::into_inner),
            watermark: raw.watermark.map(Spanned::into_inner),
            reference,
            composer,
            text,
            edit,
            extra_input: extra(raw.extra_input),
            extra_parameters: extra(raw.extra_parameters),
            output,
        })
    }

    /// Where a task's inputs are resolved from, and where the outputs of other tasks it uses are
    /// recorded (`refs`).
    fn inputs<'r>(
        &'r self,
        cx: &FileCx<'r>,
        refs: &'r mut Vec<RefUse>,
        task_index: usize,
    ) -> Inputs<'r, 'r> {
        Inputs {
            ids: self.ids,
            root: &self.manifest.root,
            canonical_root: self.canonical_root.as_deref(),
            plan_dir: cx.plan_dir,
            refs,
            task_index,
        }
    }

    /// Resolves the model: the task's, `[defaults]`' (not a text-to-image one for an edit task), or the
    /// default edit model. Returns the registry name and the spec.
    pub(super) fn model(
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

    pub(super) fn output(
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

/// The prompt of an edit task that writes none: the edit kind's default, if it has one.
fn edit_prompt(
    kind: &EditKind,
    has_style_reference: bool,
    spec: Option<&ModelSpec>,
    poisoned: &[String],
    c: &mut Check,
) -> Option<Prompt> {
    crate::plan::edit_prompt::default_for(kind, has_style_reference)
        .map(|text| Prompt::Text(text.to_owned()))
        .or_else(|| fields::prompt(None, spec, poisoned, true, c))
}

/// A task's `extra_input` or `extra_parameters` table, with its TOML datetimes as strings.
fn extra(table: Option<Spanned<Map<String, Value>>>) -> Map<String, Value> {
    table.map_or_else(Map::new, |m| toml_datetimes(m.into_inner()))
}

/// TOML datetimes reach `serde_json` as `{"$__toml_private_datetime": "…"}`: make them strings.
pub(super) fn toml_datetimes(map: Map<String, Value>) -> Map<String, Value> {
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
