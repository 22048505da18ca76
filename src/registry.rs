//! The model registry: what wanx knows about each DashScope image model (its endpoint, family, size and
//! `n` rules, price, and quotas), built in from dashscope-protocol.md and extendable from `wanx.toml`.
//!
//! Sources (see `shared/dashscope-protocol.md`): endpoints §1, parameter rules §2 and §7, quotas §5,
//! China-mainland prices §9. The seed reference's model names are accepted as aliases of the real ids.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::money::Money;
use crate::size::Size;

/// The async text-to-image path (wanx-v1, wanx2.x, wan2.2, wan2.5, qwen-image).
pub const TEXT2IMAGE: &str = "/services/aigc/text2image/image-synthesis";
/// The async image-edit path (wanx2.1-imageedit, wan2.5-i2i-preview).
pub const IMAGE2IMAGE: &str = "/services/aigc/image2image/image-synthesis";

/// How a model's request is shaped; decides which seed vocabulary is native and which is lowered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// wanx-v1: native `<style>` values, `ref_img`, `ref_strength`, `ref_mode`.
    WanxV1,
    /// wanx2.0/2.1 and wan2.2 text-to-image: no style parameter.
    WanV2,
    /// wan2.5-t2i-preview: total-pixel and aspect-ratio rules.
    Wan25,
    /// qwen-image, qwen-image-plus: enumerated sizes, `n` fixed at 1.
    Qwen,
    /// wanx2.1-imageedit: `input.function` + `base_image_url`.
    ImageEdit,
    /// wan2.5-i2i-preview: `input.images` (1 to 3).
    Wan25I2i,
}

impl Family {
    pub fn is_edit(self) -> bool {
        matches!(self, Family::ImageEdit | Family::Wan25I2i)
    }
}

/// Which sizes a model accepts.
#[derive(Clone, Debug, PartialEq)]
pub enum SizeRule {
    /// Exactly these sizes.
    Listed(Vec<Size>),
    /// Each side in `[min_side, max_side]` and at most `max_pixels` in all.
    Sides {
        min_side: u32,
        max_side: u32,
        max_pixels: u64,
    },
    /// Total pixels in `[min_pixels, max_pixels]`, aspect ratio (long/short) at most `max_ratio`.
    Pixels {
        min_pixels: u64,
        max_pixels: u64,
        max_ratio: f64,
    },
    /// The size is taken from the input image; a `size` field is an error.
    FromInput,
}

impl SizeRule {
    /// `Ok(())` when the size is accepted, else the reason and the allowed range as a hint.
    pub fn check(&self, size: Size) -> Result<(), (String, String)> {
        match self {
            SizeRule::Listed(sizes) => {
                if sizes.contains(&size) {
                    Ok(())
                } else {
                    Err((
                        format!("size `{size}` is not one this model accepts"),
                        self.describe(),
                    ))
                }
            }
            SizeRule::Sides {
                min_side,
                max_side,
                max_pixels,
            } => {
                for (name, side) in [("width", size.width), ("height", size.height)] {
                    if side < *min_side || side > *max_side {
                        return Err((
                            format!(
                                "size `{size}` has a {name} of {side} pixels, outside this model's range"
                            ),
                            self.describe(),
                        ));
                    }
                }
                if size.pixels() > *max_pixels {
                    return Err((
                        format!(
                            "size `{size}` has {} pixels, more than this model allows",
                            size.pixels()
                        ),
                        self.describe(),
                    ));
                }
                Ok(())
            }
            SizeRule::Pixels {
                min_pixels,
                max_pixels,
                max_ratio,
            } => {
                let px = size.pixels();
                if px < *min_pixels || px > *max_pixels {
                    return Err((
                        format!("size `{size}` has {px} pixels, outside this model's range"),
                        self.describe(),
                    ));
                }
                let ratio = size.aspect().max(1.0 / size.aspect());
                if ratio > *max_ratio + 1e-9 {
                    return Err((
                        format!("size `{size}` has an aspect ratio beyond 1:{max_ratio}"),
                        self.describe(),
                    ));
                }
                Ok(())
            }
            SizeRule::FromInput => Err((
                "this model takes its size from the input image".to_owned(),
                "remove `size`".to_owned(),
            )),
        }
    }

