//! The emulator's other routes over real HTTP: uploads (getPolicy, `POST /oss`), media inputs
//! (`data:` URIs, `oss://`), cancel, the task list and the admin routes (`reset`, `health`).

use serde_json::{Value, json};

use crate::emulator::http_test_client::*;
use crate::emulator::uploads::UPLOAD_FIELDS;
use crate::emulator::{Emulator, Ledger};
use crate::registry::IMAGE2IMAGE;

// ------------------------------------------------------------------------------------------------
// Uploads, media inputs, cancel, admin routes

/// A PNG of `width`×`height` as a `data:` URI.
fn png_data_uri(width: u32, height: u32) -> (Vec<u8>, String) {
    let png = crate::emulator::placeholder_png::render(width, height, b"input");
    let uri = format!(
        "data:image/png;base64,{}",
        crate::media::base64_encode(&png)
    );
    (png, uri)
}

/// getPolicy then the SDK's multipart POST; returns the `oss://` URL.
async fn upload(emulator: &Emulator, model: &str, bytes: Vec<u8>) -> String {
    let policy: Value = client()
        .get(format!(
            "{}/uploads?action=getPolicy&model={model}",
            emulator.base_url()
        ))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let data = &policy["data"];
    assert_eq!(data["expire_in_seconds"], 300);
    assert_eq!(data["x_oss_forbid_overwrite"], "true");
    let key = format!("{}/input.png", data["upload_dir"].as_str().unwrap());
    let text = |name: &str| data[name].as_str().unwrap().to_owned();
    let form = reqwest::multipart::Form::new()
        .text("OSSAccessKeyId", text("oss_access_key_id"))
        .text("Signature", text("signature"))
        .text("policy", text("policy"))
        .text("key", key.clone())
        .text("x-oss-object-acl", text("x_oss_object_acl"))
        .text("x-oss-forbid-overwrite", text("x_oss_forbid_overwrite"))
        .text("success_action_status", "200")
        .text("x-oss-content-type", "image/png")
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes)
                .file_name("input.png")
                .mime_str("image/png")
                .unwrap(),
        );
    let response = client()
        .post(text("upload_host"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    format!("oss://{key}")
}

fn expand(base: &str) -> Value {
    json!({"model": "wanx2.1-imageedit",
        "input": {"function": "expand", "prompt": "more sky", "base_image_url": base},
        "parameters": {"n": 1, "left_scale": 1.5, "right_scale": 1.5}})
}

#[tokio::test]
async fn an_uploaded_input_works_with_the_resolve_header_and_its_size_is_followed() {
    let emulator = start(0).await;
    let (png, _) = png_data_uri(640, 480);
    let oss = upload(&emulator, "wanx2.1-imageedit", png).await;
    let (status, answer) = post_to(
        &emulator,
        IMAGE2IMAGE,
        headers(Some(KEY), true),
        &expand(&oss),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["code"], "InvalidParameter");
    let mut resolve = headers(Some(KEY), true);
    resolve.insert("X-DashScope-OssResourceResolve", "enable".parse().unwrap());
    let (status, answer) = post_to(&emulator, IMAGE2IMAGE, resolve.clone(), &expand(&oss)).await;
    assert_eq!(status, 200, "{answer}");
    let task_id = answer["output"]["task_id"].as_str().unwrap();
    let done = wait(&emulator, task_id).await;
    let (w, h, _) = fetch_png(done["output"]["results"][0]["url"].as_str().unwrap()).await;
    assert_eq!(
        (w, h),
        (1280, 480),
        "640 wide, expanded by half on each side"
    );
    let other = json!({"model": "wan2.5-i2i-preview", "input": {"prompt": "p", "images": [oss]},
        "parameters": {"n": 1}});
    let (status, _) = post_to(&emulator, IMAGE2IMAGE, resolve, &other).await;
    assert_eq!(status, 400, "an upload is bound to its model");
    let ledger = emulator.ledger();
    assert_eq!(
        (ledger.upload_policies, ledger.uploads, ledger.submissions),
        (1, 1, 1)
    );
    assert_eq!(ledger.requests[0].media, ["oss"]);
    assert_eq!(
        ledger.requests[0].header("x-dashscope-ossresourceresolve"),
        Some("enable")
    );
}

#[tokio::test]
async fn an_upload_without_a_field_or_with_an_unknown_policy_is_forbidden() {
    let emulator = start(0).await;
    let post = |form: reqwest::multipart::Form| {
        client()
            .post(format!("{}/oss", root(&emulator)))
            .multipart(form)
            .send()
    };
    let missing = post(reqwest::multipart::Form::new().text("key", "a/b.png"))
        .await
        .unwrap();
    assert_eq!(missing.status(), 403);
    assert!(missing.text().await.unwrap().contains("OSSAccessKeyId"));
    // Every field an upload must carry, each forged.
    let mut form = reqwest::multipart::Form::new();
    for field in UPLOAD_FIELDS {
        form = form.text(field, "forged");
    }
    let forged = post(form).await.unwrap();
    assert_eq!(forged.status(), 403);
    assert!(
        forged
            .text()
            .await
            .unwrap()
            .contains("<Code>AccessDenied</Code>")
    );
    assert_eq!(emulator.ledger().uploads, 0);
}

#[tokio::test]
async fn data_uri_inputs_are_accepted_where_documented_and_must_be_images() {
    let emulator = start(0).await;
    let (_, uri) = png_data_uri(700, 500);
    let edit = json!({"model": "wanx2.1-imageedit",
        "input": {"function": "description_edit", "prompt": "a hat", "base_image_url": uri},
        "parameters": {"n": 1}});
    let (status, answer) = post_to(&emulator, IMAGE2IMAGE, headers(Some(KEY), true), &edit).await;
    assert_eq!(status, 200, "{answer}");
    let done = wait(&emulator, answer["output"]["task_id"].as_str().unwrap()).await;
    let (w, h, _) = fetch_png(done["output"]["results"][0]["url"].as_str().unwrap()).await;
    assert_eq!((w, h), (700, 500));
    let i2i = json!({"model": "wan2.5-i2i-preview",
        "input": {"prompt": "p", "images": [uri, "https://example.com/b.png"]}, "parameters": {"n": 1}});
    let (status, answer) = post_to(&emulator, IMAGE2IMAGE, headers(Some(KEY), true), &i2i).await;
    assert_eq!(status, 200, "{answer}");
    let not_image = "data:image/png;base64,aGVsbG8=";
    let bad =
        json!({"model": "wan2.5-i2i-preview", "input": {"prompt": "p", "images": [not_image]}});
    let (status, answer) = post_to(&emulator, IMAGE2IMAGE, headers(Some(KEY), true), &bad).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("InvalidParameter.DataInspection"))
    );
    let v1 = json!({"model": "wanx-v1", "input": {"prompt": "p", "ref_img": uri}});
    let (status, answer) = post(&emulator, headers(Some(KEY), true), &v1).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("InvalidParameter"))
    );
    let ledger = emulator.ledger();
    assert_eq!(ledger.requests[0].media, ["data-uri"]);
    assert_eq!(ledger.requests[1].media, ["data-uri", "url"]);
    assert_eq!(ledger.rejected, 2);
}

