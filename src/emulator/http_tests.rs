//! The emulator's task routes over real HTTP: submit, query, bill, serve; quotas, latency and
//! expiry; injected faults. Each test bounded (latencies of 0–100 ms, at most one sliding second of
//! waiting). Uploads, media inputs, cancel, the task list and the admin routes are in
//! [`crate::emulator::http_upload_tests`].

use std::time::Duration;

use hyper::header::CONTENT_TYPE;
use serde_json::{Value, json};

use crate::emulator::http_test_client::*;
use crate::emulator::{EmulatorConfig, Fault, FaultEvent, FaultRule, Ledger};
use crate::registry::TEXT2IMAGE;

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
    let response = query_task(&emulator, &task_id).await.unwrap();
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
    let reset = query_task(&emulator, &task_id).await;
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
            let response = query_task(&emulator, "1111").await.unwrap();
            statuses.push(response.status().as_u16());
        }
        statuses
    }
    let first = pattern(7).await;
    assert_eq!(first, pattern(7).await);
    assert_ne!(first, pattern(8).await);
    assert!(first.contains(&500) && first.contains(&200), "{first:?}");
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
