//! `WatchSet`: what `wanx watch` watches and which file events count as a change, computed from the
//! manifest and the last good plan. Pure apart from reading the directory tree and `wanx.lock`, so the
//! loop in [`crate::watch`] stays about effects.
//!
//! A change is an event on `wanx.toml`, on a path matching the plan globs (the same globs and the same
//! skipped directories as [`crate::plan::load`]), on a local input file a task reads, or on a directory
//! that held one of those (a renamed or deleted folder of plans). Everything wanx writes itself is
//! ignored before that test: `.wanx/`, `.git/`, `wanx.lock`, every output directory and every output
//! path in the lock. The allowlist alone already keeps images out (they match no plan glob); the
//! ignore list also covers an output that a task names as a local input, which would otherwise loop.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::plan::task::{InputRef, Task};
use crate::plan::{Loaded, SKIP_DIRS, glob_base};
use crate::project::lock::LockFile;
use crate::project::manifest::{self, Manifest};

/// Whether a directory is watched with its subdirectories.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Depth {
    Flat,
    Recursive,
}

/// What an event on a path means for the watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Relevance {
    /// A file that decides the build changed (the path is project-relative).
    Changed(PathBuf),
    /// A new directory where plan files may appear: watch it; a change only if it holds plans.
    Directory(PathBuf),
}

#[derive(Clone, Debug)]
pub struct WatchSet {
    root: PathBuf,
    /// The manifest's plan globs, and the set compiled from them.
    patterns: Vec<String>,
    plans: GlobSet,
    /// The plan globs' fixed leading directories (`plans` for `plans/**/*.toml`; empty for `**/*`).
    bases: Vec<PathBuf>,
    /// Project-relative local inputs of the selected tasks.
    inputs: HashSet<PathBuf>,
    /// Project-relative plan files of the last good load.
    plan_files: Vec<PathBuf>,
    /// Project-relative directories wanx writes into.
    ignored_dirs: Vec<PathBuf>,
    /// Project-relative files wanx writes (`wanx.lock`, the outputs recorded in it); shared by
    /// the sets of successive builds, which rarely add to it.
    ignored_files: Arc<HashSet<PathBuf>>,
}

impl WatchSet {
    /// The watch for `manifest` and, when the plans loaded, their files and inputs.
    pub fn new(manifest: &Manifest, loaded: Option<&Loaded>) -> WatchSet {
        let mut ignored_files: HashSet<PathBuf> = HashSet::from([PathBuf::from("wanx.lock")]);
        if let Ok(lock) = LockFile::read(&manifest.lock_path()) {
            ignored_files.extend(
                lock.tasks()
                    .values()
                    .flat_map(|e| &e.outputs)
                    .map(|o| normalize(&o.path)),
            );
        }
        WatchSet::with_ignored_files(manifest, loaded, Arc::new(ignored_files), None)
    }

    /// [`WatchSet::new`] for a newly loaded project, keeping this set's outputs from `wanx.lock`
    /// instead of reading it again: a rebuild starts sooner (a large lock takes milliseconds to
    /// read), and the build's own outputs are added once it is done ([`WatchSet::with_outputs`]).
    #[must_use]
    pub fn renew(&self, manifest: &Manifest, loaded: &Loaded) -> WatchSet {
        let ignored = Arc::clone(&self.ignored_files);
        WatchSet::with_ignored_files(manifest, Some(loaded), ignored, Some(self))
    }

