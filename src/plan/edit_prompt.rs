//! Default instructions for edit tasks written without a `prompt`. The edit API always wants one, but
//! for the edits whose intent the function itself fixes (remove a watermark, enhance, extend, colorize,
//! restyle) the seed's plans carry none. wanx then sends the plain instruction below: it is part of the
//! compiled request (so of the key), shown by `wanx explain`, and listed in the README's lowering table.
//! Edits that need a description of the result (`repair`, `description_edit`, …) still need a `prompt`.

use crate::plan::task::EditKind;

/// `extend`, `function = "expand"`.
pub const EXTEND: &str =
    "extend the image beyond its borders, continuing its content and style seamlessly";
/// `remove_watermark`.
pub const REMOVE_WATERMARK: &str = "remove the watermark, text and logos overlaid on the image";
/// `beautify`, `function = "super_resolution"`.
pub const ENHANCE: &str = "enhance the image: sharper details and cleaner colours, same content";
/// `function = "colorization"`.
pub const COLORIZE: &str = "colorize the image with natural, realistic colours";
/// `style_transfer` without a reference, `function = "stylization_all"`.
pub const STYLIZE: &str = "restyle the whole image as a painting, keeping its composition";
/// `style_transfer` with a `style_reference` (the second image).
pub const STYLE_FROM_REFERENCE: &str =
    "redraw the first image in the style of the second image, keeping its content and composition";

/// The instruction sent for an edit of `kind` written without a `prompt`, or `None` when the edit
/// needs the user to describe the result.
pub fn default_for(kind: &EditKind, has_style_reference: bool) -> Option<&'static str> {
    match kind {
        EditKind::Extend => Some(EXTEND),
        EditKind::RemoveWatermark => Some(REMOVE_WATERMARK),
        EditKind::Beautify => Some(ENHANCE),
        EditKind::StyleTransfer if has_style_reference => Some(STYLE_FROM_REFERENCE),
        EditKind::StyleTransfer => Some(STYLIZE),
        EditKind::Repair => None,
        EditKind::Function(f) => match f.as_str() {
            "expand" => Some(EXTEND),
            "remove_watermark" => Some(REMOVE_WATERMARK),
            "super_resolution" => Some(ENHANCE),
            "colorization" => Some(COLORIZE),
            "stylization_all" => Some(STYLIZE),
            _ => None,
        },
    }
}

/// Whether `prompt` is one of the default instructions (for `wanx explain`).
pub fn is_default(prompt: &str) -> bool {
    [
        EXTEND,
        REMOVE_WATERMARK,
        ENHANCE,
        COLORIZE,
        STYLIZE,
        STYLE_FROM_REFERENCE,
    ]
    .contains(&prompt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_intent_edits_get_a_default_and_described_ones_do_not() {
        assert_eq!(default_for(&EditKind::Extend, false), Some(EXTEND));
        assert_eq!(
            default_for(&EditKind::StyleTransfer, true),
            Some(STYLE_FROM_REFERENCE)
        );
        assert_eq!(default_for(&EditKind::Repair, false), None);
        let f = |name: &str| EditKind::Function(name.to_owned());
        assert_eq!(default_for(&f("colorization"), false), Some(COLORIZE));
        assert_eq!(default_for(&f("description_edit"), false), None);
        assert_eq!(default_for(&f("description_edit_with_mask"), false), None);
    }
}
