//! Which file each task will write, checked across the whole project before anything is sent:
//! two tasks may not claim one file (compared normalized and case-folded, since `A.png` and `a.png`
//! are one file on macOS and Windows), no output may land on a file the project is made of
//! (`wanx.toml`, `wanx.lock`, a plan file, a task's input, anything under `.wanx/` or `.git/`), and
//! every rendered name must be one every file system accepts (no control characters, at most 255
//! bytes per name, none of Windows' reserved names or trailing dots). Pure over the loaded tasks;
//! `{key}` and `{timestamp}` are rendered with stand-ins of their real lengths.

use std::collections::HashMap;
use std::path::Path;

use crate::compile::cache_key::CacheKey;
use crate::plan::task::{InputRef, Task};
use crate::term::diagnostic::Diagnostic;

/// The longest name (one path component) common file systems accept, in bytes.
pub const NAME_MAX: usize = 255;

/// A plan file, for locating diagnostics and protecting it.
pub struct PlanFile<'a> {
    pub path: &'a Path,
    pub source: &'a str,
}

/// Every problem with the outputs of `tasks`, located at the task (its `id`).
pub fn check(tasks: &[Task], plans: &[PlanFile<'_>]) -> Vec<Diagnostic> {
    let mut errors = Vec::new();
    let mut protected: HashMap<String, String> = HashMap::new();
    for name in [
        crate::project::manifest::FILE_NAME,
        crate::project::lock::FILE_NAME,
    ] {
        protected.insert(fold(name), format!("`{name}`"));
    }
    for plan in plans {
        let shown = slashed(plan.path);
        protected.insert(fold(&shown), format!("the plan file `{shown}`"));
    }
    for task in tasks {
        for input in task.inputs() {
            if let InputRef::File(path) = input {
                let shown = slashed(path);
                protected
                    .entry(fold(&shown))
                    .or_insert_with(|| format!("`{shown}`, an input of task `{}`", task.id));
            }
        }
    }
    let mut claims: HashMap<String, (usize, String)> = HashMap::new();
    for (index, task) in tasks.iter().enumerate() {
        let at = |message: String, hint: &str| locate(task, plans, message, hint);
        for path in rendered(task) {
            if let Some((message, hint)) = bad_name(&path) {
                errors.push(at(message, hint));
                break;
            }
            let folded = fold(&path);
            let first = folded.split('/').next().unwrap_or_default();
            if first == ".wanx" || first == ".git" {
                errors.push(at(
                    format!("task `{}` would write `{path}` inside `{first}/`", task.id),
                    "`.wanx/` is wanx's own state and `.git/` is git's: choose an `out_dir` or `filename` outside them",
                ));
                break;
            }
            if let Some(what) = protected.get(&folded) {
                errors.push(at(
                    format!("task `{}` would write its image over {what}", task.id),
                    "an output may not replace a file the project is made of: choose another `out_dir` or `filename`",
                ));
                break;
            }
            match claims.get(&folded) {
                Some((other, other_path)) if *other != index => {
                    let other = &tasks[*other];
                    let case = if *other_path == path {
                        String::new()
                    } else {
                        format!(
                            " (`{other_path}` and `{path}` differ only in how they are written; they are one file on macOS and Windows)"
                        )
                    };
                    errors.push(at(
                        format!(
                            "tasks `{}` and `{}` both write `{path}`{case}",
                            other.id, task.id
                        ),
                        &format!(
                            "`{}` is declared at {}:{}:{}; give each task its own `filename` or `out_dir` (e.g. `{{id}}.png`)",
                            other.id,
                            other.origin.file.display(),
                            other.origin.line,
                            other.origin.column
                        ),
                    ));
                    break;
                }
                Some(_) => {}
                None => {
                    claims.insert(folded, (index, path));
                }
            }
        }
    }
    errors
}

/// The paths a task writes, normalized (`./` and doubled `/` dropped), with `{key}` standing in as
/// a digest of the task id (two tasks' keys differ unless their requests are equal) and
/// `{timestamp}` as the epoch (two `{timestamp}` names alike may meet in one second).
fn rendered(task: &Task) -> Vec<String> {
    let key = if task.output.filename.contains("{key}") {
        CacheKey::from_bytes(*blake3::hash(task.id.as_bytes()).as_bytes())
    } else {
        CacheKey::from_bytes([0; 32])
    };
    crate::tree::output_name::render(&task.output, &task.id, task.written(), &key, 0)
        .into_iter()
        .map(|p| normalize(&p))
        .collect()
}

/// `./a//b/./c.png` → `a/b/c.png`.
pub fn normalize(path: &str) -> String {
    // Most paths are normal already: no empty or `.` component.
    if !path.split('/').any(|p| p.is_empty() || p == ".") {
        return path.to_owned();
    }
    path.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// The form two paths naming one file share on case-insensitive file systems.
pub fn fold(path: &str) -> String {
    let normal = normalize(path);
    if normal
        .bytes()
        .any(|b| !b.is_ascii() || b.is_ascii_uppercase())
    {
        normal.to_lowercase()
    } else {
        normal
    }
}

fn slashed(path: &Path) -> String {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Windows' reserved device names: with any extension, still the device.
const RESERVED: [&str; 22] = [
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// Why a rendered path cannot be written everywhere: `(message, hint)`.
pub fn bad_name(path: &str) -> Option<(String, &'static str)> {
    // Most names are plain: the path is shown escaped only in a message.
    let shown = || path.escape_debug().to_string();
    for name in path.split('/') {
        // The usual name (letters, digits, `_`, `-`, `.`, short enough, not ending with a dot, a
        // stem too long to be a reserved name) needs no closer look.
        let plain = name.len() <= NAME_MAX
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            && !name.ends_with('.')
            && name.split('.').next().is_some_and(|stem| stem.len() > 4);
        if plain {
            continue;
        }
        if let Some(c) = name.chars().find(|c| c.is_control()) {
            return Some((
                format!(
                    "the output path `{}` contains a control character ({})",
                    shown(),
                    c.escape_unicode()
                ),
                "file names cannot hold NUL or control characters: fix `filename` or the task `id`",
            ));
        }
        if name.len() > NAME_MAX {
            return Some((
                format!(
                    "the output name `{}…` is {} bytes long, more than the {NAME_MAX} bytes a file system takes",
                    name.chars().take(32).collect::<String>(),
                    name.len()
                ),
                "shorten the task `id` or the `filename` pattern",
            ));
        }
        if let Some(c) = name
            .chars()
            .find(|c| matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*'))
        {
            return Some((
                format!(
                    "the output path `{}` contains `{c}`, which Windows does not allow in a file name",
                    shown()
                ),
                "use letters, digits, `.`, `_` and `-` in output names",
            ));
        }
        let stem = name.split('.').next().unwrap_or_default().trim_end();
        if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(stem)) {
            return Some((
                format!(
                    "the output path `{}` uses `{stem}`, a reserved name on Windows",
                    shown()
                ),
                "Windows reserves CON, PRN, AUX, NUL, COM1–9 and LPT1–9 (with any extension): choose another name",
            ));
        }
        if name.ends_with(['.', ' ']) {
            return Some((
                format!("the output name `{name}` ends with a dot or a space, which Windows drops"),
                "end the `filename` pattern with an extension such as `.png`",
            ));
        }
    }
    None
}

fn locate(task: &Task, plans: &[PlanFile<'_>], message: String, hint: &str) -> Diagnostic {
    let d = Diagnostic::error(&task.origin.file, message)
        .field("filename")
        .hint(hint);
    if let Some(plan) = plans.iter().find(|p| p.path == task.origin.file) {
        d.at_line_col(plan.source, task.origin.line, task.origin.column)
    } else {
        let mut d = d;
        d.line = task.origin.line;
        d.column = task.origin.column;
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_file_system_takes() {
        assert_eq!(bad_name("generated/hero_1.png"), None);
        assert_eq!(bad_name("a/20251019-153000.png"), None);
        assert!(bad_name("a\0.png").is_some());
        assert!(bad_name("a\u{7}b.png").is_some());
        assert!(bad_name(&format!("{}.png", "x".repeat(300))).is_some());
        assert!(bad_name(&format!("{}.png", "x".repeat(251))).is_none());
        assert!(bad_name("con.png").is_some());
        assert!(bad_name("out/LPT1").is_some());
        assert!(bad_name("console.png").is_none());
        assert!(bad_name("a.").is_some());
        assert!(bad_name("a:b.png").is_some());
    }

    #[test]
    fn paths_fold_to_one_form() {
        assert_eq!(fold("./A.png"), "a.png");
        assert_eq!(fold("d//A.png"), fold("d/a.png"));
        assert_eq!(normalize("./a//b/./c.png"), "a/b/c.png");
    }
}
