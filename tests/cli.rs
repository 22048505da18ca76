//! The command line surface: `plan`, `explain`, `--help`, exit codes.

use crate::util::{Project, TWO_TASKS, assert_output};

#[test]
fn plan_prints_actions_reasons_and_prices_and_sends_nothing() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    let run = p.wanx(&["plan"]);
    run.success();
    assert_output(
        &run.stdout,
        "\
generate  lighthouse  wan2.2-t2i-flash    new task                      ¥0.14 (1 × ¥0.14)
generate  harbor      wan2.2-t2i-flash    new task                      ¥0.28 (2 × ¥0.14)

2 to generate (3 images, ¥0.42 (emulated)), 0 to restore, 0 fresh; saving ¥0.00
",
    );
    assert_eq!(p.ledger().submissions, 0);
    assert!(!p.exists("generated"));
    p.wanx(&["build"]).success();
    let run = p.wanx(&["plan"]);
    assert_output(
        &run.success().stdout,
        "\
fresh     lighthouse  wan2.2-t2i-flash    up to date                    free
fresh     harbor      wan2.2-t2i-flash    up to date                    free

0 to generate (0 images, ¥0.00 (emulated)), 0 to restore, 2 fresh; saving ¥0.00
",
    );
}

#[test]
fn explain_shows_the_compiled_request_and_the_key() {
    let p = Project::new();
    p.file("plans/a.toml", "[[task]]\nid = \"poster\"\nmodel = \"wanx2.2-t2i-flash\"\nprompt = \"a city\"\nstyle = \"cyberpunk\"\n");
    let run = p.wanx(&["explain", "poster"]);
    run.success();
    assert!(
        run.stdout.contains("\"model\": \"wan2.2-t2i-flash\""),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("a city, cyberpunk, neon lights"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("X-DashScope-Async: enable"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("key       "), "{}", run.stdout);
    let table = p.wanx(&["explain"]);
    assert!(table.stdout.contains("stylization_all"), "{}", table.stdout);
}

#[test]
fn no_manifest_is_exit_2_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wanx"))
        .arg("plan")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wanx.toml"));
}
