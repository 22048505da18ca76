//! One request to the emulator: the error answer every route shares (protocol §4), and the checks a
//! task submission passes before it becomes a task (§2, §7, §8), with what the task needs later.

use std::collections::BTreeMap;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::HeaderMap;
use hyper::{Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::emulator::response::json_response;
use crate::money::Money;
use crate::registry::{Family, ModelSpec, Registry};
use crate::size::Size;

/// The largest seed the service accepts (§2).
const MAX_SEED: u64 = 2_147_483_647;
/// The size rendered when neither the request nor the registry names one.
pub(crate) const FALLBACK_SIZE: Size = Size::new(1024, 1024);

// ------------------------------------------------------------------------------------------------
// Errors

/// An error answer: `{"code","message","request_id"}` with an HTTP status (§4).
#[derive(Debug, PartialEq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: String,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: String) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "InvalidParameter", message)
    }

    pub(crate) fn not_found(message: String) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    pub(crate) fn internal(message: String) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    pub(crate) fn response(&self, request_id: &str) -> Response<Full<Bytes>> {
        json_response(
            self.status,
            &json!({"code": self.code, "message": self.message, "request_id": request_id}),
        )
    }
}

// ------------------------------------------------------------------------------------------------
// Validation

/// A submission that passed every check, with what the task needs to answer later.
#[derive(Debug)]
pub(crate) struct Submission {
    pub(crate) model: String,
    pub(crate) family: Family,
    pub(crate) price: Money,
    pub(crate) n: u32,
    /// The size asked for, or the service's default; image edits follow their input instead
    /// ([`Submission::output_size`]).
    pub(crate) size: Size,
    pub(crate) prompt: Option<String>,
    pub(crate) prompt_extend: bool,
    pub(crate) seed: Option<u64>,
    /// blake3 of the canonical (model, input, parameters without `n` and `seed`): what decides the
    /// pictures, so the same request always renders the same bytes.
    pub(crate) digest: blake3::Hash,
    /// The media inputs, in field order.
    pub(crate) media: Vec<Media>,
    /// For an edit whose output follows its input image: the width and height factors.
    pub(crate) follow: Option<(f64, f64)>,
}

/// One media input value and what is known of it before uploads are looked up.
#[derive(Debug, PartialEq)]
pub(crate) enum Media {
    /// An `http(s)://` URL; the emulator does not fetch it.
    Url,
    /// A `data:` URI, decoded and checked; its size when the header says.
    DataUri(Option<Size>),
    /// `oss://KEY`: an object uploaded through `POST /oss`.
    Oss(String),
}

impl Media {
    /// The name the ledger records: `url`, `data-uri` or `oss`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Media::Url => "url",
            Media::DataUri(_) => "data-uri",
            Media::Oss(_) => "oss",
        }
    }
}

impl Submission {
    /// Checks a submission body. `oss_resolve` says whether the request carried
    /// `X-DashScope-OssResourceResolve: enable`, without which `oss://` inputs are invalid.
    pub(crate) fn validate(
        registry: &Registry,
        endpoint: &str,
        body: &Value,
        oss_resolve: bool,
    ) -> Result<Submission, ApiError> {
        let body = body
            .as_object()
            .ok_or_else(|| ApiError::invalid("the request body must be a JSON object".into()))?;
        let spec = model_spec(registry, body)?;
        if spec.endpoint != endpoint {
            return Err(ApiError::invalid("url error, please check url!".into()));
        }
        let input = object_field(body, "input")?.ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "BadRequest.EmptyInput",
                "Required input parameter missing from request.",
            )
        })?;
        let parameters = object_field(body, "parameters")?
            .cloned()
            .unwrap_or_default();
        let prompt = check_input(spec, input)?;
        let media = check_media(spec, input, oss_resolve)?;
        let n = check_n(spec, &parameters)?;
        let size = check_size(spec, &parameters)?;
        let seed = check_seed(&parameters)?;
        let prompt_extend = match parameters.get("prompt_extend") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(ApiError::invalid("prompt_extend must be a boolean".into())),
        };
        let follow = if spec.family == Family::ImageEdit {
            Some(edit_scale(input, &parameters)?)
        } else {
            None
        };
        Ok(Submission {
            model: spec.id.clone(),
            family: spec.family,
            price: spec.price,
            n,
            size,
            prompt,
            prompt_extend,
            seed,
            digest: request_digest(&spec.id, input, &parameters),
            media,
            follow,
        })
    }

    /// The size to render, given the size of the input image when it is known (a data URI or an
    /// upload): an image edit renders at its input's size times the `expand` scales or the
    /// `super_resolution` factor; an input of unknown size (a URL the emulator does not fetch)
    /// counts as the fallback size.
    pub(crate) fn output_size(&self, input: Option<Size>) -> Size {
        let Some((sx, sy)) = self.follow else {
            return self.size;
        };
        let base = input.unwrap_or(self.size);
        let scale = |side: u32, factor: f64| (f64::from(side) * factor).round().max(1.0) as u32;
        Size::new(scale(base.width, sx), scale(base.height, sy))
    }

    /// The first image input: the one an edit follows.
    pub(crate) fn base_media(&self) -> Option<&Media> {
        self.media.first()
    }
}

