//! `Diagnostic`: an error or note about the user's files, located by file, line and column, with the
//! offending line quoted and a hint. Rendered the way rustc and cargo render theirs.

use std::fmt::{self, Write as _};
use std::ops::Range;
use std::path::PathBuf;

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
    /// The source line quoted under the location, and the underlined character range in it.
    pub excerpt: Option<(String, Range<usize>)>,
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
        }
    }

    pub fn error(path: impl Into<PathBuf>, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Severity::Error, path, message)
    }

    /// Locates the diagnostic at byte range `span` of `source` (the file's whole text).
    #[must_use]
    pub fn at(mut self, source: &str, span: Range<usize>) -> Diagnostic {
        let start = floor_char_boundary(source, span.start.min(source.len()));
        let end = floor_char_boundary(source, span.end.clamp(start, source.len()));
        let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = source[start..]
            .find('\n')
            .map_or(source.len(), |i| start + i);
        self.line = source[..start].matches('\n').count() + 1;
        self.column = source[line_start..start].chars().count() + 1;
        let text = source[line_start..line_end]
            .trim_end_matches('\r')
            .to_owned();
        let col0 = self.column - 1;
        let width = source[start..end.min(line_end)].chars().count().max(1);
        self.excerpt = Some((text, col0..col0 + width));
        self
    }

    /// Locates the diagnostic at a known line and column (1-based), quoting that line of `source`.
    #[must_use]
    pub fn at_line_col(mut self, source: &str, line: usize, column: usize) -> Diagnostic {
        self.line = line;
        self.column = column.max(1);
        if let Some(text) = source.lines().nth(line.saturating_sub(1)) {
            let col0 = self.column - 1;
            self.excerpt = Some((text.to_owned(), col0..col0 + 1));
        }
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

    /// The multi-line, human form. `color` adds ANSI styles.
    pub fn render(&self, color: bool) -> String {
        let (label, style) = match self.severity {
            Severity::Error => ("error", "\x1b[1;31m"),
            Severity::Warning => ("warning", "\x1b[1;33m"),
            Severity::Note => ("note", "\x1b[1;36m"),
        };
        let (bold, blue, reset) = if color {
            ("\x1b[1m", "\x1b[1;34m", "\x1b[0m")
        } else {
            ("", "", "")
        };
        let style = if color { style } else { "" };
        let mut out = String::new();
        let _ = writeln!(out, "{style}{label}{reset}{bold}: {}{reset}", self.message);
        let field = self
            .field
            .as_ref()
            .map(|f| format!(" (field `{f}`)"))
            .unwrap_or_default();
        let _ = writeln!(out, "  {blue}-->{reset} {}{field}", self.location());
        if let Some((text, range)) = &self.excerpt {
            let num = self.line.to_string();
            let pad = " ".repeat(num.len());
            let _ = writeln!(out, "{blue}{pad} |{reset}");
            let _ = writeln!(out, "{blue}{num} |{reset} {text}");
            let marks = "^".repeat(range.len().max(1));
            let _ = writeln!(
                out,
                "{blue}{pad} |{reset} {}{style}{marks}{reset}",
                " ".repeat(range.start)
            );
        }
        if let Some(hint) = &self.hint {
            let _ = writeln!(out, "  {blue}={reset} {bold}hint{reset}: {hint}");
        }
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

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(&word.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= (c.chars().count() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
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
        assert!(text.contains("       ^^^^^^^^^^^"), "{text}");
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
