//! `compile`: lowers a validated [`Task`] to the exact request DashScope will receive. The seed's
//! vocabulary that the real API lacks becomes prompt text or real parameters according to one table,
//! [`LOWERING`], which `wanx explain` prints.

pub mod cache_key;

use serde_json::{Map, Value, json};

use crate::money::Money;
use crate::plan::task::{Direction, EditKind, InputRef, Prompt, Task};
use crate::plan::vocabulary::{self, LAYOUTS, MATERIALS};
use crate::registry::{Family, ModelSpec, Registry};
use crate::size::Size;

/// One row of the lowering table: a piece of seed vocabulary, the models it applies to, and what it
/// becomes on the wire.
pub struct Rule {
    pub seed: &'static str,
    pub models: &'static str,
    pub wire: &'static str,
}

/// How the seed's vocabulary reaches the real API. The code below implements exactly these rows.
pub const LOWERING: &[Rule] = &[
    Rule {
        seed: "model alias (wanx2.2-t2i-flash, wanx2.5-image-edit, …)",
        models: "all",
        wire: "the real id (wan2.2-t2i-flash, wanx2.1-imageedit, …)",
    },
    Rule {
        seed: "prompt template {subject, details, environment, lighting, style, quality}",
        models: "all",
        wire: "input.prompt: the parts joined with \", \" in that order",
    },
    Rule {
        seed: "n (seed default 1)",
        models: "all",
        wire: "parameters.n, always sent (the API defaults to 4 and bills each)",
    },
    Rule {
        seed: "size",
        models: "all but edit",
        wire: "parameters.size \"W*H\", always sent (listed-size models: the nearest listed size)",
    },
    Rule {
        seed: "style preset (watercolor, anime, …)",
        models: "wanx-v1",
        wire: "parameters.style \"<watercolor>\" where wanx-v1 has one; otherwise prompt text",
    },
    Rule {
        seed: "style preset",
        models: "wan2.x, wanx2.x, qwen-image",
        wire: "the preset's words appended to input.prompt (these models have no style parameter)",
    },
    Rule {
        seed: "negative = [presets]",
        models: "all",
        wire: "the preset lists appended to input.negative_prompt",
    },
    Rule {
        seed: "composer.color_palette",
        models: "all",
        wire: "prompt text \"color palette: #00F5FF, #FF1493\"",
    },
    Rule {
        seed: "composer.layout / material / semantic",
        models: "all",
        wire: "prompt text from the seed's descriptions (\"rule of thirds composition, …\")",
    },
    Rule {
        seed: "text {title, subtitle, text_position, font_style}",
        models: "all",
        wire: "prompt text: title \"…\", subtitle \"…\", text at the top, bold font",
    },
    Rule {
        seed: "ref_img / ref_strength / ref_mode",
        models: "wanx-v1",
        wire: "input.ref_img, parameters.ref_strength, parameters.ref_mode",
    },
    Rule {
        seed: "edit = extend {direction, ratio}",
        models: "wanx2.1-imageedit",
        wire: "input.function \"expand\", parameters.{top,bottom,left,right}_scale = ratio on that side (all four for `all`)",
    },
    Rule {
        seed: "edit = remove_watermark",
        models: "wanx2.1-imageedit",
        wire: "input.function \"remove_watermark\"",
    },
    Rule {
        seed: "edit = style_transfer with style_reference",
        models: "wan2.5-i2i-preview",
        wire: "input.images [input, reference], prompt asks for the reference's style",
    },
    Rule {
        seed: "edit = style_transfer without reference",
        models: "wanx2.1-imageedit",
        wire: "input.function \"stylization_all\"",
    },
    Rule {
        seed: "edit = repair",
        models: "wanx2.1-imageedit",
        wire: "input.function \"description_edit\" with a repair instruction prepended to the prompt",
    },
    Rule {
        seed: "edit = beautify",
        models: "wanx2.1-imageedit",
        wire: "input.function \"super_resolution\", parameters.upscale_factor 1 (enhance without enlarging)",
    },
    Rule {
        seed: "function = NAME",
        models: "wanx2.1-imageedit",
        wire: "input.function NAME as written",
    },
    Rule {
        seed: "input / style_reference / mask",
        models: "edit models",
        wire: "input.base_image_url / input.images / input.mask_image_url / input.ref_img: a URL as written; a local file or another task's image inline as a data URI on edit models, through temporary storage (oss://, with X-DashScope-OssResourceResolve) otherwise",
    },
    Rule {
        seed: "extra_input / extra_parameters",
        models: "all",
        wire: "merged verbatim into input / parameters (last word)",
    },
];

