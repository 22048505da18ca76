//! `Project`: the project as loaded (manifest, registry, validated plans), the tasks a selection
//! names, and where requests go.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::selection::Selection;
use super::unit::upstream_ids;
use crate::compile::cache_key::Provider;
use crate::error::{Error, Result};
use crate::plan::task::Task;
use crate::plan::{self, Loaded};
use crate::project::manifest::{self, Manifest};
use crate::registry::Registry;
use crate::term::diagnostic::did_you_mean;
use crate::term::printer::Printer;

/// The project as loaded: manifest, registry and validated plans.
pub struct Project {
    pub manifest: Manifest,
    pub registry: Registry,
    pub loaded: Loaded,
}

impl Project {
    /// Finds and loads the project. Any error stops here, before any effect. Plan notes (how the
    /// seed's vocabulary was lowered) are kept for [`Project::print_notes`]: `wanx plan`, `explain` and a
    /// build that generates print them, a no-op does not.
    pub fn load(dir: Option<&Path>, _printer: &Printer) -> Result<Project> {
        Project::load_reusing(dir, &mut Vec::new()).map(|(project, _)| project)
    }

    /// [`Project::load`], taking the project out of `earlier` (projects this process loaded
    /// before) when its manifest and plan files are exactly those on disk now: `wanx watch` keeps
    /// the last few, so that undoing an edit loads nothing. Returns the project and, when it was
    /// taken from `earlier`, the index it had there.
    pub fn load_reusing(
        dir: Option<&Path>,
        earlier: &mut Vec<Project>,
    ) -> Result<(Project, Option<usize>)> {
        let cwd = match dir {
            Some(d) => d.to_path_buf(),
            None => std::env::current_dir().map_err(|e| Error::io("could not read", ".", e))?,
        };
        let path = Manifest::find(&cwd)?;
        let (manifest, registry) = Manifest::load(&path)?;
        let sources = plan::Sources::read(&manifest);
        if let Some(i) = earlier.iter().position(|p| {
            p.manifest.digest == manifest.digest
                && p.manifest.root == manifest.root
                && sources.loaded_as(&p.loaded)
        }) {
            return Ok((earlier.remove(i), Some(i)));
        }
        let loaded = sources.load(&manifest, &registry)?;
        let project = Project {
            manifest,
            registry,
            loaded,
        };
        Ok((project, None))
    }

    /// Prints the notes about the plan files `files` (all of them when `None`).
    pub fn print_notes(&self, printer: &Printer, files: Option<&HashSet<&Path>>) {
        for note in &self.loaded.notes {
            if files.is_none_or(|f| f.contains(note.path.as_path())) {
                printer.block(&note.render(printer.color), false);
            }
        }
    }

    /// The tasks named on the command line and every task whose images they consume, in plan order
    /// (all tasks when none are named).
    pub fn select(&self, selection: &Selection) -> Result<Vec<&Task>> {
        let by_id: HashMap<&str, &Task> = self
            .loaded
            .tasks
            .iter()
            .map(|t| (t.id.as_str(), t))
            .collect();
        if let Some(unknown) = selection
            .tasks
            .iter()
            .find(|w| !by_id.contains_key(w.as_str()))
        {
            let hint = did_you_mean(unknown, by_id.keys().copied())
                .map(|s| format!("did you mean `{s}`?"));
            return Err(Error::Usage {
                message: format!("no task named `{unknown}` in this project"),
                hint: hint.or_else(|| Some("`wanx plan` lists every task".to_owned())),
            });
        }
        if selection.tasks.is_empty() {
            return Ok(self.loaded.tasks.iter().collect());
        }
        let mut wanted: HashSet<&str> = HashSet::new();
        let mut stack: Vec<&str> = selection.tasks.iter().map(String::as_str).collect();
        while let Some(id) = stack.pop() {
            if wanted.insert(id) {
                stack.extend(upstream_ids(by_id[id]).filter(|up| by_id.contains_key(up)));
            }
        }
        Ok(self
            .loaded
            .tasks
            .iter()
            .filter(|t| wanted.contains(t.id.as_str()))
            .collect())
    }

    /// Where requests go: `DASHSCOPE_HTTP_BASE_URL` (as the official SDK reads it), `[provider]
    /// base_url`, a seed plan's `api_endpoint`, or Beijing.
    pub fn base_url(&self) -> String {
        std::env::var("DASHSCOPE_HTTP_BASE_URL")
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| self.manifest.provider.base_url.clone())
            .or_else(|| self.loaded.seed.base_url.clone())
            .unwrap_or_else(|| manifest::DEFAULT_BASE_URL.to_owned())
    }

    pub fn provider(&self, emulate: bool) -> Provider {
        if emulate {
            Provider::Emulator
        } else {
            Provider::from_base_url(&self.base_url())
        }
    }

    /// The API key variable: `[provider] api_key_env`, unless left at its default and a seed plan
    /// names one.
    pub fn api_key_env(&self) -> String {
        let configured = &self.manifest.provider.api_key_env;
        match &self.loaded.seed.api_key_env {
            Some((var, _)) if configured == "DASHSCOPE_API_KEY" => var.clone(),
            _ => configured.clone(),
        }
    }
}
