//! The checks of single fields of a task: prompt, size, count, style, the wanx-v1 reference, the
//! composer and text tables, colours.

use std::collections::HashSet;

use toml::Spanned;

use crate::plan::check::Check;
use crate::plan::inputs::Inputs;
use crate::plan::raw::{RawComposer, RawPick, RawPrompt, RawText};
use crate::plan::task::{Composer, Prompt, PromptTemplate, QwenText, RefMode, Reference};
use crate::plan::vocabulary::{
    self, FONT_STYLES, LAYOUTS, MATERIALS, NEGATIVE_PRESETS, STYLES, TEXT_POSITIONS, WANX_V1_STYLES,
};
use crate::registry::{Family, ModelSpec, SizeRule};
use crate::size::Size;
use crate::term::diagnostic::did_you_mean_hint;

pub(super) fn prompt(
    prompt: Option<Spanned<RawPrompt>>,
    spec: Option<&ModelSpec>,
    poisoned: &[String],
    is_edit: bool,
    c: &mut Check,
) -> Option<Prompt> {
    let Some(prompt) = prompt else {
        if !poisoned.iter().any(|p| p == "prompt") {
            let hint = if is_edit {
                "the edit API needs a prompt describing the result, e.g. `prompt = \"extend the background\"`"
            } else {
                "add `prompt = \"…\"`, or the structured form `prompt = { subject = \"…\", style = \"…\" }`"
            };
            c.err(
                c.at.clone(),
                "prompt",
                "this task has no `prompt`",
                Some(hint.to_owned()),
            );
        }
        return None;
    };
    let span = prompt.span();
    let (result, length) = match prompt.into_inner() {
        RawPrompt::Text(text) => {
            if text.trim().is_empty() {
                c.err(
                    span,
                    "prompt",
                    "the prompt is empty",
                    Some("describe the image to generate".to_owned()),
                );
                return None;
            }
            let length = text.chars().count();
            (Prompt::Text(text), length)
        }
        RawPrompt::Template(t) => {
            let subject = match t.subject {
                Some(s) if !s.get_ref().trim().is_empty() => s.into_inner(),
                Some(s) => {
                    c.err(
                        s.span(),
                        "prompt.subject",
                        "the prompt's `subject` is empty",
                        Some("describe the main subject of the image".to_owned()),
                    );
                    return None;
                }
                None => {
                    c.err(span, "prompt", "a structured prompt needs a `subject`", Some("add `subject = \"…\"`; `details`, `environment`, `lighting`, `style` and `quality` are optional".to_owned()));
                    return None;
                }
            };
            let template = PromptTemplate {
                subject,
                details: t.details,
                environment: t.environment,
                lighting: t.lighting,
                style: t.style,
                quality: t.quality,
            };
            let length = [
                Some(&template.subject),
                template.details.as_ref(),
                template.environment.as_ref(),
                template.lighting.as_ref(),
                template.style.as_ref(),
                template.quality.as_ref(),
            ]
            .into_iter()
            .flatten()
            .map(|s| s.chars().count() + 2)
            .sum::<usize>()
                - 2;
            (Prompt::Template(template), length)
        }
    };
    if let Some(spec) = spec
        && length > spec.prompt_limit
    {
        c.note(
            span,
            "prompt",
            format!(
                "the prompt has {length} characters; `{}` keeps the first {} and the service drops the rest",
                spec.id, spec.prompt_limit
            ),
            None,
        );
    }
    Some(result)
}