/// The request for one task, exactly as it will be sent (apart from local media, see [`MediaSlot`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Compiled {
    /// Path under the base URL.
    pub endpoint: String,
    /// The real model id.
    pub model: String,
    /// Headers beyond Authorization and Content-Type.
    pub headers: Vec<(&'static str, String)>,
    /// `{"model", "input", "parameters"}`.
    pub body: Value,
    pub n: u32,
    pub price: Money,
    pub size: Option<Size>,
    /// Inputs that are not URLs: their place in `body` and what must be put there.
    pub media: Vec<MediaSlot>,
}

/// A place in the body (a JSON pointer) that receives a local file or another task's output.
#[derive(Clone, Debug, PartialEq)]
pub struct MediaSlot {
    pub pointer: String,
    pub source: InputRef,
}

impl Compiled {
    /// What a generation of this request costs.
    pub fn cost(&self) -> Money {
        self.price.times(self.n)
    }
}

/// What the planner needs of a task whose key it already knows (src/planner/key_cache.rs): the endpoint,
/// model, price, size and image count of [`compile`]'s result, without lowering the request (`body`
/// is `Null`, no headers, no media). A task that is not fresh is compiled in full before anything
/// is sent.
pub fn header(task: &Task, registry: &Registry) -> Compiled {
    let spec = registry
        .get(&task.model)
        .unwrap_or_else(|| panic!("model `{}` was validated by the loader", task.model));
    Compiled {
        endpoint: spec.endpoint.clone(),
        model: spec.id.clone(),
        headers: Vec::new(),
        body: Value::Null,
        n: task.n,
        price: spec.price,
        size: task.size,
        media: Vec::new(),
    }
}

/// Compiles `task`. The registry has already validated the model; an unknown one here is a bug.
pub fn compile(task: &Task, registry: &Registry) -> Compiled {
    let spec = registry
        .get(&task.model)
        .unwrap_or_else(|| panic!("model `{}` was validated by the loader", task.model));
    let mut input = Map::new();
    let mut params = Map::new();
    let mut media = Vec::new();

    let mut prompt = prompt_text(task, spec);
    if let Some(edit) = &task.edit {
        lower_edit(
            task,
            edit,
            spec,
            &mut prompt,
            &mut input,
            &mut params,
            &mut media,
        );
    }
    input.insert("prompt".into(), Value::String(prompt));
    if let Some(negative) = negative_prompt(task) {
        input.insert("negative_prompt".into(), Value::String(negative));
    }
    if spec.family == Family::WanxV1 {
        if let Some(reference) = &task.reference {
            put_media(&mut input, &mut media, "/input/ref_img", &reference.image);
            if let Some(s) = reference.strength {
                params.insert("ref_strength".into(), json!(s));
            }
            if let Some(m) = reference.mode {
                params.insert("ref_mode".into(), json!(m.as_str()));
            }
        }
        if let Some(native) = task.style.as_deref().and_then(native_v1_style) {
            params.insert("style".into(), json!(native));
        }
    }
    if let Some(size) = task.size {
        params.insert("size".into(), json!(size.to_string()));
    }
    params.insert("n".into(), json!(task.n));
    if let Some(seed) = task.seed {
        params.insert("seed".into(), json!(seed));
    }
    if let Some(v) = task.prompt_extend {
        params.insert("prompt_extend".into(), json!(v));
    }
    if let Some(v) = task.watermark {
        params.insert("watermark".into(), json!(v));
    }
    for (k, v) in &task.extra_input {
        input.insert(k.clone(), v.clone());
    }
    for (k, v) in &task.extra_parameters {
        params.insert(k.clone(), v.clone());
    }
    let mut headers = vec![("X-DashScope-Async", "enable".to_owned())];
    if input_mentions_oss(&input) {
        headers.push(("X-DashScope-OssResourceResolve", "enable".to_owned()));
    }
    Compiled {
        endpoint: spec.endpoint.clone(),
        model: spec.id.clone(),
        headers,
        body: json!({ "model": spec.id, "input": input, "parameters": params }),
        n: task.n,
        price: spec.price,
        size: task.size,
        media,
    }
}

