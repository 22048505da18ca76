//! Whether a project-relative path stays inside the project once symlinks are followed. The plan
//! loader rejects `..` and absolute paths by their text; this catches the rest, a directory on the
//! way that is a symlink leading out, by resolving the part of the path that already exists (the
//! rest will be created by wanx, inside whatever that part resolves to). DESIGN invariant 2.

use std::path::{Path, PathBuf};

/// Why a path is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Escape {
    /// The existing part of the path resolves to this directory, outside the project.
    Outside(PathBuf),
    /// The existing part could not be resolved (a dangling or looping symlink).
    Unresolvable(String),
}

/// Checks `rel` (project-relative, no `..`) against `canonical_root` (the root, already
/// canonicalized): the longest prefix of `canonical_root.join(rel)` that exists, symlinks followed,
/// must lie inside `canonical_root`.
pub fn check_inside(canonical_root: &Path, rel: &Path) -> Result<(), Escape> {
    let full = canonical_root.join(rel);
    let existing = full
        .ancestors()
        .find(|p| std::fs::symlink_metadata(p).is_ok())
        .unwrap_or(canonical_root);
    match std::fs::canonicalize(existing) {
        Ok(resolved) if resolved.starts_with(canonical_root) => Ok(()),
        Ok(resolved) => Err(Escape::Outside(resolved)),
        Err(e) => Err(Escape::Unresolvable(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_missing_and_symlinked_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("generated/a")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let root = root.canonicalize().unwrap();
        assert_eq!(check_inside(&root, Path::new("generated/a")), Ok(()));
        assert_eq!(
            check_inside(&root, Path::new("generated/new/deeper")),
            Ok(())
        );
        assert_eq!(check_inside(&root, Path::new("not/yet/there")), Ok(()));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&outside, root.join("generated/out")).unwrap();
            std::os::unix::fs::symlink(root.join("generated/a"), root.join("inner")).unwrap();
            std::os::unix::fs::symlink(dir.path().join("nowhere"), root.join("dangling")).unwrap();
            let real_outside = outside.canonicalize().unwrap();
            assert_eq!(
                check_inside(&root, Path::new("generated/out/x")),
                Err(Escape::Outside(real_outside))
            );
            assert_eq!(check_inside(&root, Path::new("inner/x")), Ok(()));
            assert!(matches!(
                check_inside(&root, Path::new("dangling/x")),
                Err(Escape::Unresolvable(_))
            ));
        }
    }
}
