//! Finding plan files: the manifest's `project.plans` globs, walked from each glob's literal base
//! directory (skipping version control, wanx's state and build directories), sorted by path.

use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSetBuilder};

use crate::project::manifest::{self, Manifest};
use crate::term::diagnostic::Diagnostic;

/// Directories never searched for plan files.
pub(crate) const SKIP_DIRS: [&str; 4] = [".git", ".wanx", "target", "node_modules"];

pub(crate) fn discover(manifest: &Manifest, diags: &mut Vec<Diagnostic>) -> Vec<PathBuf> {
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
pub(super) fn escaping_glob(manifest: &Manifest, pattern: &str) -> Option<Diagnostic> {
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

pub(super) fn walk(root: &Path, rel: &Path, set: &globset::GlobSet, found: &mut Vec<PathBuf>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_bases_limit_the_walk() {
        assert_eq!(glob_base("plans/**/*.toml"), PathBuf::from("plans"));
        assert_eq!(glob_base("**/*.toml"), PathBuf::new());
        assert_eq!(
            glob_base("plans/main.toml"),
            PathBuf::from("plans/main.toml")
        );
    }
}