/// The native wanx-v1 value for a seed preset or an already native `<style>`.
fn native_v1_style(style: &str) -> Option<&'static str> {
    if let Some(native) = vocabulary::WANX_V1_STYLES.iter().find(|s| **s == style) {
        return Some(native);
    }
    vocabulary::style_preset(style).and_then(|p| p.wanx_v1)
}

/// The prompt with every seed-only field lowered into words.
fn prompt_text(task: &Task, spec: &ModelSpec) -> String {
    let mut parts: Vec<String> = task
        .prompt
        .parts()
        .into_iter()
        .map(|s| s.trim().to_owned())
        .collect();
    parts.retain(|p| !p.is_empty());
    if let Some(style) = task.style.as_deref() {
        let native = spec.family == Family::WanxV1 && native_v1_style(style).is_some();
        if !native && let Some(preset) = vocabulary::style_preset(style) {
            parts.push(preset.prompt.to_owned());
        }
    }
    if let Some(c) = &task.composer {
        if !c.color_palette.is_empty() {
            parts.push(format!("color palette: {}", c.color_palette.join(", ")));
        }
        if let Some(text) = c
            .layout
            .as_deref()
            .and_then(|l| vocabulary::lookup(&LAYOUTS, l))
        {
            parts.push(text.to_owned());
        }
        if let Some(text) = c
            .material
            .as_deref()
            .and_then(|m| vocabulary::lookup(&MATERIALS, m))
        {
            parts.push(text.to_owned());
        }
        if let Some(semantic) = &c.semantic {
            parts.push(format!("theme: {}", semantic.replace('_', " ")));
        }
    }
    if let Some(t) = &task.text {
        if let Some(title) = &t.title {
            parts.push(format!("title text \"{title}\""));
        }
        if let Some(subtitle) = &t.subtitle {
            parts.push(format!("subtitle text \"{subtitle}\""));
        }
        match t.text_position.as_deref() {
            Some("custom") | None => {}
            Some(pos) => parts.push(format!("text placed at the {pos}")),
        }
        if let Some(font) = &t.font_style {
            parts.push(format!("{font} font"));
        }
    }
    parts.join(", ")
}

fn negative_prompt(task: &Task) -> Option<String> {
    let mut parts: Vec<&str> = task
        .negative_prompt
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    parts.extend(
        task.negative_presets
            .iter()
            .filter_map(|p| vocabulary::negative_preset(p)),
    );
    if parts.is_empty() {
        None
    } else {
        Some(parts.join(", "))
    }
}

