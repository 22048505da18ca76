//! `Job`: one unit of work for the executor, and what it reports back (`Outcome`, `Done`, `Event`).

use std::sync::Arc;
use std::time::Duration;

use super::failure::Failure;
use crate::compile::Compiled;
use crate::compile::cache_key::CacheKey;
use crate::money::Money;
use crate::plan::task::OutputSpec;
use crate::planner::MediaSource;
use crate::project::lock::LockEntry;

/// One unit of work.
pub struct Job {
    pub id: String,
    pub key: CacheKey,
    pub compiled: Compiled,
    pub output: OutputSpec,
    /// The candidates written as outputs (1-based); `None` writes every image. Behind a pointer:
    /// jobs travel in enums that stay small.
    pub pick: Option<Arc<Vec<u32>>>,
    pub kind: JobKind,
    /// The bytes for each media slot of the body (JSON pointer → source).
    pub media: Vec<(String, MediaSource)>,
    /// The model takes images inline as data URIs; otherwise they go through temporary storage.
    pub inline_media: bool,
}

pub enum JobKind {
    Restore {
        images: Vec<String>,
        generated_at: i64,
    },
    Generate,
}

/// What happened to a job.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub id: String,
    pub result: Result<Done, Failure>,
}

#[derive(Clone, Debug)]
pub struct Done {
    pub generated: bool,
    pub entry: LockEntry,
    /// Money this build booked for this job (zero for restores; see [`Charge`]).
    pub spent: Money,
    /// Images this build booked for it.
    pub images_billed: u32,
    /// A task resumed from the journal (an earlier build submitted it): a generation, not a
    /// restore. Its booking is already in the build's figures from the resume.
    pub resumed: bool,
}

/// Progress, for the printer.
#[derive(Clone, Debug)]
pub enum Event {
    Submitted {
        id: String,
        remote: String,
    },
    Retrying {
        id: String,
        error: String,
        wait: Duration,
    },
    Finished(Outcome),
}
