//! The format-neutral task both parsers produce ([`RawTask`]): every field optional and located by its
//! byte span, named in diagnostics through [`FieldPaths`], and filled from `[defaults]` tables.

use std::ops::Range;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::{Map, Value};
use toml::Spanned;

/// A task as written, before validation: every field optional and located by its byte span. The TOML
/// parser deserializes it directly (it is the `[[task]]` wire struct); the JSON parser builds it from the
/// seed's wire structs.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTask {
    pub id: Option<Spanned<String>>,
    pub model: Option<Spanned<String>>,
    pub prompt: Option<Spanned<RawPrompt>>,
    pub negative_prompt: Option<Spanned<String>>,
    pub negative: Option<Spanned<Vec<Spanned<String>>>>,
    pub size: Option<Spanned<String>>,
    pub n: Option<Spanned<i64>>,
    /// `pick = 3` or `pick = [1, 3]` (TOML plans only).
    pub pick: Option<Spanned<RawPick>>,
    pub seed: Option<Spanned<i64>>,
    pub style: Option<Spanned<String>>,
    pub prompt_extend: Option<Spanned<bool>>,
    pub watermark: Option<Spanned<bool>>,
    pub ref_img: Option<Spanned<String>>,
    pub ref_strength: Option<Spanned<f64>>,
    pub ref_mode: Option<Spanned<String>>,
    pub composer: Option<Spanned<RawComposer>>,
    pub text: Option<Spanned<RawText>>,
    pub edit: Option<Spanned<String>>,
    pub function: Option<Spanned<String>>,
    pub input: Option<Spanned<String>>,
    pub extend: Option<Spanned<RawExtend>>,
    pub style_reference: Option<Spanned<String>>,
    pub mask: Option<Spanned<String>>,
    pub strength: Option<Spanned<f64>>,
    pub out_dir: Option<Spanned<String>>,
    pub filename: Option<Spanned<String>>,
    pub extra_input: Option<Spanned<Map<String, Value>>>,
    pub extra_parameters: Option<Spanned<Map<String, Value>>>,
    /// The task as a whole (its table or object), for problems about missing fields.
    #[serde(skip)]
    pub at: Range<usize>,
    /// How to name each field in diagnostics.
    #[serde(skip)]
    pub paths: FieldPaths,
    /// Fields that could not be read (already reported): not reported again as missing.
    #[serde(skip)]
    pub poisoned: Vec<String>,
    /// The task could not be read at all (already reported): its id is registered, nothing is checked.
    #[serde(skip)]
    pub broken: bool,
    /// Fields taken from `wanx.toml`'s `[defaults]` (see [`RawTask::inherit_project`]).
    #[serde(skip)]
    pub from_project: Vec<&'static str>,
}

/// `pick`: one candidate or a list of them.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawPick {
    One(i64),
    Many(Vec<i64>),
}