/// The width and height factors of an image edit: `expand` grows each side by its `*_scale`
/// (so `left_scale = right_scale = 1.5` doubles the width), `super_resolution` multiplies both by
/// `upscale_factor`; the other functions keep the input's size.
fn edit_scale(
    input: &Map<String, Value>,
    parameters: &Map<String, Value>,
) -> Result<(f64, f64), ApiError> {
    let number = |name: &str, default: f64, range: std::ops::RangeInclusive<f64>| match parameters
        .get(name)
    {
        None | Some(Value::Null) => Ok(default),
        Some(value) => value.as_f64().filter(|v| range.contains(v)).ok_or_else(|| {
            ApiError::invalid(format!(
                "{name} must be a number between {} and {}, got {value}",
                range.start(),
                range.end()
            ))
        }),
    };
    match input.get("function").and_then(Value::as_str) {
        Some("expand") => {
            let side = |name| number(name, 1.0, 1.0..=2.0);
            let width = side("left_scale")? + side("right_scale")? - 1.0;
            let height = side("top_scale")? + side("bottom_scale")? - 1.0;
            Ok((width, height))
        }
        Some("super_resolution") => {
            let factor = number("upscale_factor", 1.0, 1.0..=4.0)?;
            Ok((factor, factor))
        }
        _ => Ok((1.0, 1.0)),
    }
}

/// The message the service gives for a URL it cannot use.
pub(crate) const INVALID_URL: &str =
    "The provided URL does not appear to be valid. Ensure it is correctly formatted.";

/// The media inputs of a request, in field order: each `images[]` entry, `ref_img`, and every
/// `*_url` field. `data:` URIs are accepted where the service documents them (§8) and must be
/// images; `oss://` needs the resolve header.
fn check_media(
    spec: &ModelSpec,
    input: &Map<String, Value>,
    oss_resolve: bool,
) -> Result<Vec<Media>, ApiError> {
    let mut fields: Vec<(String, &str)> = Vec::new();
    // The base image first: it is what an edit follows.
    let mut names: Vec<&String> = input.keys().collect();
    names.sort_by_key(|name| (name.as_str() != "base_image_url", name.as_str()));
    for name in names {
        match &input[name] {
            Value::Array(items) if name == "images" => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(text) = item.as_str() {
                        fields.push((format!("images[{i}]"), text));
                    }
                }
            }
            Value::String(text) if name == "ref_img" || name.ends_with("_url") => {
                fields.push((name.clone(), text));
            }
            _ => {}
        }
    }
    let data_allowed = |field: &str| match spec.family {
        Family::ImageEdit => field == "base_image_url" || field == "mask_image_url",
        Family::Wan25I2i => field.starts_with("images["),
        _ => false,
    };
    fields
        .into_iter()
        .map(|(field, value)| {
            if let Some(key) = value.strip_prefix("oss://") {
                if !oss_resolve {
                    return Err(ApiError::invalid(format!(
                        "{INVALID_URL} (input.{field} is an `oss://` URL: send the header \
                         `X-DashScope-OssResourceResolve: enable`)"
                    )));
                }
                Ok(Media::Oss(key.to_owned()))
            } else if value.starts_with("data:") {
                if !data_allowed(&field) {
                    return Err(ApiError::invalid(format!(
                        "input.{field} does not accept base64 data URIs for {}",
                        spec.id
                    )));
                }
                let bytes = crate::media::data_uri_bytes(value)
                    .filter(|bytes| crate::media::sniff(bytes).is_some())
                    .ok_or_else(|| data_inspection(&field))?;
                Ok(Media::DataUri(crate::media::image_size(&bytes)))
            } else if value.starts_with("http://") || value.starts_with("https://") {
                Ok(Media::Url)
            } else {
                Err(ApiError::invalid(format!("{INVALID_URL} (input.{field})")))
            }
        })
        .collect()
}

