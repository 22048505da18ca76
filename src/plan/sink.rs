//! Where the parsers and the validator report: one [`Sink`] per plan file, which locates each problem
//! in its [`SourceFile`] and reports identical ones once.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::PathBuf;

use crate::term::diagnostic::{self, Diagnostic, Severity};

/// One plan file: its project-relative path and text.
pub(crate) struct SourceFile {
    pub path: PathBuf,
    pub source: String,
}
/// Collects diagnostics from every file. Identical errors (a bad value in `[defaults]` inherited by many
/// tasks) are reported once; identical notes once per file, with a count.
pub(crate) struct Sink<'f> {
    pub files: &'f [SourceFile],
    pub(super) errors: Vec<Diagnostic>,
    notes: Vec<Diagnostic>,
    seen: HashSet<(usize, usize, String)>,
    note_counts: HashMap<(usize, String), (usize, usize)>,
}

impl<'f> Sink<'f> {
    pub(super) fn new(files: &'f [SourceFile]) -> Sink<'f> {
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

    /// [`Sink::error`] that also quotes a second place: byte `span` of file `file`, with `label`.
    pub fn error_with_related(
        &mut self,
        at: (usize, Range<usize>),
        message: impl Into<String>,
        field: Option<String>,
        hint: Option<String>,
        related: (usize, Range<usize>, &str),
    ) {
        let errors = self.errors.len();
        self.error(at.0, Some(at.1), message, field, hint);
        let (file, span, label) = related;
        let f = &self.files[file];
        if let Some(d) = self.errors.get_mut(errors) {
            *d = d.clone().also_at(&f.path, &f.source, span, label);
        }
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

    pub(super) fn finish(mut self) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Vec<SourceFile> {
        vec![
            SourceFile {
                path: PathBuf::from("plans/a.toml"),
                source: "[[task]]\nid = \"hero\"\n".to_owned(),
            },
            SourceFile {
                path: PathBuf::from("plans/b.toml"),
                source: "[[task]]\nid = \"hero\"\n".to_owned(),
            },
        ]
    }

    #[test]
    fn identical_errors_are_reported_once_and_notes_counted() {
        let files = files();
        let mut sink = Sink::new(&files);
        for _ in 0..2 {
            sink.error(0, Some(14..20), "bad", None, None);
            sink.note(Severity::Note, 0, Some(9..11), "aliased", None, None);
        }
        let (errors, notes) = sink.finish();
        assert_eq!(errors.len(), 1);
        assert_eq!((errors[0].line, errors[0].column), (2, 6));
        assert_eq!(notes.len(), 1);
        assert_eq!(
            notes[0].message,
            "aliased (and 1 more like it in this file)"
        );
    }

    #[test]
    fn an_error_can_quote_a_place_in_another_file() {
        let files = files();
        let mut sink = Sink::new(&files);
        sink.error_with_related((1, 14..20), "used twice", None, None, (0, 14..20, "first"));
        let (errors, _) = sink.finish();
        let related = &errors[0].related;
        assert_eq!(related.len(), 1);
        assert_eq!(related[0].path, PathBuf::from("plans/a.toml"));
        assert_eq!(related[0].excerpt.line, 2);
        assert_eq!(related[0].excerpt.text, "id = \"hero\"");
    }
}
