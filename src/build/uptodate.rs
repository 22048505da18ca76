//! The up-to-date record, `.wanx/uptodate`: what a build that found nothing to do checked, so that
//! the next `wanx build` can see that nothing changed without loading the project, as ninja does
//! with its log. It holds the blake3 of every plan file (in discovery order) and of `wanx.lock`, the
//! stat of the build database, and every output with the stat under which the planner vouched for
//! its bytes (the stat cache's own test: size, mtime in nanoseconds, inode).
//!
//! The next build first walks the plan globs, hashes each plan file and the lock, stats the database
//! and every output; when all match, it prints the no-op's summary and stops. Anything else (a plan
//! or the lock edited, even within the same second and at the same size; a plan file added or
//! removed; an output touched, replaced or deleted; anything written to the database: a charge, a
//! journal entry, another build; another wanx binary, project root, selection, `--emulate` or
//! `DASHSCOPE_HTTP_BASE_URL`) is a miss, and the build runs as it would without the record. A
//! damaged record is a miss too ([`binary_file`]). Every build that may change anything removes the
//! record first, under the project lock; only a build where every selected task was fresh writes
//! one, after its last database connection closed. Local input files (`input = "photos/a.png"`)
//! are recorded with the outputs, by the stat they had before planning hashed them.

use std::path::{Path, PathBuf};

use crate::cli::BuildArgs;
use crate::money::Money;
use crate::plan::task::InputRef;
use crate::planner::{Planned, Project, Stat};
use crate::project::binary_file::{self, Reader, Writer};
use crate::project::cache_digest::{field, project};
use crate::project::manifest::Manifest;
use crate::report::{Cumulative, Summary};
use crate::store::{DB_FILE, stat_of};
use crate::term::printer::Printer;

/// The record's file name in the state directory.
pub const FILE_NAME: &str = "uptodate";
/// The record's kind; bump the digit when the encoding or what it covers changes.
const MAGIC: &[u8; 8] = b"wanxutd1";

/// What a build that found nothing to do leaves for the next one: see the module documentation.
pub struct Seen {
    /// The outputs the planner checked, each with the stat it vouched for its bytes under.
    pub outputs: Vec<(String, Stat)>,
    /// The blake3 of `wanx.lock` as planned from.
    pub lock: [u8; 32],
}

impl Seen {
    /// What `planned` saw, when the record can stand for it (the lock existed), with the local
    /// input files as [`local_inputs`] found them before planning.
    pub fn of(planned: &mut Planned<'_>, inputs: Option<Vec<(String, Stat)>>) -> Option<Seen> {
        let mut outputs = std::mem::take(&mut planned.observed);
        outputs.extend(inputs?);
        Some(Seen {
            outputs,
            lock: planned.lock_digest?,
        })
    }
}

/// Every local input file of the project's tasks with its stat, taken before planning hashes
/// them: recorded beside the outputs, an input changed after this stat is a miss. `None` when one
/// cannot be stat-ed or named (the build then keeps no record).
pub fn local_inputs(project: &Project) -> Option<Vec<(String, Stat)>> {
    let mut found = Vec::new();
    for task in &project.loaded.tasks {
        for input in task.inputs() {
            if let InputRef::File(path) = input {
                let meta = std::fs::metadata(project.manifest.root.join(path)).ok()?;
                found.push((path.to_str()?.to_owned(), stat_of(&meta)));
            }
        }
    }
    found.sort_unstable();
    found.dedup();
    Some(found)
}

/// Removes the record: called before a build that may change anything.
pub fn forget(state_dir: &Path) {
    let _ = std::fs::remove_file(state_dir.join(FILE_NAME));
}

/// Writes the record of a build where every task was fresh. Called once the build closed its last
/// database connection (so that the database's stat is the one the next build will see), still
/// holding the project lock. Best effort: a record that cannot be written costs a slower no-op.
pub fn record(
    manifest: &Manifest,
    plan_digests: &std::collections::HashMap<PathBuf, [u8; 32]>,
    args: &BuildArgs,
    seen: &Seen,
    summary: &Summary,
) {
    let Some(valid_for) = context(manifest, args) else {
        return;
    };
    let mut plans: Vec<(&PathBuf, &[u8; 32])> = plan_digests.iter().collect();
    plans.sort_unstable();
    let state_dir = manifest.state_dir();
    let mut w = Writer::default();
    w.u64(summary.fresh as u64);
    w.bool(summary.emulated);
    w.u64(summary.cumulative.runs);
    w.i64(summary.cumulative.spent.0);
    w.i64(summary.cumulative.saved.0);
    w.0.extend_from_slice(&seen.lock);
    for stat in database_stats(&state_dir) {
        put_stat(&mut w, stat.as_ref());
    }
    w.count(plans.len());
    for (path, digest) in plans {
        w.bytes(path.as_os_str().as_encoded_bytes());
        w.0.extend_from_slice(digest);
    }
    w.count(seen.outputs.len());
    for (path, stat) in &seen.outputs {
        w.str(path);
        put_stat(&mut w, Some(stat));
    }
    binary_file::write(&state_dir.join(FILE_NAME), MAGIC, &valid_for, &w.0);
}

