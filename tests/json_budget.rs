//! `--json` gives one object on stdout for every outcome, and every dry run shows the budget and
//! decides it as the build does.

use crate::util::{Project, TWO_TASKS};

/// stdout as exactly one JSON object.
fn one_object(stdout: &str) -> serde_json::Value {
    let mut stream = serde_json::Deserializer::from_str(stdout).into_iter::<serde_json::Value>();
    let first = stream.next().expect("an object").expect("valid JSON");
    assert!(stream.next().is_none(), "more than one object: {stdout}");
    first
}

#[test]
fn json_prints_one_error_object_on_exit_2_3_and_4() {
    let p = Project::new();
    p.file(
        "plans/a.toml",
        "[[task]]\nid = \"x\"\nmodel = \"wan2.2-t2i-flash\"\nsize = \"7*7\"\nprompt = \"p\"\n",
    );
    let run = p.wanx(&["plan", "--json"]);
    run.status(2);
    let e = &one_object(&run.stdout)["error"];
    assert_eq!(e["code"], 2);
    assert!(e["message"].as_str().unwrap().contains("problem"), "{e}");
    assert_eq!(e["diagnostics"][0]["file"], "plans/a.toml");
    assert_eq!(e["diagnostics"][0]["line"], 4);

    p.file("plans/a.toml", TWO_TASKS);
    p.wanx(&["build"]).success();
    p.edit("plans/a.toml", "a quiet harbor", "a busy harbor");
    let run = p.wanx(&["build", "--locked", "--json"]);
    run.status(3);
    let e = &one_object(&run.stdout)["error"];
    assert_eq!(e["code"], 3);
    assert!(e["hint"].is_string(), "{e}");

    let run = p.wanx(&["build", "--json", "--max-spend", "0.1"]);
    run.status(4);
    assert_eq!(one_object(&run.stdout)["error"]["code"], 4);
    assert_eq!(p.ledger().submissions, 2, "nothing more was sent");
}

#[test]
fn plan_and_dry_run_refuse_over_budget_exactly_as_the_build_does() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    let run = p.wanx(&["plan", "--max-spend", "0.3"]);
    run.status(4);
    assert!(
        run.stdout
            .contains("¥0.42 of ¥0.30 budget: a build would be refused"),
        "{}",
        run.stdout
    );
    let run = p.wanx(&["build", "--dry-run", "--max-spend", "0.3", "--json"]);
    run.status(4);
    assert_eq!(one_object(&run.stdout)["error"]["code"], 4);
    p.wanx(&["build", "--max-spend", "0.3"]).status(4);
    assert_eq!(p.ledger().submissions, 0);

    // At the budget exactly, all three agree it may run.
    p.wanx(&["plan", "--max-spend", "0.42"]).success();
    p.wanx(&["build", "--dry-run", "--max-spend", "0.42"])
        .success();
    assert_eq!(p.ledger().submissions, 0);
    p.wanx(&["build", "--max-spend", "0.42"]).success();
    assert_eq!(p.ledger().submissions, 2);
}

#[test]
fn the_manifests_budget_is_shown_in_the_plans_totals() {
    let p = Project::new();
    p.file("wanx.toml", "[build]\nmax_spend = 20\n");
    p.file("plans/a.toml", TWO_TASKS);
    let run = p.wanx(&["plan"]);
    run.success();
    assert!(
        run.stdout.contains("; ¥0.42 of ¥20.00 budget\n"),
        "{}",
        run.stdout
    );
    let json = p.wanx(&["plan", "--json"]).success().json();
    assert_eq!(json["budget"], 20.0);
    let json = p.wanx(&["explain", "harbor", "--json"]).success().json();
    assert_eq!(json["action"], "generate");
    assert_eq!(json["reason"], "new task");
    assert_eq!(json["changes"][0]["kind"], "new_task");
}

#[test]
fn verify_json_lists_every_problem_with_its_task_and_the_error() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    p.wanx(&["build"]).success();
    let run = p.wanx(&["verify", "--json"]);
    run.success();
    let ok = one_object(&run.stdout);
    assert_eq!(ok["ok"], true);
    assert_eq!(ok["outputs_checked"], 3);
    assert_eq!(ok["blobs_checked"], 3);
    assert_eq!(ok["findings"], serde_json::json!([]));
    assert!(ok.get("error").is_none(), "{ok}");

    let good = std::fs::read(p.path("generated/harbor_2.png")).unwrap();
    std::fs::write(p.path("generated/harbor_2.png"), b"edited").unwrap();
    std::fs::remove_file(p.path("generated/lighthouse.png")).unwrap();
    let run = p.wanx(&["verify", "--json"]);
    run.status(1);
    let report = one_object(&run.stdout);
    assert_eq!(report["ok"], false);
    assert_eq!(report["unresolved"], 2);
    assert_eq!(report["error"]["code"], 1);
    assert!(
        report["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("--repair"),
        "{report}"
    );
    let findings = report["findings"].as_array().unwrap();
    let about: Vec<(&str, &str, &str)> = findings
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap(),
                f["task"].as_str().unwrap(),
                f["subject"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        about,
        [
            ("mismatch", "harbor", "generated/harbor_2.png"),
            ("mismatch", "lighthouse", "generated/lighthouse.png"),
        ],
        "{report}"
    );
    assert!(findings.iter().all(|f| f["ok"] == false), "{report}");

    // Repaired, the report says what it did and succeeds.
    std::fs::write(p.path("generated/harbor_2.png"), &good).unwrap();
    let run = p.wanx(&["verify", "--repair", "--json"]);
    run.success();
    let repaired = one_object(&run.stdout);
    assert_eq!(repaired["ok"], true);
    assert_eq!(repaired["repaired"], 1);
    assert_eq!(repaired["findings"][1]["kind"], "restored", "{repaired}");
    assert_eq!(p.ledger().submissions, 2, "verify sends nothing");
}
