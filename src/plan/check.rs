//! Per-task reporting ([`Check`]): names fields through the task's [`FieldPaths`], reports into the
//! file's sink and counts errors; and the "did you mean" hint over a closed list of names.

use std::ops::Range;

use crate::plan::raw::FieldPaths;
use crate::plan::sink::Sink;
use crate::term::diagnostic::Severity;

/// Per-task reporting: names fields through the task's [`FieldPaths`] and counts errors.
pub(super) struct Check<'s, 'f> {
    pub(super) sink: &'s mut Sink<'f>,
    pub(super) file: usize,
    pub(super) paths: FieldPaths,
    pub(super) at: Range<usize>,
    pub(super) errors: usize,
    /// Fields inherited from `wanx.toml`'s `[defaults]`.
    pub(super) from_project: Vec<&'static str>,
}

impl Check<'_, '_> {
    /// Whether `name` came from a `[defaults]` table (the plan's or the project's), not the task.
    pub(super) fn inherited(&self, name: &str) -> bool {
        self.paths.inherited(name) || self.from_project.contains(&name)
    }

    /// How diagnostics name `field`: values from `wanx.toml` are named there.
    pub(super) fn field_path(&self, field: &str) -> String {
        let top = field.split(['.', '[']).next().unwrap_or(field);
        if self.from_project.contains(&top) {
            format!("defaults.{field} in `wanx.toml`")
        } else {
            self.paths.path(field)
        }
    }

    pub(super) fn err(
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

    pub(super) fn note(
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
