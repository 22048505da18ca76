//! `Failure`: why a job produced no images, and what it paid all the same.

use crate::money::Money;

/// Why a job produced no images.
#[derive(Clone, Debug, Default)]
pub struct Failure {
    pub message: String,
    /// Not submitted (interrupted, or stopped by another task's fatal error): nothing more was paid.
    pub skipped: bool,
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
    pub(super) fn skipped(message: &str) -> Failure {
        Failure {
            message: message.to_owned(),
            skipped: true,
            ..Failure::default()
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure {
            message,
            ..Failure::default()
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The error of a generation [`Executor::before_submit`] dropped before it was sent.
pub const NOT_SUBMITTED: &str = "not submitted: a newer change made it obsolete";
