//! Money: a task the service billed is paid once, whatever failed after it (downloads, the disk), and
//! wanx's `spent` (per build and cumulative) equals what the emulator billed, to the fen. `saved` counts
//! only what the cache kept from being paid again (restores), never a fresh no-op.

use crate::util::{Project, Run};

/// One task of `n` images of wan2.2-t2i-flash (¥0.14 each).
fn task(n: u32) -> String {
    format!(
        "[[task]]\nid = \"tide\"\nmodel = \"wan2.2-t2i-flash\"\nsize = \"512*512\"\nn = {n}\nprompt = \"the tide coming in\"\nfilename = \"{{id}}_{{index}}.png\"\n"
    )
}

fn outputs(n: u32) -> Vec<String> {
    (1..=n).map(|i| format!("generated/tide_{i}.png")).collect()
}

/// CNY as fen, from a JSON number or the emulator's ledger.
fn fen(yuan: f64) -> i64 {
    (yuan * 100.0).round() as i64
}

fn json_fen(json: &serde_json::Value, pointer: &str) -> i64 {
    fen(json
        .pointer(pointer)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {pointer}: {json}")))
}

/// The JSON summary of a build that may have failed (it still prints one).
fn summary(run: &Run) -> serde_json::Value {
    run.json()
}

/// After a build that paid and could not save, and the build after it: one submission, every image
/// billed once, and wanx's spent (per build, cumulative) equal to the ledger.
#[track_caller]
fn assert_paid_once(p: &Project, n: u32, failed: &serde_json::Value, next: &serde_json::Value) {
    let ledger = p.ledger();
    assert_eq!(ledger.submissions, 1, "submitted once in all: {ledger:?}");
    assert_eq!(
        ledger.images_billed,
        u64::from(n),
        "every image billed once"
    );
    let billed = fen(ledger.amount);
    assert_eq!(billed, 14 * i64::from(n));
    assert_eq!(
        json_fen(failed, "/spent") + json_fen(next, "/spent"),
        billed,
        "the two builds' spent add up to the bill:\n{failed}\n{next}"
    );
    assert_eq!(
        json_fen(failed, "/spent"),
        billed,
        "the build that paid reports it"
    );
    assert_eq!(json_fen(next, "/cumulative/spent"), billed, "{next}");
    assert_eq!(json_fen(next, "/saved"), 0, "nothing was saved: {next}");
    for rel in outputs(n) {
        assert_eq!(p.png_size(&rel), (512, 512), "{rel}");
    }
    p.wanx(&["build", "--locked"]).success();
}

#[test]
fn a_download_that_keeps_failing_stays_journaled_and_the_next_build_downloads_it_without_paying() {
    // wanx tries each image three times: the image's downloads are cut short in the first build
    // and again when the second resumes it.
    let p = Project::with_emulator_toml(
        r#"
[[faults]]
on = "download"
nth = [1, 2, 3, 4, 5, 6]
fault = { kind = "truncate" }
"#,
    );
    p.file("plans/a.toml", &task(1));
    let failed = p.wanx(&["build", "--json"]);
    failed.status(1);
    assert!(
        failed.stderr.contains("the next build downloads"),
        "{}",
        failed.stderr
    );
    assert!(!p.exists("generated/tide_1.png"));
    // Still failing: the task stays journaled, and the request is not submitted again meanwhile.
    let again = p.wanx(&["build", "--json"]);
    again.status(1);
    assert!(again.stderr.contains("still journaled"), "{}", again.stderr);
    assert_eq!(p.ledger().submissions, 1, "{}", again.stderr);
    assert_eq!(json_fen(&summary(&again), "/spent"), 0);
    let next = p.wanx(&["build", "--json"]);
    next.success();
    assert_paid_once(&p, 1, &summary(&failed), &next.json());
}

#[test]
fn http_503_on_images_2_to_4_of_four_keeps_the_task_and_the_next_build_fetches_them_without_paying()
{
    // Image 1 downloads; images 2, 3 and 4 get 503 on each of their three attempts.
    let p = Project::with_emulator_toml(
        r#"
[[faults]]
on = "download"
nth = [2, 3, 4, 5, 6, 7, 8, 9, 10]
fault = { kind = "http", status = 503, code = "ServiceUnavailable" }
"#,
    );
    p.file("plans/a.toml", &task(4));
    let failed = p.wanx(&["build", "--json"]);
    failed.status(1);
    let next = p.wanx(&["build", "--json"]);
    next.success();
    assert_paid_once(&p, 4, &summary(&failed), &next.json());
    // Image 1 was saved by the failing build: the next one fetched only the three others.
    assert_eq!(
        p.ledger().downloads,
        4,
        "each image served once: {:?}",
        p.ledger()
    );
}

/// The blake3 of each image the emulator makes for `plan` (deterministic: the same request makes the
/// same bytes), learned from a clean project.
fn image_hashes(plan: &str) -> Vec<String> {
    let clean = Project::new();
    clean.file("plans/a.toml", plan);
    clean.wanx(&["build"]).success();
    let lock = clean.lock();
    lock.tasks["tide"]
        .outputs
        .iter()
        .map(|o| o.blake3.clone())
        .collect()
}

#[test]
fn a_blob_store_that_cannot_be_written_keeps_the_task_and_the_next_build_stores_it_without_paying()
{
    let plan = task(4);
    let hashes = image_hashes(&plan);
    // A file where the blob store must create the directory of image 2: a write failure no
    // permission bit (nor root) can get around.
    let shard = &hashes[1][..2];
    assert!(
        hashes.iter().filter(|h| h.starts_with(shard)).count() == 1,
        "image 2 shares its shard: {hashes:?}"
    );
    let p = Project::new();
    p.file("plans/a.toml", &plan);
    p.file(&format!(".wanx/blobs/{shard}"), "not a directory");
    let failed = p.wanx(&["build", "--json"]);
    failed.status(1);
    assert!(
        failed.stderr.contains("could not store the image"),
        "{}",
        failed.stderr
    );
    std::fs::remove_file(p.path(&format!(".wanx/blobs/{shard}"))).unwrap();
    let next = p.wanx(&["build", "--json"]);
    next.success();
    assert_paid_once(&p, 4, &summary(&failed), &next.json());
}

#[test]
fn a_follow_up_asks_for_the_seeds_of_the_missing_images() {
    let plan = task(3).replace("n = 3", "n = 3\nseed = 42");
    let p = Project::with_emulator_toml(
        r#"
[[faults]]
on = "submit"
nth = [1]
fault = { kind = "partial_failure", failed = 2 }
"#,
    );
    p.file("plans/a.toml", &plan);
    let json = p.wanx(&["build", "--json"]).success().json();
    let ledger = p.ledger();
    assert_eq!(ledger.submissions, 2, "{ledger:?}");
    let follow_up = &ledger.requests[1].body["parameters"];
    assert_eq!(
        (&follow_up["n"], &follow_up["seed"]),
        (&serde_json::json!(2), &serde_json::json!(43)),
        "images 2 and 3 are seeds 43 and 44: {follow_up}"
    );
    assert_eq!(ledger.images_billed, 3);
    assert_eq!(json_fen(&json, "/spent"), fen(ledger.amount));
    assert_eq!(json_fen(&json, "/cumulative/spent"), fen(ledger.amount));
    // The images are those the unfailed request makes, in their places.
    let clean = Project::new();
    clean.file("plans/a.toml", &plan);
    clean.wanx(&["build"]).success();
    for rel in outputs(3) {
        assert_eq!(
            std::fs::read(p.path(&rel)).unwrap(),
            std::fs::read(clean.path(&rel)).unwrap(),
            "{rel}"
        );
    }
}

#[test]
fn spent_and_saved_mean_the_same_in_every_command_and_a_no_op_saves_nothing() {
    let p = Project::new();
    p.file("plans/a.toml", crate::util::TWO_TASKS);
    let first = p.wanx(&["build", "--json"]).success().json();
    let billed = fen(p.ledger().amount);
    assert_eq!(billed, 42);
    assert_eq!(json_fen(&first, "/spent"), billed);
    assert_eq!(json_fen(&first, "/saved"), 0);
    for _ in 0..3 {
        let noop = p.wanx(&["build", "--json"]).success().json();
        assert_eq!(json_fen(&noop, "/spent"), 0, "{noop}");
        assert_eq!(
            json_fen(&noop, "/saved"),
            0,
            "a fresh no-op saves nothing: {noop}"
        );
        assert_eq!(json_fen(&noop, "/cumulative/spent"), billed, "{noop}");
        assert_eq!(json_fen(&noop, "/cumulative/saved"), 0, "{noop}");
    }
    // A restore saves its price, once.
    std::fs::remove_file(p.path("generated/lighthouse.png")).unwrap();
    let plan = p.wanx(&["plan", "--json"]).success().json();
    let dry = p.wanx(&["build", "--dry-run", "--json"]).success().json();
    for planned in [&plan, &dry] {
        assert_eq!(json_fen(planned, "/spent"), 0, "nothing spent: {planned}");
        assert_eq!(
            json_fen(planned, "/saved"),
            0,
            "nothing saved yet: {planned}"
        );
        assert_eq!(json_fen(planned, "/would_save"), 14, "{planned}");
        assert_eq!(json_fen(planned, "/would_spend"), 0, "{planned}");
        // Three no-ops wrote nothing: one build is on record.
        assert_eq!(planned["cumulative"]["runs"], 1, "{planned}");
        assert_eq!(json_fen(planned, "/cumulative/spent"), billed, "{planned}");
    }
    let restored = p.wanx(&["build", "--json"]).success().json();
    assert_eq!(restored["restored"], 1);
    assert_eq!(json_fen(&restored, "/saved"), 14);
    assert_eq!(json_fen(&restored, "/cumulative/saved"), 14);
    assert_eq!(json_fen(&restored, "/cumulative/spent"), billed);
    // A change to generate: the dry run says what it would cost, not that it was spent.
    p.edit("plans/a.toml", "a quiet harbor", "a busy harbor");
    let dry = p.wanx(&["build", "--dry-run", "--json"]).success().json();
    assert_eq!(json_fen(&dry, "/spent"), 0, "{dry}");
    assert_eq!(json_fen(&dry, "/would_spend"), 28, "{dry}");
    assert_eq!(fen(p.ledger().amount), billed, "a dry run pays nothing");
}
