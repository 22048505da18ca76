//! `Chain`: decides the tasks that consume other tasks' images as those images come into existence,
//! while the rest of the build runs (early cutoff when the bytes did not change).

use std::collections::{HashMap, HashSet};

use super::project::Project;
use super::resolve::{Resolution, known_images, resolve_media};
use super::snapshot::{Context, Remote, StatCache, decide};
#[cfg(test)]
use super::unit::MediaSource;
use super::unit::{Unit, Waiting, upstream_ids};
use crate::compile::Compiled;
use crate::compile::cache_key::{CacheKey, Provider};
use crate::error::{Error, Result};
use crate::plan::task::Task;
use crate::planner::reconcile::Decision;
use crate::project::lock::LockFile;
use crate::store::Store;
use crate::store::blob_store::BlobStore;
use crate::term::diagnostic::Diagnostic;
use crate::tree::output_name::now_unix;

/// What deciding the waiting tasks needs once the images they consume exist: the images known at
/// planning, the stat cache, the waiting tasks' own lock entries and which of them are forced.
#[derive(Default)]
pub struct Later {
    pub(super) images: HashMap<String, Vec<String>>,
    pub(super) stat_cache: StatCache,
    pub(super) lock: LockFile,
    pub(super) forced: HashSet<String>,
    pub(super) remote: Option<Remote>,
}

pub(super) enum Chained<'a> {
    Decided(Unit<'a>, Decision),
    Waits(Waiting<'a>),
}

pub(super) enum ChainError {
    /// The task cannot be built as written (an input missing or out of range).
    Invalid(Box<Diagnostic>),
    Store(Error),
}

/// Keys and decides a task that consumes other tasks' images, if `images` holds all it consumes;
/// a decided task's images, when known without generating, join `images` for its dependants.
pub(super) fn decide_chained<'a>(
    cx: &mut Context<'_>,
    provider: &Provider,
    task: &'a Task,
    compiled: Compiled,
    images: &mut HashMap<String, Vec<String>>,
    forced: &HashSet<String>,
) -> std::result::Result<Chained<'a>, ChainError> {
    match resolve_media(cx.root, task, &compiled, images).map_err(ChainError::Invalid)? {
        Resolution::Ready(digests, media) => {
            let key = CacheKey::new(provider, &compiled, &digests);
            let legacy = Some(CacheKey::legacy(provider, &compiled, &digests));
            let unit = Unit {
                task,
                compiled,
                key,
                legacy,
                media,
            };
            let d = decide(cx, std::slice::from_ref(&unit), forced)
                .map_err(ChainError::Store)?
                .remove(0);
            if let Some(known) = known_images(&cx.lock, &unit, &d) {
                images.insert(task.id.clone(), known);
            }
            Ok(Chained::Decided(unit, d))
        }
        Resolution::Waits(upstream) => Ok(Chained::Waits(Waiting {
            task,
            compiled,
            upstream,
        })),
    }
}

/// Decides the waiting tasks of a build as the images they consume come into existence, so each
/// starts as soon as its inputs exist while the rest of the build goes on.
pub struct Chain<'a> {
    pub(super) cx: Context<'a>,
    pub(super) provider: Provider,
    pub(super) forced: HashSet<String>,
    pub(super) images: HashMap<String, Vec<String>>,
    /// Tasks that produced no images (failed, skipped or blocked themselves).
    pub(super) lost: HashSet<String>,
    /// Undecided tasks; a settled one leaves `None`.
    pub(super) waiting: Vec<Option<Waiting<'a>>>,
    /// Upstream task id → the indices in `waiting` of the tasks that consume it.
    pub(super) dependants: HashMap<&'a str, Vec<usize>>,
}