/// `400 InvalidParameter.DataInspection`: the media is not an image the service reads.
pub(crate) fn data_inspection(field: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "InvalidParameter.DataInspection",
        format!(
            "The media format is not supported or incorrect for the data inspection (input.{field}: \
             expected a PNG, JPEG or WebP image)."
        ),
    )
}

/// The model the body names, by its real id (aliases are wanx's, not the service's).
fn model_spec<'r>(
    registry: &'r Registry,
    body: &Map<String, Value>,
) -> Result<&'r ModelSpec, ApiError> {
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m,
        None | Some(Value::Null) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "BadRequest.EmptyModel",
                "Required parameter \"model\" missing from request.",
            ));
        }
        Some(_) => return Err(ApiError::invalid("model must be a string".into())),
    };
    let exact = registry
        .resolve(model)
        .filter(|r| r.alias_of.is_none() && r.spec.id == *model)
        .map(|r| r.spec);
    exact
        .or_else(|| registry.models().find(|spec| spec.id == *model))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "ModelNotFound",
                format!("Model not exist: {model}"),
            )
        })
}

/// `body[name]` as an object: `None` when absent or null, an error when it is something else.
fn object_field<'b>(
    body: &'b Map<String, Value>,
    name: &str,
) -> Result<Option<&'b Map<String, Value>>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(ApiError::invalid(format!("{name} must be a JSON object"))),
    }
}

/// Checks the input fields each family requires; returns the prompt, if any.
fn check_input(spec: &ModelSpec, input: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    let text = |name: &str| match input.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        None | Some(Value::Null) => Ok(None),
        Some(_) => Err(ApiError::invalid(format!("input.{name} must be a string"))),
    };
    let required = |name: &str| {
        text(name)?.ok_or_else(|| ApiError::invalid(format!("input.{name} is required")))
    };
    match spec.family {
        Family::ImageEdit => {
            let function = required("function")?;
            required("base_image_url")?;
            if function == "description_edit_with_mask" {
                required("mask_image_url")?;
            }
            text("prompt")
        }
        Family::Wan25I2i => {
            let images = input.get("images").and_then(Value::as_array);
            let count = images.map_or(0, Vec::len);
            if !(1..=3).contains(&count) || images.is_some_and(|i| i.iter().any(|v| !v.is_string()))
            {
                return Err(ApiError::invalid(
                    "input.images must be an array of 1 to 3 image URLs".into(),
                ));
            }
            required("prompt").map(Some)
        }
        Family::WanxV1 | Family::WanV2 | Family::Wan25 | Family::Qwen => {
            required("prompt").map(Some)
        }
    }
}

/// `parameters.n`, defaulting as the service does: 1 for wanx2.1-imageedit, else 4, within the
/// model's maximum.
fn check_n(spec: &ModelSpec, parameters: &Map<String, Value>) -> Result<u32, ApiError> {
    let Some(value) = parameters.get("n").filter(|v| !v.is_null()) else {
        let default = if spec.family == Family::ImageEdit {
            1
        } else {
            4
        };
        return Ok(default.clamp(spec.n_min, spec.n_max));
    };
    value
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| (spec.n_min..=spec.n_max).contains(n))
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "n must be an integer between {} and {} for {}, got {value}",
                spec.n_min, spec.n_max, spec.id
            ))
        })
}

