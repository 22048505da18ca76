//! `Diagnostic`: an error or note about the user's files, located by file, line and column, with the
//! offending line quoted, a hint, and where there is one, a second place (a duplicate id's first
//! definition). Rendered by annotate-snippets, the way rustc and cargo render theirs; the printer
//! decides whether with colour. [`LineIndex`] is the crate's one line/column computation.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use annotate_snippets::{AnnotationKind, Group, Level, Origin, Renderer, Snippet};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
    Note,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The file, as shown to the user (relative to the project root where possible).
    pub path: PathBuf,
    /// 1-based; 0 when the problem is about the file as a whole.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// The field the problem is about, as a dotted path (`task[2].size`, `provider.base_url`).
    pub field: Option<String>,
    pub message: String,
    pub hint: Option<String>,
    /// The source line quoted under the location, and the underlined part of it.
    pub excerpt: Option<Excerpt>,
    /// Other places the problem involves, each quoted with a label (`first defined here`).
    pub related: Vec<Related>,
}

/// One quoted source line and the byte range of it to underline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Excerpt {
    pub text: String,
    /// 1-based number of the quoted line.
    pub line: usize,
    /// Byte range within `text`.
    pub span: Range<usize>,
}

impl Excerpt {
    /// The line of `source` holding byte `span.start`, and the part of `span` on that line; with the
    /// 1-based line and column (in characters) of `span.start`.
    fn of(source: &str, span: Range<usize>) -> (Excerpt, usize, usize) {
        let start = floor_char_boundary(source, span.start.min(source.len()));
        let end = floor_char_boundary(source, span.end.clamp(start, source.len()));
        let (line, column) = LineIndex::new(source).line_col(source, start);
        let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = source[start..]
            .find('\n')
            .map_or(source.len(), |i| start + i);
        let text = source[line_start..line_end].trim_end_matches('\r');
        let from = start - line_start;
        let to = end.min(line_start + text.len()).max(start) - line_start;
        let excerpt = Excerpt {
            text: text.to_owned(),
            line,
            span: from..to,
        };
        (excerpt, line, column)
    }

    fn snippet(
        &self,
        path: String,
        kind: AnnotationKind,
        label: Option<String>,
    ) -> Snippet<'_, annotate_snippets::Annotation<'_>> {
        Snippet::source(self.text.as_str())
            .line_start(self.line)
            .path(path)
            .annotation(kind.span(self.span.clone()).label(label))
    }
}

/// A second place a diagnostic involves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Related {
    pub path: PathBuf,
    pub label: String,
    pub excerpt: Excerpt,
}

impl Diagnostic {
    pub fn new(
        severity: Severity,
        path: impl Into<PathBuf>,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            severity,
            path: path.into(),
            line: 0,
            column: 0,
            field: None,
            message: message.into(),
            hint: None,
            excerpt: None,
            related: Vec::new(),
        }
    }

    pub fn error(path: impl Into<PathBuf>, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Severity::Error, path, message)
    }

    /// Locates the diagnostic at byte range `span` of `source` (the file's whole text).
    #[must_use]
    pub fn at(mut self, source: &str, span: Range<usize>) -> Diagnostic {
        let (excerpt, line, column) = Excerpt::of(source, span);
        self.line = line;
        self.column = column;
        self.excerpt = Some(excerpt);
        self
    }

    /// Locates the diagnostic at a known line and column (1-based), quoting that line of `source`.
    #[must_use]
    pub fn at_line_col(mut self, source: &str, line: usize, column: usize) -> Diagnostic {
        self.line = line;
        self.column = column.max(1);
        if let Some(text) = source.lines().nth(line.saturating_sub(1)) {
            let from = text
                .char_indices()
                .nth(self.column - 1)
                .map_or(text.len(), |(i, _)| i);
            let to = text[from..]
                .chars()
                .next()
                .map_or(from, |c| from + c.len_utf8());
            self.excerpt = Some(Excerpt {
                text: text.to_owned(),
                line,
                span: from..to,
            });
        }
        self
    }

    /// Adds a second place, at byte range `span` of `source` (the text of the file at `path`), quoted
    /// with `label`.
    #[must_use]
    pub fn also_at(
        mut self,
        path: impl Into<PathBuf>,
        source: &str,
        span: Range<usize>,
        label: impl Into<String>,
    ) -> Diagnostic {
        let (excerpt, _, _) = Excerpt::of(source, span);
        self.related.push(Related {
            path: path.into(),
            label: label.into(),
            excerpt,
        });
        self
    }

    #[must_use]
    pub fn field(mut self, field: impl Into<String>) -> Diagnostic {
        self.field = Some(field.into());
        self
    }

    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    #[cfg(test)]
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `plans/a.toml:4:8`, or just the path when there is no line.
    pub fn location(&self) -> String {
        if self.line == 0 {
            self.path.display().to_string()
        } else {
            format!("{}:{}:{}", self.path.display(), self.line, self.column)
        }
    }

    /// The multi-line, human form: plain, or with ANSI styles when `color` (the printer decides).
    pub fn render(&self, color: bool) -> String {
        let level = match self.severity {
            Severity::Error => Level::ERROR,
            Severity::Warning => Level::WARNING,
            Severity::Note => Level::NOTE,
        };
        let path = self.path.display().to_string();
        let field = self.field.as_ref().map(|f| format!("field `{f}`"));
        let mut group = Group::with_title(level.primary_title(self.message.as_str()));
        let mut field_shown = false;
        if let Some(excerpt) = &self.excerpt {
            group = group.element(excerpt.snippet(path, AnnotationKind::Primary, field.clone()));
            field_shown = true;
        } else if self.line > 0 {
            group = group.element(Origin::path(path).line(self.line).char_column(self.column));
        } else {
            group = group.element(Origin::path(path));
        }
        for related in &self.related {
            let path = related.path.display().to_string();
            group = group.element(related.excerpt.snippet(
                path,
                AnnotationKind::Context,
                Some(related.label.clone()),
            ));
        }
        if let Some(field) = field.filter(|_| !field_shown) {
            group = group.element(Level::NOTE.message(field));
        }
        if let Some(hint) = &self.hint {
            group = group.element(Level::HELP.with_name("hint").message(hint.as_str()));
        }
        let renderer = if color {
            Renderer::styled()
        } else {
            Renderer::plain()
        };
        let mut out = renderer.render(&[group]);
        out.push('\n');
        out
    }
}