/// A waiting task, settled by [`Chain::finished`].
pub enum Settled<'a> {
    /// Keyed and reconciled: fresh, restore or generate.
    Decided(Unit<'a>, Decision),
    /// Cannot be built: the named upstream task produced no images.
    Blocked(Waiting<'a>, String),
    /// Cannot be built as written, now that its inputs are known (an image index beyond what the
    /// upstream produced).
    Invalid(Waiting<'a>, String),
}

impl<'a> Chain<'a> {
    /// The chain of `planned`'s waiting tasks; opens its own store connection.
    pub fn new(
        project: &'a Project,
        provider: Provider,
        waiting: Vec<Waiting<'a>>,
        later: Later,
    ) -> Result<Chain<'a>> {
        let state_dir = project.manifest.state_dir();
        let cx = Context {
            root: &project.manifest.root,
            lock: later.lock,
            lock_digest: None,
            store: Store::open(&state_dir)?,
            blobs: BlobStore::new(state_dir.join("blobs")),
            stat_cache: later.stat_cache,
            new_stats: Vec::new(),
            observed: Vec::new(),
            now: now_unix(),
            remote: later.remote,
        };
        Ok(Chain::of(cx, provider, waiting, later.forced, later.images))
    }

    /// The chain of `waiting` deciding in `cx`, given the images known so far.
    fn of(
        cx: Context<'a>,
        provider: Provider,
        waiting: Vec<Waiting<'a>>,
        forced: HashSet<String>,
        images: HashMap<String, Vec<String>>,
    ) -> Chain<'a> {
        let mut dependants: HashMap<&'a str, Vec<usize>> = HashMap::new();
        for (i, w) in waiting.iter().enumerate() {
            for up in upstream_ids(w.task) {
                dependants.entry(up).or_default().push(i);
            }
        }
        Chain {
            cx,
            provider,
            forced,
            images,
            lost: HashSet::new(),
            waiting: waiting.into_iter().map(Some).collect(),
            dependants,
        }
    }

    /// Task `id` finished with `images`, or with none (failed or skipped). Returns the waiting
    /// tasks this settles: those whose inputs now all exist, those that can never be built, and,
    /// in cascade, whatever those settle in turn without generating.
    pub fn finished(&mut self, id: &str, images: Option<Vec<String>>) -> Result<Vec<Settled<'a>>> {
        match images {
            Some(images) => {
                self.images.insert(id.to_owned(), images);
            }
            None => {
                self.lost.insert(id.to_owned());
            }
        }
        let mut settled = Vec::new();
        let mut queue = vec![id.to_owned()];
        while let Some(up) = queue.pop() {
            let Some(consumers) = self.dependants.get(up.as_str()) else {
                continue;
            };
            for &i in consumers {
                let Some(w) = &self.waiting[i] else { continue };
                let lost = upstream_ids(w.task).find(|u| self.lost.contains(*u));
                if let Some(lost) = lost.map(str::to_owned) {
                    let w = self.waiting[i].take().expect("checked above");
                    self.lost.insert(w.task.id.clone());
                    queue.push(w.task.id.clone());
                    settled.push(Settled::Blocked(w, lost));
                    continue;
                }
                if !upstream_ids(w.task).all(|u| self.images.contains_key(u)) {
                    continue;
                }
                let w = self.waiting[i].take().expect("checked above");
                let id = w.task.id.clone();
                match decide_chained(
                    &mut self.cx,
                    &self.provider,
                    w.task,
                    w.compiled.clone(),
                    &mut self.images,
                    &self.forced,
                ) {
                    Ok(Chained::Decided(unit, d)) => {
                        if self.images.contains_key(&id) {
                            queue.push(id);
                        }
                        settled.push(Settled::Decided(unit, d));
                    }
                    Ok(Chained::Waits(_)) => unreachable!("every input's images are known"),
                    Err(ChainError::Invalid(diagnostic)) => {
                        self.lost.insert(id.clone());
                        queue.push(id);
                        settled.push(Settled::Invalid(w, diagnostic.message.clone()));
                    }
                    Err(ChainError::Store(e)) => return Err(e),
                }
            }
        }
        if !self.cx.new_stats.is_empty() {
            self.cx.store.put_stats(&self.cx.new_stats)?;
            self.cx.new_stats.clear();
        }
        Ok(settled)
    }

    /// The models the undecided tasks would generate with.
    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.waiting
            .iter()
            .flatten()
            .map(|w| w.compiled.model.as_str())
    }

    /// How many tasks are still undecided.
    pub fn undecided(&self) -> usize {
        self.waiting.iter().flatten().count()
    }

    /// The tasks never settled: what they consume never finished.
    pub fn into_remaining(self) -> Vec<Waiting<'a>> {
        self.waiting.into_iter().flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{MediaSlot, compile};
    use crate::plan::task::{InputRef, Reference};
    use crate::planner::reconcile::Action;
    use crate::registry::Registry;

    /// Task `id`, consuming the only image of each of `upstream`.
    fn task(id: &str, upstream: Option<&str>) -> Task {
        let mut task = crate::compile::tests::task(id, "wan2.2-t2i-flash", "a cat");
        task.reference = upstream.map(|up| Reference {
            image: InputRef::Task {
                id: up.to_owned(),
                index: None,
            },
            strength: None,
            mode: None,
        });
        task
    }

    /// `b` consumes `a`, `c` consumes `b`, `e` consumes `d`: all waiting.
    fn tasks() -> Vec<Task> {
        vec![
            task("b", Some("a")),
            task("c", Some("b")),
            task("e", Some("d")),
        ]
    }

    fn chain<'a>(root: &'a std::path::Path, tasks: &'a [Task]) -> Chain<'a> {
        let registry = Registry::builtin();
        let waiting = tasks
            .iter()
            .map(|t| {
                // A media slot per input, whichever model takes them.
                let mut compiled = compile(t, &registry);
                compiled.media = t
                    .inputs()
                    .map(|source| MediaSlot {
                        pointer: "/input/ref_img".to_owned(),
                        source: source.clone(),
                    })
                    .collect();
                Waiting {
                    task: t,
                    compiled,
                    upstream: upstream_ids(t).map(str::to_owned).collect(),
                }
            })
            .collect();
        let cx = Context {
            root,
            lock: LockFile::default(),
            lock_digest: None,
            store: Store::open_in_memory().expect("an in-memory store"),
            blobs: BlobStore::new(root.join("blobs")),
            stat_cache: StatCache::default(),
            new_stats: Vec::new(),
            observed: Vec::new(),
            now: 0,
            remote: None,
        };
        Chain::of(
            cx,
            Provider::Emulator,
            waiting,
            HashSet::new(),
            HashMap::new(),
        )
    }

    fn ids(settled: &[Settled<'_>]) -> Vec<String> {
        settled
            .iter()
            .map(|s| match s {
                Settled::Decided(unit, d) => format!("{} {}", unit.task.id, d.action.name()),
                Settled::Blocked(w, up) => format!("{} blocked by {up}", w.task.id),
                Settled::Invalid(w, why) => format!("{} invalid: {why}", w.task.id),
            })
            .collect()
    }

    #[test]
    fn a_task_is_decided_once_what_it_consumes_exists_and_its_dependants_wait_for_it() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let tasks = tasks();
        let mut chain = chain(dir.path(), &tasks);
        assert_eq!(chain.undecided(), 3);
        let settled = chain
            .finished("a", Some(vec!["h".to_owned()]))
            .expect("decided");
        // `b` is keyed by `a`'s image and must be generated: `c` waits for its images.
        assert_eq!(ids(&settled), ["b generate"]);
        let Settled::Decided(unit, d) = &settled[0] else {
            unreachable!()
        };
        assert_eq!(unit.media, [MediaSource::Blob("h".to_owned())]);
        assert_eq!(d.action, Action::Generate);
        assert_eq!(chain.undecided(), 2);
        // A task nothing waits for settles nothing.
        assert!(chain.finished("x", None).expect("nothing").is_empty());
    }

    #[test]
    fn an_upstream_that_made_no_image_blocks_its_dependants_in_cascade() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let tasks = tasks();
        let mut chain = chain(dir.path(), &tasks);
        let settled = chain.finished("a", None).expect("settled");
        assert_eq!(ids(&settled), ["b blocked by a", "c blocked by b"]);
        assert_eq!(chain.undecided(), 1);
        let remaining: Vec<&str> = chain
            .into_remaining()
            .iter()
            .map(|w| w.task.id.as_str())
            .collect();
        assert_eq!(remaining, ["e"]);
    }

    #[test]
    fn an_image_index_the_upstream_did_not_make_is_invalid_and_blocks_what_follows() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut tasks = tasks();
        tasks[0].reference = Some(Reference {
            image: InputRef::Task {
                id: "a".to_owned(),
                index: Some(2),
            },
            strength: None,
            mode: None,
        });
        let mut chain = chain(dir.path(), &tasks);
        let settled = chain
            .finished("a", Some(vec!["h".to_owned()]))
            .expect("settled");
        assert_eq!(
            ids(&settled),
            ["b invalid: task `a` has no image 2", "c blocked by b"]
        );
    }
}
