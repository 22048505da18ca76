//! `wanx verify`: rehashes every output recorded in `wanx.lock` and every blob in `.wanx/blobs`,
//! ignoring the stat cache, and reports what does not match. It only reads unless `--repair`:
//!
//! - a corrupt blob (its bytes do not hash to its name) is healed from an intact output holding the
//!   same image, or else moved to `.wanx/quarantine/` (never deleted: it may be all that is left);
//! - a missing or modified output is restored from an intact blob;
//! - a blob that hashes right but is not a whole image (cached before wanx checked) is quarantined;
//! - a stray file in the blob store (a name that is not a digest) is quarantined.
//!
//! Exit 0 when everything is intact (or was repaired), 1 when something is wrong and was not (or
//! could not be) repaired. It holds the project lock, so it never races a build.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::project::lock::LockFile;
use crate::project::manifest::Manifest;
use crate::project::one_writer::ProjectLock;
use crate::store::blob_store::{BlobStore, hash_file, is_hash};
use crate::term::printer::Printer;

/// What `wanx verify` found in the blob store.
#[derive(Debug, Default)]
struct Blobs {
    /// Blobs whose bytes hash to their name and are whole images.
    good: HashSet<String>,
    /// Name → what the bytes hash to.
    corrupt: BTreeMap<String, String>,
    /// Blobs that hash right but are truncated images.
    incomplete: Vec<String>,
    /// Files whose path is not `ab/cdef…`, relative to the blob directory.
    stray: Vec<PathBuf>,
    /// Blobs read and hashed.
    checked: usize,
}

/// The state of one output recorded in the lock.
#[derive(Debug, PartialEq, Eq)]
enum OutputState {
    Intact,
    Missing,
    /// Its bytes hash to this instead.
    Modified(String),
    /// It resolves outside the project (a symlinked directory): neither read nor written.
    Outside,
}

/// One line of what `wanx verify` found or did, as it printed it; `--json` lists them all.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The line's verb in lower case: `corrupt`, `incomplete`, `stray`, `outside`, `mismatch`,
    /// `leftover` (problems), `repaired`, `quarantined`, `restored`, `kept`, `unrepaired`.
    pub kind: String,
    /// Whether this line is good news (a repair) rather than a problem.
    pub ok: bool,
    /// The task whose output it is about, if any.
    pub task: Option<String>,
    /// The project-relative output, or the blob's hash, it is about.
    pub subject: Option<String>,
    pub message: String,
}

/// What `wanx verify` checked and found: printed as one object with `--json`.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub outputs_checked: usize,
    pub blobs_checked: usize,
    /// Problems repaired (`--repair`).
    pub repaired: usize,
    /// Problems left: the command fails when there is one.
    pub unresolved: usize,
    pub findings: Vec<Finding>,
}

impl Report {
    /// The error the command ends with, when a problem is left.
    pub fn error(&self, repair: bool) -> Option<Error> {
        (self.unresolved > 0).then_some(Error::Unverified {
            problems: self.unresolved,
            repair,
        })
    }

    /// `--json`'s object: the report, `ok`, and the error (as every failing command gives it).
    pub fn to_json(&self, repair: bool) -> serde_json::Value {
        let mut value = serde_json::json!({
            "ok": self.unresolved == 0,
            "repair": repair,
            "outputs_checked": self.outputs_checked,
            "blobs_checked": self.blobs_checked,
            "repaired": self.repaired,
            "unresolved": self.unresolved,
            "findings": self.findings,
        });
        if let Some(e) = self.error(repair) {
            value["error"] = crate::term::json_error::to_json(&e)["error"].clone();
        }
        value
    }
}