/// `prompt`: a string, or the seed's structured template as a table.
#[derive(Clone, Debug)]
pub(crate) enum RawPrompt {
    Text(String),
    Template(RawTemplate),
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTemplate {
    pub subject: Option<Spanned<String>>,
    pub details: Option<String>,
    pub environment: Option<String>,
    pub lighting: Option<String>,
    pub style: Option<String>,
    pub quality: Option<String>,
}

impl<'de> Deserialize<'de> for RawPrompt {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RawPrompt, D::Error> {
        struct PromptVisitor;
        impl<'de> Visitor<'de> for PromptVisitor {
            type Value = RawPrompt;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string, or a table with `subject` and optionally `details`, `environment`, `lighting`, `style`, `quality`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawPrompt, E> {
                Ok(RawPrompt::Text(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<RawPrompt, E> {
                Ok(RawPrompt::Text(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawPrompt, A::Error> {
                RawTemplate::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawPrompt::Template)
            }
        }
        d.deserialize_any(PromptVisitor)
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawComposer {
    pub color_palette: Option<Vec<Spanned<String>>>,
    pub layout: Option<Spanned<String>>,
    pub material: Option<Spanned<String>>,
    pub semantic: Option<Spanned<String>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawText {
    pub title: Option<String>,
    pub subtitle: Option<String>,
    pub text_position: Option<Spanned<String>>,
    pub font_style: Option<Spanned<String>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExtend {
    pub direction: Option<Spanned<String>>,
    pub ratio: Option<Spanned<f64>>,
}

/// How diagnostics name a task's fields: `task[2].size` or `defaults.size` in TOML,
/// `batches[0].tasks[2].parameters.size` in the seed's JSON.
#[derive(Clone, Debug, Default)]
pub(crate) enum FieldPaths {
    #[default]
    Plain,
    Toml {
        /// `None` for `[defaults]`.
        task: Option<usize>,
        /// Fields taken from `[defaults]`.
        inherited: Vec<&'static str>,
    },
    Json {
        /// `batches[0].tasks[2]`.
        base: String,
        /// Field name → the seed's full dotted path, where it differs from `base.name`.
        map: Vec<(&'static str, String)>,
    },
}

impl FieldPaths {
    pub fn path(&self, name: &str) -> String {
        let top = name.split(['.', '[']).next().unwrap_or(name);
        match self {
            FieldPaths::Plain => name.to_owned(),
            FieldPaths::Toml { task, inherited } => match task {
                Some(_) if inherited.contains(&top) => format!("defaults.{name}"),
                Some(i) => format!("task[{i}].{name}"),
                None => format!("defaults.{name}"),
            },
            FieldPaths::Json { base, map } => match map.iter().find(|(n, _)| *n == top) {
                Some((_, full)) => format!("{full}{}", &name[top.len()..]),
                None => format!("{base}.{name}"),
            },
        }
    }

    pub(crate) fn inherited(&self, name: &str) -> bool {
        matches!(self, FieldPaths::Toml { inherited, .. } if inherited.contains(&name))
    }
}

/// Calls `$merge!` with every task field a `[defaults]` table can give (the plan's and the
/// project's alike), so the two kinds of inheritance cannot drift apart.
macro_rules! inheritable_fields {
    ($merge:ident) => {
        $merge!(
            model,
            prompt,
            negative_prompt,
            negative,
            size,
            n,
            pick,
            seed,
            style,
            prompt_extend,
            watermark,
            ref_img,
            ref_strength,
            ref_mode,
            composer,
            text,
            edit,
            function,
            input,
            extend,
            style_reference,
            mask,
            strength,
            out_dir,
            filename,
            extra_input,
            extra_parameters
        )
    };
}

impl RawTask {
    /// Fills every field the task leaves out from `[defaults]` (tables replace as a whole).
    pub fn inherit(&mut self, defaults: &RawTask) {
        let mut inherited = Vec::new();
        macro_rules! merge {
            ($($f:ident),*) => {$(
                if self.$f.is_none() && defaults.$f.is_some() {
                    self.$f.clone_from(&defaults.$f);
                    inherited.push(stringify!($f));
                }
            )*};
        }
        inheritable_fields!(merge);
        if let FieldPaths::Toml {
            inherited: list, ..
        } = &mut self.paths
        {
            *list = inherited;
        }
    }

    /// Fills what the task and its plan's `[defaults]` leave out from `wanx.toml`'s `[defaults]`.
    /// The values are located at the task (their spans in `wanx.toml` mean nothing in the plan file).
    pub fn inherit_project(&mut self, defaults: &RawTask) {
        let at = self.at.clone();
        macro_rules! merge {
            ($($f:ident),*) => {$(
                if self.$f.is_none() && let Some(v) = &defaults.$f {
                    self.$f = Some(Spanned::new(at.clone(), v.get_ref().clone()));
                    self.from_project.push(stringify!($f));
                }
            )*};
        }
        inheritable_fields!(merge);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_named_as_the_user_wrote_them() {
        let toml = FieldPaths::Toml {
            task: Some(2),
            inherited: vec!["size"],
        };
        assert_eq!(toml.path("prompt.subject"), "task[2].prompt.subject");
        assert_eq!(toml.path("size"), "defaults.size");
        assert!(toml.inherited("size") && !toml.inherited("n"));
        let json = FieldPaths::Json {
            base: "batches[0].tasks[1]".to_owned(),
            map: vec![("size", "batches[0].tasks[1].parameters.size".to_owned())],
        };
        assert_eq!(json.path("size"), "batches[0].tasks[1].parameters.size");
        assert_eq!(json.path("id"), "batches[0].tasks[1].id");
    }

    #[test]
    fn a_task_keeps_its_own_fields_over_the_defaults() {
        let mut task = RawTask {
            n: Some(Spanned::new(0..1, 2)),
            paths: FieldPaths::Toml {
                task: Some(0),
                inherited: Vec::new(),
            },
            ..RawTask::default()
        };
        let defaults = RawTask {
            n: Some(Spanned::new(5..6, 4)),
            seed: Some(Spanned::new(7..8, 42)),
            ..RawTask::default()
        };
        task.inherit(&defaults);
        assert_eq!(task.n.as_ref().map(|n| *n.get_ref()), Some(2));
        assert_eq!(task.seed.as_ref().map(|s| *s.get_ref()), Some(42));
        assert!(task.paths.inherited("seed") && !task.paths.inherited("n"));
    }
}
