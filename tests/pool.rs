//! Images as a pool per request (issue 17): `n` is not in the key, so raising it pays only for the
//! images the pool lacks and lowering or raising it back restores for free; a project built by the
//! key version before the pool stays fresh without paying again.

use std::path::Path;

use crate::util::Project;

fn harbor(n: u32, seed: Option<u64>) -> String {
    let seed = seed.map(|s| format!("seed = {s}\n")).unwrap_or_default();
    format!(
        "[[task]]\nid = \"harbor\"\nmodel = \"wan2.2-t2i-flash\"\nsize = \"512*512\"\nn = {n}\n{seed}prompt = \"a harbor at dawn\"\n"
    )
}

fn bytes(p: &Project, rel: &str) -> Vec<u8> {
    std::fs::read(p.path(rel)).unwrap()
}

/// The image files under `generated/`, sorted.
fn outputs(p: &Project) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(p.path("generated"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn raising_n_pays_only_for_the_images_the_pool_lacks_and_lowering_it_pays_nothing() {
    let p = Project::new();
    p.file("plans/a.toml", &harbor(2, None));
    p.wanx(&["build"]).success();
    assert_eq!(p.ledger().images_billed, 2);
    let first_two = (
        bytes(&p, "generated/harbor_1.png"),
        bytes(&p, "generated/harbor_2.png"),
    );

    // n 2 → 4: the plan says what the change costs, the build pays for two images.
    p.file("plans/a.toml", &harbor(4, None));
    let plan = p.wanx(&["plan"]);
    plan.success();
    assert!(
        plan.stdout.contains("n 2 → 4: 2 more images, ¥0.28"),
        "{}",
        plan.stdout
    );
    let run = p.wanx(&["build", "--json"]);
    run.success();
    let ledger = p.ledger();
    assert_eq!(ledger.images_billed, 4, "2 + 2 images, not 2 + 4");
    assert_eq!(ledger.requests.last().unwrap().body["parameters"]["n"], 2);
    assert_eq!(run.json()["spent"], 0.28);
    assert_eq!(
        (
            bytes(&p, "generated/harbor_1.png"),
            bytes(&p, "generated/harbor_2.png")
        ),
        first_two,
        "the images paid for first are the pool's first two"
    );
    let four = outputs(&p);
    assert_eq!(four.len(), 4, "{four:?}");

    // 4 → 1: restored from the pool, nothing billed, the other outputs removed.
    p.file("plans/a.toml", &harbor(1, None));
    let run = p.wanx(&["build", "--json"]);
    run.success();
    assert_eq!(p.ledger().images_billed, 4, "lowering n bills nothing");
    assert_eq!(run.json()["spent"], 0.0);
    assert_eq!(outputs(&p), vec!["harbor.png".to_owned()], "no stray files");
    assert_eq!(bytes(&p, "generated/harbor.png"), first_two.0);

    // 1 → 4: the pool holds four, so all four are restored for free.
    p.file("plans/a.toml", &harbor(4, None));
    let run = p.wanx(&["build", "--json"]);
    run.success();
    assert_eq!(p.ledger().images_billed, 4, "raising n back bills nothing");
    assert_eq!(outputs(&p), four);
    assert_eq!(p.wanx(&["build", "--json"]).success().json()["fresh"], 1);
}

#[test]
fn a_seeded_task_asks_for_the_seeds_its_pool_lacks() {
    let p = Project::new();
    p.file("plans/a.toml", &harbor(2, Some(100)));
    p.wanx(&["build"]).success();
    p.file("plans/a.toml", &harbor(4, Some(100)));
    p.wanx(&["build"]).success();
    let ledger = p.ledger();
    assert_eq!(ledger.images_billed, 4);
    let last = &ledger.requests.last().unwrap().body["parameters"];
    assert_eq!(
        (last["seed"].as_u64(), last["n"].as_u64()),
        (Some(102), Some(2)),
        "the follow-up asks for seeds 102 and 103: {last}"
    );
}

/// Copies the fixture tree `from` into `to`.
fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `tests/fixtures/key-v1` was written by wanx at key version 1 (`n` in the key; commit 4f3c9f9,
/// `wanx build --emulate` of the plan it holds): its lock and store name results by the old keys.
#[test]
fn a_project_built_by_the_previous_key_version_stays_fresh_and_its_pool_carries_over() {
    let p = Project::new();
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/key-v1"),
        p.root(),
    );
    let before = p.snapshot();
    let run = p.wanx(&["build", "--json"]);
    run.success();
    assert_eq!(run.json()["fresh"], 1, "{}", run.stdout);
    assert_eq!(p.ledger().images_billed, 0, "nothing paid again");
    assert_eq!(p.snapshot(), before, "no output rewritten");
    // The images paid for under the old key are the new pool's: n 2 → 3 pays for one.
    p.edit("plans/a.toml", "n = 2", "n = 3");
    p.wanx(&["build"]).success();
    assert_eq!(p.ledger().images_billed, 1);
    assert_eq!(p.ledger().requests[0].body["parameters"]["n"], 1);
}

fn picked(pick: &str) -> String {
    format!(
        "[[task]]\nid = \"harbor\"\nmodel = \"wan2.2-t2i-flash\"\nsize = \"512*512\"\nn = 3\npick = {pick}\nprompt = \"a harbor at dawn\"\n\n[[task]]\nid = \"harbor-clean\"\nedit = \"remove_watermark\"\ninput = \"harbor\"\nprompt = \"remove the watermark\"\n"
    )
}

#[test]
fn changing_pick_bills_nothing_writes_the_picked_candidate_and_regenerates_downstream() {
    let p = Project::new();
    p.file("plans/a.toml", &picked("2"));
    p.wanx(&["build"]).success();
    let ledger = p.ledger();
    assert_eq!(ledger.images_billed, 4, "3 candidates and the edit");
    assert_eq!(outputs(&p), vec!["harbor-clean.png", "harbor.png"]);
    let second = bytes(&p, "generated/harbor.png");
    let edited_second = bytes(&p, "generated/harbor-clean.png");

    // The pick changes: no candidate is paid again, the output is candidate 3's bytes, and the
    // edit of the picked image is made again from the new one.
    p.file("plans/a.toml", &picked("3"));
    let run = p.wanx(&["build", "--json"]);
    run.success();
    let ledger = p.ledger();
    assert_eq!(
        ledger.images_billed, 5,
        "only the downstream edit is billed"
    );
    let third = bytes(&p, "generated/harbor.png");
    assert_ne!(third, second);
    assert_ne!(bytes(&p, "generated/harbor-clean.png"), edited_second);

    // Back to 2: the candidate and its edit are both restored for free.
    p.file("plans/a.toml", &picked("2"));
    p.wanx(&["build"]).success();
    assert_eq!(p.ledger().images_billed, 5);
    assert_eq!(bytes(&p, "generated/harbor.png"), second);
    assert_eq!(bytes(&p, "generated/harbor-clean.png"), edited_second);

    // A list writes one output per picked candidate.
    p.file("plans/a.toml", &picked("[1, 3]").replace(
        "\n[[task]]\nid = \"harbor-clean\"\nedit = \"remove_watermark\"\ninput = \"harbor\"\nprompt = \"remove the watermark\"\n",
        "",
    ));
    p.wanx(&["build"]).success();
    assert_eq!(p.ledger().images_billed, 5);
    assert_eq!(bytes(&p, "generated/harbor_2.png"), third);
    assert!(!p.exists("generated/harbor.png"));

    // Without a pick every candidate is written: the one picked as `3` is the third.
    p.edit("plans/a.toml", "pick = [1, 3]\n", "");
    p.wanx(&["build"]).success();
    assert_eq!(p.ledger().images_billed, 5);
    assert_eq!(bytes(&p, "generated/harbor_3.png"), third);
    assert_eq!(
        outputs(&p),
        vec!["harbor_1.png", "harbor_2.png", "harbor_3.png"]
    );
}

#[test]
fn a_pick_outside_the_candidates_is_refused() {
    let p = Project::new();
    p.file("plans/a.toml", &picked("4"));
    let run = p.wanx(&["build"]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr
            .contains("`pick` must name distinct candidates from 1 to 3"),
        "{}",
        run.stderr
    );
    assert_eq!(p.ledger().submissions, 0);
}

#[test]
fn explain_shows_the_pool_with_seeds_and_outputs() {
    let p = Project::new();
    p.file("plans/a.toml", &harbor(3, Some(100)));
    p.wanx(&["build"]).success();
    p.file("plans/a.toml", &harbor(1, Some(100)));
    p.wanx(&["build"]).success();
    let run = p.wanx(&["explain", "harbor"]);
    run.success();
    let out = &run.stdout;
    assert!(
        out.contains("pool      3 image(s) paid for under this key (1 used by `n = 1`)"),
        "{out}"
    );
    assert!(out.contains("#1  seed 100  paid "), "{out}");
    assert!(out.contains("output generated/harbor.png"), "{out}");
    assert!(out.contains("#3  seed 102  paid "), "{out}");
    assert_eq!(out.matches("cached").count(), 2, "{out}");

    let p = Project::new();
    p.file("plans/a.toml", &harbor(1, None));
    p.wanx(&["build"]).success();
    let run = p.wanx(&["explain", "harbor"]);
    assert!(run.stdout.contains("#1  seed unknown"), "{}", run.stdout);
}
