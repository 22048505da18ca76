//! Image inputs of one task (`input`, `ref_img`, `mask`, …): a URL, another task's image (`ID` or
//! `ID#K`, recorded for [`crate::plan::refs`]), or a file inside the project.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use toml::Spanned;

use crate::plan::check::Check;
use crate::plan::refs::RefUse;
use crate::plan::task::InputRef;
use crate::term::diagnostic::did_you_mean;

/// Resolves image inputs of one task.
pub(super) struct Inputs<'v, 'r> {
    /// Every task id in the project, and where it is defined.
    pub(super) ids: &'v HashMap<String, (usize, Range<usize>)>,
    /// The project root, as written and with symlinks resolved.
    pub(super) root: &'v Path,
    pub(super) canonical_root: Option<&'v Path>,
    /// The plan file's directory, relative to the root.
    pub(super) plan_dir: &'v Path,
    pub(super) refs: &'r mut Vec<RefUse>,
    pub(super) task_index: usize,
}

impl Inputs<'_, '_> {
    /// A URL, a task id (`ID` or `ID#K`), or a file relative to the plan file's directory that exists
    /// inside the project.
    pub(super) fn resolve(
        &mut self,
        value: &Spanned<String>,
        field: &str,
        c: &mut Check,
    ) -> Option<InputRef> {
        let text = value.get_ref().as_str();
        let span = value.span();
        if ["http://", "https://", "oss://", "data:"]
            .iter()
            .any(|p| text.starts_with(p))
        {
            return Some(InputRef::Url(text.to_owned()));
        }
        let ids = self.ids;
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

    pub(super) fn file(
        &self,
        text: &str,
        span: Range<usize>,
        field: &str,
        c: &mut Check,
    ) -> Option<PathBuf> {
        let root = self.root;
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
            let hint = match did_you_mean(id_part, self.ids.keys().map(String::as_str)) {
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
        if let (Some(croot), Ok(real)) = (self.canonical_root, std::fs::canonicalize(&full))
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
