//! The emulator over real HTTP: every behaviour a client can see, each test bounded (latencies of
//! 0–100 ms, at most one sliding second of waiting).

use std::net::SocketAddr;
use std::time::Duration;

use hyper::header::CONTENT_TYPE;
use reqwest::header::HeaderMap as ClientHeaders;
use serde_json::{Value, json};

use crate::emulator::{Emulator, EmulatorConfig, Fault, FaultEvent, FaultRule, Ledger, Quota};
use crate::registry::{IMAGE2IMAGE, TEXT2IMAGE};

const API_PREFIX: &str = "/api/v1";

fn flash(parameters: &Value) -> Value {
    json!({"model": "wan2.2-t2i-flash", "input": {"prompt": "a cat"}, "parameters": parameters})
}

const KEY: &str = "sk-test";

fn config(latency_ms: u64) -> EmulatorConfig {
    EmulatorConfig {
        latency: Duration::from_millis(latency_ms),
        valid_keys: Some(vec![KEY.to_owned()]),
        ..EmulatorConfig::default()
    }
}

async fn start(latency_ms: u64) -> Emulator {
    start_with(config(latency_ms)).await
}

async fn start_with(config: EmulatorConfig) -> Emulator {
    Emulator::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap()
}

/// `http://127.0.0.1:PORT`, where the emulator's own routes live.
fn root(emulator: &Emulator) -> String {
    emulator.base_url().trim_end_matches("/api/v1").to_owned()
}

/// One client for every test (building one costs ~50 ms in a debug build, which would eat the
/// short latencies); no idle pool, so no connection outlives the test runtime that opened it.
fn client() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
            reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .pool_max_idle_per_host(0)
                .build()
                .unwrap()
        })
        .clone()
}

fn headers(key: Option<&str>, asynchronous: bool) -> ClientHeaders {
    let mut headers = ClientHeaders::new();
    if let Some(key) = key {
        headers.insert("Authorization", format!("Bearer {key}").parse().unwrap());
    }
    if asynchronous {
        headers.insert("X-DashScope-Async", "enable".parse().unwrap());
    }
    headers
}

async fn post(emulator: &Emulator, headers: ClientHeaders, body: &Value) -> (u16, Value) {
    post_to(emulator, TEXT2IMAGE, headers, body).await
}