    /// The allowed sizes in words, for hints.
    pub fn describe(&self) -> String {
        match self {
            SizeRule::Listed(sizes) => {
                let list: Vec<String> = sizes.iter().map(|s| format!("`{s}`")).collect();
                format!("allowed sizes: {}", list.join(", "))
            }
            SizeRule::Sides {
                min_side,
                max_side,
                max_pixels,
            } => format!(
                "each side must be between {min_side} and {max_side} pixels, at most {max_pixels} pixels in all (e.g. `1024*1024`, `1440*1024`)"
            ),
            SizeRule::Pixels {
                min_pixels,
                max_pixels,
                max_ratio,
            } => format!(
                "total pixels between {min_pixels} and {max_pixels}, aspect ratio between 1:{max_ratio} and {max_ratio}:1 (e.g. `1280*1280`, `1104*1472`)"
            ),
            SizeRule::FromInput => "the size follows the input image".to_owned(),
        }
    }

    /// For a listed rule: the listed size whose aspect ratio is closest to `size`'s (ties go to the
    /// one closest in pixel count). `None` for other rules.
    pub fn nearest_listed(&self, size: Size) -> Option<Size> {
        let SizeRule::Listed(sizes) = self else {
            return None;
        };
        sizes.iter().copied().min_by(|a, b| {
            let da = (a.aspect().ln() - size.aspect().ln()).abs();
            let db = (b.aspect().ln() - size.aspect().ln()).abs();
            da.total_cmp(&db).then_with(|| {
                a.pixels()
                    .abs_diff(size.pixels())
                    .cmp(&b.pixels().abs_diff(size.pixels()))
            })
        })
    }
}

/// Everything wanx knows about one model.
#[derive(Clone, Debug)]
pub struct ModelSpec {
    /// The real model id sent on the wire.
    pub id: String,
    pub family: Family,
    /// Path under the base URL, e.g. [`TEXT2IMAGE`].
    pub endpoint: String,
    pub sizes: SizeRule,
    /// The size the service uses when none is sent; wanx sends it explicitly.
    pub default_size: Option<Size>,
    pub n_min: u32,
    pub n_max: u32,
    /// Price per successfully generated image.
    pub price: Money,
    /// Task submissions per second allowed by the account quota.
    pub submit_rps: u32,
    /// Tasks in progress at once allowed by the account quota.
    pub concurrency: u32,
    /// The prompt length the service keeps; longer prompts are truncated by the service.
    pub prompt_limit: usize,
    /// A typical time from submission to result, used to plan polling before history exists.
    pub typical_latency: Duration,
}

/// A model entry in `wanx.toml`: `[models.NAME]`. Every field is optional; `base` names the model whose
/// fields the rest override (by default the entry's own name, if the registry knows it).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelOverride {
    pub base: Option<String>,
    /// The real id to send, if it differs from the entry's name.
    pub id: Option<String>,
    pub family: Option<Family>,
    pub endpoint: Option<String>,
    pub price: Option<f64>,
    pub submit_rps: Option<u32>,
    pub concurrency: Option<u32>,
    pub n_max: Option<u32>,
    /// An explicit list of accepted sizes (`["1024*1024", …]`).
    pub sizes: Option<Vec<String>>,
    pub min_side: Option<u32>,
    pub max_side: Option<u32>,
    pub max_pixels: Option<u64>,
    pub prompt_limit: Option<usize>,
    /// Typical seconds from submission to result.
    pub typical_latency: Option<f64>,
}

/// The set of known models and the aliases that resolve to them.
#[derive(Clone, Debug)]
pub struct Registry {
    models: BTreeMap<String, ModelSpec>,
    aliases: BTreeMap<String, String>,
}

/// A model name resolved to its registry entry.
pub struct Resolved<'a> {
    pub spec: &'a ModelSpec,
    /// `Some(name)` when the plan used an alias (`wanx2.2-t2i-flash`) that was rewritten.
    pub alias_of: Option<&'a str>,
}