    /// This set, also ignoring `outputs` (project-relative files a build just wrote): after a
    /// build that ended normally, its report names every output it wrote, so `wanx.lock` need not
    /// be read again.
    #[must_use]
    pub fn with_outputs<'o>(mut self, outputs: impl IntoIterator<Item = &'o str>) -> WatchSet {
        let new: Vec<PathBuf> = outputs
            .into_iter()
            .map(normalize)
            .filter(|o| !self.ignored_files.contains(o))
            .collect();
        if !new.is_empty() {
            Arc::make_mut(&mut self.ignored_files).extend(new);
        }
        self
    }

    /// The set for `manifest` and `loaded`, ignoring `ignored_files`; the plan globs are compiled
    /// again only when they differ from those of the `earlier` set.
    fn with_ignored_files(
        manifest: &Manifest,
        loaded: Option<&Loaded>,
        ignored_files: Arc<HashSet<PathBuf>>,
        earlier: Option<&WatchSet>,
    ) -> WatchSet {
        let (plans, bases) = match earlier {
            Some(e) if e.patterns == manifest.project.plans => (e.plans.clone(), e.bases.clone()),
            _ => plan_globs(&manifest.project.plans),
        };
        let tasks: &[Task] = loaded.map_or(&[], |l| &l.tasks);
        // Many tasks share a folder and a plan file, mostly in a row: each is made a path once.
        let mut dirs: HashSet<&str> = HashSet::from([manifest.project.out_dir.as_str()]);
        let mut files: Vec<&Path> = Vec::new();
        for t in tasks {
            if files.last() != Some(&t.origin.file.as_path()) {
                files.push(&t.origin.file);
            }
            dirs.insert(&t.output.dir);
        }
        let mut ignored_dirs: Vec<PathBuf> = [".wanx", ".git"].iter().map(PathBuf::from).collect();
        ignored_dirs.extend(
            dirs.into_iter()
                .map(normalize)
                .filter(|d| !d.as_os_str().is_empty()),
        );
        ignored_dirs.sort();
        ignored_dirs.dedup();
        files.sort();
        files.dedup();
        let plan_files: Vec<PathBuf> = files.into_iter().map(Path::to_path_buf).collect();
        WatchSet {
            root: manifest.root.clone(),
            patterns: manifest.project.plans.clone(),
            plans,
            bases,
            inputs: tasks.iter().flat_map(local_inputs).collect(),
            plan_files,
            ignored_dirs,
            ignored_files,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directories to watch (absolute), each once, none inside a recursive one.
    pub fn dirs(&self) -> Vec<(PathBuf, Depth)> {
        let mut out: Vec<(PathBuf, Depth)> = vec![(PathBuf::new(), Depth::Flat)];
        for base in &self.bases {
            if base.as_os_str().is_empty() {
                // `**/*.toml`: every top-level directory wanx does not own, and new ones as they come.
                out.extend(
                    self.top_level_dirs()
                        .into_iter()
                        .map(|d| (d, Depth::Recursive)),
                );
            } else {
                let full = self.root.join(base);
                if full.is_dir() {
                    out.push((base.clone(), Depth::Recursive));
                } else {
                    out.push((self.existing_ancestor(base), Depth::Flat));
                }
            }
        }
        for input in &self.inputs {
            out.push((self.existing_ancestor(input), Depth::Flat));
        }
        out.retain(|(dir, _)| !self.is_ignored(dir));
        out.sort();
        out.dedup();
        let recursive: Vec<PathBuf> = out
            .iter()
            .filter(|(_, d)| *d == Depth::Recursive)
            .map(|(p, _)| p.clone())
            .collect();
        out.retain(|(dir, depth)| {
            !recursive
                .iter()
                .any(|r| dir.starts_with(r) && (dir != r || *depth == Depth::Flat))
        });
        out.into_iter()
            .map(|(dir, depth)| {
                let full = if dir.as_os_str().is_empty() {
                    self.root.clone()
                } else {
                    self.root.join(dir)
                };
                (full, depth)
            })
            .collect()
    }

    /// What an event on `path` (absolute) means, if anything.
    pub fn classify(&self, path: &Path) -> Option<Relevance> {
        let rel = path.strip_prefix(&self.root).ok()?;
        if rel.as_os_str().is_empty() || self.is_ignored(rel) {
            return None;
        }
        if rel == Path::new(manifest::FILE_NAME)
            || self.inputs.contains(rel)
            || (self.plans.is_match(rel) && !in_skipped_dir(rel))
        {
            return Some(Relevance::Changed(rel.to_path_buf()));
        }
        if self
            .plan_files
            .iter()
            .chain(&self.inputs)
            .any(|f| f.starts_with(rel))
        {
            // A folder that held plans or inputs was renamed or removed.
            return Some(Relevance::Changed(rel.to_path_buf()));
        }
        if path.is_dir() && !in_skipped_dir(rel) && self.may_hold_plans(rel) {
            return Some(Relevance::Directory(rel.to_path_buf()));
        }
        None
    }

    /// The plan files under the directory `rel` (project-relative) now: a new folder's files may
    /// have been written before its watch was added.
    pub fn plans_in(&self, rel: &Path) -> Vec<PathBuf> {
        fn walk(root: &Path, rel: &Path, set: &GlobSet, depth: usize, found: &mut Vec<PathBuf>) {
            let Ok(entries) = std::fs::read_dir(root.join(rel)) else {
                return;
            };
            for e in entries.filter_map(Result::ok) {
                let path = rel.join(e.file_name());
                match e.file_type() {
                    Ok(t) if t.is_dir() && depth < 32 => walk(root, &path, set, depth + 1, found),
                    Ok(_) if set.is_match(&path) => found.push(path),
                    _ => {}
                }
            }
        }
        let mut found = Vec::new();
        walk(&self.root, rel, &self.plans, 0, &mut found);
        found.sort();
        found
    }

    /// Plan files, `wanx.toml` and inputs, for the opening line.
    pub fn counts(&self) -> (usize, usize) {
        (self.plan_files.len(), self.inputs.len())
    }

    fn may_hold_plans(&self, rel: &Path) -> bool {
        self.bases
            .iter()
            .any(|b| rel.starts_with(b) || b.starts_with(rel))
    }

    fn is_ignored(&self, rel: &Path) -> bool {
        self.ignored_files.contains(rel) || self.ignored_dirs.iter().any(|d| rel.starts_with(d))
    }

    fn top_level_dirs(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| !name.starts_with('.') && !SKIP_DIRS.contains(&name.as_str()))
            .map(PathBuf::from)
            .collect();
        dirs.sort();
        dirs
    }

    /// `rel` itself if it is a directory, else its nearest existing ancestor inside the root.
    fn existing_ancestor(&self, rel: &Path) -> PathBuf {
        rel.ancestors()
            .find(|a| self.root.join(a).is_dir())
            .map_or_else(PathBuf::new, Path::to_path_buf)
    }
}

