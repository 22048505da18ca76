//! `Sink`: a receiver of `wanx watch`'s JSON events besides stdout (the live gallery of
//! `wanx watch --serve` is one). A leaf of its own, so that the gallery can take the watch's events
//! without importing the watch's reporter.

use serde_json::Value;

/// A receiver of the watch's JSON events besides stdout.
#[derive(Clone)]
pub struct Sink(pub std::sync::Arc<dyn Fn(&Value) + Send + Sync>);

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sink")
    }
}
