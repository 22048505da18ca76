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
            .tasks()
            .get(&unit.task.id)
            .map(|e| e.outputs.iter().map(|o| o.blake3.clone()).collect()),
        Action::Restore { images, .. } => Some(images.clone()),
        Action::Generate => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{MediaSlot, compile};
    use crate::registry::Registry;

    /// Task `b` whose request takes `sources` as its media slots.
    fn with_inputs(sources: Vec<InputRef>) -> (Task, Compiled) {
        let task = crate::compile::tests::task("b", "wan2.2-t2i-flash", "a cat");
        let mut compiled = compile(&task, &Registry::builtin());
        compiled.media = sources
            .into_iter()
            .enumerate()
            .map(|(i, source)| MediaSlot {
                pointer: format!("/input/{i}"),
                source,
            })
            .collect();
        (task, compiled)
    }

    fn upstream(id: &str, index: Option<u32>) -> InputRef {
        InputRef::Task {
            id: id.to_owned(),
            index,
        }
    }

    #[test]
    fn a_known_upstream_image_is_keyed_by_its_digest_and_read_from_the_blob_store() {
        let (task, compiled) = with_inputs(vec![upstream("a", Some(2)), upstream("a", None)]);
        let images = HashMap::from([("a".to_owned(), vec!["h1".to_owned(), "h2".to_owned()])]);
        let Ok(Resolution::Ready(digests, media)) =
            resolve_media(Path::new("/nowhere"), &task, &compiled, &images)
        else {
            panic!("every input is known");
        };
        assert_eq!(digests, ["h2", "h1"]);
        assert_eq!(
            media,
            [
                MediaSource::Blob("h2".to_owned()),
                MediaSource::Blob("h1".to_owned())
            ]
        );
    }

    #[test]
    fn a_local_file_is_keyed_by_the_blake3_of_its_bytes() {
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::write(dir.path().join("in.png"), b"bytes").expect("written");
        let (task, compiled) = with_inputs(vec![InputRef::File("in.png".into())]);
        let Ok(Resolution::Ready(digests, media)) =
            resolve_media(dir.path(), &task, &compiled, &HashMap::new())
        else {
            panic!("the file exists");
        };
        assert_eq!(digests, [blake3::hash(b"bytes").to_hex().to_string()]);
        assert_eq!(media, [MediaSource::File(dir.path().join("in.png"))]);
    }

    #[test]
    fn unknown_upstream_images_make_the_task_wait_for_each_upstream_once() {
        let (task, compiled) = with_inputs(vec![
            upstream("a", Some(1)),
            upstream("a", Some(2)),
            upstream("c", None),
        ]);
        let Ok(Resolution::Waits(upstream)) =
            resolve_media(Path::new("/nowhere"), &task, &compiled, &HashMap::new())
        else {
            panic!("no input is known");
        };
        assert_eq!(upstream, ["a", "c"]);
    }

    #[test]
    fn an_image_index_beyond_what_the_upstream_made_is_a_diagnostic() {
        let (task, compiled) = with_inputs(vec![upstream("a", Some(3))]);
        let images = HashMap::from([("a".to_owned(), vec!["h1".to_owned(), "h2".to_owned()])]);
        let Err(diagnostic) = resolve_media(Path::new("/nowhere"), &task, &compiled, &images)
        else {
            panic!("`a` made two images");
        };
        assert_eq!(diagnostic.message, "task `a` has no image 3");
        let Err(missing) = resolve_media(
            Path::new("/nowhere"),
            &with_inputs(vec![InputRef::File("gone.png".into())]).0,
            &with_inputs(vec![InputRef::File("gone.png".into())]).1,
            &HashMap::new(),
        ) else {
            panic!("the file does not exist");
        };
        assert!(
            missing.message.starts_with("cannot read input `gone.png`"),
            "{}",
            missing.message
        );
    }
}