/// The plan globs compiled, and their fixed leading directories.
fn plan_globs(patterns: &[String]) -> (GlobSet, Vec<PathBuf>) {
    let mut set = GlobSetBuilder::new();
    let mut bases = Vec::new();
    for pattern in patterns {
        // An invalid glob is reported by the plan loader; it matches nothing here.
        if let Ok(glob) = GlobBuilder::new(pattern).literal_separator(true).build() {
            set.add(glob);
            bases.push(glob_base(pattern));
        }
    }
    bases.sort();
    bases.dedup();
    (set.build().unwrap_or_else(|_| GlobSet::empty()), bases)
}

/// A `/`-separated project-relative path as components (`./a//b/` → `a/b`).
fn normalize(path: &str) -> PathBuf {
    Path::new(path)
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

/// True when a directory on the way to `rel` is one the plan loader never searches.
fn in_skipped_dir(rel: &Path) -> bool {
    let mut parts: Vec<_> = rel.components().collect();
    parts.pop();
    parts.iter().any(|c| {
        c.as_os_str()
            .to_str()
            .is_some_and(|n| n.starts_with('.') || SKIP_DIRS.contains(&n))
    })
}

/// The local files a task reads.
fn local_inputs(task: &Task) -> Vec<PathBuf> {
    let mut refs: Vec<&InputRef> = Vec::new();
    if let Some(r) = &task.reference {
        refs.push(&r.image);
    }
    if let Some(e) = &task.edit {
        refs.push(&e.input);
        refs.extend(e.style_reference.iter().chain(&e.mask));
    }
    refs.into_iter()
        .filter_map(|r| match r {
            InputRef::File(path) => Some(path.components().collect()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::manifest::Manifest;

    fn project(files: &[(&str, &str)]) -> (tempfile::TempDir, WatchSet) {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, text).unwrap();
        }
        let (manifest, registry) = Manifest::load(&dir.path().join("wanx.toml")).unwrap();
        let loaded = crate::plan::load(&manifest, &registry).ok();
        let set = WatchSet::new(&manifest, loaded.as_ref());
        (dir, set)
    }

    const PLAN: &str =
        "[[task]]\nid = \"a\"\nmodel = \"wanx-v1\"\nprompt = \"x\"\nref_img = \"../refs/r.png\"\n";

    #[test]
    fn plans_manifest_and_inputs_count_and_wanx_own_writes_do_not() {
        let (dir, set) = project(&[
            ("wanx.toml", ""),
            ("plans/a.toml", PLAN),
            ("refs/r.png", "png"),
        ]);
        let root = dir.path();
        let changed = |p: &str| Some(Relevance::Changed(PathBuf::from(p)));
        assert_eq!(set.classify(&root.join("wanx.toml")), changed("wanx.toml"));
        assert_eq!(
            set.classify(&root.join("plans/a.toml")),
            changed("plans/a.toml")
        );
        assert_eq!(
            set.classify(&root.join("plans/deep/new.json")),
            changed("plans/deep/new.json")
        );
        assert_eq!(
            set.classify(&root.join("refs/r.png")),
            changed("refs/r.png")
        );
        assert_eq!(set.classify(&root.join("plans")), changed("plans"));
        for own in [
            "wanx.lock",
            ".wanx/wanx.db-wal",
            ".wanx/blobs/ab/cdef",
            "generated/a.png",
            ".git/index",
            "plans/a.toml.swp",
            "refs/other.png",
            "plans/.hidden/x.toml",
        ] {
            assert_eq!(set.classify(&root.join(own)), None, "{own}");
        }
    }

    #[test]
    fn a_renewed_set_keeps_the_outputs_it_knew_and_takes_the_new_plans() {
        let (dir, mut set) = project(&[
            ("wanx.toml", ""),
            ("plans/a.toml", PLAN),
            ("refs/r.png", "png"),
        ]);
        let root = dir.path();
        // As if the lock had recorded an output there (no lock is read again).
        Arc::make_mut(&mut set.ignored_files).insert(PathBuf::from("refs/r.png"));
        std::fs::write(
            root.join("plans/b.toml"),
            PLAN.replace("\"a\"", "\"b\"").replace("r.png", "s.png"),
        )
        .unwrap();
        std::fs::write(root.join("refs/s.png"), "png").unwrap();
        let (manifest, registry) = Manifest::load(&root.join("wanx.toml")).unwrap();
        let loaded = crate::plan::load(&manifest, &registry).unwrap();
        let renewed = set.renew(&manifest, &loaded);
        assert_eq!(renewed.classify(&root.join("refs/r.png")), None);
        assert_eq!(
            renewed.classify(&root.join("refs/s.png")),
            Some(Relevance::Changed(PathBuf::from("refs/s.png")))
        );
        let fresh = WatchSet::new(&manifest, Some(&loaded));
        assert_eq!(
            fresh.classify(&root.join("refs/r.png")),
            Some(Relevance::Changed(PathBuf::from("refs/r.png")))
        );
        // A build's report names what it wrote: those files are ignored from then on.
        let after = renewed.with_outputs(["./refs/s.png"]);
        assert_eq!(after.classify(&root.join("refs/s.png")), None);
        assert_eq!(after.classify(&root.join("refs/r.png")), None);
    }

    #[test]
    fn watches_the_glob_bases_and_input_folders_not_the_outputs() {
        let (dir, set) = project(&[
            ("wanx.toml", ""),
            ("plans/a.toml", PLAN),
            ("refs/r.png", "png"),
            ("generated/x.png", "png"),
        ]);
        let root = dir.path();
        assert_eq!(
            set.dirs(),
            vec![
                (root.to_path_buf(), Depth::Flat),
                (root.join("plans"), Depth::Recursive),
                (root.join("refs"), Depth::Flat),
            ]
        );
    }

    #[test]
    fn a_missing_plans_folder_is_awaited_from_its_parent() {
        let (dir, set) = project(&[("wanx.toml", "")]);
        let root = dir.path();
        assert_eq!(set.dirs(), vec![(root.to_path_buf(), Depth::Flat)]);
        std::fs::create_dir(root.join("plans")).unwrap();
        assert_eq!(
            set.classify(&root.join("plans")),
            Some(Relevance::Directory(PathBuf::from("plans")))
        );
        assert!(set.plans_in(Path::new("plans")).is_empty());
        std::fs::write(root.join("plans/b.toml"), "").unwrap();
        assert_eq!(
            set.plans_in(Path::new("plans")),
            [PathBuf::from("plans/b.toml")]
        );
    }

    #[test]
    fn a_root_glob_watches_top_level_folders_except_wanx_own() {
        let (dir, set) = project(&[
            (
                "wanx.toml",
                "[project]\nplans = [\"**/*.json\"]\nout_dir = \"out\"\n",
            ),
            ("art/a.json", "{}"),
            ("out/x.png", ""),
            ("target/debug/x", ""),
        ]);
        let root = dir.path();
        assert_eq!(
            set.dirs(),
            vec![
                (root.to_path_buf(), Depth::Flat),
                (root.join("art"), Depth::Recursive),
            ]
        );
        assert_eq!(
            set.classify(&root.join("art/new/b.json")),
            Some(Relevance::Changed(PathBuf::from("art/new/b.json")))
        );
        assert_eq!(set.classify(&root.join("out/a.json")), None);
        assert_eq!(set.classify(&root.join("target/a.json")), None);
    }
}
