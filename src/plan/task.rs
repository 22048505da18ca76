//! `Task`: one image task after loading and validation, in either plan format. It keeps the seed's
//! vocabulary (style presets, composer, Qwen text fields, edit types); `compile` lowers it to the wire.

use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::size::Size;

/// Where a task was declared: shown in `wanx plan`, `wanx explain` and errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The plan file, relative to the project root.
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

/// A validated task. Every field the loader accepted is here; defaults from `[defaults]` already applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub id: String,
    pub origin: Origin,
    /// The model as the registry knows it (a real id, or a `[models.NAME]` entry name).
    pub model: String,
    pub prompt: Prompt,
    pub negative_prompt: Option<String>,
    /// Names of seed negative-prompt presets (`general`, `people`, `scene`, `style`).
    pub negative_presets: Vec<String>,
    /// The size to send: already moved to the nearest listed size where the model lists sizes.
    /// `None` only for models whose size follows the input image.
    pub size: Option<Size>,
    /// Images to generate; always explicit on the wire.
    pub n: u32,
    /// The candidates (1-based, among the `n` generated) written as the task's outputs; `None`
    /// writes them all. Not part of the request: changing it restores from the pool.
    pub pick: Option<Vec<u32>>,
    pub seed: Option<u32>,
    /// A seed style preset (`watercolor`, `cyberpunk`, …) or a native wanx-v1 style (`<watercolor>`).
    pub style: Option<String>,
    pub prompt_extend: Option<bool>,
    pub watermark: Option<bool>,
    pub reference: Option<Reference>,
    pub composer: Option<Composer>,
    pub text: Option<QwenText>,
    pub edit: Option<Edit>,
    /// Passed verbatim into the wire `input` object (the escape hatch for new API fields).
    pub extra_input: Map<String, Value>,
    /// Passed verbatim into the wire `parameters` object.
    pub extra_parameters: Map<String, Value>,
    pub output: OutputSpec,
}

impl Task {
    /// How many outputs the task writes: the picked candidates, or all `n`.
    pub fn written(&self) -> u32 {
        self.pick.as_ref().map_or(self.n, |p| p.len() as u32)
    }

    /// Every image input of the task: its reference image and its edit's input, style reference and
    /// mask.
    pub fn inputs(&self) -> impl Iterator<Item = &InputRef> {
        let reference = self.reference.as_ref().map(|r| &r.image);
        let edit = self.edit.as_ref();
        reference
            .into_iter()
            .chain(edit.map(|e| &e.input))
            .chain(edit.and_then(|e| e.style_reference.as_ref()))
            .chain(edit.and_then(|e| e.mask.as_ref()))
    }
}

/// The prompt: plain text, or the seed's structured template
/// `[subject] + [details] + [environment] + [lighting] + [style] + [quality]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prompt {
    Text(String),
    Template(PromptTemplate),
}

impl Prompt {
    /// The prompt's text in order: the text itself, or the template's fields that are set.
    pub fn parts(&self) -> Vec<&str> {
        match self {
            Prompt::Text(text) => vec![text.as_str()],
            Prompt::Template(t) => [
                Some(&t.subject),
                t.details.as_ref(),
                t.environment.as_ref(),
                t.lighting.as_ref(),
                t.style.as_ref(),
                t.quality.as_ref(),
            ]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PromptTemplate {
    pub subject: String,
    pub details: Option<String>,
    pub environment: Option<String>,
    pub lighting: Option<String>,
    pub style: Option<String>,
    pub quality: Option<String>,
}

/// `ref_img` with its strength and mode (wanx-v1).
#[derive(Clone, Debug, PartialEq)]
pub struct Reference {
    /// An input reference: see [`InputRef`].
    pub image: InputRef,
    pub strength: Option<f64>,
    pub mode: Option<RefMode>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefMode {
    Repaint,
    Refonly,
}

impl RefMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RefMode::Repaint => "repaint",
            RefMode::Refonly => "refonly",
        }
    }
}

/// The seed's composer table. Values are validated names from the seed's lists (layouts, materials);
/// `semantic` is free text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Composer {
    /// `#RRGGBB`, upper-cased.
    pub color_palette: Vec<String>,
    pub layout: Option<String>,
    pub material: Option<String>,
    pub semantic: Option<String>,
}

/// The seed's Qwen-Image text table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QwenText {
    pub title: Option<String>,
    pub subtitle: Option<String>,
    /// `top`, `center`, `bottom`, `custom`.
    pub text_position: Option<String>,
    /// `bold`, `elegant`, `handwritten`, `modern`.
    pub font_style: Option<String>,
}

/// An image input: another task's output, a local file, or a URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputRef {
    /// `"TASK_ID"` (its only image) or `"TASK_ID#K"` (its K-th image, 1-based).
    Task { id: String, index: Option<u32> },
    /// A local file, relative to the project root (resolved from the plan file's directory).
    File(PathBuf),
    /// An `http(s)://`, `oss://` or `data:` URL, passed through.
    Url(String),
}

impl std::fmt::Display for InputRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputRef::Task { id, index: None } => write!(f, "task `{id}`"),
            InputRef::Task { id, index: Some(k) } => write!(f, "task `{id}`, image {k}"),
            InputRef::File(path) => write!(f, "file `{}`", path.display()),
            InputRef::Url(url) => write!(f, "`{url}`"),
        }
    }
}

/// The seed's image-edit vocabulary, plus the real API's functions.
#[derive(Clone, Debug, PartialEq)]
pub struct Edit {
    pub kind: EditKind,
    pub input: InputRef,
    pub extend: Option<Extend>,
    pub style_reference: Option<InputRef>,
    pub mask: Option<InputRef>,
    /// Edit strength in [0, 1] (`strength` on the wire).
    pub strength: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EditKind {
    Extend,
    RemoveWatermark,
    StyleTransfer,
    Repair,
    Beautify,
    /// A real `input.function` named directly (`super_resolution`, `colorization`, …).
    Function(String),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Extend {
    pub direction: Direction,
    /// 1.0 to 2.0: the side's scale.
    pub ratio: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Top,
    Bottom,
    Left,
    Right,
    /// All four sides.
    All,
}

/// Where a task's images go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputSpec {
    /// Directory relative to the project root, `/`-separated, no `..`.
    pub dir: String,
    /// File name pattern with `{id}`/`{task_id}`, `{index}`, `{n}`, `{key}`, `{timestamp}`. When `n > 1`
    /// the loader has already made sure it contains `{index}` (adding `_{index}` with a note).
    pub filename: String,
}
