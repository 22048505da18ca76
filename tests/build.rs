//! `wanx build` end to end: generate, no-op, edit, revert, delete, rename.

use crate::util::{Project, TWO_TASKS};

fn seed_example() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/seed-cyberpunk.json"
    ))
    .unwrap()
}

#[test]
fn first_build_generates_everything_as_valid_pngs_and_bills_what_it_reports() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    let json = p.wanx(&["build", "--json"]).success().json();
    assert_eq!(json["generated"], 2);
    assert_eq!(json["images_generated"], 3);
    assert_eq!(json["currency"], "CNY");
    assert_eq!(json["emulated"], true);
    assert_eq!(p.png_size("generated/lighthouse.png"), (512, 512));
    assert_eq!(p.png_size("generated/harbor_1.png"), (512, 512));
    assert_eq!(p.png_size("generated/harbor_2.png"), (512, 512));
    let ledger = p.ledger();
    assert_eq!(ledger.submissions, 2);
    assert_eq!(ledger.images_billed, 3);
    assert!(
        (json["spent"].as_f64().unwrap() - 0.42).abs() < 1e-9,
        "{json}"
    );
    assert!(
        (ledger.amount - 0.42).abs() < 1e-9,
        "emulator billed {}",
        ledger.amount
    );
    // n is always explicit on the wire.
    for request in &ledger.requests {
        assert!(request.body["parameters"]["n"].is_u64(), "{}", request.body);
        assert_eq!(
            request.headers.get("x-dashscope-async").map(String::as_str),
            Some("enable")
        );
    }
}

#[test]
fn a_second_build_is_a_no_op_that_spends_and_saves_nothing_new() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    p.wanx(&["build"]).success();
    let lock = p.read("wanx.lock");
    let json = p.wanx(&["build", "--json"]).success().json();
    assert_eq!(json["generated"], 0);
    assert_eq!(json["fresh"], 2);
    // Fresh tasks were already there: the cache kept nothing new from being paid.
    assert_eq!(json["saved"].as_f64(), Some(0.0), "{json}");
    assert_eq!(json["spent"].as_f64(), Some(0.0), "{json}");
    assert!(
        (json["cumulative"]["spent"].as_f64().unwrap() - 0.42).abs() < 1e-9,
        "{json}"
    );
    assert_eq!(p.ledger().submissions, 2, "the no-op sent nothing");
    assert_eq!(p.read("wanx.lock"), lock, "wanx.lock is byte-identical");
}