fn lower_edit(
    task: &Task,
    edit: &crate::plan::task::Edit,
    spec: &ModelSpec,
    prompt: &mut String,
    input: &mut Map<String, Value>,
    params: &mut Map<String, Value>,
    media: &mut Vec<MediaSlot>,
) {
    if spec.family == Family::Wan25I2i {
        let mut images = vec![edit.input.clone()];
        if let Some(reference) = &edit.style_reference {
            images.push(reference.clone());
            if task_prompt_is_empty(task) {
                "Restyle the first image in the style of the second image".clone_into(prompt);
            }
        }
        input.insert(
            "images".into(),
            Value::Array(vec![Value::Null; images.len()]),
        );
        for (i, image) in images.iter().enumerate() {
            put_media(input, media, &format!("/input/images/{i}"), image);
        }
        return;
    }
    let (function, default_prompt) = match &edit.kind {
        EditKind::Extend => ("expand", "Extend the image naturally beyond its borders"),
        EditKind::RemoveWatermark => (
            "remove_watermark",
            "Remove the watermark and any overlaid text",
        ),
        EditKind::StyleTransfer => ("stylization_all", "Restyle the image"),
        EditKind::Repair => (
            "description_edit",
            "Repair the damaged areas: remove scratches, stains and noise",
        ),
        EditKind::Beautify => ("super_resolution", "Enhance colours and details"),
        EditKind::Function(name) => (name.as_str(), "Edit the image"),
    };
    if task_prompt_is_empty(task) {
        default_prompt.clone_into(prompt);
    } else if edit.kind == EditKind::Repair {
        *prompt = format!("{default_prompt}. {prompt}");
    }
    input.insert("function".into(), json!(function));
    put_media(input, media, "/input/base_image_url", &edit.input);
    if let Some(mask) = &edit.mask {
        put_media(input, media, "/input/mask_image_url", mask);
    }
    if let Some(extend) = edit.extend {
        let sides: &[&str] = match extend.direction {
            Direction::Top => &["top_scale"],
            Direction::Bottom => &["bottom_scale"],
            Direction::Left => &["left_scale"],
            Direction::Right => &["right_scale"],
            Direction::All => &["top_scale", "bottom_scale", "left_scale", "right_scale"],
        };
        for side in sides {
            params.insert((*side).to_owned(), json!(extend.ratio));
        }
    }
    if edit.kind == EditKind::Beautify {
        params.insert("upscale_factor".into(), json!(1));
    }
    if let Some(strength) = edit.strength {
        params.insert("strength".into(), json!(strength));
    }
}

fn task_prompt_is_empty(task: &Task) -> bool {
    match &task.prompt {
        Prompt::Text(t) => t.trim().is_empty(),
        Prompt::Template(t) => t.subject.trim().is_empty(),
    }
}

/// Puts a URL input in place, or records a slot for a local file or task output.
fn put_media(
    input: &mut Map<String, Value>,
    media: &mut Vec<MediaSlot>,
    pointer: &str,
    source: &InputRef,
) {
    let value = match source {
        InputRef::Url(url) => Value::String(url.clone()),
        other => {
            media.push(MediaSlot {
                pointer: pointer.to_owned(),
                source: other.clone(),
            });
            Value::Null
        }
    };
    let mut parts = pointer.trim_start_matches("/input/").split('/');
    let field = parts.next().unwrap_or_default();
    match parts.next().and_then(|i| i.parse::<usize>().ok()) {
        Some(index) => {
            if let Some(Value::Array(items)) = input.get_mut(field)
                && index < items.len()
            {
                items[index] = value;
            }
        }
        None => {
            input.insert(field.to_owned(), value);
        }
    }
}

