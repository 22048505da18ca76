//! A client for the emulator's HTTP tests: start an emulator (with quotas or fault rules), submit,
//! poll, fetch a result, list tasks; shared by [`crate::emulator::http_tests`] and
//! [`crate::emulator::http_upload_tests`].

use std::net::SocketAddr;
use std::time::Duration;

use hyper::header::CONTENT_TYPE;
use reqwest::header::HeaderMap as ClientHeaders;
use serde_json::{Value, json};

use crate::emulator::{Emulator, EmulatorConfig, Fault, FaultEvent, FaultRule, Quota};
use crate::registry::TEXT2IMAGE;

pub(crate) const API_PREFIX: &str = "/api/v1";

pub(crate) fn flash(parameters: &Value) -> Value {
    json!({"model": "wan2.2-t2i-flash", "input": {"prompt": "a cat"}, "parameters": parameters})
}

pub(crate) const KEY: &str = "sk-test";

pub(crate) fn config(latency_ms: u64) -> EmulatorConfig {
    EmulatorConfig {
        latency: Duration::from_millis(latency_ms),
        valid_keys: Some(vec![KEY.to_owned()]),
        ..EmulatorConfig::default()
    }
}

pub(crate) async fn start(latency_ms: u64) -> Emulator {
    start_with(config(latency_ms)).await
}

pub(crate) async fn start_with(config: EmulatorConfig) -> Emulator {
    Emulator::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap()
}

/// `http://127.0.0.1:PORT`, where the emulator's own routes live.
pub(crate) fn root(emulator: &Emulator) -> String {
    emulator.base_url().trim_end_matches("/api/v1").to_owned()
}

/// One client for every test (building one costs ~50 ms in a debug build, which would eat the
/// short latencies); no idle pool, so no connection outlives the test runtime that opened it.
pub(crate) fn client() -> reqwest::Client {
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

pub(crate) fn headers(key: Option<&str>, asynchronous: bool) -> ClientHeaders {
    let mut headers = ClientHeaders::new();
    if let Some(key) = key {
        headers.insert("Authorization", format!("Bearer {key}").parse().unwrap());
    }
    if asynchronous {
        headers.insert("X-DashScope-Async", "enable".parse().unwrap());
    }
    headers
}

pub(crate) async fn post(
    emulator: &Emulator,
    headers: ClientHeaders,
    body: &Value,
) -> (u16, Value) {
    post_to(emulator, TEXT2IMAGE, headers, body).await
}

pub(crate) async fn post_to(
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

/// `GET /tasks/{task_id}` with the test key, as sent: a reset connection is an `Err`.
pub(crate) async fn query_task(
    emulator: &Emulator,
    task_id: &str,
) -> reqwest::Result<reqwest::Response> {
    client()
        .get(format!("{}/tasks/{task_id}", emulator.base_url()))
        .bearer_auth(KEY)
        .send()
        .await
}

pub(crate) async fn get_task(emulator: &Emulator, task_id: &str) -> Value {
    let response = query_task(emulator, task_id).await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Polls every 10 ms until the task is terminal, for at most 2 s.
pub(crate) async fn wait(emulator: &Emulator, task_id: &str) -> Value {
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

pub(crate) async fn submit_ok(emulator: &Emulator, body: &Value) -> String {
    let (status, answer) = post(emulator, headers(Some(KEY), true), body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["output"]["task_status"], "PENDING");
    assert!(answer["request_id"].is_string());
    answer["output"]["task_id"].as_str().unwrap().to_owned()
}

pub(crate) async fn fetch_png(url: &str) -> (u32, u32, Vec<u8>) {
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

pub(crate) fn with_quota(
    mut config: EmulatorConfig,
    concurrency: u32,
    submit_rps: u32,
) -> EmulatorConfig {
    config.quotas.insert(
        "wan2.2-t2i-flash".into(),
        Quota {
            concurrency: Some(concurrency),
            submit_rps: Some(submit_rps),
        },
    );
    config
}

pub(crate) async fn post_flash(emulator: &Emulator) -> (u16, Value) {
    post(emulator, headers(Some(KEY), true), &flash(&json!({"n": 1}))).await
}

pub(crate) fn rule(on: FaultEvent, nth: &[u64], fault: Fault) -> FaultRule {
    FaultRule {
        on,
        model: None,
        nth: Some(nth.to_vec()),
        rate: None,
        fault,
    }
}

pub(crate) fn http_fault(status: u16, code: &str) -> Fault {
    Fault::Http {
        status,
        code: code.into(),
        message: format!("injected {code}"),
    }
}

pub(crate) async fn start_faulty(latency_ms: u64, faults: Vec<FaultRule>) -> Emulator {
    let mut config = with_quota(config(latency_ms), 100, 100);
    config.faults = faults;
    start_with(config).await
}

pub(crate) async fn list_tasks(emulator: &Emulator, query: &str) -> (u16, Value) {
    let response = client()
        .get(format!("{}/tasks?{query}", emulator.base_url()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}
