//! Restores: copy verified blobs from the blob store to a job's outputs and record them in the lock.

use std::path::Path;

use super::failure::Failure;
use super::job::{Done, Job, JobKind, Outcome};
use super::shared::{Shared, record_in_lock};
use crate::money::Money;
use crate::project::lock::{LockEntry, LockOutput};
use crate::store::{StatEntry, stat_of};
use crate::tree::output_name;

pub(super) fn restore(shared: &Shared, job: &Job) -> Outcome {
    let JobKind::Restore {
        images,
        generated_at,
    } = &job.kind
    else {
        unreachable!("restore() is only called for restores")
    };
    let resumed = shared
        .resumed
        .lock()
        .expect("never poisoned")
        .remove(&job.key.hex());
    let result = (|| {
        let cost = recorded_cost(shared, job);
        let entry = materialize(shared, job, images, *generated_at, cost)?;
        record_in_lock(shared, &job.id, entry.clone())?;
        let (spent, images_billed) = resumed.unwrap_or_default();
        Ok::<Done, String>(Done {
            generated: resumed.is_some(),
            entry,
            spent,
            images_billed,
            resumed: resumed.is_some(),
        })
    })()
    .map_err(Failure::io);
    Outcome {
        id: job.id.clone(),
        result,
    }
}

/// What the images a restore copies back cost when they were generated: the lock's entry for this
/// key, else the store's result. The restore itself is free; the lock records the images' price so
/// that restoring an output leaves a committed `wanx.lock` unchanged.
pub(super) fn recorded_cost(shared: &Shared, job: &Job) -> Money {
    let key = job.key.hex();
    let locked = shared
        .exec
        .lock
        .lock()
        .expect("never poisoned")
        .tasks()
        .get(&job.id)
        .and_then(|e| (e.key == key.as_str()).then_some(e.cost));
    locked
        .or_else(|| {
            let store = shared.exec.store.lock().expect("never poisoned");
            store.result(&key).ok().flatten().map(|r| r.cost)
        })
        .unwrap_or(Money::ZERO)
}

/// Copies `images` from the blob store to the job's outputs (verifying each hash), records their
/// stats so the next build need not hash them, and returns the lock entry.
pub(super) fn materialize(
    shared: &Shared,
    job: &Job,
    images: &[String],
    generated_at: i64,
    cost: Money,
) -> Result<LockEntry, String> {
    let exec = &shared.exec;
    let paths = output_name::render(
        &job.output,
        &job.id,
        images.len() as u32,
        &job.key,
        generated_at,
    );
    let mut outputs = Vec::new();
    let mut stats = Vec::new();
    for (path, hash) in paths.iter().zip(images) {
        let dest = exec.root.join(path);
        ensure_inside(&exec.root, &dest)?;
        let size = exec
            .blobs
            .materialize(hash, &dest)
            .map_err(|e| format!("could not write `{path}`: {e}"))?;
        let meta = std::fs::metadata(&dest).map_err(|e| format!("could not stat `{path}`: {e}"))?;
        let (fsize, mtime_ns, inode) = stat_of(&meta);
        stats.push((
            path.clone(),
            StatEntry {
                size: fsize,
                mtime_ns,
                inode,
                blake3: hash.clone(),
            },
        ));
        outputs.push(LockOutput {
            path: path.clone(),
            blake3: hash.clone(),
            size,
        });
    }
    exec.store
        .lock()
        .expect("never poisoned")
        .put_stats(&stats)
        .map_err(|e| format!("could not record output stats: {e}"))?;
    Ok(LockEntry {
        key: job.key.hex(),
        model: job.compiled.model.clone(),
        images: images.len() as u32,
        cost,
        generated_at,
        outputs,
    })
}

/// Refuses a destination whose existing parent resolves outside the project (a symlinked directory).
pub(super) fn ensure_inside(root: &Path, dest: &Path) -> Result<(), String> {
    let parent = dest.parent().unwrap_or(root);
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("could not create `{}`: {e}", parent.display()))?;
    let real_parent = parent
        .canonicalize()
        .map_err(|e| format!("could not resolve `{}`: {e}", parent.display()))?;
    let real_root = root
        .canonicalize()
        .map_err(|e| format!("could not resolve `{}`: {e}", root.display()))?;
    if real_parent.starts_with(&real_root) {
        Ok(())
    } else {
        Err(format!(
            "`{}` resolves outside the project (a symlink?); wanx never writes outside the project root",
            dest.display()
        ))
    }
}