#[test]
fn editing_one_prompt_generates_exactly_that_task_and_reverting_restores_it_free() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    p.wanx(&["build"]).success();
    let before = std::fs::read(p.path("generated/lighthouse.png")).unwrap();

    p.edit(
        "plans/a.toml",
        "a lighthouse at dusk",
        "a lighthouse at dawn",
    );
    let json = p.wanx(&["build", "--json"]).success().json();
    assert_eq!(
        (json["generated"].as_u64(), json["fresh"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(p.ledger().submissions, 3);
    assert_eq!(
        p.ledger().requests[2].body["input"]["prompt"],
        "a lighthouse at dawn"
    );
    assert_ne!(
        std::fs::read(p.path("generated/lighthouse.png")).unwrap(),
        before
    );

    p.edit(
        "plans/a.toml",
        "a lighthouse at dawn",
        "a lighthouse at dusk",
    );
    let json = p.wanx(&["build", "--json"]).success().json();
    assert_eq!(json["generated"], 0);
    assert_eq!(json["restored"], 1);
    assert_eq!(p.ledger().submissions, 3, "the revert sent nothing");
    assert_eq!(
        std::fs::read(p.path("generated/lighthouse.png")).unwrap(),
        before
    );
}

#[test]
fn a_deleted_output_is_restored_without_generating() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    p.wanx(&["build"]).success();
    let before = std::fs::read(p.path("generated/harbor_2.png")).unwrap();
    std::fs::remove_file(p.path("generated/harbor_2.png")).unwrap();
    let json = p.wanx(&["build", "--json"]).success().json();
    assert_eq!(
        (json["generated"].as_u64(), json["restored"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(
        std::fs::read(p.path("generated/harbor_2.png")).unwrap(),
        before
    );
    assert_eq!(p.ledger().submissions, 2);
}

#[test]
fn renaming_an_output_pattern_generates_nothing() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    p.wanx(&["build"]).success();
    p.edit(
        "plans/a.toml",
        "filename = \"{id}_{index}.png\"",
        "filename = \"harbour-{index}-of-{n}.png\"",
    );
    let json = p.wanx(&["build", "--json"]).success().json();
    assert_eq!(json["generated"], 0);
    assert_eq!(json["restored"], 1);
    assert_eq!(p.png_size("generated/harbour-2-of-2.png"), (512, 512));
    assert_eq!(p.ledger().submissions, 2);
    assert!(p.read("wanx.lock").contains("generated/harbour-1-of-2.png"));
}

#[test]
fn the_seed_json_example_builds_unchanged() {
    let p = Project::new();
    p.file("plans/seed.json", &seed_example());
    let run = p.wanx(&["build", "--json"]);
    let json = run.success().json();
    assert_eq!(json["generated"], 3);
    assert_eq!(json["images_generated"], 6);
    // qwen-image cannot do 768*1024: the nearest listed size of the same aspect ratio, with a note.
    assert!(run.stderr.contains("1104*1472"), "{}", run.stderr);
    let ledger = p.ledger();
    let models: Vec<&str> = ledger.requests.iter().map(|r| r.model.as_str()).collect();
    assert!(
        models.contains(&"wan2.2-t2i-flash") && models.contains(&"qwen-image"),
        "{models:?}"
    );
    let poster = ledger
        .requests
        .iter()
        .find(|r| r.model == "qwen-image")
        .unwrap();
    assert_eq!(poster.body["parameters"]["size"], "1104*1472");
    // 4 images of the base scene, each named with the generation time and an index.
    let outputs = json["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "scene-001-base")
        .unwrap()["outputs"]
        .clone();
    assert_eq!(outputs.as_array().unwrap().len(), 4);
    for out in outputs.as_array().unwrap() {
        let path = out.as_str().unwrap();
        assert!(
            path.starts_with("output/tongyi-wanxiang/cyberpunk-20251019/scene-001-base_"),
            "{path}"
        );
        assert_eq!(p.png_size(path), (1024, 1024));
    }
    // {timestamp} is the generation time: a second build finds the same names fresh.
    let again = p.wanx(&["build", "--json"]).success().json();
    assert_eq!(again["fresh"], 3);
    assert_eq!(again["tasks"][0]["outputs"], json["tasks"][0]["outputs"]);
}

#[test]
fn emulate_flag_needs_no_key_and_no_server() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    let run = p
        .command(&["build", "--emulate", "--json"])
        .env_remove("DASHSCOPE_API_KEY")
        .env_remove("DASHSCOPE_HTTP_BASE_URL")
        .output()
        .unwrap();
    let run: crate::util::Run = run.into();
    let json = run.success().json();
    assert_eq!(json["generated"], 2);
    assert_eq!(json["emulated"], true);
    assert_eq!(
        p.ledger().submissions,
        0,
        "the in-process emulator served it, not the test's"
    );
    assert!(run.stderr.contains("emulated"), "{}", run.stderr);
}

#[test]
fn a_missing_api_key_is_a_clear_error_that_mentions_emulate() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    p.file(
        "wanx.toml",
        "[provider]\nbase_url = \"https://dashscope.aliyuncs.com/api/v1\"\n",
    );
    let run: crate::util::Run = p
        .command(&["build"])
        .env_remove("DASHSCOPE_API_KEY")
        .env_remove("DASHSCOPE_HTTP_BASE_URL")
        .output()
        .unwrap()
        .into();
    run.status(2);
    assert!(
        run.stderr.contains("DASHSCOPE_API_KEY") && run.stderr.contains("--emulate"),
        "{}",
        run.stderr
    );
    assert!(!p.exists("generated"), "nothing was written");
}

#[test]
fn restoring_a_deleted_output_leaves_wanx_lock_byte_identical() {
    // A restore pays nothing, but the images it copies back were paid for once: the lock keeps what
    // they cost, so a committed `wanx.lock` does not change because an output was restored.
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    p.wanx(&["build"]).success();
    let lock = p.read("wanx.lock");
    assert!(lock.contains("cost = \"0.28\""), "{lock}");
    std::fs::remove_file(p.path("generated/harbor_1.png")).unwrap();
    let json = p.wanx(&["build", "--json"]).success().json();
    assert_eq!(json["restored"], 1, "{json}");
    assert_eq!(p.read("wanx.lock"), lock);
    // `--locked` may restore (it refuses only to generate), and leaves the lock as committed.
    std::fs::remove_file(p.path("generated/lighthouse.png")).unwrap();
    p.wanx(&["build", "--locked"]).success();
    assert_eq!(p.read("wanx.lock"), lock);
    assert_eq!(p.ledger().images_billed, 3);
}
