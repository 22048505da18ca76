//! Edit tasks: the edit kind (the seed's `edit` or a real `function`), the edit's own fields
//! (`input`, `extend`, `style_reference`, `mask`, `strength`).

use std::ops::Range;

use toml::Spanned;

use crate::plan::check::Check;
use crate::plan::inputs::Inputs;
use crate::plan::raw::RawExtend;
use crate::plan::task::{Direction, Edit, EditKind, Extend};
use crate::term::diagnostic::did_you_mean_hint;

/// The seed's image-edit types (`edit = …`).
pub const SEED_EDITS: [&str; 5] = [
    "extend",
    "remove_watermark",
    "style_transfer",
    "repair",
    "beautify",
];

/// The real `input.function` values of wanx2.1-imageedit (protocol §7).
pub const EDIT_FUNCTIONS: [&str; 10] = [
    "stylization_all",
    "stylization_local",
    "description_edit",
    "description_edit_with_mask",
    "remove_watermark",
    "expand",
    "super_resolution",
    "colorization",
    "doodle",
    "control_cartoon_feature",
];

pub(super) fn edit_kind(
    edit: Option<&Spanned<String>>,
    function: Option<&Spanned<String>>,
    c: &mut Check,
) -> Option<EditKind> {
    if let (Some(_), Some(f)) = (edit, function) {
        c.err(
            f.span(),
            "function",
            "`edit` and `function` are both set",
            Some("use `edit` for the seed's edit types, or `function` for a real edit function, not both".to_owned()),
        );
        return None;
    }
    if let Some(e) = edit {
        let kind = match e.get_ref().as_str() {
            "extend" => EditKind::Extend,
            "remove_watermark" => EditKind::RemoveWatermark,
            "style_transfer" => EditKind::StyleTransfer,
            "repair" => EditKind::Repair,
            "beautify" => EditKind::Beautify,
            other => {
                let hint = if EDIT_FUNCTIONS.contains(&other) {
                    format!("`{other}` is a real edit function: write `function = \"{other}\"`")
                } else {
                    did_you_mean_hint(&SEED_EDITS, other)
                };
                c.err(
                    e.span(),
                    "edit",
                    format!("unknown edit type `{other}`"),
                    Some(hint),
                );
                return None;
            }
        };
        return Some(kind);
    }
    let f = function?;
    let name = f.get_ref();
    if EDIT_FUNCTIONS.contains(&name.as_str()) {
        Some(EditKind::Function(name.clone()))
    } else {
        let hint = if SEED_EDITS.contains(&name.as_str()) {
            format!("`{name}` is one of the seed's edit types: write `edit = \"{name}\"`")
        } else {
            did_you_mean_hint(&EDIT_FUNCTIONS, name)
        };
        c.err(
            f.span(),
            "function",
            format!("unknown edit function `{name}`"),
            Some(hint),
        );
        None
    }
}

/// The edit fields of a task, checked together once its kind is known.
pub(super) struct EditFields {
    pub(super) input: Option<Spanned<String>>,
    pub(super) extend: Option<Spanned<RawExtend>>,
    pub(super) style_reference: Option<Spanned<String>>,
    pub(super) mask: Option<Spanned<String>>,
    pub(super) strength: Option<Spanned<f64>>,
}

pub(super) fn edit(
    kind: Option<EditKind>,
    fields: EditFields,
    function: Option<&String>,
    inputs: &mut Inputs,
    c: &mut Check,
) -> Option<Edit> {
    let EditFields {
        input,
        extend,
        style_reference,
        mask,
        strength,
    } = fields;
    let Some(kind) = kind else {
        // Not an edit task (or its kind was already reported): edit fields make no sense.
        if function.is_none() {
            for (field, span) in [
                ("input", input.as_ref().map(Spanned::span)),
                ("extend", extend.as_ref().map(Spanned::span)),
                (
                    "style_reference",
                    style_reference.as_ref().map(Spanned::span),
                ),
                ("mask", mask.as_ref().map(Spanned::span)),
                ("strength", strength.as_ref().map(Spanned::span)),
            ] {
                if let Some(span) = span {
                    c.err(
                        span,
                        field,
                        format!("`{field}` only applies to edit tasks"),
                        Some(format!(
                            "add `edit = \"…\"` ({}) or `function = \"…\"`",
                            SEED_EDITS.join(", ")
                        )),
                    );
                }
            }
        }
        return None;
    };
    let input_ref = if let Some(i) = &input {
        inputs.resolve(i, "input", c)
    } else {
        c.err(c.at.clone(), "input", "an edit task needs `input`", Some("set `input` to a task id (`hero` or `hero#2`), a file relative to the plan, or a URL".to_owned()));
        None
    };
    let extend = extend.and_then(|e| {
        let span = e.span();
        let allowed = matches!(kind, EditKind::Extend)
            || matches!(&kind, EditKind::Function(f) if f == "expand");
        if !allowed {
            c.err(
                span.clone(),
                "extend",
                "`extend` applies only to `edit = \"extend\"`",
                Some("remove `extend`, or set `edit = \"extend\"`".to_owned()),
            );
            return None;
        }
        check_extend(e.into_inner(), span, c)
    });
    let style_reference = style_reference.and_then(|s| inputs.resolve(&s, "style_reference", c));
    let mask = mask.and_then(|m| inputs.resolve(&m, "mask", c));
    if matches!(&kind, EditKind::Function(f) if f == "description_edit_with_mask")
        && mask.is_none()
        && c.errors == 0
    {
        c.err(
            c.at.clone(),
            "mask",
            "`description_edit_with_mask` needs `mask`",
            Some(
                "set `mask` to a black-and-white image the size of the input (white = edit)"
                    .to_owned(),
            ),
        );
    }
    let strength = super::fields::unit_interval(strength, "strength", c);
    Some(Edit {
        kind,
        input: input_ref?,
        extend,
        style_reference,
        mask,
        strength,
    })
}

pub(super) fn check_extend(raw: RawExtend, span: Range<usize>, c: &mut Check) -> Option<Extend> {
    let directions = ["top", "bottom", "left", "right", "all"];
    let direction = match raw.direction {
        None => {
            c.err(
                span.clone(),
                "extend",
                "`extend` needs a `direction`",
                Some("`direction` is one of `top`, `bottom`, `left`, `right`, `all`".to_owned()),
            );
            None
        }
        Some(d) => match d.get_ref().as_str() {
            "top" => Some(Direction::Top),
            "bottom" => Some(Direction::Bottom),
            "left" => Some(Direction::Left),
            "right" => Some(Direction::Right),
            "all" => Some(Direction::All),
            other => {
                c.err(
                    d.span(),
                    "extend.direction",
                    format!("unknown direction `{other}`"),
                    Some(did_you_mean_hint(&directions, other)),
                );
                None
            }
        },
    };
    let ratio = match raw.ratio {
        None => {
            c.err(
                span,
                "extend",
                "`extend` needs a `ratio`",
                Some("`ratio` is the side's scale, from 1.0 to 2.0".to_owned()),
            );
            None
        }
        Some(r) => {
            let v = *r.get_ref();
            if (1.0..=2.0).contains(&v) {
                Some(v)
            } else {
                c.err(
                    r.span(),
                    "extend.ratio",
                    format!("`ratio = {v}` is out of range"),
                    Some("`ratio` is the side's scale, from 1.0 to 2.0".to_owned()),
                );
                None
            }
        }
    };
    Some(Extend {
        direction: direction?,
        ratio: ratio?,
    })
}