/// The summary of a build with nothing to do, when the record shows that nothing changed since
/// one; `None` sends the build down its normal path. Only for plain builds: `--dry-run`, `--force`
/// and `--json` (whose report lists every task) take the normal path.
pub fn unchanged(dir: Option<&Path>, args: &BuildArgs, printer: &Printer) -> Option<Summary> {
    if args.dry_run || args.force || args.json {
        return None;
    }
    let cwd = match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::current_dir().ok()?,
    };
    let (manifest, _) = Manifest::load(&Manifest::find(&cwd).ok()?).ok()?;
    let state_dir = manifest.state_dir();
    let payload = binary_file::read(
        &state_dir.join(FILE_NAME),
        MAGIC,
        &context(&manifest, args)?,
    )?;
    let mut r = Reader::new(&payload);
    let fresh = r.usize()?;
    let emulated = r.bool()?;
    let cumulative = Cumulative {
        runs: r.u64()?,
        spent: Money(r.i64()?),
        saved: Money(r.i64()?),
    };
    // Cheapest first: the database (anything written since), the lock, the plans, the outputs.
    let lock = r.digest()?;
    for now in database_stats(&state_dir) {
        (get_stat(&mut r)? == now).then_some(())?;
    }
    (file_digest(&manifest.lock_path())? == lock).then_some(())?;
    let plans = plans(&manifest, &mut r)?;
    let outputs = outputs(&manifest.root, &mut r)?;
    r.done().then_some(())?;
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    printer.verbose(
        "Fresh",
        &format!(
            "nothing changed since the last build ({}, `wanx.lock` and {} as it left them)",
            plural(plans, "plan file", "plan files"),
            plural(outputs, "output or input", "outputs and inputs"),
        ),
    );
    Some(Summary {
        fresh,
        emulated,
        currency: "CNY",
        cumulative,
        ..Summary::default()
    })
}

/// The plan files the globs find now, each with the bytes recorded: their count, else `None`.
fn plans(manifest: &Manifest, r: &mut Reader<'_>) -> Option<usize> {
    let mut problems = Vec::new();
    let found = crate::plan::discover::discover(manifest, &mut problems);
    if !problems.is_empty() || r.usize()? != found.len() {
        return None;
    }
    for path in &found {
        let recorded = r.take_bytes()?;
        (recorded == path.as_os_str().as_encoded_bytes()).then_some(())?;
        (file_digest(&manifest.root.join(path))? == r.digest()?).then_some(())?;
    }
    Some(found.len())
}

/// Every recorded output, stat-ed now against its record: their count, else `None`.
fn outputs(root: &Path, r: &mut Reader<'_>) -> Option<usize> {
    let count = r.usize()?;
    for _ in 0..count {
        let path = std::str::from_utf8(r.take_bytes()?).ok()?;
        let recorded = get_stat(r)?;
        let now = std::fs::metadata(root.join(path)).ok().map(|m| stat_of(&m));
        (now == recorded).then_some(())?;
    }
    Some(count)
}

/// What the record is valid for: this binary, the project root and manifest, the selection and
/// where requests go (a different provider keys every task differently).
fn context(manifest: &Manifest, args: &BuildArgs) -> Option<[u8; 32]> {
    let mut h = blake3::Hasher::new();
    h.update(MAGIC);
    project(&mut h, &manifest.root, &manifest.digest)?;
    h.update(&(args.selection.tasks.len() as u64).to_le_bytes());
    for task in &args.selection.tasks {
        field(&mut h, task.as_bytes());
    }
    h.update(&[u8::from(args.selection.emulate)]);
    let base_url = std::env::var_os("DASHSCOPE_HTTP_BASE_URL");
    field(
        &mut h,
        base_url.as_deref().map_or(b"\0", |v| v.as_encoded_bytes()),
    );
    Some(*h.finalize().as_bytes())
}

/// The stat of the build database and of its write-ahead log (absent once no connection is open):
/// any write since the record changes one of them.
fn database_stats(state_dir: &Path) -> [Option<Stat>; 2] {
    let stat = |name: &str| {
        std::fs::metadata(state_dir.join(name))
            .ok()
            .map(|m| stat_of(&m))
    };
    [stat(DB_FILE), stat(&format!("{DB_FILE}-wal"))]
}

/// The blake3 of a file's bytes; `None` when it cannot be read.
fn file_digest(path: &Path) -> Option<[u8; 32]> {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(path).ok()?).ok()?;
    Some(*h.finalize().as_bytes())
}

fn put_stat(w: &mut Writer, stat: Option<&Stat>) {
    w.opt(stat, |w, (size, mtime_ns, inode)| {
        w.u64(*size);
        w.i64(*mtime_ns);
        w.u64(*inode);
    });
}

#[allow(
    clippy::option_option,
    reason = "`None`: the bytes are malformed; `Some(None)`: the file was absent"
)]
fn get_stat(r: &mut Reader<'_>) -> Option<Option<Stat>> {
    r.opt(|r| Some((r.u64()?, r.i64()?, r.u64()?)))
}