/// Runs `wanx verify` in the project found from `dir`; with `repair` and `force`, an output edited by hand is restored too, after being
/// moved to `.wanx/replaced/` (without `force` it is kept and reported: wanx never destroys bytes
/// it did not write). Problems left are in the report, not an error: the caller decides how to
/// show them ([`Report::error`]).
pub fn verify_with(
    dir: Option<&Path>,
    repair: bool,
    force: bool,
    wait: bool,
    printer: &Printer,
) -> Result<Report> {
    let cwd = match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::current_dir().map_err(|e| Error::io("could not read", ".", e))?,
    };
    let (manifest, _) = Manifest::load(&Manifest::find(&cwd)?)?;
    let root = &manifest.root;
    let _lock = ProjectLock::acquire(&manifest.state_dir(), wait, printer)?;
    let lock = LockFile::read(&manifest.lock_path())?;
    let store = BlobStore::new(manifest.state_dir().join("blobs"));
    let canonical_root = root
        .canonicalize()
        .map_err(|e| Error::io("could not resolve", root, e))?;

    let mut blobs = scan_blobs(&store)?;
    let outputs: Vec<Output<'_>> = lock
        .tasks()
        .iter()
        .flat_map(|(id, entry)| entry.outputs.iter().map(move |o| (id, o)))
        .map(|(id, output)| Output {
            id,
            path: &output.path,
            hash: &output.blake3,
            state: output_state(&canonical_root, &output.path, &output.blake3),
        })
        .collect();
    let mut v = Verifier {
        printer,
        manifest: &manifest,
        store: &store,
        repair,
        force,
        report: Report {
            outputs_checked: outputs.len(),
            blobs_checked: blobs.checked,
            ..Report::default()
        },
    };
    // Blobs first: a healed blob can then restore its outputs.
    for (hash, actual) in &std::mem::take(&mut blobs.corrupt) {
        v.corrupt_blob(hash, actual, &outputs, &mut blobs.good)?;
    }
    for hash in &blobs.incomplete {
        v.incomplete_blob(hash)?;
    }
    for rel in &blobs.stray {
        v.stray_file(rel)?;
    }
    let incomplete: HashSet<&str> = blobs.incomplete.iter().map(String::as_str).collect();
    for output in &outputs {
        v.output(output, &blobs.good, &incomplete)?;
    }
    for path in
        crate::tree::stale_outputs::leftovers(root, &lock, &store, &[&manifest.project.out_dir])
    {
        v.problem(
            "Leftover",
            (None, Some(path.as_str())),
            &format!(
                "`{path}`: wanx wrote it, but no task in `wanx.lock` claims it; `wanx clean` removes it"
            ),
        );
    }
    let report = v.report;
    say_verified(printer, &report);
    Ok(report)
}

/// One output recorded in the lock, and what `wanx verify` found it to be.
struct Output<'a> {
    /// Its task.
    id: &'a str,
    /// Project-relative.
    path: &'a str,
    /// What the lock says its bytes hash to.
    hash: &'a str,
    state: OutputState,
}

/// `wanx verify` at work: what it checks with, and the report it fills as it goes.
struct Verifier<'a> {
    printer: &'a Printer,
    manifest: &'a Manifest,
    store: &'a BlobStore,
    repair: bool,
    force: bool,
    report: Report,
}

