//! Task ids: their spelling (they go into file names) and their uniqueness across every plan file.

use std::collections::HashMap;
use std::ops::Range;

use crate::plan::raw::RawTask;
use crate::plan::sink::Sink;
use crate::term::diagnostic::LineIndex;

/// Registers a task's id, or reports it (malformed, or already used) and marks the task broken.
pub(super) fn check_unique_id(
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
        sinks[file].error_with_related(
            (file, span),
            format!("task id `{value}` is used twice"),
            Some(task.paths.path("id")),
            Some(hint),
            (*first_file, first_span.clone(), "first defined here"),
        );
        task.broken = true;
        return;
    }
    ids.insert(value.clone(), (file, span));
}

/// `[A-Za-z0-9._-]+`, not starting with `.`: ids go into file names.
pub(super) fn check_id(id: &str) -> Result<(), (String, String)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_file_name_safe() {
        assert!(check_id("hero-1.a_b").is_ok());
        assert_eq!(check_id("").unwrap_err().0, "a task id cannot be empty");
        assert_eq!(
            check_id(".hidden").unwrap_err().0,
            "task id `.hidden` starts with `.`"
        );
        assert_eq!(check_id("a/b").unwrap_err().0, "task id `a/b` contains `/`");
        assert_eq!(
            check_id("héro").unwrap_err().0,
            "task id `héro` contains `é`"
        );
    }
}
