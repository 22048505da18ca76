//! The client against every class of fault the service produces, over HTTP against the emulator's
//! fault injection: what it retried, what it failed, what it stopped on. In every test the emulator's
//! ledger bills exactly what wanx reports as spent.

use std::fmt::Write as _;

use crate::util::{Project, Run, TWO_TASKS};

/// Three one-image tasks, one per line of a plan.
const THREE: &str = r#"[defaults]
model = "wan2.2-t2i-flash"
size = "512*512"

[[task]]
id = "a"
prompt = "first"

[[task]]
id = "b"
prompt = "second"

[[task]]
id = "c"
prompt = "third"
"#;

#[track_caller]
fn assert_billed_as_reported(p: &Project, run: &Run) {
    let json = run.json();
    let ledger = p.ledger();
    let spent = json["spent"].as_f64().unwrap();
    assert!(
        (ledger.amount - spent).abs() < 1e-9,
        "emulator billed {} but wanx reported {spent}",
        ledger.amount
    );
    assert_eq!(
        u64::from(json["images_generated"].as_u64().unwrap() as u32),
        ledger.images_billed
    );
}

#[test]
fn throttling_and_server_errors_on_submit_are_retried() {
    let p = Project::with_emulator_toml(
        r#"
[[faults]]
on = "submit"
nth = [1, 2]
fault = { kind = "http", status = 429, code = "Throttling.RateQuota", message = "Requests rate limit exceeded" }
[[faults]]
on = "submit"
nth = [4]
fault = { kind = "http", status = 500, code = "InternalError", message = "boom" }
"#,
    );
    p.file("plans/a.toml", TWO_TASKS);
    let run = p.wanx(&["build", "--json"]);
    run.success();
    assert_eq!(run.json()["generated"], 2);
    let ledger = p.ledger();
    assert_eq!(
        ledger.rejected, 3,
        "three submissions were refused and retried"
    );
    assert_eq!(ledger.submissions, 2, "each task was accepted once");
    assert!(run.stderr.contains("Retrying"), "{}", run.stderr);
    assert_billed_as_reported(&p, &run);
}

#[test]
fn query_errors_are_retried_without_resubmitting() {
    let p = Project::with_emulator_toml(
        r#"
[[faults]]
on = "query"
nth = [1, 2, 3]
fault = { kind = "http", status = 503, code = "ModelUnavailable", message = "try later" }
"#,
    );
    p.file("plans/a.toml", TWO_TASKS);
    let run = p.wanx(&["build", "--json"]);
    run.success();
    assert_eq!(p.ledger().submissions, 2);
    assert_billed_as_reported(&p, &run);
}

#[test]
fn content_inspection_fails_only_that_task_and_the_build_goes_on() {
    let p = Project::with_emulator_toml(
        r#"
[[faults]]
on = "submit"
nth = [2]
fault = { kind = "http", status = 400, code = "DataInspectionFailed", message = "Input data may contain inappropriate content." }
"#,
    );
    p.file("plans/a.toml", THREE);
    let run = p.wanx(&["build", "--json", "-j", "1"]);
    run.status(1);
    let json = run.json();
    assert_eq!(
        (json["generated"].as_u64(), json["failed"].as_u64()),
        (Some(2), Some(1))
    );
    let failed = json["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["status"] == "failed")
        .unwrap();
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("DataInspectionFailed"),
        "{failed}"
    );
    assert_eq!(p.ledger().rejected, 1, "an invalid request is not retried");
    assert_billed_as_reported(&p, &run);
    // The failure is not cached: the next build tries that task again, and only that one.
    let again = p.wanx(&["build", "--json"]);
    again.success();
    assert_eq!(again.json()["generated"], 1);
}

#[test]
fn a_task_that_fails_remotely_is_not_billed_or_cached() {
    let p = Project::with_emulator_toml(
        r#"
[[faults]]
on = "submit"
nth = [1]
fault = { kind = "task_failed", code = "InternalError.Algo", message = "the algorithm failed" }
"#,
    );
    p.file(
        "plans/a.toml",
        "[[task]]\nid = \"x\"\nmodel = \"wan2.2-t2i-flash\"\nprompt = \"x\"\n",
    );
    let run = p.wanx(&["build", "--json"]);
    run.status(1);
    assert!(
        run.json()["tasks"][0]["error"]
            .as_str()
            .unwrap()
            .contains("InternalError.Algo")
    );
    assert_eq!(p.ledger().images_billed, 0);
    assert!(!p.exists("generated/x.png"));
    assert_billed_as_reported(&p, &run);
}

