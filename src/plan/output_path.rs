//! Output naming as written: directories and file name patterns stay inside the project, placeholders
//! are known ones, and a pattern for several images gets an `{index}`.

use std::path::Path;

use crate::term::diagnostic::did_you_mean;

/// The placeholders a file name pattern may use (the ones [`crate::tree::output_name`] renders).
pub const PLACEHOLDERS: [&str; 6] = ["id", "task_id", "index", "n", "key", "timestamp"];

/// The part of an output path known before rendering: `dir` and the directories of `pattern` up to
/// the first placeholder.
pub(super) fn static_dir(dir: &str, pattern: &str) -> String {
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
pub(super) fn check_relative(path: &str, is_dir: bool) -> Result<(), (String, String)> {
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
pub(super) fn normalize_dir(dir: &str) -> String {
    dir.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Checks `{placeholder}`s; returns whether `{index}` is present.
pub(super) fn scan_placeholders(pattern: &str) -> Result<bool, (String, String)> {
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

pub(super) fn placeholder_hint(name: Option<&str>) -> String {
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
pub(super) fn add_index(pattern: &str) -> String {
    let name_start = pattern.rfind('/').map_or(0, |i| i + 1);
    match pattern[name_start..].rfind('.') {
        Some(dot) if dot > 0 => {
            let at = name_start + dot;
            format!("{}_{{index}}{}", &pattern[..at], &pattern[at..])
        }
        _ => format!("{pattern}_{{index}}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