const QWEN_SIZES: [Size; 5] = [
    Size::new(1664, 928),
    Size::new(1472, 1104),
    Size::new(1328, 1328),
    Size::new(1104, 1472),
    Size::new(928, 1664),
];

const WANX_V1_SIZES: [Size; 4] = [
    Size::new(1024, 1024),
    Size::new(720, 1280),
    Size::new(1280, 720),
    Size::new(768, 1152),
];

/// Seed and older names → the real ids (protocol §11).
const ALIASES: [(&str, &str); 8] = [
    ("wanx2.2-t2i-flash", "wan2.2-t2i-flash"),
    ("wanx2.2-t2i-plus", "wan2.2-t2i-plus"),
    ("wan2.1-t2i-turbo", "wanx2.1-t2i-turbo"),
    ("wan2.1-t2i-plus", "wanx2.1-t2i-plus"),
    ("wan2.0-t2i-turbo", "wanx2.0-t2i-turbo"),
    ("wanx2.5-t2i-preview", "wan2.5-t2i-preview"),
    ("wanx2.5-image-edit", "wanx2.1-imageedit"),
    ("wanx2.5-i2i-preview", "wan2.5-i2i-preview"),
];

/// The built-in models (China-mainland prices and quotas, protocol §11).
const BUILTIN: [Builtin; 11] = [
    Builtin {
        id: "wanx-v1",
        family: Family::WanxV1,
        endpoint: TEXT2IMAGE,
        sizes: Sizes::WanxV1,
        default_size: Some(Size::new(1024, 1024)),
        n_max: 4,
        yuan: 0.16,
        submit_rps: 2,
        concurrency: 1,
        prompt_limit: 500,
        latency_secs: 30,
    },
    Builtin {
        id: "wanx2.0-t2i-turbo",
        family: Family::WanV2,
        endpoint: TEXT2IMAGE,
        sizes: Sizes::V2Sides,
        default_size: Some(Size::new(1024, 1024)),
        n_max: 4,
        yuan: 0.04,
        submit_rps: 2,
        concurrency: 2,
        prompt_limit: 800,
        latency_secs: 30,
    },
    Builtin {
        id: "wanx2.1-t2i-turbo",
        family: Family::WanV2,
        endpoint: TEXT2IMAGE,
        sizes: Sizes::V2Sides,
        default_size: Some(Size::new(1024, 1024)),
        n_max: 4,
        yuan: 0.14,
        submit_rps: 2,
        concurrency: 2,
        prompt_limit: 800,
        latency_secs: 30,
    },
    Builtin {
        id: "wanx2.1-t2i-plus",
        family: Family::WanV2,
        endpoint: TEXT2IMAGE,
        sizes: Sizes::V2Sides,
        default_size: Some(Size::new(1024, 1024)),
        n_max: 4,
        yuan: 0.20,
        submit_rps: 2,
        concurrency: 2,
        prompt_limit: 800,
        latency_secs: 60,
    },
    Builtin {
        id: "wan2.2-t2i-flash",
        family: Family::WanV2,
        endpoint: TEXT2IMAGE,
        sizes: Sizes::V2Sides,
        default_size: Some(Size::new(1024, 1024)),
        n_max: 4,
        yuan: 0.14,
        submit_rps: 2,
        concurrency: 2,
        prompt_limit: 800,
        latency_secs: 30,
    },
    Builtin {
        id: "wan2.2-t2i-plus",
        family: Family::WanV2,
        endpoint: TEXT2IMAGE,
        sizes: Sizes::V2Sides,
        default_size: Some(Size::new(1024, 1024)),
        n_max: 4,
        yuan: 0.20,
        submit_rps: 2,
        concurrency: 2,
        prompt_limit: 800,
        latency_secs: 60,
    },
    Builtin {
        id: "wan2.5-t2i-preview",
        family: Family::Wan25,
        endpoint: TEXT2IMAGE,
        sizes: Sizes::Wan25Pixels,
        default_size: Some(Size::new(1280, 1280)),
        n_max: 4,
        yuan: 0.20,
        submit_rps: 5,
        concurrency: 5,
        prompt_limit: 2000,
        latency_secs: 60,
    },
    Builtin {
        id: "qwen-image",
        family: Family::Qwen,
        endpoint: TEXT2IMAGE,
        sizes: Sizes::Qwen,
        default_size: Some(Size::new(1664, 928)),
        n_max: 1,
        yuan: 0.25,
        submit_rps: 2,
        concurrency: 2,
        prompt_limit: 800,
        latency_secs: 30,
    },
    Builtin {
        id: "qwen-image-plus",
        family: Family::Qwen,
        endpoint: TEXT2IMAGE,
        sizes: Sizes::Qwen,
        default_size: Some(Size::new(1664, 928)),
        n_max: 1,
        yuan: 0.20,
        submit_rps: 2,
        concurrency: 2,
        prompt_limit: 800,
        latency_secs: 30,
    },
    Builtin {
        id: "wanx2.1-imageedit",
        family: Family::ImageEdit,
        endpoint: IMAGE2IMAGE,
        sizes: Sizes::FromInput,
        default_size: None,
        n_max: 4,
        yuan: 0.14,
        submit_rps: 2,
        concurrency: 2,
        prompt_limit: 800,
        latency_secs: 10,
    },
    Builtin {
        id: "wan2.5-i2i-preview",
        family: Family::Wan25I2i,
        endpoint: IMAGE2IMAGE,
        sizes: Sizes::Wan25Pixels,
        default_size: Some(Size::new(1280, 1280)),
        n_max: 4,
        yuan: 0.20,
        submit_rps: 5,
        concurrency: 5,
        prompt_limit: 2000,
        latency_secs: 60,
    },
];

