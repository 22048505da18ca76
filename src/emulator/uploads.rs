//! The upload routes (protocol §8): `getPolicy` issues a credential bound to a model, and `POST /oss`
//! takes the SDK's multipart form (an OSS `PostObject`) and stores the file as `oss://KEY`,
//! answering as OSS does, with XML errors.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use tokio::time::Instant;

use crate::emulator::config::FaultEvent;
use crate::emulator::multipart::{boundary, parse_multipart};
use crate::emulator::request::{ApiError, MAX_BODY_BYTES};
use crate::emulator::response::{Answer, header_value, json_response, oss_error};
use crate::emulator::shared::{Shared, object_store_fault, public_origin};
use crate::emulator::state::{Policy, StoredObject, format_time};
use crate::media::base64_encode;

/// How long an upload credential is valid (§8).
const POLICY_TTL: Duration = Duration::from_secs(300);

/// `GET /uploads?action=getPolicy&model=M`: a credential for one upload directory, bound to `M`.
pub(crate) fn get_policy(shared: &Shared, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let request_id = shared.ids.next("request");
    if let Err(error) = shared.authorize(request.headers()) {
        return error.response(&request_id);
    }
    let query = request.uri().query().unwrap_or_default();
    let param = |name: &str| {
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then(|| value.to_owned())
        })
    };
    if param("action").as_deref() != Some("getPolicy") {
        return ApiError::invalid("action must be `getPolicy`".into()).response(&request_id);
    }
    let Some(model) = param("model").filter(|m| !m.is_empty()) else {
        return ApiError::invalid("model is required".into()).response(&request_id);
    };
    if !shared.config.registry.models().any(|spec| spec.id == model) {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "ModelNotFound",
            format!("Model not exist: {model}"),
        )
        .response(&request_id);
    }
    let nonce = shared.ids.next("policy");
    let date = format_time(SystemTime::now());
    let upload_dir = format!(
        "dashscope-instant/{}/{}/{nonce}",
        blake3::hash(model.as_bytes()).to_hex()[..32].to_owned(),
        &date[..10]
    );
    let policy = base64_encode(
        json!({
            "expiration": format_time(SystemTime::now() + POLICY_TTL),
            "conditions": [
                ["content-length-range", 0, MAX_BODY_BYTES],
                ["starts-with", "$key", upload_dir],
                {"bucket": "dashscope-file-mgr"},
            ],
        })
        .to_string()
        .as_bytes(),
    );
    let signature = base64_encode(&blake3::hash(policy.as_bytes()).as_bytes()[..20]);
    let access_key_id = format!("LTAI5tEmu{}", &nonce[..8]);
    let credential = json!({
        "policy": policy,
        "signature": signature,
        "upload_dir": upload_dir,
        "upload_host": format!("{}/oss", public_origin(request.headers(), shared.addr)),
        "expire_in_seconds": POLICY_TTL.as_secs(),
        "max_file_size_mb": 1024,
        "capacity_limit_mb": 999_999,
        "oss_access_key_id": access_key_id,
        "x_oss_object_acl": "private",
        "x_oss_forbid_overwrite": "true",
    });
    let mut state = shared.state();
    state.ledger.upload_policies += 1;
    state.policies.insert(
        policy.clone(),
        Policy {
            model,
            upload_dir,
            signature,
            access_key_id,
            issued: Instant::now(),
        },
    );
    drop(state);
    json_response(
        StatusCode::OK,
        &json!({"data": credential, "request_id": request_id}),
    )
}

/// The form fields an upload must carry, as the SDK sends them.
pub(super) const UPLOAD_FIELDS: [&str; 9] = [
    "OSSAccessKeyId",
    "Signature",
    "policy",
    "key",
    "x-oss-object-acl",
    "x-oss-forbid-overwrite",
    "success_action_status",
    "x-oss-content-type",
    "file",
];

/// `POST /oss`: an OSS `PostObject` with a policy from `getPolicy`; answers as OSS does, with XML
/// errors.
pub(crate) async fn upload(shared: &Shared, request: Request<Incoming>) -> Answer {
    let request_id = shared.ids.next("request");
    let form = match read_form(request).await {
        Ok(form) => form,
        Err((status, code, message)) => {
            return Ok(oss_error(status, code, &message, &request_id));
        }
    };
    let denied = |code: &str, message: &str| {
        Ok(oss_error(StatusCode::FORBIDDEN, code, message, &request_id))
    };
    if let Some(missing) = UPLOAD_FIELDS.iter().find(|f| !form.contains_key(**f)) {
        return denied(
            "AccessDenied",
            &format!("Invalid according to Policy: the form field `{missing}` is missing."),
        );
    }
    let text = |name: &str| String::from_utf8_lossy(&form[name]).into_owned();
    let key = text("key");
    let model = {
        let state = shared.state();
        let Some(policy) = state.policies.get(&text("policy")) else {
            return denied(
                "AccessDenied",
                "Invalid according to Policy: unknown policy.",
            );
        };
        if policy.access_key_id != text("OSSAccessKeyId") {
            return denied(
                "InvalidAccessKeyId",
                "The OSS Access Key Id you provided does not exist in our records.",
            );
        }
        if policy.signature != text("Signature") {
            return denied(
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            );
        }
        if policy.issued.elapsed() >= POLICY_TTL {
            return denied(
                "AccessDenied",
                "Invalid according to Policy: Policy expired.",
            );
        }
        if !key.starts_with(&format!("{}/", policy.upload_dir)) {
            return denied(
                "AccessDenied",
                "Invalid according to Policy: Policy Condition failed: [\"starts-with\", \"$key\", upload_dir].",
            );
        }
        policy.model.clone()
    };
    if let Err(answer) = object_store_fault(shared, FaultEvent::Upload, &model, &request_id).await {
        return answer;
    }
    let mut state = shared.state();
    if text("x-oss-forbid-overwrite") == "true" && state.objects.contains_key(&key) {
        drop(state);
        return Ok(oss_error(
            StatusCode::CONFLICT,
            "FileAlreadyExists",
            "The object you specified already exists and can not be overwritten.",
            &request_id,
        ));
    }
    let bytes = form["file"].clone();
    state.objects.insert(
        key,
        StoredObject {
            model,
            bytes,
            stored: Instant::now(),
        },
    );
    state.ledger.uploads += 1;
    drop(state);
    let status = match text("success_action_status").as_str() {
        "200" => StatusCode::OK,
        "201" => StatusCode::CREATED,
        _ => StatusCode::NO_CONTENT,
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("x-oss-request-id", header_value(&request_id));
    Ok(response)
}

type FormError = (StatusCode, &'static str, String);

/// The fields of a `multipart/form-data` body by name (the last one wins, like OSS).
async fn read_form(request: Request<Incoming>) -> Result<BTreeMap<String, Bytes>, FormError> {
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(boundary) = boundary(content_type) else {
        return Err((
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "the body must be multipart/form-data with a boundary".into(),
        ));
    };
    let body = match Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            return Err((
                StatusCode::BAD_REQUEST,
                "EntityTooLarge",
                "Your proposed upload exceeds the maximum allowed size.".into(),
            ));
        }
        Err(e) => {
            return Err((
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                format!("the body could not be read: {e}"),
            ));
        }
    };
    let parts = parse_multipart(&body, &boundary).map_err(|why| {
        (
            StatusCode::BAD_REQUEST,
            "MalformedPOSTRequest",
            format!("The body of your POST request is not well-formed multipart/form-data: {why}."),
        )
    })?;
    Ok(parts.into_iter().map(|p| (p.name, p.data)).collect())
}