async fn post_to(
    emulator: &Emulator,
    endpoint: &str,
    headers: ClientHeaders,
    body: &Value,
) -> (u16, Value) {
    let response = client()
        .post(format!("{}{endpoint}", emulator.base_url()))
        .headers(headers)
        .json(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn get_task(emulator: &Emulator, task_id: &str) -> Value {
    let response = client()
        .get(format!("{}/tasks/{task_id}", emulator.base_url()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Polls every 10 ms until the task is terminal, for at most 2 s.
async fn wait(emulator: &Emulator, task_id: &str) -> Value {
    for _ in 0..200 {
        let body = get_task(emulator, task_id).await;
        if !matches!(
            body["output"]["task_status"].as_str(),
            Some("PENDING" | "RUNNING")
        ) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("task {task_id} did not finish within 2 s");
}

async fn submit_ok(emulator: &Emulator, body: &Value) -> String {
    let (status, answer) = post(emulator, headers(Some(KEY), true), body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["output"]["task_status"], "PENDING");
    assert!(answer["request_id"].is_string());
    answer["output"]["task_id"].as_str().unwrap().to_owned()
}

async fn fetch_png(url: &str) -> (u32, u32, Vec<u8>) {
    let response = client().get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    assert_eq!(response.headers()[CONTENT_TYPE.as_str()], "image/png");
    let bytes = response.bytes().await.unwrap().to_vec();
    let info = png::Decoder::new(std::io::Cursor::new(&bytes))
        .read_info()
        .unwrap();
    let (w, h) = (info.info().width, info.info().height);
    (w, h, bytes)
}

#[tokio::test]
async fn generates_bills_and_serves_a_two_image_task() {
    let emulator = start(50).await;
    let body = flash(&json!({"n": 2, "size": "1024*768", "seed": 7}));
    let task_id = submit_ok(&emulator, &body).await;
    let done = wait(&emulator, &task_id).await;
    assert_eq!(done["output"]["task_status"], "SUCCEEDED", "{done}");
    assert_eq!(done["usage"]["image_count"], 2);
    let urls: Vec<&str> = done["output"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["url"].as_str().unwrap())
        .collect();
    assert_eq!(urls.len(), 2);
    let (w0, h0, first) = fetch_png(urls[0]).await;
    let (w1, h1, second) = fetch_png(urls[1]).await;
    assert_eq!((w0, h0, w1, h1), (1024, 768, 1024, 768));
    assert_ne!(first, second);
    assert_eq!(
        fetch_png(urls[0]).await.2,
        first,
        "the same image twice is the same bytes"
    );

    let ledger = emulator.ledger();
    assert_eq!((ledger.submissions, ledger.rejected), (1, 0));
    assert_eq!((ledger.images_billed, ledger.downloads), (2, 3));
    assert!((ledger.amount - 0.28).abs() < 1e-12, "{}", ledger.amount);
    assert_eq!(ledger.per_model["wan2.2-t2i-flash"].images_billed, 2);
    let recorded = &ledger.requests[0];
    assert_eq!(
        (recorded.task_id.as_str(), recorded.model.as_str()),
        (task_id.as_str(), "wan2.2-t2i-flash")
    );
    assert_eq!(recorded.path, format!("{API_PREFIX}{TEXT2IMAGE}"));
    assert_eq!(recorded.body, body);
    assert_eq!(recorded.header("X-DashScope-Async"), Some("enable"));
    assert!(ledger.queries >= 1);

    let served: Ledger = client()
        .get(format!("{}/emulator/ledger", root(&emulator)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served.images_billed, 2);
    assert_eq!(served.requests, ledger.requests);
    emulator.shutdown().await;
}

#[tokio::test]
async fn refuses_synchronous_calls() {
    let emulator = start(0).await;
    let (status, answer) = post(
        &emulator,
        headers(Some(KEY), false),
        &flash(&json!({"n": 1})),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(answer["code"], "AccessDenied");
    assert_eq!(
        answer["message"],
        "current user api does not support synchronous calls."
    );
    assert!(answer["request_id"].is_string());
    assert_eq!(emulator.ledger().rejected, 1);
}

#[tokio::test]
async fn refuses_a_missing_or_unknown_key() {
    let emulator = start(0).await;
    let (status, answer) = post(&emulator, headers(None, true), &flash(&json!({"n": 1}))).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (401, Some("InvalidApiKey"))
    );
    let (status, answer) = post(
        &emulator,
        headers(Some("sk-other"), true),
        &flash(&json!({"n": 1})),
    )
    .await;
    assert_eq!(
        (status, answer["message"].as_str()),
        (401, Some("Invalid API-key provided."))
    );
    let response = client()
        .get(format!("{}/tasks/whatever", emulator.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let ledger = emulator.ledger();
    assert_eq!(
        (ledger.submissions, ledger.rejected, ledger.queries),
        (0, 2, 0)
    );
}

#[tokio::test]
async fn rejects_an_oversized_image_and_bad_json_without_billing() {
    let emulator = start(0).await;
    let (status, answer) = post(
        &emulator,
        headers(Some(KEY), true),
        &flash(&json!({"size": "2000*1024", "n": 1})),
    )
    .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("InvalidParameter"))
    );
    assert!(answer["message"].as_str().unwrap().contains("2000"));
    let response = client()
        .post(format!("{}{TEXT2IMAGE}", emulator.base_url()))
        .headers(headers(Some(KEY), true))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["code"], "InvalidParameter");
    let ledger = emulator.ledger();
    assert_eq!(
        (ledger.submissions, ledger.rejected, ledger.images_billed),
        (0, 2, 0)
    );
    assert!(ledger.requests.is_empty());
}

#[tokio::test]
async fn an_unknown_task_is_unknown_and_an_unknown_path_is_not_found() {
    let emulator = start(0).await;
    let body = get_task(&emulator, "1111").await;
    assert_eq!(
        body["output"],
        json!({"task_id": "1111", "task_status": "UNKNOWN"})
    );
    let response = client()
        .get(format!("{}/nowhere", emulator.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["code"], "NotFound");
    let missing = client()
        .get(format!("{}/files/1111/0.png", root(&emulator)))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn a_request_without_n_bills_four_images() {
    let emulator = start(0).await;
    let task_id = submit_ok(
        &emulator,
        &json!({"model": "wan2.2-t2i-flash", "input": {"prompt": "a cat"}}),
    )
    .await;
    let done = wait(&emulator, &task_id).await;
    assert_eq!(done["usage"]["image_count"], 4);
    assert_eq!(emulator.ledger().images_billed, 4);
}

#[tokio::test]
async fn a_result_is_not_served_before_the_task_succeeds() {
    let emulator = start(10_000).await;
    let task_id = submit_ok(&emulator, &flash(&json!({"n": 1}))).await;
    assert_eq!(
        get_task(&emulator, &task_id).await["output"]["task_status"],
        "PENDING"
    );
    let early = client()
        .get(format!("{}/files/{task_id}/0.png", root(&emulator)))
        .send()
        .await
        .unwrap();
    assert_eq!(early.status(), 404);
    let ledger = emulator.ledger();
    assert_eq!(
        (ledger.submissions, ledger.images_billed, ledger.downloads),
        (1, 0, 0)
    );
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let emulator = start(0).await;
    let url = format!("{}/emulator/ledger", root(&emulator));
    emulator.shutdown().await;
    assert!(client().get(url).send().await.is_err());
}
// ------------------------------------------------------------------------------------------------
// Quotas, latency, expiry

fn with_quota(mut config: EmulatorConfig, concurrency: u32, submit_rps: u32) -> EmulatorConfig {
    config.quotas.insert(
        "wan2.2-t2i-flash".into(),
        Quota {
            concurrency: Some(concurrency),
            submit_rps: Some(submit_rps),
        },
    );
    config
}

async fn post_flash(emulator: &Emulator) -> (u16, Value) {
    post(emulator, headers(Some(KEY), true), &flash(&json!({"n": 1}))).await
}

#[tokio::test]
async fn a_submit_over_the_concurrency_quota_is_throttled_until_a_task_ends() {
    let emulator = start_with(with_quota(config(300), 2, 100)).await;
    let first = submit_ok(&emulator, &flash(&json!({"n": 1}))).await;
    submit_ok(&emulator, &flash(&json!({"n": 1}))).await;
    let (status, answer) = post_flash(&emulator).await;
    assert_eq!(status, 429, "{answer}");
    assert_eq!(answer["code"], "Throttling.RateQuota");
    assert_eq!(
        answer["message"],
        "Requests rate limit exceeded, please try again later."
    );
    assert!(answer["request_id"].is_string());
    wait(&emulator, &first).await;
    submit_ok(&emulator, &flash(&json!({"n": 1}))).await;
    let ledger = emulator.ledger();
    let flash = &ledger.per_model["wan2.2-t2i-flash"];
    assert_eq!(
        (ledger.throttled, ledger.rejected, ledger.submissions),
        (1, 1, 3)
    );
    assert_eq!((flash.throttled, flash.max_in_flight), (1, 2));
    assert_eq!(flash.timeline.len(), 3);
    assert!(flash.timeline[0].finished_ms.unwrap() <= flash.timeline[2].submitted_ms);
}

#[tokio::test]
async fn the_submit_rate_quota_is_a_sliding_second() {
    let emulator = start_with(with_quota(config(0), 100, 2)).await;
    submit_ok(&emulator, &flash(&json!({"n": 1}))).await;
    // Measured after the first answer, so certainly after the emulator counted that submission: a
    // second from here is past its window, however slow the machine.
    let started = std::time::Instant::now();
    submit_ok(&emulator, &flash(&json!({"n": 1}))).await;
    assert_eq!(post_flash(&emulator).await.0, 429);
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(started.elapsed())).await;
    submit_ok(&emulator, &flash(&json!({"n": 1}))).await;
    assert_eq!(emulator.ledger().throttled, 1);
}

#[tokio::test]
async fn quotas_can_be_switched_off() {
    let mut config = with_quota(config(1000), 1, 1);
    config.enforce_quotas = false;
    let emulator = start_with(config).await;
    for _ in 0..3 {
        submit_ok(&emulator, &flash(&json!({"n": 1}))).await;
    }
    assert_eq!(
        emulator.ledger().per_model["wan2.2-t2i-flash"].max_in_flight,
        3
    );
}

#[tokio::test]
async fn an_expired_task_is_unknown_and_its_images_are_forbidden() {
    let mut config = config(20);
    config.task_ttl = Duration::from_millis(300);
    let emulator = start_with(config).await;
    let task_id = submit_ok(&emulator, &flash(&json!({"n": 1}))).await;
    let done = wait(&emulator, &task_id).await;
    let url = done["output"]["results"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    fetch_png(&url).await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        get_task(&emulator, &task_id).await["output"],
        json!({"task_id": task_id, "task_status": "UNKNOWN"})
    );
    let expired = client().get(&url).send().await.unwrap();
    assert_eq!(expired.status(), 403);
    assert_eq!(expired.headers()[CONTENT_TYPE.as_str()], "application/xml");
    let body = expired.text().await.unwrap();
    assert!(body.contains("<Code>AccessDenied</Code>"), "{body}");
    assert_eq!(emulator.ledger().images_billed, 1, "expiry does not unbill");
}

// ------------------------------------------------------------------------------------------------
// Faults

fn rule(on: FaultEvent, nth: &[u64], fault: Fault) -> FaultRule {
    FaultRule {
        on,
        model: None,
        nth: Some(nth.to_vec()),
        rate: None,
        fault,
    }
}

fn http_fault(status: u16, code: &str) -> Fault {
    Fault::Http {
        status,
        code: code.into(),
        message: format!("injected {code}"),
    }
}

async fn start_faulty(latency_ms: u64, faults: Vec<FaultRule>) -> Emulator {
    let mut config = with_quota(config(latency_ms), 100, 100);
    config.faults = faults;
    start_with(config).await
}

#[tokio::test]
async fn a_toml_schedule_answers_http_faults_on_exactly_the_nth_submits() {
    let config = EmulatorConfig::from_toml(
        r#"
        latency_ms = 0
        valid_keys = ["sk-test"]
        [quotas."wan2.2-t2i-flash"]
        submit_rps = 100
        [[faults]]
        on = "submit"
        model = "wan2.2-t2i-flash"
        nth = [2, 4]
        fault = { kind = "http", status = 500, code = "InternalError", message = "oops" }
        [[faults]]
        on = "submit"
        nth = [3]
        fault = { kind = "http", status = 400, code = "Arrearage", message = "Access denied, please make sure your account is in good standing." }
        "#,
    )
    .unwrap();
    let emulator = start_with(config).await;
    let mut seen = Vec::new();
    for _ in 0..5 {
        let (status, answer) = post_flash(&emulator).await;
        seen.push((status, answer["code"].as_str().unwrap_or("").to_owned()));
    }
    let codes: Vec<(u16, &str)> = seen.iter().map(|(s, c)| (*s, c.as_str())).collect();
    assert_eq!(
        codes,
        [
            (200, ""),
            (500, "InternalError"),
            (400, "Arrearage"),
            (500, "InternalError"),
            (200, "")
        ]
    );
    let ledger = emulator.ledger();
    assert_eq!(
        (ledger.submissions, ledger.rejected, ledger.faults_injected),
        (2, 3, 3)
    );
}

#[tokio::test]
async fn an_injected_query_fault_answers_once_then_the_task_is_back() {
    let emulator = start_faulty(
        0,
        vec![rule(
            FaultEvent::Query,
            &[1],
            http_fault(503, "ModelUnavailable"),
        )],
    )
    .await;
    let task_id = submit_ok(&emulator, &flash(&json!({"n": 1}))).await;
    let response = client()
        .get(format!("{}/tasks/{task_id}", emulator.base_url()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["code"], "ModelUnavailable");
    assert_eq!(
        get_task(&emulator, &task_id).await["output"]["task_status"],
        "SUCCEEDED"
    );
}

#[tokio::test]
async fn a_task_failed_fault_ends_failed_with_its_code_and_bills_nothing() {
    let fault = Fault::TaskFailed {
        code: "DataInspectionFailed".into(),
        message: "Output data may contain inappropriate content.".into(),
    };
    let emulator = start_faulty(20, vec![rule(FaultEvent::Submit, &[1], fault)]).await;
    let task_id = submit_ok(&emulator, &flash(&json!({"n": 2}))).await;
    let done = wait(&emulator, &task_id).await;
    assert_eq!(done["output"]["task_status"], "FAILED", "{done}");
    assert_eq!(done["output"]["code"], "DataInspectionFailed");
    assert!(done.get("usage").is_none());
    let ledger = emulator.ledger();
    assert_eq!((ledger.submissions, ledger.images_billed), (1, 0));
    assert!(
        ledger.per_model["wan2.2-t2i-flash"].timeline[0]
            .finished_ms
            .is_some()
    );
}

#[tokio::test]
async fn a_partial_failure_bills_and_serves_only_the_successes() {
    let fault = Fault::PartialFailure { failed: 1 };
    let emulator = start_faulty(20, vec![rule(FaultEvent::Submit, &[1], fault)]).await;
    let task_id = submit_ok(&emulator, &flash(&json!({"n": 3}))).await;
    let done = wait(&emulator, &task_id).await;
    assert_eq!(done["output"]["task_status"], "SUCCEEDED");
    assert_eq!(done["usage"]["image_count"], 2);
    assert_eq!(
        done["output"]["task_metrics"],
        json!({"TOTAL": 3, "SUCCEEDED": 2, "FAILED": 1})
    );
    let results = done["output"]["results"].as_array().unwrap();
    assert_eq!(results[2]["code"], "InternalError.Timeout");
    assert!(results[2].get("url").is_none());
    fetch_png(results[1]["url"].as_str().unwrap()).await;
    let missing = client()
        .get(format!("{}/files/{task_id}/2.png", root(&emulator)))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let ledger = emulator.ledger();
    assert_eq!(ledger.images_billed, 2);
    assert!((ledger.amount - 0.28).abs() < 1e-12, "{}", ledger.amount);
}

#[tokio::test]
async fn a_truncated_download_is_half_the_png_with_a_matching_length() {
    let emulator = start_faulty(0, vec![rule(FaultEvent::Download, &[1], Fault::Truncate)]).await;
    let task_id = submit_ok(&emulator, &flash(&json!({"n": 1}))).await;
    let url = format!("{}/files/{task_id}/0.png", root(&emulator));
    let short = client().get(&url).send().await.unwrap();
    assert_eq!(short.status(), 200);
    let length: usize = short.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let short = short.bytes().await.unwrap();
    assert_eq!(short.len(), length);
    let (_, _, full) = fetch_png(&url).await;
    assert_eq!(short.len(), full.len() / 2);
    assert_eq!(&full[..short.len()], &short[..]);
}

#[tokio::test]
async fn a_reset_closes_the_connection_without_an_answer() {
    let emulator = start_faulty(0, vec![rule(FaultEvent::Query, &[1], Fault::Reset)]).await;
    let task_id = submit_ok(&emulator, &flash(&json!({"n": 1}))).await;
    let reset = client()
        .get(format!("{}/tasks/{task_id}", emulator.base_url()))
        .bearer_auth(KEY)
        .send()
        .await;
    assert!(reset.is_err(), "{reset:?}");
    assert_eq!(
        get_task(&emulator, &task_id).await["output"]["task_status"],
        "SUCCEEDED"
    );
}

#[tokio::test]
async fn a_reset_submit_creates_no_task() {
    let emulator = start_faulty(0, vec![rule(FaultEvent::Submit, &[1], Fault::Reset)]).await;
    let reset = client()
        .post(format!("{}{TEXT2IMAGE}", emulator.base_url()))
        .headers(headers(Some(KEY), true))
        .json(&flash(&json!({"n": 1})))
        .send()
        .await;
    assert!(reset.is_err());
    assert_eq!(emulator.ledger().submissions, 0);
}

#[tokio::test]
async fn a_delay_answers_late_but_answers() {
    let emulator = start_faulty(
        0,
        vec![rule(FaultEvent::Submit, &[1], Fault::Delay { ms: 150 })],
    )
    .await;
    let started = std::time::Instant::now();
    submit_ok(&emulator, &flash(&json!({"n": 1}))).await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(emulator.ledger().faults_injected, 1);
}

#[tokio::test]
async fn rate_faults_repeat_with_the_seed() {
    async fn pattern(seed: u64) -> Vec<u16> {
        let mut config = config(0);
        config.fault_seed = seed;
        config.faults = vec![FaultRule {
            on: FaultEvent::Query,
            model: None,
            nth: None,
            rate: Some(0.5),
            fault: http_fault(500, "InternalError"),
        }];
        let emulator = start_with(config).await;
        let mut statuses = Vec::new();
        for _ in 0..24 {
            let response = client()
                .get(format!("{}/tasks/1111", emulator.base_url()))
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap();
            statuses.push(response.status().as_u16());
        }
        statuses
    }
    let first = pattern(7).await;
    assert_eq!(first, pattern(7).await);
    assert_ne!(first, pattern(8).await);
    assert!(first.contains(&500) && first.contains(&200), "{first:?}");
}

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
    let mut form = reqwest::multipart::Form::new();
    for field in [
        "OSSAccessKeyId",
        "Signature",
        "policy",
        "key",
        "x-oss-object-acl",
        "x-oss-forbid-overwrite",
        "success_action_status",
        "x-oss-content-type",
        "file",
    ] {
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

async fn list_tasks(emulator: &Emulator, query: &str) -> (u16, Value) {
    let response = client()
        .get(format!("{}/tasks?{query}", emulator.base_url()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
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
    let mut top: Vec<&str> = all
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    top.sort_unstable();
    assert_eq!(
        top,
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
    let mut fields: Vec<&str> = all["data"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
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

#[tokio::test]
async fn a_reset_after_accept_creates_and_bills_the_task_and_answers_nothing() {
    let emulator = start_faulty(
        0,
        vec![rule(FaultEvent::Submit, &[1], Fault::ResetAfterAccept)],
    )
    .await;
    let sent = client()
        .post(format!("{}{TEXT2IMAGE}", emulator.base_url()))
        .headers(headers(Some(KEY), true))
        .json(&flash(&json!({"n": 1})))
        .send()
        .await;
    assert!(sent.is_err(), "no answer");
    let (_, listed) = list_tasks(&emulator, "").await;
    let task = listed["data"][0]["task_id"].as_str().unwrap().to_owned();
    assert_eq!(
        wait(&emulator, &task).await["output"]["task_status"],
        "SUCCEEDED"
    );
    let ledger = emulator.ledger();
    assert_eq!((ledger.submissions, ledger.images_billed), (1, 1));
}