impl Verifier<'_> {
    /// Prints a line and lists it in the report's findings; `ok` lines are good news (a repair).
    fn note(&mut self, ok: bool, verb: &str, about: (Option<&str>, Option<&str>), text: &str) {
        if ok {
            self.printer.status(verb, text);
        } else {
            self.printer.fail(verb, text);
        }
        self.report.findings.push(Finding {
            kind: verb.to_lowercase(),
            ok,
            task: about.0.map(str::to_owned),
            subject: about.1.map(str::to_owned),
            message: text.to_owned(),
        });
    }

    /// Notes a problem that stays (unresolved).
    fn problem(&mut self, verb: &str, about: (Option<&str>, Option<&str>), text: &str) {
        self.note(false, verb, about, text);
        self.report.unresolved += 1;
    }

    /// Notes a problem wanx can repair: returns whether to (`--repair`); if not, it stays.
    fn found(&mut self, verb: &str, about: (Option<&str>, Option<&str>), text: &str) -> bool {
        self.note(false, verb, about, text);
        if !self.repair {
            self.report.unresolved += 1;
        }
        self.repair
    }

    /// Notes a repair.
    fn repaired(&mut self, verb: &str, about: (Option<&str>, Option<&str>), text: &str) {
        self.report.repaired += 1;
        self.note(true, verb, about, text);
    }

    /// A blob nothing can heal is moved aside, never deleted: it may be all that is left.
    fn quarantine(&mut self, hash: &str) -> Result<()> {
        let to = self
            .store
            .quarantine(hash)
            .map_err(|e| Error::io("could not quarantine", self.store.path(hash), e))?;
        let moved = format!("blob `{hash}` → `{}`", to.display());
        self.repaired("Quarantined", (None, Some(hash)), &moved);
        Ok(())
    }

    /// A blob whose bytes hash to `actual`: healed from an intact output holding the same image
    /// (then `good`), or else quarantined.
    fn corrupt_blob(
        &mut self,
        hash: &str,
        actual: &str,
        outputs: &[Output<'_>],
        good: &mut HashSet<String>,
    ) -> Result<()> {
        let about = (None, Some(hash));
        let text = format!("blob `{hash}`: its bytes hash to `{actual}`");
        if !self.found("Corrupt", about, &text) {
            return Ok(());
        }
        let source = outputs
            .iter()
            .find(|o| o.hash == hash && o.state == OutputState::Intact);
        let Some(source) = source else {
            return self.quarantine(hash);
        };
        let from = self.manifest.root.join(source.path);
        self.store
            .insert_copy(&from)
            .map_err(|e| Error::io("could not restore the blob from", &from, e))?;
        good.insert(hash.to_owned());
        let text = format!("blob `{hash}` from `{}`", source.path);
        self.repaired("Repaired", about, &text);
        Ok(())
    }

    /// A blob that hashes right but is not a whole image: quarantined.
    fn incomplete_blob(&mut self, hash: &str) -> Result<()> {
        let about = (None, Some(hash));
        let text = format!("blob `{hash}` is not a whole image (cached by an older wanx?)");
        if !self.found("Incomplete", about, &text) {
            return Ok(());
        }
        self.quarantine(hash)
    }

    /// A file in the blob store that is not a blob (`rel` to the blob directory): quarantined.
    fn stray_file(&mut self, rel: &Path) -> Result<()> {
        let path = self.store.dir().join(rel);
        let subject = rel.to_string_lossy();
        let about = (None, Some(&*subject));
        let text = format!("`{}` is not a blob", path.display());
        if !self.found("Stray", about, &text) {
            return Ok(());
        }
        let name = subject.replace(['/', '\\'], "_");
        let to = self
            .store
            .quarantine_file(&path, &name)
            .map_err(|e| Error::io("could not quarantine", &path, e))?;
        let text = format!("`{}` → `{}`", path.display(), to.display());
        self.repaired("Quarantined", about, &text);
        Ok(())
    }

    /// Checks one output against the lock and the blobs found `good` (or `incomplete`); a missing
    /// or modified one is restored from the cache under `--repair`.
    fn output(
        &mut self,
        output: &Output<'_>,
        good: &HashSet<String>,
        incomplete: &HashSet<&str>,
    ) -> Result<()> {
        let Output {
            id,
            path,
            hash,
            ref state,
        } = *output;
        let about = (Some(id), Some(path));
        let problem = match state {
            OutputState::Intact if incomplete.contains(hash) => {
                self.problem(
                    "Incomplete",
                    about,
                    &format!(
                        "`{path}` (task `{id}`) is a truncated image; `wanx build --force {id}` generates it again"
                    ),
                );
                return Ok(());
            }
            OutputState::Intact => return Ok(()),
            OutputState::Outside => {
                self.problem(
                    "Outside",
                    about,
                    &format!(
                        "`{path}` (task `{id}`) resolves outside the project (a symlink?); not read, not written"
                    ),
                );
                return Ok(());
            }
            OutputState::Missing => format!("`{path}` (task `{id}`) is missing"),
            OutputState::Modified(actual) => format!(
                "`{path}` (task `{id}`) does not match `wanx.lock`: its bytes hash to `{actual}`"
            ),
        };
        if !self.found("Mismatch", about, &problem) {
            return Ok(());
        }
        let foreign = matches!(state, OutputState::Modified(actual) if !good.contains(actual));
        if foreign && !self.force && good.contains(hash) {
            self.problem(
                "Kept",
                about,
                &format!(
                    "`{path}`: it was edited by hand, so it is not replaced; `wanx verify --repair --force` restores wanx's image, keeping this file under `.wanx/replaced/`"
                ),
            );
        } else if good.contains(hash) {
            self.restore(output, foreign)?;
        } else {
            self.problem(
                "Unrepaired",
                about,
                &format!(
                    "`{path}`: the cache holds no intact copy; `wanx build` generates it again (`wanx plan` shows the price)"
                ),
            );
        }
        Ok(())
    }

    /// Restores an output from its intact blob, first moving aside one edited by hand (`foreign`).
    fn restore(&mut self, output: &Output<'_>, foreign: bool) -> Result<()> {
        let (root, path) = (&self.manifest.root, output.path);
        let about = (Some(output.id), Some(path));
        if foreign {
            let now = crate::tree::output_name::now_unix();
            let kept = crate::tree::output_guard::keep(root, &self.manifest.state_dir(), path, now)
                .map_err(|e| Error::io("could not move aside", root.join(path), e))?;
            let text = format!("`{path}` (edited by hand) as `{}`", kept.display());
            self.note(true, "Kept", about, &text);
        }
        self.store
            .materialize(output.hash, &root.join(path))
            .map_err(|e| Error::io("could not restore", root.join(path), e))?;
        self.repaired("Restored", about, &format!("`{path}` from the cache"));
        Ok(())
    }
}