pub(super) fn size(size: Option<Spanned<String>>, spec: &ModelSpec, c: &mut Check) -> Option<Size> {
    let Some(written) = size else {
        return spec.default_size;
    };
    let span = written.span();
    let parsed: Size = match written.get_ref().parse() {
        Ok(s) => s,
        Err(message) => {
            c.err(span, "size", message, Some(spec.sizes.describe()));
            return None;
        }
    };
    match &spec.sizes {
        SizeRule::FromInput if c.inherited("size") => {
            c.note(
                span,
                "size",
                format!(
                    "`{}` takes its size from the input image: the inherited `size` is ignored for this task",
                    spec.id
                ),
                None,
            );
            None
        }
        SizeRule::FromInput => {
            c.err(
                span,
                "size",
                format!("`{}` takes its size from the input image", spec.id),
                Some("remove `size`".to_owned()),
            );
            None
        }
        rule @ SizeRule::Listed(_) => {
            if rule.check(parsed).is_ok() {
                return Some(parsed);
            }
            let nearest = rule.nearest_listed(parsed)?;
            c.note(
                span,
                "size",
                format!(
                    "size `{parsed}` is not one `{}` accepts; using `{nearest}`, the listed size closest in aspect ratio",
                    spec.id
                ),
                Some(rule.describe()),
            );
            Some(nearest)
        }
        rule => match rule.check(parsed) {
            Ok(()) => Some(parsed),
            Err((message, hint)) => {
                c.err(
                    span,
                    "size",
                    format!("{message} (`{}`)", spec.id),
                    Some(hint),
                );
                None
            }
        },
    }
}

pub(super) fn count(n: Option<Spanned<i64>>, spec: Option<&ModelSpec>, c: &mut Check) -> u32 {
    let Some(n) = n else { return 1 };
    let v = *n.get_ref();
    let Some(spec) = spec else {
        return u32::try_from(v).unwrap_or(1).max(1);
    };
    if v >= i64::from(spec.n_min) && v <= i64::from(spec.n_max) {
        return v as u32;
    }
    let hint = if spec.n_min == spec.n_max {
        format!(
            "`{}` generates exactly {} image{} per task",
            spec.id,
            spec.n_min,
            if spec.n_min == 1 { "" } else { "s" }
        )
    } else {
        format!(
            "`n` must be between {} and {} for `{}`",
            spec.n_min, spec.n_max, spec.id
        )
    };
    c.err(
        n.span(),
        "n",
        format!("`n = {v}` is out of range"),
        Some(hint),
    );
    1
}

pub(super) fn style(
    style: &Spanned<String>,
    family: Option<Family>,
    c: &mut Check,
) -> Option<String> {
    let name = style.get_ref().as_str();
    if name == "auto" || (name == "<auto>" && family == Some(Family::WanxV1)) {
        return None;
    }
    if name.starts_with('<') {
        if family == Some(Family::WanxV1) {
            if WANX_V1_STYLES.contains(&name) {
                return Some(name.to_owned());
            }
            c.err(
                style.span(),
                "style",
                format!("unknown wanx-v1 style `{name}`"),
                Some(did_you_mean_hint(&WANX_V1_STYLES, name)),
            );
            return None;
        }
        let hint = match STYLES.iter().find(|s| s.wanx_v1 == Some(name)) {
            Some(preset) => format!("write `style = \"{}\"`, which works on every model", preset.name),
            None => "native `<…>` styles need `model = \"wanx-v1\"`; the seed's presets (`watercolor`, `anime`, …) work on every model".to_owned(),
        };
        if family.is_some() {
            c.err(
                style.span(),
                "style",
                format!("`{name}` is a wanx-v1 style"),
                Some(hint),
            );
        }
        return None;
    }
    if vocabulary::style_preset(name).is_some() {
        return Some(name.to_owned());
    }
    let mut names: Vec<&str> = STYLES.iter().map(|s| s.name).collect();
    names.push("auto");
    c.err(
        style.span(),
        "style",
        format!("unknown style `{name}`"),
        Some(did_you_mean_hint(&names, name)),
    );
    None
}

