//! The seed reference's JSON plan format (`plan_id`, `execution_config`, `batches[].tasks[]`,
//! `output_config`), loaded unchanged. Wire structs mirror the seed with `deny_unknown_fields`; each task
//! is deserialized from its own slice of the file so one bad task does not hide the others, and
//! [`crate::plan::json_spans`] locates the values that validation in [`crate::plan`] complains about.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use toml::Spanned;

use crate::plan::json_spans;
use crate::plan::raw::{
    FieldPaths, RawComposer, RawExtend, RawPrompt, RawTask, RawTemplate, RawText,
};
use crate::plan::seed::SeedPart;
use crate::plan::sink::Sink;
use crate::project::manifest::unknown_field_hint;
use crate::term::diagnostic::{LineIndex, Severity};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Some seed fields are accepted and carry no meaning for wanx.
struct PlanWire {
    plan_id: Option<String>,
    agent_id: Option<String>,
    api_version: Option<String>,
    execution_config: Option<ExecutionWire>,
    #[serde(default)]
    batches: Vec<BatchWire>,
    output_config: Option<OutputWire>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecutionWire {
    api_endpoint: Option<String>,
    api_key_env: Option<String>,
    timeout: Option<f64>,
    async_mode: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct BatchWire {
    batch_id: Option<Value>,
    generation_type: Option<String>,
    /// Read one by one from their own slices, see [`parse`].
    #[serde(default)]
    tasks: Vec<IgnoredAny>,
}

#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct OutputWire {
    save_directory: Option<String>,
    filename_pattern: Option<String>,
    download_immediately: Option<bool>,
    url_expiry_note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct TaskWire {
    task_id: Option<String>,
    generation_mode: Option<String>,
    prompt_config: Option<PromptConfigWire>,
    parameters: Option<ParametersWire>,
    composer_config: Option<ComposerConfigWire>,
    qwen_image_config: Option<QwenConfigWire>,
    task_type: Option<String>,
    input_image_url: Option<String>,
    extend_config: Option<ExtendWire>,
    style_reference_url: Option<String>,
    output_config: Option<OutputWire>,
}

/// The seed's edit fields: at task level or inside `parameters`.
struct EditWire {
    task_type: Option<String>,
    input_image_url: Option<String>,
    extend_config: Option<ExtendWire>,
    style_reference_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptConfigWire {
    prompt: Option<String>,
    negative_prompt: Option<String>,
    subject: Option<String>,
    details: Option<String>,
    environment: Option<String>,
    lighting: Option<String>,
    style: Option<String>,
    quality: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParametersWire {
    model: Option<String>,
    size: Option<String>,
    n: Option<i64>,
    seed: Option<i64>,
    style: Option<String>,
    prompt_extend: Option<bool>,
    watermark: Option<bool>,
    ref_img: Option<String>,
    ref_strength: Option<f64>,
    ref_mode: Option<String>,
    color_palette: Option<Vec<String>>,
    layout: Option<String>,
    material: Option<String>,
    semantic: Option<String>,
    negative: Option<Vec<String>>,
    task_type: Option<String>,
    input_image_url: Option<String>,
    extend_config: Option<ExtendWire>,
    style_reference_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ComposerConfigWire {
    enabled: Option<bool>,
    color_palette: Option<Vec<String>>,
    layout: Option<String>,
    material: Option<String>,
    semantic: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QwenConfigWire {
    enabled: Option<bool>,
    text_content: Option<TextContentWire>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextContentWire {
    title: Option<String>,
    subtitle: Option<String>,
    text_position: Option<String>,
    font_style: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtendWire {
    direction: Option<String>,
    ratio: Option<f64>,
}

/// Parses seed plan `file` of the sink into raw tasks and the plan's execution settings.
pub(crate) fn parse(file: usize, sink: &mut Sink) -> (Vec<RawTask>, SeedPart) {
    let files = sink.files;
    let source = files[file].source.as_str();
    let mut part = SeedPart {
        api_key_env: None,
        timeout: None,
        base_url: None,
    };
    if let Err(e) = serde_json::from_str::<IgnoredAny>(source) {
        report(sink, file, source, 0, &e);
        return (Vec::new(), part);
    }
    let spans = json_spans::spans(source);
    let span = |pointer: &str| spans.get(pointer).cloned();
    let mut output = OutputWire::default();
    match serde_json::from_str::<PlanWire>(source) {
        Ok(plan) => {
            if let Some(exec) = plan.execution_config {
                part = execution(exec, file, sink, &span);
            }
            if let Some(o) = plan.output_config {
                output = o;
            }
            if output.download_immediately == Some(false) {
                sink.note(
                    Severity::Note,
                    file,
                    span("/output_config/download_immediately"),
                    "`download_immediately: false` is ignored: wanx always downloads results at once (their URLs expire after 24 hours)",
                    Some("output_config.download_immediately".to_owned()),
                    None,
                );
            }
        }
        Err(e) => report(sink, file, source, 0, &e),
    }

    let mut tasks = Vec::new();
    for b in 0.. {
        if !spans.contains_key(&format!("/batches/{b}")) {
            break;
        }
        for t in 0.. {
            let pointer = format!("/batches/{b}/tasks/{t}");
            let Some(at) = spans.get(&pointer).cloned() else {
                break;
            };
            let located = Located {
                spans: &spans,
                pointer: &pointer,
                base: format!("batches[{b}].tasks[{t}]"),
                at: at.clone(),
            };
            match serde_json::from_str::<TaskWire>(&source[at.clone()]) {
                Ok(wire) => tasks.push(task(wire, &located, &output, file, sink)),
                Err(e) => {
                    report(sink, file, source, at.start, &e);
                    // Keep its id so tasks using it are not also reported.
                    let id = span(&format!("{pointer}/task_id")).and_then(|r| {
                        Some(Spanned::new(
                            r.clone(),
                            serde_json::from_str(&source[r]).ok()?,
                        ))
                    });
                    tasks.push(RawTask {
                        id,
                        at,
                        broken: true,
                        ..RawTask::default()
                    });
                }
            }
        }
    }
    (tasks, part)
}

fn execution(
    exec: ExecutionWire,
    file: usize,
    sink: &mut Sink,
    span: &dyn Fn(&str) -> Option<Range<usize>>,
) -> SeedPart {
    let at = |name: &str| span(&format!("/execution_config/{name}")).unwrap_or(0..0);
    let field = |name: &str| Some(format!("execution_config.{name}"));
    let api_key_env = exec.api_key_env.map(|v| Spanned::new(at("api_key_env"), v));
    let timeout = exec.timeout.and_then(|secs| {
        if secs.is_finite() && secs > 0.0 {
            Some(Spanned::new(at("timeout"), Duration::from_secs_f64(secs)))
        } else {
            sink.error(
                file,
                Some(at("timeout")),
                format!("`timeout: {secs}` is not a positive number of seconds"),
                field("timeout"),
                None,
            );
            None
        }
    });
    let base_url = exec.api_endpoint.map(|endpoint| {
        let url = if let Some(i) = endpoint.find("/api/v1") {
            endpoint[..i + "/api/v1".len()].to_owned()
        } else {
            sink.note(
                Severity::Warning,
                file,
                Some(at("api_endpoint")),
                format!("`{endpoint}` has no `/api/v1`; wanx uses it as the base URL as written"),
                field("api_endpoint"),
                Some("wanx builds each request's path itself: give the service's base, e.g. `https://dashscope.aliyuncs.com/api/v1`".to_owned()),
            );
            endpoint.trim_end_matches('/').to_owned()
        };
        Spanned::new(at("api_endpoint"), url)
    });
    if exec.async_mode == Some(false) {
        sink.note(
            Severity::Note,
            file,
            Some(at("async_mode")),
            "`async_mode: false` is ignored: DashScope's image API only runs tasks asynchronously, so wanx always uses the async protocol",
            field("async_mode"),
            None,
        );
    }
    SeedPart {
        api_key_env,
        timeout,
        base_url,
    }
}

/// A task's place in the file: spans by JSON pointer below it.
struct Located<'a> {
    spans: &'a HashMap<String, Range<usize>>,
    pointer: &'a str,
    base: String,
    at: Range<usize>,
}

impl Located<'_> {
    /// `rel` is a pointer below the task (`parameters/size`); falls back to the task's span.
    fn span(&self, rel: &str) -> Range<usize> {
        self.spans
            .get(&format!("{}/{rel}", self.pointer))
            .cloned()
            .unwrap_or_else(|| self.at.clone())
    }

    fn at<T>(&self, rel: &str, value: T) -> Spanned<T> {
        Spanned::new(self.span(rel), value)
    }

    fn path(&self, rel: &str) -> String {
        format!("{}.{}", self.base, rel.replace('/', "."))
    }
}

/// How each field of a task is named in the seed's JSON (field → dotted path).
type PathMap = Vec<(&'static str, String)>;

/// One seed task as a [`RawTask`], each value located by its JSON pointer.
fn task(
    wire: TaskWire,
    loc: &Located,
    plan_output: &OutputWire,
    file: usize,
    sink: &mut Sink,
) -> RawTask {
    let mut map: PathMap = Vec::new();
    let params = wire.parameters.unwrap_or_default();
    let nested_edit = params_edit(&params);
    let p = |name: &'static str, map: &mut PathMap| {
        map.push((name, loc.path(&format!("parameters/{name}"))));
        format!("parameters/{name}")
    };
    let mut raw = RawTask {
        at: loc.at.clone(),
        ..RawTask::default()
    };
    raw.id = wire.task_id.map(|v| loc.at("task_id", v));
    map.push(("id", loc.path("task_id")));

    if let Some(pc) = wire.prompt_config {
        prompt_fields(&mut raw, &mut map, pc, loc, file, sink);
    }

    macro_rules! param {
        ($($f:ident),*) => {$(
            raw.$f = params.$f.map(|v| loc.at(&p(stringify!($f), &mut map), v));
        )*};
    }
    param!(
        model,
        size,
        n,
        seed,
        style,
        prompt_extend,
        watermark,
        ref_img,
        ref_strength,
        ref_mode
    );
    raw.negative = params.negative.map(|list| {
        let rel = p("negative", &mut map);
        let items = list
            .into_iter()
            .enumerate()
            .map(|(i, v)| loc.at(&format!("{rel}/{i}"), v))
            .collect();
        loc.at(&rel, items)
    });

    let from_params = ComposerConfigWire {
        enabled: None,
        color_palette: params.color_palette,
        layout: params.layout,
        material: params.material,
        semantic: params.semantic,
    };
    composer_fields(&mut raw, &mut map, wire.composer_config, from_params, loc);

    qwen_text(&mut raw, &mut map, wire.qwen_image_config, loc);

    let top = EditWire {
        task_type: wire.task_type,
        input_image_url: wire.input_image_url,
        extend_config: wire.extend_config,
        style_reference_url: wire.style_reference_url,
    };
    edit_fields(&mut raw, &mut map, top, nested_edit, loc, file, sink);

    output_fields(&mut raw, &mut map, wire.output_config, plan_output, loc);

    raw.paths = FieldPaths::Json {
        base: loc.base.clone(),
        map,
    };
    raw
}

/// The prompt: the text, or the seed's template fields, and the negative prompt.
fn prompt_fields(
    raw: &mut RawTask,
    map: &mut PathMap,
    pc: PromptConfigWire,
    loc: &Located,
    file: usize,
    sink: &mut Sink,
) {
    let template = [
        &pc.subject,
        &pc.details,
        &pc.environment,
        &pc.lighting,
        &pc.style,
        &pc.quality,
    ]
    .iter()
    .any(|f| f.is_some());
    if let Some(text) = pc.prompt {
        if template {
            sink.error(
                file,
                Some(loc.span("prompt_config")),
                "`prompt_config` has both `prompt` and template fields",
                Some(loc.path("prompt_config")),
                Some("write the whole prompt in `prompt`, or use `subject`, `details`, `environment`, `lighting`, `style`, `quality` without it".to_owned()),
            );
            raw.poisoned.push("prompt".to_owned());
        } else {
            raw.prompt = Some(loc.at("prompt_config/prompt", RawPrompt::Text(text)));
            map.push(("prompt", loc.path("prompt_config/prompt")));
        }
    } else if template {
        raw.prompt = Some(loc.at(
            "prompt_config",
            RawPrompt::Template(RawTemplate {
                subject: pc.subject.map(|s| loc.at("prompt_config/subject", s)),
                details: pc.details,
                environment: pc.environment,
                lighting: pc.lighting,
                style: pc.style,
                quality: pc.quality,
            }),
        ));
        map.push(("prompt", loc.path("prompt_config")));
    }
    raw.negative_prompt = pc
        .negative_prompt
        .map(|v| loc.at("prompt_config/negative_prompt", v));
    map.push(("negative_prompt", loc.path("prompt_config/negative_prompt")));
}

/// The composer: from `composer_config` when enabled, else from the composer fields in `parameters`.
fn composer_fields(
    raw: &mut RawTask,
    map: &mut PathMap,
    config: Option<ComposerConfigWire>,
    from_params: ComposerConfigWire,
    loc: &Located,
) {
    let enabled = config.as_ref().is_some_and(|c| c.enabled.unwrap_or(true));
    let (prefix, palette, layout, material, semantic) = match config {
        Some(c) if enabled => (
            "composer_config",
            c.color_palette,
            c.layout,
            c.material,
            c.semantic,
        ),
        _ => (
            "parameters",
            from_params.color_palette,
            from_params.layout,
            from_params.material,
            from_params.semantic,
        ),
    };
    if palette.is_some() || layout.is_some() || material.is_some() || semantic.is_some() {
        map.push(("composer", loc.path(prefix)));
        raw.composer = Some(loc.at(
            prefix,
            RawComposer {
                color_palette: palette.map(|list| {
                    list.into_iter()
                        .enumerate()
                        .map(|(i, v)| loc.at(&format!("{prefix}/color_palette/{i}"), v))
                        .collect()
                }),
                layout: layout.map(|v| loc.at(&format!("{prefix}/layout"), v)),
                material: material.map(|v| loc.at(&format!("{prefix}/material"), v)),
                semantic: semantic.map(|v| loc.at(&format!("{prefix}/semantic"), v)),
            },
        ));
    }
}

/// The Qwen text, when its config is enabled.
fn qwen_text(raw: &mut RawTask, map: &mut PathMap, config: Option<QwenConfigWire>, loc: &Located) {
    if let Some(QwenConfigWire {
        enabled: Some(true),
        text_content: Some(t),
    }) = config
    {
        let rel = "qwen_image_config/text_content";
        map.push(("text", loc.path(rel)));
        raw.text = Some(
            loc.at(
                rel,
                RawText {
                    title: t.title,
                    subtitle: t.subtitle,
                    text_position: t
                        .text_position
                        .map(|v| loc.at(&format!("{rel}/text_position"), v)),
                    font_style: t
                        .font_style
                        .map(|v| loc.at(&format!("{rel}/font_style"), v)),
                },
            ),
        );
    }
}

/// Output naming: the task's `output_config` over the plan's.
fn output_fields(
    raw: &mut RawTask,
    map: &mut PathMap,
    task_output: Option<OutputWire>,
    plan_output: &OutputWire,
    loc: &Located,
) {
    let out = task_output.unwrap_or_default();
    let dir = out.save_directory;
    let plan_dir = plan_output.save_directory.as_ref();
    if let Some((dir, span, rel)) = output_field(dir, plan_dir, "save_directory", loc) {
        map.push(("out_dir", dotted(&rel)));
        let trimmed = dir.trim_end_matches('/');
        let dir = if trimmed.is_empty() {
            dir
        } else {
            trimmed.to_owned()
        };
        raw.out_dir = Some(Spanned::new(span, dir));
    }
    let pattern = out.filename_pattern;
    let plan_pattern = plan_output.filename_pattern.as_ref();
    if let Some((pattern, span, rel)) = output_field(pattern, plan_pattern, "filename_pattern", loc)
    {
        map.push(("filename", dotted(&rel)));
        raw.filename = Some(Spanned::new(span, pattern));
    }
}

/// One `output_config` field: the task's own, else the plan's; with its span and its pointer
/// (below the task for its own, from the document's root for the plan's).
fn output_field(
    own: Option<String>,
    plan: Option<&String>,
    field: &str,
    loc: &Located,
) -> Option<(String, Range<usize>, String)> {
    let (value, rel) = match (own, plan) {
        (Some(value), _) => (value, format!("{}/output_config/{field}", loc.pointer)),
        (None, Some(value)) => (value.clone(), format!("/output_config/{field}")),
        (None, None) => return None,
    };
    let span = loc
        .spans
        .get(&rel)
        .cloned()
        .unwrap_or_else(|| loc.at.clone());
    Some((value, span, rel))
}

fn params_edit(params: &ParametersWire) -> EditWire {
    EditWire {
        task_type: params.task_type.clone(),
        input_image_url: params.input_image_url.clone(),
        extend_config: params.extend_config.as_ref().map(|e| ExtendWire {
            direction: e.direction.clone(),
            ratio: e.ratio,
        }),
        style_reference_url: params.style_reference_url.clone(),
    }
}

/// The seed's edit fields, from the task level or from `parameters` (not both).
fn edit_fields(
    raw: &mut RawTask,
    map: &mut PathMap,
    top: EditWire,
    nested: EditWire,
    loc: &Located,
    file: usize,
    sink: &mut Sink,
) {
    fn pick<T>(
        name: &str,
        top: Option<T>,
        nested: Option<T>,
        loc: &Located,
        file: usize,
        sink: &mut Sink,
    ) -> Option<(String, T)> {
        match (top, nested) {
            (Some(t), Some(_)) => {
                sink.error(
                    file,
                    Some(loc.span(&format!("parameters/{name}"))),
                    format!("`{name}` is set both on the task and in `parameters`"),
                    Some(loc.path(&format!("parameters/{name}"))),
                    Some("keep one of them".to_owned()),
                );
                Some((name.to_owned(), t))
            }
            (Some(t), None) => Some((name.to_owned(), t)),
            (None, Some(n)) => Some((format!("parameters/{name}"), n)),
            (None, None) => None,
        }
    }
    let strings = [
        (
            "task_type",
            "edit",
            top.task_type,
            nested.task_type,
            &mut raw.edit,
        ),
        (
            "input_image_url",
            "input",
            top.input_image_url,
            nested.input_image_url,
            &mut raw.input,
        ),
        (
            "style_reference_url",
            "style_reference",
            top.style_reference_url,
            nested.style_reference_url,
            &mut raw.style_reference,
        ),
    ];
    for (name, field, on_task, in_parameters, slot) in strings {
        if let Some((rel, v)) = pick(name, on_task, in_parameters, loc, file, sink) {
            map.push((field, loc.path(&rel)));
            *slot = Some(loc.at(&rel, v));
        }
    }
    if let Some((rel, e)) = pick(
        "extend_config",
        top.extend_config,
        nested.extend_config,
        loc,
        file,
        sink,
    ) {
        map.push(("extend", loc.path(&rel)));
        raw.extend = Some(loc.at(
            &rel,
            RawExtend {
                direction: e.direction.map(|v| loc.at(&format!("{rel}/direction"), v)),
                ratio: e.ratio.map(|v| loc.at(&format!("{rel}/ratio"), v)),
            },
        ));
    }
}

/// `/output_config/save_directory` → `output_config.save_directory`.
fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.trim_start_matches('/').split('/') {
        if part.bytes().all(|b| b.is_ascii_digit()) && !part.is_empty() {
            out.push('[');
            out.push_str(part);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

/// Reports a `serde_json` error raised while reading `source[offset..]`, at its place in the file.
fn report(sink: &mut Sink, file: usize, source: &str, offset: usize, e: &serde_json::Error) {
    let slice = &source[offset..];
    let at = offset + LineIndex::new(slice).offset(e.line(), e.column());
    let full = e.to_string();
    let message = full
        .rfind(" at line ")
        .map_or(full.as_str(), |i| &full[..i])
        .to_owned();
    let hint = unknown_field_hint(&message);
    let (message, span) = if hint.is_some() {
        // Point at the key, not after it.
        let bytes = source.as_bytes();
        let end = at.min(bytes.len().saturating_sub(1));
        let key_end = bytes[..=end].iter().rposition(|b| *b == b'"').unwrap_or(at);
        let key_start = bytes[..key_end]
            .iter()
            .rposition(|b| *b == b'"')
            .unwrap_or(key_end);
        (
            message
                .split(", expected")
                .next()
                .unwrap_or(&message)
                .to_owned(),
            key_start..key_end + 1,
        )
    } else {
        (message, at..at + 1)
    };
    sink.error(file, Some(span), message, None, hint);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::error::Error;
    use crate::plan::tests::manifest;
    use crate::plan::{Loaded, load_source};
    use crate::registry::Registry;
    use crate::size::Size;
    use crate::term::diagnostic::Diagnostic;

    const SEED: &str = include_str!("../../examples/seed-cyberpunk.json");

    fn load(src: &str) -> Result<Loaded, Vec<Diagnostic>> {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest(dir.path());
        match load_source(Path::new("plans/seed.json"), src, &m, &Registry::builtin()) {
            Ok(l) => Ok(l),
            Err(Error::Invalid { diagnostics, .. }) => Err(diagnostics),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_seed_example_loads_unchanged() {
        let loaded = load(SEED).unwrap();
        let [base, composer, poster] = &loaded.tasks[..] else {
            panic!("{:?}", loaded.tasks)
        };
        assert_eq!(base.id, "scene-001-base");
        assert_eq!(base.model, "wan2.2-t2i-flash");
        assert_eq!(base.n, 4);
        assert_eq!(base.style.as_deref(), Some("cyberpunk"));
        assert_eq!(base.prompt_extend, Some(true));
        assert_eq!(base.output.dir, "output/tongyi-wanxiang/cyberpunk-20251019");
        assert_eq!(base.output.filename, "{task_id}_{timestamp}_{index}.png");
        assert!(base.composer.is_none() && base.text.is_none());

        let c = composer.composer.as_ref().unwrap();
        assert_eq!(c.color_palette, ["#00F5FF", "#FF1493", "#9400D3"]);
        assert_eq!(c.layout.as_deref(), Some("rule_of_thirds"));
        assert_eq!(c.material.as_deref(), Some("neon_glass"));
        assert_eq!(c.semantic.as_deref(), Some("futuristic_city"));
        assert_eq!(composer.output.filename, "{task_id}_{timestamp}.png");

        assert_eq!(poster.model, "qwen-image");
        assert_eq!(poster.size, Some(Size::new(1104, 1472)));
        let text = poster.text.as_ref().unwrap();
        assert_eq!(text.title.as_deref(), Some("未来都市2077"));
        assert_eq!(text.font_style.as_deref(), Some("bold"));

        let seed = &loaded.seed;
        assert_eq!(
            seed.base_url.as_deref(),
            Some("https://dashscope.aliyuncs.com/api/v1")
        );
        assert_eq!(seed.timeout, Some(std::time::Duration::from_secs(120)));
        assert_eq!(
            seed.api_key_env,
            Some(("DASHSCOPE_API_KEY".to_owned(), "plans/seed.json".into()))
        );

        let notes: Vec<String> = loaded.notes.iter().map(ToString::to_string).collect();
        let has = |s: &str| notes.iter().any(|n| n.contains(s));
        assert!(has("async_mode"), "{notes:#?}");
        assert!(
            has("`wanx2.2-t2i-flash` is the seed's name for `wan2.2-t2i-flash`"),
            "{notes:#?}"
        );
        assert!(has("`768*1024`") && has("`1104*1472`"), "{notes:#?}");
        assert!(has("{task_id}_{timestamp}_{index}.png"), "{notes:#?}");
        let size_note = loaded
            .notes
            .iter()
            .find(|n| n.message.contains("768*1024"))
            .unwrap();
        assert_eq!(
            size_note.field.as_deref(),
            Some("batches[0].tasks[2].parameters.size")
        );
        let line = SEED
            .lines()
            .position(|l| l.contains("\"768*1024\""))
            .unwrap()
            + 1;
        assert_eq!(size_note.line, line);
    }

    #[test]
    fn a_syntax_error_has_serde_json_line() {
        let errs = load("{\n  \"plan_id\": \"x\",\n  \"batches\": [\n    {\"tasks\": [}\n  ]\n}\n")
            .unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, 4);
    }

    #[test]
    fn an_unknown_field_points_at_its_key_and_other_tasks_still_load() {
        let src = SEED.replace("\"prompt_extend\": false,\n            \"watermark\": false,\n            \"color_palette\"", "\"prompt_extnd\": false,\n            \"watermark\": false,\n            \"color_palette\"")
            .replace("\"768*1024\"", "\"2000*1024\"")
            .replace("\"qwen-image\"", "\"wan2.2-t2i-flash\"");
        let errs = load(&src).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:#?}");
        let line = src
            .lines()
            .position(|l| l.contains("prompt_extnd"))
            .unwrap()
            + 1;
        assert_eq!(errs[0].line, line);
        assert_eq!(
            errs[0].column,
            src.lines().nth(line - 1).unwrap().find('"').unwrap() + 1
        );
        assert_eq!(errs[0].message, "unknown field `prompt_extnd`");
        assert_eq!(
            errs[0].hint.as_deref(),
            Some("did you mean `prompt_extend`?")
        );
        let size_line = src.lines().position(|l| l.contains("2000*1024")).unwrap() + 1;
        assert_eq!(errs[1].line, size_line);
        assert_eq!(
            errs[1].field.as_deref(),
            Some("batches[0].tasks[2].parameters.size")
        );
    }

    #[test]
    fn edit_fields_at_task_level_or_in_parameters() {
        let src = r#"{"batches": [{"tasks": [
  {"task_id": "base", "prompt_config": {"prompt": "city"}, "parameters": {"model": "wan2.2-t2i-flash"}},
  {"task_id": "wide", "prompt_config": {"prompt": "wider"}, "task_type": "extend", "input_image_url": "base",
   "extend_config": {"direction": "right", "ratio": 1.5}},
  {"task_id": "clean", "prompt_config": {"prompt": "clean"}, "parameters": {"model": "wanx2.5-image-edit",
   "task_type": "remove_watermark", "input_image_url": "https://example.com/a.jpg"}}
]}]}"#;
        let loaded = load(src).unwrap();
        assert_eq!(loaded.tasks[1].model, "wanx2.1-imageedit");
        let edit = loaded.tasks[1].edit.as_ref().unwrap();
        assert!((edit.extend.unwrap().ratio - 1.5).abs() < 1e-9);
        assert_eq!(loaded.tasks[2].model, "wanx2.1-imageedit");
    }
}