/// One row of [`BUILTIN`]: a [`ModelSpec`] in constant form.
struct Builtin {
    id: &'static str,
    family: Family,
    endpoint: &'static str,
    sizes: Sizes,
    default_size: Option<Size>,
    n_max: u32,
    /// Price per image, in yuan.
    yuan: f64,
    submit_rps: u32,
    concurrency: u32,
    prompt_limit: usize,
    latency_secs: u64,
}

/// The size rules the built-in models share.
#[derive(Clone, Copy)]
enum Sizes {
    WanxV1,
    /// Wan 2.0–2.2: sides from 512 to 1440, at most 1440 × 1440 pixels.
    V2Sides,
    /// Wan 2.5: 768 × 768 to 1440 × 1440 pixels, a ratio up to 4.
    Wan25Pixels,
    Qwen,
    FromInput,
}

impl Sizes {
    fn rule(self) -> SizeRule {
        match self {
            Sizes::WanxV1 => SizeRule::Listed(WANX_V1_SIZES.to_vec()),
            Sizes::V2Sides => SizeRule::Sides {
                min_side: 512,
                max_side: 1440,
                max_pixels: 1440 * 1440,
            },
            Sizes::Wan25Pixels => SizeRule::Pixels {
                min_pixels: 768 * 768,
                max_pixels: 1440 * 1440,
                max_ratio: 4.0,
            },
            Sizes::Qwen => SizeRule::Listed(QWEN_SIZES.to_vec()),
            Sizes::FromInput => SizeRule::FromInput,
        }
    }
}

impl Builtin {
    fn spec(&self) -> ModelSpec {
        ModelSpec {
            id: self.id.to_owned(),
            family: self.family,
            endpoint: self.endpoint.to_owned(),
            sizes: self.sizes.rule(),
            default_size: self.default_size,
            n_min: 1,
            n_max: self.n_max,
            price: Money::from_yuan(self.yuan),
            submit_rps: self.submit_rps,
            concurrency: self.concurrency,
            prompt_limit: self.prompt_limit,
            typical_latency: Duration::from_secs(self.latency_secs),
        }
    }
}

impl Registry {
    /// The built-in registry: [`BUILTIN`] and [`ALIASES`].
    pub fn builtin() -> Registry {
        Registry {
            models: BUILTIN
                .iter()
                .map(|m| (m.id.to_owned(), m.spec()))
                .collect(),
            aliases: ALIASES
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect(),
        }
    }