pub(super) fn reference(
    ref_img: Option<Spanned<String>>,
    ref_strength: Option<Spanned<f64>>,
    ref_mode: Option<Spanned<String>>,
    family: Option<Family>,
    inputs: &mut Inputs,
    c: &mut Check,
) -> Option<Reference> {
    if family.is_some_and(|f| f != Family::WanxV1) {
        for (field, span) in [
            ("ref_img", ref_img.as_ref().map(Spanned::span)),
            ("ref_strength", ref_strength.as_ref().map(Spanned::span)),
            ("ref_mode", ref_mode.as_ref().map(Spanned::span)),
        ] {
            if let Some(span) = span {
                if c.inherited(field) {
                    c.note(
                        span,
                        field,
                        format!("`{field}` is a wanx-v1 parameter: the inherited value is ignored for this task"),
                        None,
                    );
                    continue;
                }
                c.err(
                    span,
                    field,
                    format!("`{field}` is a wanx-v1 parameter"),
                    Some("use `model = \"wanx-v1\"`, or an edit task (`edit = \"style_transfer\"` with `input` and `style_reference`)".to_owned()),
                );
            }
        }
        return None;
    }
    let strength = unit_interval(ref_strength, "ref_strength", c);
    let mode = ref_mode.and_then(|m| match m.get_ref().as_str() {
        "repaint" => Some(RefMode::Repaint),
        "refonly" => Some(RefMode::Refonly),
        other => {
            c.err(
                m.span(),
                "ref_mode",
                format!("unknown `ref_mode` `{other}`"),
                Some(did_you_mean_hint(&["repaint", "refonly"], other)),
            );
            None
        }
    });
    let Some(img) = ref_img else {
        if strength.is_some() || mode.is_some() {
            c.err(
                c.at.clone(),
                "ref_img",
                "`ref_strength` and `ref_mode` need `ref_img`",
                Some("add `ref_img` (a URL, a file, or a task id)".to_owned()),
            );
        }
        return None;
    };
    let image = inputs.resolve(&img, "ref_img", c)?;
    Some(Reference {
        image,
        strength,
        mode,
    })
}

pub(super) fn check_composer(raw: RawComposer, c: &mut Check) -> Option<Composer> {
    let mut composer = Composer::default();
    for (i, colour) in raw.color_palette.into_iter().flatten().enumerate() {
        match normalize_colour(colour.get_ref()) {
            Some(hex) => composer.color_palette.push(hex),
            None => c.err(
                colour.span(),
                &format!("composer.color_palette[{i}]"),
                format!("`{}` is not a colour", colour.get_ref()),
                Some("write colours as `#RRGGBB` (or `#RGB`), e.g. `#00F5FF`".to_owned()),
            ),
        }
    }
    let mut pick = |value: Option<Spanned<String>>,
                    table: &[(&'static str, &'static str)],
                    field: &str,
                    what: &str| {
        let value = value?;
        if vocabulary::lookup(table, value.get_ref()).is_some() {
            Some(value.into_inner())
        } else {
            c.err(
                value.span(),
                field,
                format!("unknown {what} `{}`", value.get_ref()),
                Some(did_you_mean_hint(
                    &vocabulary::names(table),
                    value.get_ref(),
                )),
            );
            None
        }
    };
    composer.layout = pick(raw.layout, &LAYOUTS, "composer.layout", "layout");
    composer.material = pick(raw.material, &MATERIALS, "composer.material", "material");
    composer.semantic = raw.semantic.map(Spanned::into_inner);
    if composer == Composer::default() {
        None
    } else {
        Some(composer)
    }
}

pub(super) fn check_text(raw: RawText, c: &mut Check) -> QwenText {
    let mut pick = |value: Option<Spanned<String>>, list: &[&str], field: &str| {
        let value = value?;
        if list.contains(&value.get_ref().as_str()) {
            Some(value.into_inner())
        } else {
            c.err(
                value.span(),
                field,
                format!(
                    "unknown `{}` `{}`",
                    field.rsplit('.').next().unwrap_or(field),
                    value.get_ref()
                ),
                Some(did_you_mean_hint(list, value.get_ref())),
            );
            None
        }
    };
    QwenText {
        title: raw.title,
        subtitle: raw.subtitle,
        text_position: pick(raw.text_position, &TEXT_POSITIONS, "text.text_position"),
        font_style: pick(raw.font_style, &FONT_STYLES, "text.font_style"),
    }
}

/// `#RRGGBB` or `#RGB` → upper-case `#RRGGBB`.
pub(super) fn normalize_colour(s: &str) -> Option<String> {
    let hex = s.strip_prefix('#')?;
    if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    match hex.len() {
        6 => Some(format!("#{}", hex.to_ascii_uppercase())),
        3 => Some(
            std::iter::once('#')
                .chain(hex.chars().flat_map(|c| {
                    let c = c.to_ascii_uppercase();
                    [c, c]
                }))
                .collect(),
        ),
        _ => None,
    }
}