#[tokio::test]
async fn only_a_pending_task_can_be_canceled_and_it_bills_nothing() {
    let emulator = start(10_000).await;
    let task_id = submit_ok(&emulator, &flash(&json!({"n": 1}))).await;
    let cancel = || {
        client()
            .post(format!("{}/tasks/{task_id}/cancel", emulator.base_url()))
            .bearer_auth(KEY)
            .send()
    };
    let first = cancel().await.unwrap();
    assert_eq!(first.status(), 200);
    let answer: Value = first.json().await.unwrap();
    assert!(answer["request_id"].is_string());
    assert_eq!(
        get_task(&emulator, &task_id).await["output"]["task_status"],
        "CANCELED"
    );
    let again = cancel().await.unwrap();
    assert_eq!(again.status(), 400);
    let answer: Value = again.json().await.unwrap();
    assert_eq!(answer["code"], "UnsupportedOperation");
    let ledger = emulator.ledger();
    assert_eq!((ledger.canceled, ledger.images_billed), (1, 0));
    submit_ok(&emulator, &flash(&json!({"n": 1}))).await;
}

#[tokio::test]
async fn reset_forgets_everything_and_health_answers() {
    let emulator = start(0).await;
    let task_id = submit_ok(&emulator, &flash(&json!({"n": 1}))).await;
    let health = client()
        .get(format!("{}/emulator/health", root(&emulator)))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let reset = client()
        .post(format!("{}/emulator/reset", root(&emulator)))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 200);
    assert_eq!(emulator.ledger(), Ledger::default());
    assert_eq!(
        get_task(&emulator, &task_id).await["output"]["task_status"],
        "UNKNOWN"
    );
}

