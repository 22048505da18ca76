//! `Manifest`: the project's `wanx.toml`, found by walking up from the working directory like
//! `Cargo.toml`. Every field has a default, so an empty file is a valid project.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::plan::raw::RawTask;
use crate::registry::{ModelOverride, Registry};
use crate::term::diagnostic::{Diagnostic, did_you_mean_hint};

pub const FILE_NAME: &str = "wanx.toml";
/// The Beijing endpoint, the SDK's default.
pub const DEFAULT_BASE_URL: &str = "https://dashscope.aliyuncs.com/api/v1";

/// The loaded manifest with its location.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The directory holding `wanx.toml`: the project root. Nothing is written outside it.
    pub root: PathBuf,
    pub project: ProjectSection,
    pub provider: ProviderSection,
    pub build: BuildSection,
    pub prices: BTreeMap<String, f64>,
    pub models: BTreeMap<String, ModelOverride>,
    /// `[defaults]`: task fields for every plan file (a plan's own `[defaults]` and the task win).
    pub(crate) defaults: Option<RawTask>,
    /// `[cache]`: how big the local cache may grow.
    pub cache: CacheSection,
    /// blake3 of `wanx.toml` as read: everything above, and the registry it extends, follow from it.
    pub digest: [u8; 32],
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectSection {
    /// Globs, relative to the root, that select plan files (`.toml` in wanx's format, `.json` in the seed's).
    pub plans: Vec<String>,
    /// Default output directory, relative to the root.
    pub out_dir: String,
    /// Default file name pattern.
    pub filename: String,
}