/// The task's id (already checked for spelling and uniqueness), or the empty string, reported, when
/// it has none.
pub(super) fn task_id(id: Option<Spanned<String>>, poisoned: &[String], c: &mut Check) -> String {
    if let Some(id) = id {
        return id.into_inner();
    }
    if !poisoned.iter().any(|p| p == "id") {
        c.err(
            c.at.clone(),
            "id",
            "this task has no `id`",
            Some(
                "add `id = \"…\"`: a name unique across the project, used in output file names"
                    .to_owned(),
            ),
        );
    }
    String::new()
}

/// The service keeps this many characters of a negative prompt (protocol §2).
const NEGATIVE_PROMPT_LIMIT: usize = 500;

/// `negative_prompt`, with a note when the service will cut it.
pub(super) fn negative_prompt(p: Spanned<String>, c: &mut Check) -> String {
    if p.get_ref().chars().count() > NEGATIVE_PROMPT_LIMIT {
        c.note(
            p.span(),
            "negative_prompt",
            format!("the negative prompt is longer than {NEGATIVE_PROMPT_LIMIT} characters; the service drops the rest"),
            None,
        );
    }
    p.into_inner()
}

/// `negative = [\"…\"]`: the known presets, each unknown one reported.
pub(super) fn negative_presets(list: Spanned<Vec<Spanned<String>>>, c: &mut Check) -> Vec<String> {
    let mut out = Vec::new();
    for (i, item) in list.into_inner().into_iter().enumerate() {
        if vocabulary::negative_preset(item.get_ref()).is_some() {
            out.push(item.into_inner());
        } else {
            c.err(
                item.span(),
                &format!("negative[{i}]"),
                format!("unknown negative-prompt preset `{}`", item.get_ref()),
                Some(did_you_mean_hint(
                    &vocabulary::names(&NEGATIVE_PRESETS),
                    item.get_ref(),
                )),
            );
        }
    }
    out
}

/// `pick`: distinct candidates from 1 to `n`.
pub(super) fn pick(p: Spanned<RawPick>, n: u32, c: &mut Check) -> Option<Vec<u32>> {
    let span = p.span();
    let picks = match p.into_inner() {
        RawPick::One(v) => vec![v],
        RawPick::Many(v) => v,
    };
    let mut seen = HashSet::new();
    let valid = !picks.is_empty()
        && picks
            .iter()
            .all(|v| (1..=i64::from(n)).contains(v) && seen.insert(*v));
    if valid {
        return Some(picks.into_iter().map(|v| v as u32).collect());
    }
    c.err(
        span,
        "pick",
        format!("`pick` must name distinct candidates from 1 to {n}"),
        Some(format!(
            "the task generates `n = {n}` candidates; `pick = 2` keeps the second, `pick = [1, 3]` two of them"
        )),
    );
    None
}

/// `seed`: a whole number from 0 to 2³¹ − 1.
/// A fraction (`strength`, `ref_strength`) between 0.0 and 1.0; out of range is an error.
pub(super) fn unit_interval(
    value: Option<Spanned<f64>>,
    field: &str,
    c: &mut Check,
) -> Option<f64> {
    let s = value?;
    let v = *s.get_ref();
    if (0.0..=1.0).contains(&v) {
        return Some(v);
    }
    c.err(
        s.span(),
        field,
        format!("`{field} = {v}` is out of range"),
        Some(format!("`{field}` is between 0.0 and 1.0")),
    );
    None
}

pub(super) fn seed(s: &Spanned<i64>, c: &mut Check) -> Option<u32> {
    let v = *s.get_ref();
    if (0..=2_147_483_647).contains(&v) {
        return Some(v as u32);
    }
    c.err(
        s.span(),
        "seed",
        format!("seed {v} is out of range"),
        Some("a seed is a whole number from 0 to 2147483647".to_owned()),
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_normalised() {
        assert_eq!(normalize_colour("#00f5ff").as_deref(), Some("#00F5FF"));
        assert_eq!(normalize_colour("#abc").as_deref(), Some("#AABBCC"));
        assert_eq!(normalize_colour("00F5FF"), None);
        assert_eq!(normalize_colour("#GG0000"), None);
        assert_eq!(normalize_colour("#1234"), None);
    }
}