/// The closing line when nothing is left unresolved: what was checked, and repaired.
fn say_verified(printer: &Printer, report: &Report) {
    if report.unresolved > 0 {
        return;
    }
    let (outputs, blobs, repaired) = (
        report.outputs_checked,
        report.blobs_checked,
        report.repaired,
    );
    let summary = format!(
        "{outputs} output{} and {blobs} blob{} checked",
        if outputs == 1 { "" } else { "s" },
        if blobs == 1 { "" } else { "s" },
    );
    if repaired > 0 {
        printer.status(
            "Verified",
            &format!(
                "{summary}; {repaired} problem{} repaired",
                if repaired == 1 { "" } else { "s" }
            ),
        );
    } else {
        printer.status("Verified", &format!("{summary}: all intact"));
    }
}

/// Hashes every file under the blob directory and sorts it into good, corrupt, incomplete, stray.
fn scan_blobs(store: &BlobStore) -> Result<Blobs> {
    let mut blobs = Blobs::default();
    let dir = store.dir();
    let shards = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(blobs),
        Err(e) => return Err(Error::io("could not read", dir, e)),
    };
    let mut files = Vec::new();
    for shard in shards {
        let shard = shard.map_err(|e| Error::io("could not read", dir, e))?;
        let shard_name = shard.file_name().to_string_lossy().into_owned();
        if !shard.file_type().is_ok_and(|t| t.is_dir()) {
            blobs.stray.push(PathBuf::from(shard_name));
            continue;
        }
        let entries = std::fs::read_dir(shard.path())
            .map_err(|e| Error::io("could not read", shard.path(), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("could not read", shard.path(), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            files.push((
                format!("{shard_name}{name}"),
                Path::new(&shard_name).join(&name),
            ));
        }
    }
    files.sort();
    for (hash, rel) in files {
        let path = dir.join(&rel);
        if !is_hash(&hash) || !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            blobs.stray.push(rel);
            continue;
        }
        let (actual, _) = hash_file(&path).map_err(|e| Error::io("could not read", &path, e))?;
        blobs.checked += 1;
        if actual != hash {
            blobs.corrupt.insert(hash, actual);
        } else if crate::executor::image_check::is_complete(&path) {
            blobs.good.insert(hash);
        } else {
            blobs.incomplete.push(hash);
        }
    }
    blobs.stray.sort();
    Ok(blobs)
}

fn output_state(canonical_root: &Path, path: &str, expected: &str) -> OutputState {
    let rel = Path::new(path);
    if crate::tree::project_path::check_inside(
        canonical_root,
        rel.parent().unwrap_or(Path::new("")),
    )
    .is_err()
    {
        return OutputState::Outside;
    }
    let full = canonical_root.join(rel);
    if std::fs::symlink_metadata(&full).is_err() {
        return OutputState::Missing;
    }
    match hash_file(&full) {
        Ok((actual, _)) if actual == expected => OutputState::Intact,
        Ok((actual, _)) => OutputState::Modified(actual),
        Err(_) => OutputState::Missing,
    }
}