impl Default for ProjectSection {
    fn default() -> Self {
        ProjectSection {
            plans: vec!["plans/**/*.toml".to_owned(), "plans/**/*.json".to_owned()],
            out_dir: "generated".to_owned(),
            filename: "{id}.png".to_owned(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderSection {
    /// `https://dashscope.aliyuncs.com/api/v1` (Beijing), `https://dashscope-intl.aliyuncs.com/api/v1`
    /// (Singapore), `https://dashscope-us.aliyuncs.com/api/v1` (US), or a workspace domain.
    pub base_url: Option<String>,
    /// The environment variable holding the API key.
    pub api_key_env: String,
    /// Sent as `X-DashScope-WorkSpace` when set.
    pub workspace: Option<String>,
    /// Seconds an API call (submit, task query, task list) may take before it is abandoned.
    pub request_timeout: Option<f64>,
}

impl Default for ProviderSection {
    fn default() -> Self {
        ProviderSection {
            base_url: None,
            api_key_env: "DASHSCOPE_API_KEY".to_owned(),
            workspace: None,
            request_timeout: None,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BuildSection {
    /// Tasks in flight at once across all models (each model also keeps its own quota).
    pub jobs: Option<usize>,
    /// CNY: refuse to start a build whose generations would cost more.
    pub max_spend: Option<f64>,
    /// Seconds a task may take from submission to downloaded result.
    pub task_timeout: Option<f64>,
    /// Seconds between the first task queries (the schedule then backs off).
    pub poll_interval: Option<f64>,
}

/// `[cache]`: the local cache's bound and the remote cache shared by a team or a CI fleet
/// (see `remote_cache`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSection {
    /// The most the cache (`.wanx/blobs`) may hold, e.g. `"5GB"`, `"500MB"`; default 5 GB. Builds evict
    /// the blobs used least recently beyond it, never one `wanx.lock` references.
    pub max_size: Option<String>,
    /// `http://host:port/prefix` of a Bazel-protocol HTTP cache (`--remote-cache`,
    /// `WANX_REMOTE_CACHE` override it).
    pub remote: Option<String>,
    /// Whether generations are uploaded (default true; `--remote-cache-read-only` turns it off).
    pub remote_upload: Option<bool>,
    /// The environment variable holding the remote cache's credentials: `user:password` for basic
    /// auth, anything else is a bearer token.
    pub remote_credentials_env: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Wire {
    project: ProjectSection,
    provider: ProviderSection,
    build: BuildSection,
    prices: BTreeMap<String, f64>,
    models: BTreeMap<String, ModelOverride>,
    defaults: Option<RawTask>,
    cache: CacheSection,
}

const SECTIONS: [&str; 7] = [
    "project", "provider", "build", "prices", "models", "defaults", "cache",
];

impl Manifest {
    /// Finds and loads the manifest from `dir` (or the working directory); plans are not loaded.
    pub fn in_dir(dir: Option<&Path>) -> Result<Manifest> {
        let cwd = match dir {
            Some(d) => d.to_path_buf(),
            None => std::env::current_dir().map_err(|e| Error::io("could not read", ".", e))?,
        };
        Ok(Manifest::load(&Manifest::find(&cwd)?)?.0)
    }

    /// Finds `wanx.toml` in `start` or its parents.
    pub fn find(start: &Path) -> Result<PathBuf> {
        if !start.is_dir() {
            let what = if start.exists() {
                "is not a directory"
            } else {
                "does not exist"
            };
            return Err(Error::Usage {
                message: format!("the directory `{}` {what}", start.display()),
                hint: Some(
                    "`-C DIR` names the project directory (or one inside it) to run in".to_owned(),
                ),
            });
        }
        start
            .ancestors()
            .map(|dir| dir.join(FILE_NAME))
            .find(|p| p.is_file())
            .ok_or_else(|| Error::ManifestNotFound {
                cwd: start.to_path_buf(),
            })
    }

    /// Reads and parses the manifest at `path`, returning it with the registry it extends.
    pub fn load(path: &Path) -> Result<(Manifest, Registry)> {
        let source =
            std::fs::read_to_string(path).map_err(|e| Error::io("could not read", path, e))?;
        let root = path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let root =
            std::path::absolute(&root).map_err(|e| Error::io("could not resolve", &root, e))?;
        let wire: Wire = toml::from_str(&source).map_err(|e| {
            let mut d = Diagnostic::error(FILE_NAME, e.message().to_owned());
            if let Some(span) = e.span() {
                d = d.at(&source, span);
            }
            if let Some(hint) = unknown_field_hint(e.message()) {
                d = d.hint(hint);
            }
            Error::Invalid {
                count: 1,
                diagnostics: vec![d],
            }
        })?;
        let manifest = Manifest {
            root,
            project: wire.project,
            provider: wire.provider,
            build: wire.build,
            prices: wire.prices,
            models: wire.models,
            defaults: wire.defaults,
            cache: wire.cache,
            digest: *blake3::hash(source.as_bytes()).as_bytes(),
        };
        let mut registry = Registry::builtin();
        let mut diagnostics = Vec::new();
        if let Err(errors) = registry.extend(&manifest.prices, &manifest.models) {
            for (field, message) in errors {
                let mut d = Diagnostic::error(FILE_NAME, message).field(field.clone());
                let last = field.rsplit('.').next().unwrap_or(&field);
                if let Some(pos) = source.find(last) {
                    d = d.at(&source, pos..pos + last.len());
                }
                diagnostics.push(d);
            }
        }
        if let Some(budget) = manifest.build.max_spend
            && budget < 0.0
        {
            diagnostics.push(
                Diagnostic::error(FILE_NAME, "`max_spend` cannot be negative")
                    .field("build.max_spend"),
            );
        }
        if let Some(id) = manifest.defaults.as_ref().and_then(|d| d.id.as_ref()) {
            diagnostics.push(
                Diagnostic::error(FILE_NAME, "`id` cannot be set in `[defaults]`")
                    .field("defaults.id")
                    .at(&source, id.span()),
            );
        }
        if let Some(text) = &manifest.cache.max_size
            && let Err(message) = crate::project::byte_size::parse_size(text)
        {
            diagnostics.push(
                Diagnostic::error(FILE_NAME, message)
                    .field("cache.max_size")
                    .hint("write a size such as `\"5GB\"`, `\"500MB\"` or `\"0\"` (keep only what `wanx.lock` needs)"),
            );
        }
        if !diagnostics.is_empty() {
            return Err(Error::Invalid {
                count: diagnostics.len(),
                diagnostics,
            });
        }
        Ok((manifest, registry))
    }

    /// The directory for wanx's own state.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(".wanx")
    }

    pub fn lock_path(&self) -> PathBuf {
        self.root.join("wanx.lock")
    }

    /// `[cache] max_size` in bytes (5 GB, ccache's default, when unset).
    pub fn cache_max_size(&self) -> u64 {
        self.cache
            .max_size
            .as_deref()
            .and_then(|s| crate::project::byte_size::parse_size(s).ok())
            .unwrap_or(crate::project::byte_size::DEFAULT_MAX_SIZE)
    }
}

/// toml's unknown-field message lists the expected names; add a did-you-mean from it.
pub fn unknown_field_hint(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, expected) = rest.split_once('`')?;
    let names: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let names = if names.is_empty() {
        SECTIONS.to_vec()
    } else {
        names
    };
    Some(did_you_mean_hint(&names, field))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_manifest_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "").unwrap();
        let (m, _) = Manifest::load(&dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(m.provider.api_key_env, "DASHSCOPE_API_KEY");
        assert_eq!(m.project.out_dir, "generated");
    }

    #[test]
    fn found_by_walking_up() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "").unwrap();
        let deep = dir.path().join("a/b");
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(Manifest::find(&deep).unwrap(), dir.path().join(FILE_NAME));
    }

    #[test]
    fn unknown_field_names_line_and_suggests() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE_NAME),
            "[build]\njobs = 2\nmax_spnd = 3\n",
        )
        .unwrap();
        let Err(Error::Invalid { diagnostics, .. }) = Manifest::load(&dir.path().join(FILE_NAME))
        else {
            panic!()
        };
        assert_eq!(diagnostics[0].line, 3);
        assert_eq!(
            diagnostics[0].hint.as_deref(),
            Some("did you mean `max_spend`?")
        );
    }
}
