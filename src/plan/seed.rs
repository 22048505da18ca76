//! What seed JSON plans say about the provider (`execution_config`): the first file to set a value wins;
//! a different value in a later file is a warning.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use crate::plan::sink::Sink;
use crate::term::diagnostic::Severity;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeedSettings {
    /// The API key variable, and the plan file that named it.
    pub api_key_env: Option<(String, PathBuf)>,
    pub timeout: Option<Duration>,
    /// The `api_endpoint` up to and including `/api/v1`.
    pub base_url: Option<String>,
}

/// Seed settings from one JSON plan: the first file to set a value wins; a different value later is
/// a warning.
pub(crate) struct SeedPart {
    pub api_key_env: Option<Spanned<String>>,
    pub timeout: Option<Spanned<Duration>>,
    pub base_url: Option<Spanned<String>>,
}

pub(super) fn merge_seed(seed: &mut SeedSettings, part: SeedPart, file: usize, sink: &mut Sink) {
    let path = sink.files[file].path.clone();
    let conflict = |sink: &mut Sink, span: Range<usize>, what: &str, kept: String| {
        sink.note(
            Severity::Warning,
            file,
            Some(span),
            format!("another seed plan already set `{what}` to `{kept}`; this value is ignored"),
            Some(format!("execution_config.{what}")),
            None,
        );
    };
    if let Some(v) = part.api_key_env {
        match &seed.api_key_env {
            None => seed.api_key_env = Some((v.get_ref().clone(), path)),
            Some((kept, _)) if kept != v.get_ref() => {
                conflict(sink, v.span(), "api_key_env", kept.clone());
            }
            Some(_) => {}
        }
    }
    if let Some(v) = part.timeout {
        match seed.timeout {
            None => seed.timeout = Some(*v.get_ref()),
            Some(kept) if kept != *v.get_ref() => {
                conflict(sink, v.span(), "timeout", format!("{}", kept.as_secs_f64()));
            }
            Some(_) => {}
        }
    }
    if let Some(v) = part.base_url {
        match &seed.base_url {
            None => seed.base_url = Some(v.get_ref().clone()),
            Some(kept) if kept != v.get_ref() => {
                conflict(sink, v.span(), "api_endpoint", kept.clone());
            }
            Some(_) => {}
        }
    }
}
