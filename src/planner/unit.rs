//! `Unit`: a selected task, compiled and keyed, with where its media bytes come from; `Waiting`: a
//! task whose key waits for images this build has yet to generate.

use std::path::PathBuf;

use crate::compile::Compiled;
use crate::compile::cache_key::CacheKey;
use crate::plan::task::{InputRef, Task};

/// The ids of the tasks whose images `task` consumes.
pub fn upstream_ids(task: &Task) -> impl Iterator<Item = &str> {
    task.inputs().filter_map(|input| match input {
        InputRef::Task { id, .. } => Some(id.as_str()),
        _ => None,
    })
}

/// Where the bytes for one media slot of a request come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaSource {
    /// A local file (absolute path).
    File(PathBuf),
    /// Another task's image, by its blake3, in the blob store.
    Blob(String),
}

/// A selected task, compiled and keyed.
pub struct Unit<'a> {
    pub task: &'a Task,
    pub compiled: Compiled,
    pub key: CacheKey,
    /// The key version 1 gave the request (`n` included), when known: a lock entry under it is
    /// migrated to `key` (see [`migrate`]).
    pub legacy: Option<CacheKey>,
    /// The bytes for each of `compiled.media`, in order.
    pub media: Vec<MediaSource>,
}

/// A task whose key depends on images that this build has yet to generate.
pub struct Waiting<'a> {
    pub task: &'a Task,
    pub compiled: Compiled,
    /// The upstream tasks it waits for.
    pub upstream: Vec<String>,
}

/// Why a waiting task is not decided yet: the upstream tasks it waits for.
pub fn waiting_reason(w: &Waiting<'_>) -> String {
    let names: Vec<String> = w.upstream.iter().map(|u| format!("`{u}`")).collect();
    format!("waits for {}", names.join(", "))
}