/// An object's keys, sorted.
fn sorted_keys(object: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = object
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

#[tokio::test]
async fn the_task_list_has_the_recorded_shape_filters_and_pages() {
    let emulator = start_with(with_quota(config(0), 100, 100)).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(submit_ok(&emulator, &flash(&json!({"n": 1}))).await);
    }
    let qwen = json!({"model": "qwen-image", "input": {"prompt": "a cat"}, "parameters": {"n": 1}});
    let other = submit_ok(&emulator, &qwen).await;
    let (status, all) = list_tasks(&emulator, "").await;
    assert_eq!(status, 200, "{all}");
    // The recorded answer's fields (protocol §3 "List"), and nothing else at the top.
    assert_eq!(
        sorted_keys(&all),
        [
            "data",
            "page_no",
            "page_size",
            "request_id",
            "total",
            "total_page"
        ]
    );
    assert_eq!(
        (all["total"].as_u64(), all["page_size"].as_u64()),
        (Some(4), Some(10))
    );
    assert_eq!(
        sorted_keys(&all["data"][0]),
        [
            "api_key_id",
            "caller_parent_id",
            "caller_uid",
            "end_time",
            "gmt_create",
            "model_name",
            "region",
            "request_id",
            "start_time",
            "status",
            "task_id",
            "user_api_unique_key"
        ]
    );
    assert!(all["data"][0]["gmt_create"].is_u64());
    // By model, in pages of two, newest first.
    let (_, page1) = list_tasks(&emulator, "model_name=wan2.2-t2i-flash&page_size=2").await;
    let (_, page2) = list_tasks(
        &emulator,
        "model_name=wan2.2-t2i-flash&page_size=2&page_no=2",
    )
    .await;
    assert_eq!(
        (page1["total"].as_u64(), page1["total_page"].as_u64()),
        (Some(3), Some(2))
    );
    let listed: Vec<&str> = page1["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(page2["data"].as_array().unwrap())
        .map(|t| t["task_id"].as_str().unwrap())
        .collect();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut sorted = listed.clone();
    sorted.sort_unstable();
    expected.sort_unstable();
    assert_eq!(sorted, expected, "every task once, none of the other model");
    assert!(!listed.contains(&other.as_str()));
    // By creation time: a window in the past holds nothing, one around now everything.
    let (_, past) = list_tasks(
        &emulator,
        "start_time=20000101000000&end_time=20000102000000",
    )
    .await;
    assert_eq!(past["total"], 0);
    let (_, now) = list_tasks(
        &emulator,
        "start_time=20000101000000&end_time=29991231235959",
    )
    .await;
    assert_eq!(now["total"], 4);
    // By status.
    wait(&emulator, &other).await;
    let (_, done) = list_tasks(&emulator, "status=SUCCEEDED&model_name=qwen-image").await;
    assert_eq!(done["data"][0]["task_id"], other.as_str());
    let (status, bad) = list_tasks(&emulator, "start_time=yesterday").await;
    assert_eq!(
        (status, bad["code"].as_str()),
        (400, Some("InvalidParameter"))
    );
    assert_eq!(
        emulator.ledger().task_lists,
        6,
        "the malformed one is not counted"
    );
}