/// `parameters.size` (`W*H`, checked against the model's rule), or the size the service would use.
fn check_size(spec: &ModelSpec, parameters: &Map<String, Value>) -> Result<Size, ApiError> {
    let Some(value) = parameters.get("size").filter(|v| !v.is_null()) else {
        return Ok(spec.default_size.unwrap_or(FALLBACK_SIZE));
    };
    let text = value
        .as_str()
        .filter(|s| s.contains('*'))
        .ok_or_else(|| ApiError::invalid(format!("size must be a string `W*H`, got {value}")))?;
    let size: Size = text.parse().map_err(ApiError::invalid)?;
    spec.sizes
        .check(size)
        .map_err(|(reason, hint)| ApiError::invalid(format!("{reason}; {hint}")))?;
    Ok(size)
}

fn check_seed(parameters: &Map<String, Value>) -> Result<Option<u64>, ApiError> {
    match parameters.get("seed") {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .filter(|s| *s <= MAX_SEED)
            .map(Some)
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "seed must be an integer between 0 and {MAX_SEED}, got {value}"
                ))
            }),
    }
}

/// blake3 of the canonical JSON of what decides the pictures: the model, the input, and the
/// parameters other than `n` (which only says how many) and `seed` (mixed in per image).
fn request_digest(
    model: &str,
    input: &Map<String, Value>,
    parameters: &Map<String, Value>,
) -> blake3::Hash {
    let mut parameters = parameters.clone();
    parameters.remove("n");
    parameters.remove("seed");
    let canonical = canonical(&json!({
        "model": model,
        "input": input,
        "parameters": parameters,
    }));
    blake3::hash(canonical.to_string().as_bytes())
}

/// `value` with every object's keys in sorted order, whatever map type `serde_json` was built with.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), canonical(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

// ------------------------------------------------------------------------------------------------
// Headers and body

/// The largest request body accepted (inputs may carry base64 images, uploads carry files).
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

pub(crate) fn require_async(headers: &HeaderMap) -> Result<(), ApiError> {
    let enabled = headers
        .get("x-dashscope-async")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("enable"));
    if enabled {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "current user api does not support synchronous calls.",
        ))
    }
}

pub(crate) fn dashscope_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-dashscope-"))
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect()
}

pub(crate) async fn read_json(body: Incoming) -> Result<Value, ApiError> {
    let bytes = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BadRequest.TooLarge",
                format!("request body is larger than {MAX_BODY_BYTES} bytes"),
            ));
        }
        Err(e) => {
            return Err(ApiError::invalid(format!(
                "the request body could not be read: {e}"
            )));
        }
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid(format!("request body is not valid JSON: {e}")))
}

/// Whether a header is `enable`, in any case.
pub(crate) fn header_enabled(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("enable"))
}