impl fmt::Display for Diagnostic {
    /// One line: `plans/a.toml:4:8: size `2000*1024` … (field `size`)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location(), self.message)?;
        if let Some(field) = &self.field {
            write!(f, " (field `{field}`)")?;
        }
        Ok(())
    }
}

/// Line starts of one file: locates byte offsets as 1-based lines and columns (in characters), and
/// back, without rescanning the file for each.
pub struct LineIndex {
    starts: Vec<usize>,
    len: usize,
}

impl LineIndex {
    pub fn new(source: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(
            source
                .bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        LineIndex {
            starts,
            len: source.len(),
        }
    }

    /// The byte offset of 1-based `line` and byte `column` (as `serde_json` counts: 0 at a line's
    /// end), clamped to the last byte.
    pub fn offset(&self, line: usize, column: usize) -> usize {
        let line_start = self
            .starts
            .get(line.max(1) - 1)
            .copied()
            .unwrap_or(self.len);
        (line_start + column.saturating_sub(1)).min(self.len.saturating_sub(1))
    }

    /// 1-based line and column (in characters) of byte `offset`.
    pub fn line_col(&self, source: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(source.len());
        let line = self.starts.partition_point(|s| *s <= offset);
        let start = self.starts[line - 1];
        let column = source
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line, column + 1)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Sorts diagnostics by file, then position, so output is stable.
pub fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| (&a.path, a.line, a.column).cmp(&(&b.path, b.line, b.column)));
}

/// The hint for an unknown `word`: the closest of `candidates` ("did you mean"), else them all.
pub fn did_you_mean_hint(candidates: &[&str], word: &str) -> String {
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

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo (Levenshtein
/// distance, ignoring case, at most a third of the candidate's length, and at least 2).
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(&word, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= (c.chars().count() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_line_and_column_and_quotes_the_line() {
        let src = "[[task]]\nid = \"a\"\nsize = \"2000*1024\"\n";
        let start = src.find("\"2000").unwrap();
        let d = Diagnostic::error("plans/a.toml", "bad size")
            .at(src, start..start + 11)
            .field("size");
        assert_eq!((d.line, d.column), (3, 8));
        assert_eq!(d.to_string(), "plans/a.toml:3:8: bad size (field `size`)");
        let text = d.render(false);
        assert!(text.contains("3 | size = \"2000*1024\""), "{text}");
        assert!(text.contains("       ^^^^^^^^^^^ field `size`"), "{text}");
        assert_eq!(
            text,
            "error: bad size\n --> plans/a.toml:3:8\n  |\n3 | size = \"2000*1024\"\n  |        ^^^^^^^^^^^ field `size`\n"
        );
    }

    #[test]
    fn renders_the_hint_and_a_second_place() {
        let a = "[[task]]\nid = \"hero\"\n";
        let b = "\n[[task]]\nid = \"hero\"\n";
        let at = |s: &str| s.find("\"hero").unwrap()..s.find("\"hero").unwrap() + 6;
        let d = Diagnostic::error("plans/b.toml", "task id `hero` is used twice")
            .at(b, at(b))
            .field("task[0].id")
            .hint("task ids must be unique across the project")
            .also_at("plans/a.toml", a, at(a), "first defined here");
        let text = d.render(false);
        assert_eq!(
            text,
            "error: task id `hero` is used twice\n --> plans/b.toml:3:6\n  |\n3 | id = \"hero\"\n  |      ^^^^^^ field `task[0].id`\n  |\n ::: plans/a.toml:2:6\n  |\n2 | id = \"hero\"\n  |      ------ first defined here\n  |\n  = hint: task ids must be unique across the project\n",
            "{text}"
        );
        assert!(
            d.render(true).contains("\x1b["),
            "styled when the printer says so"
        );
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn a_whole_file_problem_names_the_file_and_field() {
        let d = Diagnostic::error("wanx.toml", "invalid plan globs").field("project.plans");
        let text = d.render(false);
        assert_eq!(
            text,
            "error: invalid plan globs\n--> wanx.toml\n = note: field `project.plans`\n"
        );
    }

    #[test]
    fn line_index_counts_characters_not_bytes() {
        let src = "a\né = \"x\"\n";
        let index = LineIndex::new(src);
        assert_eq!(index.line_col(src, 0), (1, 1));
        assert_eq!(index.line_col(src, src.find('=').unwrap()), (2, 3));
        assert_eq!(index.line_col(src, 999), (3, 1));
        assert_eq!(index.offset(2, 4), src.find('=').unwrap());
        assert_eq!(index.offset(9, 1), src.len() - 1);
    }

    #[test]
    fn suggests_close_names_only() {
        let names = ["negative_prompt", "prompt", "seed"];
        assert_eq!(
            did_you_mean("negative_promt", names),
            Some("negative_prompt")
        );
        assert_eq!(did_you_mean("colour", names), None);
    }
}
