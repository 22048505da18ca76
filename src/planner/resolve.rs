//! The digest and source of each media slot of a request: local files hashed, upstream tasks'
//! images when known, otherwise the upstream tasks the request waits for.

use std::collections::HashMap;
use std::path::Path;

use super::unit::{MediaSource, Unit};
use crate::compile::Compiled;
use crate::plan::task::{InputRef, Task};
use crate::planner::reconcile::{Action, Decision};
use crate::project::lock::LockFile;
use crate::store::blob_store::hash_file;
use crate::term::diagnostic::Diagnostic;

pub(super) enum Resolution {
    /// Every input's digest and source are known.
    Ready(Vec<String>, Vec<MediaSource>),
    /// These upstream tasks must be generated first.
    Waits(Vec<String>),
}

/// The digest and source of each media slot of `compiled`; `images` holds the known images of
/// upstream tasks.
pub(super) fn resolve_media(
    root: &Path,
    task: &Task,
    compiled: &Compiled,
    images: &HashMap<String, Vec<String>>,
) -> std::result::Result<Resolution, Box<Diagnostic>> {
    let mut digests = Vec::with_capacity(compiled.media.len());
    let mut media = Vec::with_capacity(compiled.media.len());
    let mut waits = Vec::new();
    for slot in &compiled.media {
        match &slot.source {
            InputRef::File(path) => {
                let full = root.join(path);
                let (digest, _) = hash_file(&full).map_err(|e| {
                    Box::new(
                        Diagnostic::error(
                            &task.origin.file,
                            format!("cannot read input `{}`: {e}", path.display()),
                        )
                        .at_line_col("", task.origin.line, task.origin.column)
                        .field(format!("task `{}`", task.id)),
                    )
                })?;
                digests.push(digest);
                media.push(MediaSource::File(full));
            }
            InputRef::Task { id, index } => match images.get(id) {
                Some(known) => {
                    let i = index.map_or(0, |k| k as usize - 1);
                    let digest = known.get(i).cloned().ok_or_else(|| {
                        Box::new(
                            Diagnostic::error(
                                &task.origin.file,
                                format!("task `{id}` has no image {}", i + 1),
                            )
                            .at_line_col(
                                "",
                                task.origin.line,
                                task.origin.column,
                            ),
                        )
                    })?;
                    digests.push(digest.clone());
                    media.push(MediaSource::Blob(digest));
                }
                None => waits.push(id.clone()),
            },
            InputRef::Url(_) => {
                unreachable!("URL inputs are placed in the body, not in media slots")
            }
        }
    }
    if waits.is_empty() {
        Ok(Resolution::Ready(digests, media))
    } else {
        waits.dedup();
        Ok(Resolution::Waits(waits))
    }
}

/// The images a decided task's outputs hold (or will hold) without generating: its lock entry's for
/// `fresh`, the cached ones for `restore`.
pub(super) fn known_images(lock: &LockFile, unit: &Unit<'_>, d: &Decision) -> Option<Vec<String>> {
    match &d.action {
        Action::Fresh => lock
            .tasks
            .get(&unit.task.id)
            .map(|e| e.outputs.iter().map(|o| o.blake3.clone()).collect()),
        Action::Restore { images, .. } => Some(images.clone()),
        Action::Generate => None,
    }
}