/// The test helpers the state's tests share (a private `tests` module keeps the module-cycle check,
/// which skips `mod tests`, from reading its `super::*` as an edge).
#[cfg(test)]
pub(crate) use tests::{flash, validate};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{IMAGE2IMAGE, TEXT2IMAGE};

    pub(crate) fn validate(endpoint: &str, body: &Value) -> Result<Submission, ApiError> {
        Submission::validate(&Registry::builtin(), endpoint, body, false)
    }

    pub(crate) fn flash(parameters: &Value) -> Value {
        json!({"model": "wan2.2-t2i-flash", "input": {"prompt": "a cat"}, "parameters": parameters})
    }

    #[test]
    fn n_defaults_to_four_as_on_the_service_within_the_model_maximum() {
        assert_eq!(validate(TEXT2IMAGE, &flash(&json!({}))).unwrap().n, 4);
        let qwen = json!({"model": "qwen-image", "input": {"prompt": "a cat"}});
        assert_eq!(validate(TEXT2IMAGE, &qwen).unwrap().n, 1);
        let edit = json!({"model": "wanx2.1-imageedit",
            "input": {"function": "expand", "prompt": "p", "base_image_url": "http://x/a.png"}});
        let edit = validate(IMAGE2IMAGE, &edit).unwrap();
        assert_eq!((edit.n, edit.size), (1, FALLBACK_SIZE));
    }

    #[test]
    fn rejects_what_the_service_rejects() {
        let code = |endpoint, body: Value| validate(endpoint, &body).unwrap_err().code;
        assert_eq!(code(TEXT2IMAGE, json!([])), "InvalidParameter");
        assert_eq!(
            code(TEXT2IMAGE, json!({"input": {"prompt": "p"}})),
            "BadRequest.EmptyModel"
        );
        assert_eq!(
            code(TEXT2IMAGE, json!({"model": "nope", "input": {}})),
            "ModelNotFound"
        );
        assert_eq!(
            code(
                TEXT2IMAGE,
                json!({"model": "wanx2.2-t2i-flash", "input": {"prompt": "p"}})
            ),
            "ModelNotFound",
            "aliases are wanx's, not the service's"
        );
        assert_eq!(
            code(TEXT2IMAGE, json!({"model": "wan2.2-t2i-flash"})),
            "BadRequest.EmptyInput"
        );
        assert_eq!(
            code(
                TEXT2IMAGE,
                json!({"model": "wan2.2-t2i-flash", "input": {}})
            ),
            "InvalidParameter"
        );
        assert_eq!(
            code(TEXT2IMAGE, flash(&json!({"n": 5}))),
            "InvalidParameter"
        );
        assert_eq!(
            code(TEXT2IMAGE, flash(&json!({"n": 0}))),
            "InvalidParameter"
        );
        assert_eq!(
            code(TEXT2IMAGE, flash(&json!({"n": "2"}))),
            "InvalidParameter"
        );
        assert_eq!(
            code(TEXT2IMAGE, flash(&json!({"size": "1024x1024"}))),
            "InvalidParameter"
        );
        assert_eq!(
            code(TEXT2IMAGE, flash(&json!({"seed": -1}))),
            "InvalidParameter"
        );
        assert_eq!(
            code(TEXT2IMAGE, flash(&json!({"prompt_extend": "no"}))),
            "InvalidParameter"
        );
        assert_eq!(
            code(
                TEXT2IMAGE,
                json!({"model": "wan2.2-t2i-flash", "input": {"prompt": "p"}, "parameters": 3})
            ),
            "InvalidParameter"
        );
        let wrong_path = validate(IMAGE2IMAGE, &flash(&json!({}))).unwrap_err();
        assert_eq!(wrong_path.message, "url error, please check url!");
        let no_images =
            json!({"model": "wan2.5-i2i-preview", "input": {"prompt": "p", "images": []}});
        assert_eq!(code(IMAGE2IMAGE, no_images), "InvalidParameter");
        let no_mask = json!({"model": "wanx2.1-imageedit", "input": {"function": "description_edit_with_mask",
            "prompt": "p", "base_image_url": "http://x/a.png"}});
        assert_eq!(code(IMAGE2IMAGE, no_mask), "InvalidParameter");
    }

    #[test]
    fn size_errors_give_the_reason_and_the_range() {
        let error = validate(TEXT2IMAGE, &flash(&json!({"size": "2000*1024"}))).unwrap_err();
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert!(
            error.message.contains("2000") && error.message.contains("1440"),
            "{}",
            error.message
        );
    }

    #[test]
    fn the_digest_ignores_n_seed_and_key_order() {
        let a = validate(
            TEXT2IMAGE,
            &json!({"parameters": {"n": 1, "seed": 5, "size": "1024*1024"},
            "input": {"prompt": "a cat", "negative_prompt": "dogs"}, "model": "wan2.2-t2i-flash"}),
        )
        .unwrap();
        let b = validate(TEXT2IMAGE, &json!({"model": "wan2.2-t2i-flash",
            "input": {"negative_prompt": "dogs", "prompt": "a cat"}, "parameters": {"size": "1024*1024", "n": 3}})).unwrap();
        let c = validate(TEXT2IMAGE, &flash(&json!({"size": "1024*768"}))).unwrap();
        assert_eq!(a.digest, b.digest);
        assert_ne!(a.digest, c.digest);
    }
}
