//! `.wanx/`, wanx's own state directory, created so that it ignores itself: a `.gitignore` holding
//! `*` (git never offers to commit the cache, as with cargo's `target/`) and a `CACHEDIR.TAG` (the
//! Cache Directory Tagging Specification, so backup tools skip it). Both are written once, when the
//! directory is created or found without them; a user's own versions are left alone.

use std::io;
use std::path::Path;

/// The first line of a `CACHEDIR.TAG`, fixed by the specification (bford.info/cachedir).
pub const CACHEDIR_SIGNATURE: &str = "Signature: 8a477f597d28d172789f06886806bc55";

/// Creates `state_dir` (and its parents) if needed, with its `.gitignore` and `CACHEDIR.TAG`.
pub fn create(state_dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let files = [
        (".gitignore", "*\n".to_owned()),
        (
            "CACHEDIR.TAG",
            format!(
                "{CACHEDIR_SIGNATURE}\n# This file is a cache directory tag created by wanx.\n# For information about cache directory tags see https://bford.info/cachedir/\n"
            ),
        ),
    ];
    for (name, text) in files {
        let path = state_dir.join(name);
        if !path.exists() {
            // `create_new`: two wanx starting at once write it once, neither truncates the other's.
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => io::Write::write_all(&mut file, text.as_bytes())?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_both_files_once_and_keeps_a_users_own() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(".wanx");
        create(&state).unwrap();
        assert_eq!(
            std::fs::read_to_string(state.join(".gitignore")).unwrap(),
            "*\n"
        );
        let tag = std::fs::read_to_string(state.join("CACHEDIR.TAG")).unwrap();
        assert!(tag.starts_with(CACHEDIR_SIGNATURE));
        std::fs::write(state.join(".gitignore"), "mine\n").unwrap();
        create(&state).unwrap();
        assert_eq!(
            std::fs::read_to_string(state.join(".gitignore")).unwrap(),
            "mine\n"
        );
    }
}