#[test]
fn an_invalid_key_stops_the_build_with_no_new_submissions() {
    let p = Project::with_emulator_toml("valid_keys = [\"sk-the-right-one\"]\n");
    p.file("plans/a.toml", THREE);
    let run = p.wanx(&["build", "--json", "-j", "1"]);
    run.status(1);
    let ledger = p.ledger();
    assert_eq!(ledger.submissions, 0);
    assert_eq!(
        ledger.rejected, 1,
        "after the first 401 nothing more was sent"
    );
    assert!(run.stderr.contains("InvalidApiKey"), "{}", run.stderr);
    assert!(
        run.stderr.contains("hint: check the API key"),
        "{}",
        run.stderr
    );
    assert_eq!(run.json()["skipped"], 2);
    assert_billed_as_reported(&p, &run);
}

#[test]
fn arrears_stop_the_build_after_what_is_in_flight() {
    let p = Project::with_emulator_toml(
        r#"
[[faults]]
on = "submit"
nth = [2]
fault = { kind = "http", status = 400, code = "Arrearage", message = "Access denied, please make sure your account is in good standing." }
"#,
    );
    p.file("plans/a.toml", THREE);
    let run = p.wanx(&["build", "--json", "-j", "1"]);
    run.status(1);
    let json = run.json();
    assert_eq!(
        (json["generated"].as_u64(), json["skipped"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(run.stderr.contains("top it up"), "{}", run.stderr);
    assert_eq!(p.ledger().submissions, 1);
    assert_billed_as_reported(&p, &run);
}

#[test]
fn a_partially_failed_task_ends_with_all_its_images_after_one_follow_up() {
    let p = Project::with_emulator_toml(
        r#"
[[faults]]
on = "submit"
nth = [1]
fault = { kind = "partial_failure", failed = 2 }
"#,
    );
    p.file("plans/a.toml", "[[task]]\nid = \"four\"\nmodel = \"wan2.2-t2i-flash\"\nprompt = \"x\"\nn = 4\nsize = \"512*512\"\n");
    let run = p.wanx(&["build", "--json"]);
    run.success();
    let ledger = p.ledger();
    assert_eq!(ledger.submissions, 2, "one follow-up request");
    assert_eq!(
        ledger.requests[1].body["parameters"]["n"], 2,
        "asking only for the missing images"
    );
    assert_eq!(ledger.images_billed, 4, "billed 4 times in all");
    for i in 1..=4 {
        assert_eq!(p.png_size(&format!("generated/four_{i}.png")), (512, 512));
    }
    assert_eq!(run.json()["images_generated"], 4);
    assert_billed_as_reported(&p, &run);
}

#[test]
fn a_canary_api_key_appears_in_no_output_log_database_or_lock() {
    const CANARY: &str = "sk-canary-7f3a9c2e51b84d06";
    let p = Project::with_emulator_toml(&format!(
        "valid_keys = [\"{CANARY}\"]\n[[faults]]\non = \"submit\"\nnth = [1]\nfault = {{ kind = \"http\", status = 500, code = \"InternalError\", message = \"x\" }}\n"
    ));
    p.file("plans/a.toml", TWO_TASKS);
    let run: Run = p
        .command(&["build", "-vv", "--json"])
        .env("DASHSCOPE_API_KEY", CANARY)
        .output()
        .unwrap()
        .into();
    run.success();
    assert!(
        !run.stdout.contains(CANARY) && !run.stderr.contains(CANARY),
        "the key leaked into the output"
    );
    // And when the key is refused, the error does not echo it either.
    let refused: Run = p
        .command(&["build", "-vv", "--force"])
        .env("DASHSCOPE_API_KEY", "sk-canary-wrong-0000000000")
        .output()
        .unwrap()
        .into();
    refused.status(1);
    assert!(
        !refused.stderr.contains("sk-canary-wrong"),
        "{}",
        refused.stderr
    );
    for (rel, bytes) in p.snapshot_all() {
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(CANARY) && !text.contains("sk-canary-wrong"),
            "the key leaked into {rel}"
        );
    }
}

#[test]
fn forty_tasks_under_a_quota_of_two_keep_the_quota_busy_and_none_fails() {
    const N: usize = 40;
    const LATENCY_MS: u64 = 1000;
    let p = Project::with_emulator_toml(&format!("latency_ms = {LATENCY_MS}\n"));
    let mut plan = String::from("[defaults]\nmodel = \"wan2.2-t2i-flash\"\nsize = \"512*512\"\n");
    for i in 0..N {
        let _ = writeln!(
            plan,
            "\n[[task]]\nid = \"t{i:02}\"\nprompt = \"quota test image {i}\""
        );
    }
    p.file("plans/a.toml", &plan);
    let started = std::time::Instant::now();
    let run = p.wanx(&["build", "--json"]);
    let wall = started.elapsed();
    run.success();
    assert_eq!(run.json()["generated"], N);
    let ledger = p.ledger();
    let model = &ledger.per_model["wan2.2-t2i-flash"];
    assert_eq!(model.max_in_flight, 2, "the quota of 2 was used");
    assert_eq!(ledger.submissions, N as u64);
    // Figures for the record, not assertions: the machine is shared.
    let ideal = (N as u64).div_ceil(2) * LATENCY_MS;
    eprintln!(
        "quota figures: N={N} K=2 L={LATENCY_MS}ms wall={}ms ideal={ideal}ms ratio={:.3} throttled={}",
        wall.as_millis(),
        wall.as_millis() as f64 / ideal as f64,
        ledger.throttled
    );
    assert_billed_as_reported(&p, &run);
}

#[test]
fn a_partial_result_whose_follow_up_is_refused_is_kept_and_the_next_build_pays_only_the_rest() {
    let p = Project::with_emulator_toml(
        r#"
[[faults]]
on = "submit"
nth = [1]
fault = { kind = "partial_failure", failed = 1 }

[[faults]]
on = "submit"
nth = [2]
fault = { kind = "http", status = 400, code = "DataInspectionFailed", message = "Input data may contain inappropriate content." }
"#,
    );
    p.file(
        "plans/a.toml",
        "[[task]]\nid = \"harbor\"\nmodel = \"wan2.2-t2i-flash\"\nsize = \"512*512\"\nn = 2\nprompt = \"a harbor at dawn\"\n",
    );
    let run = p.wanx(&["build", "--json"]);
    run.status(1);
    assert!(
        run.stderr.contains(
            "the 1 image(s) paid for are kept, and the next build asks only for the 1 missing"
        ),
        "{}",
        run.stderr
    );
    assert_billed_as_reported(&p, &run);
    assert!(
        !p.exists("generated/harbor_1.png"),
        "a short result is never written"
    );
    // The plan prices only what is still missing.
    let plan = p.wanx(&["plan"]);
    plan.success();
    assert!(
        plan.stdout
            .contains("¥0.14 (1 × ¥0.14; 1 paid earlier, kept)"),
        "{}",
        plan.stdout
    );

    let next = p.wanx(&["build", "--json"]);
    next.success();
    let ledger = p.ledger();
    let last = ledger.requests.last().unwrap();
    assert_eq!(last.body["parameters"]["n"], 1, "only the missing image");
    assert_eq!(ledger.images_billed, 2);
    assert_eq!(next.json()["spent"], 0.14, "this build paid for one image");
    assert!(p.exists("generated/harbor_1.png") && p.exists("generated/harbor_2.png"));
    let again = p.wanx(&["build", "--json"]);
    assert_eq!(again.success().json()["fresh"], 1);
}

/// One one-image task.
const ONE: &str =
    "[[task]]\nid = \"x\"\nmodel = \"wan2.2-t2i-flash\"\nsize = \"512*512\"\nprompt = \"x\"\n";

#[test]
fn a_submit_whose_connection_drops_after_it_was_accepted_is_found_in_the_task_list_not_paid_again()
{
    let p = Project::with_emulator_toml(
        r#"
[[faults]]
on = "submit"
nth = [1]
fault = { kind = "reset_after_accept" }
"#,
    );
    p.file("plans/a.toml", THREE);
    let run = p.wanx(&["build", "--json", "-j", "1"]);
    run.success();
    let ledger = p.ledger();
    assert_eq!(ledger.submissions, 3, "each task was accepted once");
    assert_eq!(ledger.images_billed, 3, "each image billed once");
    assert!(ledger.task_lists >= 1, "wanx asked for the task list");
    assert!(
        run.stderr.contains("taking it instead of paying again"),
        "{}",
        run.stderr
    );
    for id in ["a", "b", "c"] {
        assert_eq!(p.png_size(&format!("generated/{id}.png")), (512, 512));
    }
    assert_billed_as_reported(&p, &run);
    assert_eq!(run.json()["maybe_billed"], 0.0);
    let again = p.wanx(&["build", "--json"]);
    assert_eq!(again.success().json()["fresh"], 3);
    assert_eq!(p.ledger().images_billed, 3);
    assert_eq!(
        again.json()["cumulative"]["spent"].as_f64(),
        Some(p.ledger().amount),
        "what every build spent is what the service billed"
    );
}

#[test]
fn a_submit_answered_after_the_read_timeout_is_found_in_the_task_list_not_paid_again() {
    let p = Project::with_emulator_toml(
        r#"
[[faults]]
on = "submit"
nth = [1]
fault = { kind = "delay_after_accept", ms = 10000 }
"#,
    );
    p.file("wanx.toml", "[provider]\nrequest_timeout = 2\n");
    p.file("plans/a.toml", ONE);
    let run = p.wanx(&["build", "--json"]);
    run.success();
    let ledger = p.ledger();
    assert_eq!(ledger.submissions, 1, "never sent again");
    assert_eq!(ledger.images_billed, 1);
    assert!(p.exists("generated/x.png"));
    assert_billed_as_reported(&p, &run);
}

#[test]
fn a_submit_lost_without_a_task_is_reported_as_maybe_billed_and_not_sent_again_in_the_build() {
    let p = Project::with_emulator_toml(
        r#"
[[faults]]
on = "submit"
nth = [1]
fault = { kind = "reset" }
"#,
    );
    p.file("plans/a.toml", ONE);
    let run = p.wanx(&["build", "--json"]);
    run.status(1);
    let json = run.json();
    assert_eq!(p.ledger().submissions, 0, "not sent again in this build");
    assert_eq!(json["maybe_billed"], 0.14, "counted in the upper bound");
    assert!(
        run.stderr.contains("may have been billed") && run.stderr.contains("at most ¥0.14"),
        "{}",
        run.stderr
    );
    assert_billed_as_reported(&p, &run);
    // The next build submits it again (once).
    let next = p.wanx(&["build", "--json"]);
    next.success();
    assert_eq!(p.ledger().submissions, 1);
    assert_billed_as_reported(&p, &next);
    assert_eq!(
        next.json()["cumulative"]["spent"].as_f64(),
        Some(p.ledger().amount),
        "what every build spent is what the service billed"
    );
}

#[test]
fn a_400_whose_code_starts_with_internal_error_fails_the_task_and_is_not_resubmitted() {
    for code in [
        "InternalError.Algo.DataInspectionFailed",
        "InternalError.Algo.InvalidParameter",
    ] {
        let p = Project::with_emulator_toml(&format!(
            "[[faults]]\non = \"submit\"\nnth = [1]\nfault = {{ kind = \"http\", status = 400, code = \"{code}\", message = \"recorded\" }}\n"
        ));
        p.file("plans/a.toml", ONE);
        let run = p.wanx(&["build", "--json"]);
        run.status(1);
        assert_eq!(run.json()["failed"], 1, "{code}");
        let ledger = p.ledger();
        assert_eq!(ledger.rejected, 1, "{code}: not retried");
        assert_eq!(ledger.submissions, 0, "{code}");
        assert!(!run.stderr.contains("Retrying"), "{}", run.stderr);
        assert_billed_as_reported(&p, &run);
    }
}

#[test]
fn one_models_refusal_stops_only_that_models_tasks() {
    let p = Project::with_emulator_toml(
        r#"
[[faults]]
on = "submit"
model = "qwen-image"
fault = { kind = "http", status = 403, code = "AccessDenied", message = "current user api does not support asynchronous calls" }
"#,
    );
    p.file(
        "plans/a.toml",
        r#"[[task]]
id = "q1"
model = "qwen-image"
prompt = "one"

[[task]]
id = "q2"
model = "qwen-image"
prompt = "two"

[[task]]
id = "f1"
model = "wan2.2-t2i-flash"
size = "512*512"
prompt = "three"

[[task]]
id = "f2"
model = "wan2.2-t2i-flash"
size = "512*512"
prompt = "four"
"#,
    );
    let run = p.wanx(&["build", "--json", "-j", "1"]);
    run.status(1);
    let json = run.json();
    assert_eq!(json["generated"], 2, "the other model's tasks were built");
    assert!(p.exists("generated/f1.png") && p.exists("generated/f2.png"));
    assert_eq!(
        (json["failed"].as_u64(), json["skipped"].as_u64()),
        (Some(1), Some(1)),
        "one refused, the other not sent"
    );
    assert_eq!(p.ledger().rejected, 1, "the refused model was asked once");
    assert!(
        !run.stderr.contains("enable it in the DashScope console"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("does not take asynchronous calls"),
        "{}",
        run.stderr
    );
    assert_billed_as_reported(&p, &run);
}