    /// Applies `[prices]` and `[models.NAME]` from `wanx.toml`. Errors name the entry and the field.
    pub fn extend(
        &mut self,
        prices: &BTreeMap<String, f64>,
        overrides: &BTreeMap<String, ModelOverride>,
    ) -> Result<(), Vec<(String, String)>> {
        let mut errors = Vec::new();
        for (name, o) in overrides {
            let base_name = o.base.as_deref().unwrap_or(name);
            let base = self.resolve(base_name).map(|r| r.spec.clone());
            let mut spec = match (base, o.family) {
                (Some(spec), _) => spec,
                (None, Some(family)) => new_model(name, family),
                (None, None) => {
                    errors.push((
                        format!("models.{name}"),
                        format!("`{base_name}` is not a known model; set `base` to a known model or `family` to describe a new one"),
                    ));
                    continue;
                }
            };
            apply_override(name, o, &mut spec, &mut errors);
            self.aliases.remove(name);
            self.models.insert(name.clone(), spec);
        }
        for (name, price) in prices {
            let key = self.resolve(name).map(|r| r.spec.id.clone());
            match key.and_then(|id| self.models.get_mut(&id)) {
                Some(spec) if *price >= 0.0 => spec.price = Money::from_yuan(*price),
                Some(_) => errors.push((
                    format!("prices.{name}"),
                    "a price cannot be negative".to_owned(),
                )),
                None => errors.push((
                    format!("prices.{name}"),
                    format!("`{name}` is not a known model"),
                )),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Looks a model up by its real id, an alias, or a `[models.NAME]` entry name.
    pub fn resolve(&self, name: &str) -> Option<Resolved<'_>> {
        if let Some(spec) = self.models.get(name) {
            return Some(Resolved {
                spec,
                alias_of: None,
            });
        }
        let (alias, target) = self.aliases.get_key_value(name)?;
        self.models.get(target).map(|spec| Resolved {
            spec,
            alias_of: Some(alias.as_str()),
        })
    }

    /// A model by the key it is stored under (what [`Resolved::spec`]'s id or entry name was).
    pub fn get(&self, name: &str) -> Option<&ModelSpec> {
        self.resolve(name).map(|r| r.spec)
    }

    /// Whether `model` takes local images inline as data URIs (the edit models do); the others
    /// get them through DashScope's temporary storage (`oss://`).
    pub fn takes_inline_media(&self, model: &str) -> bool {
        self.get(model).is_some_and(|spec| spec.family.is_edit())
    }

    /// Every known name, real ids and aliases, for did-you-mean hints.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.models
            .keys()
            .chain(self.aliases.keys())
            .map(String::as_str)
    }

    pub fn models(&self) -> impl Iterator<Item = &ModelSpec> {
        self.models.values()
    }
}

/// A model `[models.NAME]` describes from scratch (no `base`): the given family's endpoint and
/// conservative limits, free until a price is set.
fn new_model(name: &str, family: Family) -> ModelSpec {
    ModelSpec {
        id: name.to_owned(),
        family,
        endpoint: if family.is_edit() {
            IMAGE2IMAGE
        } else {
            TEXT2IMAGE
        }
        .to_owned(),
        sizes: SizeRule::Sides {
            min_side: 512,
            max_side: 1440,
            max_pixels: 1440 * 1440,
        },
        default_size: Some(Size::new(1024, 1024)),
        n_min: 1,
        n_max: 4,
        price: Money::ZERO,
        submit_rps: 2,
        concurrency: 2,
        prompt_limit: 800,
        typical_latency: Duration::from_secs(60),
    }
}

/// Applies one `[models.NAME]` entry's fields to `spec`, pushing an error per field it cannot read.
fn apply_override(
    name: &str,
    o: &ModelOverride,
    spec: &mut ModelSpec,
    errors: &mut Vec<(String, String)>,
) {
    spec.id = o.id.clone().unwrap_or_else(|| {
        if o.base.is_some() {
            name.to_owned()
        } else {
            spec.id.clone()
        }
    });
    if let Some(f) = o.family {
        spec.family = f;
    }
    if let Some(e) = &o.endpoint {
        spec.endpoint.clone_from(e);
    }
    if let Some(p) = o.price {
        spec.price = Money::from_yuan(p);
    }
    if let Some(v) = o.submit_rps {
        spec.submit_rps = v.max(1);
    }
    if let Some(v) = o.concurrency {
        spec.concurrency = v.max(1);
    }
    if let Some(v) = o.n_max {
        spec.n_max = v;
    }
    if let Some(v) = o.prompt_limit {
        spec.prompt_limit = v;
    }
    if let Some(secs) = o.typical_latency {
        spec.typical_latency = Duration::from_secs_f64(secs.max(0.0));
    }
    if let Some(list) = &o.sizes {
        match list
            .iter()
            .map(|s| s.parse::<Size>())
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(sizes) => spec.sizes = SizeRule::Listed(sizes),
            Err(e) => errors.push((format!("models.{name}.sizes"), e)),
        }
    }
    if o.min_side.is_some() || o.max_side.is_some() || o.max_pixels.is_some() {
        let (min0, max0, px0) = match spec.sizes {
            SizeRule::Sides {
                min_side,
                max_side,
                max_pixels,
            } => (min_side, max_side, max_pixels),
            _ => (512, 1440, 1440 * 1440),
        };
        spec.sizes = SizeRule::Sides {
            min_side: o.min_side.unwrap_or(min0),
            max_side: o.max_side.unwrap_or(max0),
            max_pixels: o.max_pixels.unwrap_or(px0),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_alias_resolves_to_the_real_id() {
        let r = Registry::builtin();
        let resolved = r.resolve("wanx2.2-t2i-flash").unwrap();
        assert_eq!(resolved.spec.id, "wan2.2-t2i-flash");
        assert_eq!(resolved.alias_of, Some("wanx2.2-t2i-flash"));
        assert_eq!(
            r.resolve("wanx2.5-image-edit").unwrap().spec.id,
            "wanx2.1-imageedit"
        );
    }

    #[test]
    fn qwen_nearest_size_keeps_the_aspect_ratio() {
        let r = Registry::builtin();
        let rule = &r.get("qwen-image").unwrap().sizes;
        assert_eq!(
            rule.nearest_listed(Size::new(768, 1024)),
            Some(Size::new(1104, 1472))
        );
        assert_eq!(
            rule.nearest_listed(Size::new(1920, 1080)),
            Some(Size::new(1664, 928))
        );
    }

    #[test]
    fn wan22_rejects_a_side_beyond_1440() {
        let r = Registry::builtin();
        let rule = &r.get("wan2.2-t2i-flash").unwrap().sizes;
        assert!(rule.check(Size::new(1024, 1024)).is_ok());
        let (msg, hint) = rule.check(Size::new(2000, 1024)).unwrap_err();
        assert!(msg.contains("2000"), "{msg}");
        assert!(hint.contains("1440"), "{hint}");
    }

    #[test]
    fn manifest_can_add_a_model_and_override_a_price() {
        let mut r = Registry::builtin();
        let mut overrides = BTreeMap::new();
        overrides.insert(
            "house-flash".to_owned(),
            ModelOverride {
                base: Some("wan2.2-t2i-flash".into()),
                id: Some("wan2.2-t2i-flash".into()),
                concurrency: Some(8),
                ..ModelOverride::default()
            },
        );
        let mut prices = BTreeMap::new();
        prices.insert("qwen-image".to_owned(), 0.3);
        r.extend(&prices, &overrides).unwrap();
        assert_eq!(r.get("house-flash").unwrap().concurrency, 8);
        assert_eq!(r.get("qwen-image").unwrap().price, Money::from_yuan(0.3));
        let bad = r.extend(
            &BTreeMap::from([("nope".to_owned(), 1.0)]),
            &BTreeMap::new(),
        );
        assert!(bad.is_err());
    }
}
