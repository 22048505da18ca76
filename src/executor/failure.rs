//! `Failure`: why a job produced no images, and what it paid all the same.

use crate::money::Money;

/// What kind of failure ended a job: what the build reports, counts and prints for it, decided
/// from the kind, never from the message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailureKind {
    /// The provider refused or failed the task (a refused submission, a FAILED task, a timeout, a
    /// submission whose answer was lost).
    #[default]
    Provider,
    /// Not submitted: the build was interrupted, stopped by another task's fatal error, the service
    /// refused the model, or an input was not built because it was itself not submitted. Nothing
    /// more was paid.
    Skipped,
    /// Not submitted: `wanx watch` dropped it, a newer change made it obsolete ([`NOT_SUBMITTED`]).
    Dropped,
    /// Not built: an input it consumes was not built, or cannot be used as written.
    Blocked,
    /// The images could not be fetched whole (the network, a body cut short, not an image).
    Download,
    /// wanx's own files failed: writing an output, the build database, `wanx.lock`.
    Io,
}

/// Why a job produced no images.
#[derive(Clone, Debug, Default)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
    /// Images paid for in this build all the same (a partial result, kept for the next build).
    pub images_billed: u32,
    /// What they cost.
    pub spent: Money,
    /// What the service may have billed for a submission whose fate is unknown (the connection broke
    /// after it was sent, and its task could not be found in the service's list): not paid for
    /// certain, not sent again in this build.
    pub maybe_billed: Money,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            ..Failure::default()
        }
    }

    /// Not submitted (see [`FailureKind::Skipped`]).
    pub fn skipped(message: &str) -> Failure {
        Failure::new(FailureKind::Skipped, message)
    }

    /// Dropped unsent by [`Executor::before_submit`](super::Executor::before_submit).
    pub fn dropped() -> Failure {
        Failure::new(FailureKind::Dropped, NOT_SUBMITTED)
    }

    /// wanx's own files or database failed (see [`FailureKind::Io`]).
    pub fn io(message: String) -> Failure {
        Failure::new(FailureKind::Io, message)
    }

    /// Never sent, so nothing more was paid: skipped or dropped.
    pub fn unsent(&self) -> bool {
        matches!(self.kind, FailureKind::Skipped | FailureKind::Dropped)
    }
}

/// A provider failure (the common case of a message without a kind).
impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::new(FailureKind::Provider, message)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The error of a generation [`Executor::before_submit`] dropped before it was sent.
pub const NOT_SUBMITTED: &str = "not submitted: a newer change made it obsolete";