fn input_mentions_oss(input: &Map<String, Value>) -> bool {
    input.values().any(|v| match v {
        Value::String(s) => s.starts_with("oss://"),
        Value::Array(items) => items
            .iter()
            .any(|i| i.as_str().is_some_and(|s| s.starts_with("oss://"))),
        _ => false,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::plan::task::{Composer, Edit, Extend, Origin, OutputSpec, PromptTemplate, QwenText};

    #[test]
    fn the_header_is_the_compiled_request_without_its_body() {
        let registry = Registry::builtin();
        for model in ["wan2.2-t2i-flash", "wanx-v1", "qwen-image"] {
            let mut t = task("a", model, "a lighthouse");
            t.n = 3;
            let full = compile(&t, &registry);
            let header = header(&t, &registry);
            assert_eq!(header.endpoint, full.endpoint);
            assert_eq!(header.model, full.model);
            assert_eq!(
                (header.n, header.price, header.size),
                (full.n, full.price, full.size)
            );
            assert!(header.body.is_null() && header.media.is_empty());
        }
    }

    pub(crate) fn task(id: &str, model: &str, prompt: &str) -> Task {
        Task {
            id: id.to_owned(),
            origin: Origin {
                file: PathBuf::from("plans/t.toml"),
                line: 1,
                column: 1,
            },
            model: model.to_owned(),
            prompt: Prompt::Text(prompt.to_owned()),
            negative_prompt: None,
            negative_presets: vec![],
            size: Some(Size::new(1024, 1024)),
            n: 1,
            pick: None,
            seed: None,
            style: None,
            prompt_extend: None,
            watermark: None,
            reference: None,
            composer: None,
            text: None,
            edit: None,
            extra_input: Map::new(),
            extra_parameters: Map::new(),
            output: OutputSpec {
                dir: "generated".into(),
                filename: "{id}.png".into(),
            },
        }
    }

    #[test]
    fn n_and_size_are_always_explicit_and_async_header_is_set() {
        let c = compile(
            &task("a", "wan2.2-t2i-flash", "a cat"),
            &Registry::builtin(),
        );
        assert_eq!(
            c.body,
            json!({"model":"wan2.2-t2i-flash","input":{"prompt":"a cat"},"parameters":{"n":1,"size":"1024*1024"}})
        );
        assert_eq!(c.endpoint, crate::registry::TEXT2IMAGE);
        assert_eq!(c.headers, vec![("X-DashScope-Async", "enable".to_owned())]);
        assert_eq!(c.cost(), Money::from_yuan(0.14));
    }

    #[test]
    fn seed_vocabulary_becomes_prompt_text_on_wan() {
        let mut t = task("a", "wan2.2-t2i-flash", "Futuristic city at night");
        t.style = Some("cyberpunk".into());
        t.composer = Some(Composer {
            color_palette: vec!["#00F5FF".into(), "#FF1493".into()],
            layout: Some("rule_of_thirds".into()),
            material: Some("neon_glass".into()),
            semantic: Some("futuristic_city".into()),
        });
        t.negative_presets = vec!["scene".into()];
        let c = compile(&t, &Registry::builtin());
        assert_eq!(
            c.body["input"]["prompt"],
            "Futuristic city at night, cyberpunk, neon lights, high-tech, dystopian, color palette: #00F5FF, #FF1493, rule of thirds composition, subject on the intersections, neon glass texture, transparent and glowing, theme: futuristic city"
        );
        assert_eq!(
            c.body["input"]["negative_prompt"],
            "messy background, chaotic composition, unbalanced layout"
        );
        assert!(c.body["parameters"].get("style").is_none());
    }

    #[test]
    fn wanx_v1_gets_its_native_style() {
        let mut t = task("a", "wanx-v1", "a cat");
        t.style = Some("watercolor".into());
        let c = compile(&t, &Registry::builtin());
        assert_eq!(c.body["parameters"]["style"], "<watercolor>");
        assert_eq!(c.body["input"]["prompt"], "a cat");
    }

    #[test]
    fn template_and_qwen_text_lower_in_order() {
        let mut t = task("p", "qwen-image", "");
        t.prompt = Prompt::Template(PromptTemplate {
            subject: "A poster".into(),
            lighting: Some("neon light".into()),
            ..PromptTemplate::default()
        });
        t.text = Some(QwenText {
            title: Some("未来都市2077".into()),
            subtitle: None,
            text_position: Some("top".into()),
            font_style: Some("bold".into()),
        });
        let c = compile(&t, &Registry::builtin());
        assert_eq!(
            c.body["input"]["prompt"],
            "A poster, neon light, title text \"未来都市2077\", text placed at the top, bold font"
        );
        assert_eq!(c.price, Money::from_yuan(0.25));
    }

    #[test]
    fn extend_compiles_to_expand_with_the_side_scale() {
        let mut t = task("wide", "wanx2.1-imageedit", "");
        t.size = None;
        t.edit = Some(Edit {
            kind: EditKind::Extend,
            input: InputRef::Url("https://example.com/a.png".into()),
            extend: Some(Extend {
                direction: Direction::Right,
                ratio: 1.5,
            }),
            style_reference: None,
            mask: None,
            strength: None,
        });
        let c = compile(&t, &Registry::builtin());
        assert_eq!(c.endpoint, crate::registry::IMAGE2IMAGE);
        assert_eq!(c.body["input"]["function"], "expand");
        assert_eq!(
            c.body["input"]["base_image_url"],
            "https://example.com/a.png"
        );
        assert_eq!(c.body["parameters"]["right_scale"], 1.5);
        assert!(c.body["parameters"].get("left_scale").is_none());
    }

    #[test]
    fn extra_fields_have_the_last_word() {
        let mut t = task("a", "wan2.2-t2i-flash", "a cat");
        t.extra_parameters.insert("size".into(), json!("1280*720"));
        t.extra_input.insert("new_field".into(), json!(true));
        let c = compile(&t, &Registry::builtin());
        assert_eq!(c.body["parameters"]["size"], "1280*720");
        assert_eq!(c.body["input"]["new_field"], true);
    }

    fn edit_task(kind: EditKind, model: &str, reference: Option<&str>) -> Task {
        let mut t = task("e", model, "");
        t.size = None;
        t.edit = Some(Edit {
            kind,
            input: InputRef::Url("https://example.com/in.png".into()),
            extend: None,
            style_reference: reference.map(|r| InputRef::Url(r.into())),
            mask: None,
            strength: None,
        });
        t
    }

    #[test]
    fn each_seed_edit_type_compiles_to_the_documented_request() {
        let r = Registry::builtin();
        let function = |kind: EditKind| {
            let c = compile(&edit_task(kind, "wanx2.1-imageedit", None), &r);
            assert_eq!(c.endpoint, crate::registry::IMAGE2IMAGE);
            assert_eq!(
                c.body["input"]["base_image_url"],
                "https://example.com/in.png"
            );
            c.body
        };
        assert_eq!(
            function(EditKind::RemoveWatermark)["input"]["function"],
            "remove_watermark"
        );
        assert_eq!(
            function(EditKind::StyleTransfer)["input"]["function"],
            "stylization_all"
        );
        let repair = function(EditKind::Repair);
        assert_eq!(repair["input"]["function"], "description_edit");
        assert!(
            repair["input"]["prompt"]
                .as_str()
                .unwrap()
                .starts_with("Repair")
        );
        let beautify = function(EditKind::Beautify);
        assert_eq!(beautify["input"]["function"], "super_resolution");
        assert_eq!(beautify["parameters"]["upscale_factor"], 1);
        assert_eq!(
            function(EditKind::Function("colorization".into()))["input"]["function"],
            "colorization"
        );

        let restyle = compile(
            &edit_task(
                EditKind::StyleTransfer,
                "wan2.5-i2i-preview",
                Some("https://example.com/style.png"),
            ),
            &r,
        );
        assert_eq!(restyle.endpoint, crate::registry::IMAGE2IMAGE);
        assert_eq!(
            restyle.body["input"]["images"],
            json!([
                "https://example.com/in.png",
                "https://example.com/style.png"
            ])
        );
        assert!(restyle.body["input"].get("function").is_none());
    }

    #[test]
    fn local_and_upstream_inputs_become_media_slots() {
        let mut t = edit_task(EditKind::RemoveWatermark, "wanx2.1-imageedit", None);
        t.edit.as_mut().unwrap().input = InputRef::Task {
            id: "castle".into(),
            index: None,
        };
        let c = compile(&t, &Registry::builtin());
        assert_eq!(c.body["input"]["base_image_url"], Value::Null);
        assert_eq!(
            c.media,
            vec![MediaSlot {
                pointer: "/input/base_image_url".into(),
                source: InputRef::Task {
                    id: "castle".into(),
                    index: None
                }
            }]
        );
    }
}
