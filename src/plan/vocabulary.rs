//! The seed reference's vocabulary: its 17 style presets, negative-prompt lists, composer layouts and
//! materials, and Qwen text options, with the prompt text each one lowers to. `compile` uses these
//! tables; the plan loader validates names against them.

/// A seed style preset.
pub struct StylePreset {
    pub name: &'static str,
    /// The seed's own (Chinese) name: the table is the seed's, transcribed; nothing reads it yet.
    #[expect(
        dead_code,
        reason = "the seed's name, kept beside the English one it is transcribed as"
    )]
    pub zh: &'static str,
    /// The words the seed recommends for this style; appended to the prompt on models without a
    /// style parameter.
    pub prompt: &'static str,
    /// The native wanx-v1 `style` value, where one exists.
    pub wanx_v1: Option<&'static str>,
}

const fn style(
    name: &'static str,
    zh: &'static str,
    prompt: &'static str,
    wanx_v1: Option<&'static str>,
) -> StylePreset {
    StylePreset {
        name,
        zh,
        prompt,
        wanx_v1,
    }
}

/// The seed's "17种预设风格", in its order.
pub const STYLES: [StylePreset; 17] = [
    style(
        "watercolor",
        "水彩",
        "watercolor painting, soft colors, flowing brushstrokes",
        Some("<watercolor>"),
    ),
    style(
        "flat_illustration",
        "扁平插画",
        "flat illustration, simple shapes, bold colors, minimalist",
        Some("<flat illustration>"),
    ),
    style(
        "anime",
        "动漫",
        "anime style, manga art, cel shading",
        Some("<anime>"),
    ),
    style(
        "oil_painting",
        "油画",
        "oil painting, textured brushwork, rich colors, canvas",
        Some("<oil painting>"),
    ),
    style(
        "chinese_painting",
        "国画",
        "traditional Chinese painting, ink wash, traditional Chinese art",
        Some("<chinese painting>"),
    ),
    style(
        "3d_cartoon",
        "3D卡通",
        "3D cartoon, 3D render, Pixar style, smooth lighting",
        Some("<3d cartoon>"),
    ),
    style(
        "sketch",
        "素描",
        "pencil sketch, line art, hand drawn",
        Some("<sketch>"),
    ),
    style(
        "cyberpunk",
        "赛博朋克",
        "cyberpunk, neon lights, high-tech, dystopian",
        None,
    ),
    style(
        "cinematic_poster",
        "电影海报",
        "cinematic movie poster, dramatic lighting, cinematic composition",
        None,
    ),
    style(
        "realistic",
        "写实",
        "photorealistic, lifelike, detailed",
        Some("<photography>"),
    ),
    style(
        "abstract",
        "抽象",
        "abstract art, abstract shapes, conceptual, artistic",
        None,
    ),
    style("ink_wash", "水墨", "ink wash painting, traditional", None),
    style(
        "pop_art",
        "波普艺术",
        "pop art, bold colors, graphic design",
        None,
    ),
    style(
        "impressionism",
        "印象派",
        "impressionist style, soft focus, light",
        None,
    ),
    style(
        "surrealism",
        "超现实",
        "surrealist, dreamlike, fantasy",
        None,
    ),
    style(
        "minimalism",
        "极简",
        "minimalist, simple, clean design",
        None,
    ),
    style("baroque", "巴洛克", "baroque style, ornate, dramatic", None),
];

/// wanx-v1's own style values (protocol §2), accepted as written on wanx-v1.
pub const WANX_V1_STYLES: [&str; 10] = [
    "<auto>",
    "<photography>",
    "<portrait>",
    "<3d cartoon>",
    "<anime>",
    "<oil painting>",
    "<watercolor>",
    "<sketch>",
    "<chinese painting>",
    "<flat illustration>",
];

pub fn style_preset(name: &str) -> Option<&'static StylePreset> {
    STYLES.iter().find(|s| s.name == name)
}

/// The seed's negative-prompt suggestions: `general` (通用), and the targeted `people` (人物),
/// `scene` (场景), `style` (风格).
pub const NEGATIVE_PRESETS: [(&str, &str); 4] = [
    (
        "general",
        "low quality, blurry, distorted, ugly, deformed, disfigured, bad anatomy, bad proportions, extra limbs, cloned face, malformed limbs, missing arms, missing legs, fused fingers, too many fingers, long neck, out of frame, extra fingers, mutated hands, poorly drawn hands, poorly drawn face, mutation, gross proportions, extra arms, extra legs",
    ),
    (
        "people",
        "bad hands, extra fingers, deformed face, asymmetrical eyes",
    ),
    (
        "scene",
        "messy background, chaotic composition, unbalanced layout",
    ),
    (
        "style",
        "inconsistent style, mixed styles, conflicting aesthetics",
    ),
];

pub fn negative_preset(name: &str) -> Option<&'static str> {
    NEGATIVE_PRESETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

/// Composer layouts (构图布局) and the prompt text each lowers to.
pub const LAYOUTS: [(&str, &str); 5] = [
    (
        "rule_of_thirds",
        "rule of thirds composition, subject on the intersections",
    ),
    (
        "center",
        "centered composition, symmetrical subject placement",
    ),
    ("golden_ratio", "golden ratio composition"),
    ("diagonal", "diagonal composition, dynamic leading lines"),
    ("symmetry", "symmetrical composition, stable and balanced"),
];

/// Composer materials (材质纹理) and their prompt text.
pub const MATERIALS: [(&str, &str); 7] = [
    ("neon_glass", "neon glass texture, transparent and glowing"),
    ("metal", "metallic texture, highly reflective"),
    ("wood", "wood texture, natural and warm"),
    ("fabric", "fabric texture, soft folds"),
    ("stone", "stone texture, rough and hard"),
    ("plastic", "smooth modern plastic texture"),
    ("ceramic", "ceramic texture, smooth and delicate"),
];

/// Qwen-Image text positions and font styles.
pub const TEXT_POSITIONS: [&str; 4] = ["top", "center", "bottom", "custom"];
pub const FONT_STYLES: [&str; 4] = ["bold", "elegant", "handwritten", "modern"];

/// Looks `name` up in a `(name, text)` table.
pub fn lookup(table: &[(&'static str, &'static str)], name: &str) -> Option<&'static str> {
    table
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

/// The names of a `(name, text)` table, for validation hints.
pub fn names(table: &[(&'static str, &'static str)]) -> Vec<&'static str> {
    table.iter().map(|(n, _)| *n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_lists_seventeen_styles_with_unique_names() {
        let mut names: Vec<_> = STYLES.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 17);
        assert_eq!(
            style_preset("watercolor").unwrap().wanx_v1,
            Some("<watercolor>")
        );
        assert!(style_preset("cyberpunk").unwrap().wanx_v1.is_none());
    }
}
