//! Edit chains: tasks that consume other tasks' images and local files, scheduled and cached as a
//! graph. The emulator's ledger proves which requests were made.

use std::time::Duration;

use serde_json::Value;

use crate::util::{Project, Run};

/// Two independent chains: castle → banner (extend) → clean (remove_watermark); forest → wide.
const CHAINS: &str = r#"[defaults]
size = "512*512"
prompt_extend = false

[[task]]
id = "castle"
model = "wan2.2-t2i-flash"
prompt = "a castle on a hill"

[[task]]
id = "castle-banner"
edit = "extend"
input = "castle"
prompt = "continue the valley to the right"
extend = { direction = "right", ratio = 1.5 }

[[task]]
id = "castle-clean"
edit = "remove_watermark"
input = "castle-banner"
prompt = "remove the watermark"

[[task]]
id = "forest"
model = "wanx2.1-t2i-turbo"
prompt = "a misty forest"

[[task]]
id = "forest-wide"
edit = "extend"
input = "forest"
prompt = "continue the forest on both sides"
extend = { direction = "all", ratio = 1.25 }
"#;

/// `size` is only for text-to-image tasks; edits follow their input.
fn chains() -> String {
    CHAINS
        .replace("[defaults]\nsize = \"512*512\"\n", "[defaults]\n")
        .replace(
            "prompt = \"a castle on a hill\"",
            "prompt = \"a castle on a hill\"\nsize = \"512*512\"",
        )
        .replace(
            "prompt = \"a misty forest\"",
            "prompt = \"a misty forest\"\nsize = \"512*512\"",
        )
}

/// The two chains, against an emulator that refuses the castle's first submission with HTTP 400
/// and `code`.
fn chains_whose_castle_is_refused(code: &str, message: &str) -> Project {
    let p = Project::with_emulator_toml(&format!(
        r#"
[[faults]]
on = "submit"
model = "wan2.2-t2i-flash"
nth = [1]
fault = {{ kind = "http", status = 400, code = "{code}", message = "{message}" }}
"#
    ));
    p.file("plans/chains.toml", &chains());
    p
}

fn statuses(run: &Run) -> Vec<(String, String)> {
    let json = run.json();
    json["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_owned(),
                t["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn spans_overlap(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

#[test]
fn two_chains_build_in_graph_order_both_in_flight_and_a_rerun_generates_nothing() {
    // Longer than the 2 submissions per second the edit model allows, so both extends can overlap.
    let p = Project::with_emulator_toml("latency_ms = 800\n");
    p.file("plans/chains.toml", &chains());
    let run = p.wanx(&["build", "--json"]);
    run.success();
    assert_eq!(run.json()["generated"], 5);
    let ledger = p.ledger();
    assert_eq!(ledger.submissions, 5);

    // The edits went to the real edit API with the upstream image inline.
    let edits: Vec<_> = ledger
        .requests
        .iter()
        .filter(|r| r.model == "wanx2.1-imageedit")
        .collect();
    assert_eq!(edits.len(), 3);
    for edit in &edits {
        assert!(
            edit.path
                .ends_with("/services/aigc/image2image/image-synthesis"),
            "{}",
            edit.path
        );
        assert_eq!(edit.media, vec!["data-uri"], "{:?}", edit.media);
    }
    let banner = edits
        .iter()
        .find(|r| {
            r.body["parameters"].get("right_scale").is_some()
                && r.body["parameters"].get("left_scale").is_none()
        })
        .expect("the castle banner's request");
    assert_eq!(banner.body["input"]["function"], "expand");
    assert_eq!(banner.body["parameters"]["right_scale"], 1.5);
    assert!(
        edits
            .iter()
            .any(|r| r.body["input"]["function"] == "remove_watermark")
    );
    // Extending 512×512 to the right by 1.5 gives 768×512; the clean copy keeps that size.
    assert_eq!(p.png_size("generated/castle-banner.png"), (768, 512));
    assert_eq!(p.png_size("generated/castle-clean.png"), (768, 512));
    assert_eq!(p.png_size("generated/forest-wide.png"), (768, 768));

    // Both chains were in flight at once: their first steps overlapped, and so did their extends.
    let span = |model: &str, i: usize| {
        let t = &ledger.per_model[model].timeline[i];
        (t.submitted_ms, t.finished_ms.expect("finished"))
    };
    assert!(
        spans_overlap(span("wan2.2-t2i-flash", 0), span("wanx2.1-t2i-turbo", 0)),
        "the two chains' first steps ran in parallel"
    );
    assert!(
        spans_overlap(span("wanx2.1-imageedit", 0), span("wanx2.1-imageedit", 1)),
        "the two extends ran in parallel"
    );

    let again = p.wanx(&["build", "--json"]);
    again.success();
    assert_eq!(again.json()["generated"], 0);
    assert_eq!(again.json()["fresh"], 5);
    assert_eq!(p.ledger().submissions, 5);
}

#[test]
fn a_chained_task_starts_as_soon_as_its_inputs_exist_not_when_the_slowest_upstream_ends() {
    // The castle takes 4 s, everything else 200 ms: the forest's extend must not wait for the castle.
    let p = Project::with_emulator_toml(
        "latency_ms = 200\n[latency_per_model.\"wan2.2-t2i-flash\"]\nbase_ms = 4000\n",
    );
    p.file("plans/chains.toml", &chains());
    let run = p.wanx(&["build", "--json"]);
    run.success();
    assert_eq!(run.json()["generated"], 5);
    let ledger = p.ledger();
    let span_of = |task_id: &str| {
        ledger
            .per_model
            .values()
            .flat_map(|m| &m.timeline)
            .find(|t| t.task_id == task_id)
            .map(|t| (t.submitted_ms, t.finished_ms.expect("finished")))
            .expect("a span for every accepted task")
    };
    let request = |pick: &dyn Fn(&Value) -> bool| {
        ledger
            .requests
            .iter()
            .find(|r| pick(&r.body))
            .map(|r| span_of(&r.task_id))
            .expect("the request was made")
    };
    let castle = request(&|b| b["input"]["prompt"] == "a castle on a hill");
    let forest_wide = request(&|b| b["parameters"].get("left_scale").is_some());
    let castle_banner = request(&|b| {
        b["parameters"].get("right_scale").is_some() && b["parameters"].get("left_scale").is_none()
    });
    assert!(
        forest_wide.1 < castle.1,
        "the forest's extend ({forest_wide:?}) ran while the castle ({castle:?}) was still in flight"
    );
    assert!(
        castle_banner.0 >= castle.1,
        "the castle's extend ({castle_banner:?}) waited for the castle ({castle:?})"
    );
}

#[test]
fn an_upstream_edit_regenerates_its_chain_and_a_downstream_edit_only_itself() {
    let p = Project::new();
    p.file("plans/chains.toml", &chains());
    p.wanx(&["build"]).success();
    // `explain` names each input, the digest its key holds, and how it reaches the API.
    let castle = blake3::hash(&std::fs::read(p.path("generated/castle.png")).unwrap());
    let explain = p.wanx(&["explain", "castle-banner"]);
    explain.success();
    assert!(
        explain.stdout.contains(&format!(
            "/input/base_image_url ← task `castle` = blake3 {castle} (sent inline as a data URI)"
        )),
        "{}",
        explain.stdout
    );

    p.edit(
        "plans/chains.toml",
        "a castle on a hill",
        "a castle by the sea",
    );
    let explain = p.wanx(&["explain", "castle-banner"]);
    explain.success();
    assert!(
        explain
            .stdout
            .contains("key       not yet known: waits for `castle`"),
        "{}",
        explain.stdout
    );
    let plan = p.wanx(&["plan"]);
    plan.success();
    assert!(
        plan.stdout.contains("waits for `castle`"),
        "the plan shows what the change pulls in:\n{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("waits for `castle-banner`"),
        "{}",
        plan.stdout
    );
    let run = p.wanx(&["build", "--json"]);
    run.success();
    let generated: Vec<String> = statuses(&run)
        .into_iter()
        .filter(|(_, s)| s == "generated")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(generated, ["castle", "castle-banner", "castle-clean"]);
    assert_eq!(p.ledger().submissions, 8);

    p.edit(
        "plans/chains.toml",
        "remove the watermark",
        "remove the watermark and the logo",
    );
    let run = p.wanx(&["build", "--json"]);
    run.success();
    assert_eq!(run.json()["generated"], 1);
    assert_eq!(p.ledger().submissions, 9);
    assert_eq!(
        p.ledger().requests[8].body["input"]["prompt"],
        "remove the watermark and the logo"
    );
}

#[test]
fn an_upstream_regenerated_to_identical_bytes_stops_there() {
    let p = Project::new();
    p.file("plans/chains.toml", &chains());
    p.wanx(&["build"]).success();
    // Forget the castle entirely (its lock entry and the cache): it must be generated again. The
    // emulator renders the same request to the same bytes, so nothing downstream changes.
    let mut lock: toml::Table = p.read("wanx.lock").parse().unwrap();
    lock["task"].as_table_mut().unwrap().remove("castle");
    std::fs::write(p.path("wanx.lock"), toml::to_string(&lock).unwrap()).unwrap();
    std::fs::remove_dir_all(p.path(".wanx")).unwrap();
    std::fs::remove_file(p.path("generated/castle.png")).unwrap();
    let run = p.wanx(&["build", "--json"]);
    run.success();
    let generated: Vec<String> = statuses(&run)
        .into_iter()
        .filter(|(_, s)| s == "generated")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        generated,
        ["castle"],
        "early cutoff: its dependants stayed fresh"
    );
    assert_eq!(p.ledger().submissions, 6);
}

#[test]
fn forcing_a_downstream_task_regenerates_it_alone_not_the_upstream_it_pulls_in() {
    let p = Project::new();
    p.file("plans/chains.toml", &chains());
    p.wanx(&["build"]).success();
    let run = p.wanx(&["build", "--force", "castle-banner", "--json"]);
    run.success();
    let generated: Vec<String> = statuses(&run)
        .into_iter()
        .filter(|(_, s)| s == "generated")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(generated, ["castle-banner"], "{}", run.json());
    assert_eq!(p.ledger().submissions, 6);
}

#[test]
fn touching_a_local_input_changes_nothing_and_changing_its_bytes_regenerates_its_task() {
    let p = Project::new();
    let photo = wanx::emulator::placeholder_png::render(600, 600, b"a photo");
    std::fs::create_dir_all(p.path("plans/photos")).unwrap();
    std::fs::write(p.path("plans/photos/shop.png"), &photo).unwrap();
    p.file(
        "plans/edit.toml",
        "[[task]]\nid = \"shop-clean\"\nedit = \"remove_watermark\"\ninput = \"photos/shop.png\"\nprompt = \"remove the watermark\"\n",
    );
    p.wanx(&["build"]).success();
    assert_eq!(p.png_size("generated/shop-clean.png"), (600, 600));
    assert_eq!(p.ledger().requests[0].media, vec!["data-uri"]);

    // Same bytes, new mtime: nothing to do.
    let file = std::fs::File::options()
        .write(true)
        .open(p.path("plans/photos/shop.png"))
        .unwrap();
    file.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    drop(file);
    let run = p.wanx(&["build", "--json"]);
    run.success();
    assert_eq!(run.json()["generated"], 0);

    std::fs::write(
        p.path("plans/photos/shop.png"),
        wanx::emulator::placeholder_png::render(600, 600, b"another photo"),
    )
    .unwrap();
    let run = p.wanx(&["build", "--json"]);
    run.success();
    assert_eq!(run.json()["generated"], 1);
    assert_eq!(p.ledger().submissions, 2);
}

#[test]
fn a_failed_upstream_fails_its_dependants_by_name_and_the_rest_goes_on() {
    let p = chains_whose_castle_is_refused(
        "DataInspectionFailed",
        "Input data may contain inappropriate content.",
    );
    let run = p.wanx(&["build", "--json"]);
    run.status(1);
    let json = run.json();
    let by_id = |id: &str| {
        json["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(by_id("castle")["status"], "failed");
    assert!(
        run.stderr
            .contains("castle-clean: input `castle-banner` was not built"),
        "each unbuilt dependant is reported as it is settled:\n{}",
        run.stderr
    );
    for downstream in ["castle-banner", "castle-clean"] {
        assert_eq!(by_id(downstream)["status"], "failed", "{downstream}");
        assert!(
            by_id(downstream)["error"]
                .as_str()
                .unwrap()
                .contains("was not built"),
            "{}",
            by_id(downstream)
        );
    }
    assert!(
        by_id("castle-banner")["error"]
            .as_str()
            .unwrap()
            .contains("`castle`")
    );
    assert_eq!(by_id("forest")["status"], "generated");
    assert_eq!(by_id("forest-wide")["status"], "generated");
    assert_eq!(
        p.ledger().submissions,
        2,
        "nothing was sent for the failed chain's dependants"
    );
}

#[test]
fn a_fatal_provider_error_skips_every_waiting_task_unsent_and_the_next_build_finishes_the_chains() {
    let p = chains_whose_castle_is_refused(
        "Arrearage",
        "Access denied, please make sure your account is in good standing.",
    );
    let run = p.wanx(&["build", "--json"]);
    run.status(1);
    assert!(run.stderr.contains("Arrearage"), "{}", run.stderr);
    let json = run.json();
    for (id, status) in statuses(&run) {
        if id != "castle" && id != "forest" {
            assert_eq!(status, "skipped", "{id}: {json}");
        }
    }
    let ledger = p.ledger();
    assert_eq!(
        ledger
            .per_model
            .get("wanx2.1-imageedit")
            .map_or(0, |m| m.submissions),
        0,
        "no edit was sent after the build stopped"
    );
    assert!(ledger.submissions <= 1, "at most the forest was accepted");

    let run = p.wanx(&["build", "--json"]);
    run.success();
    let ledger = p.ledger();
    assert_eq!(ledger.per_model["wanx2.1-imageedit"].submissions, 3);
    assert_eq!(
        ledger.submissions, 5,
        "each of the five tasks was accepted once across both builds"
    );
    assert!(p.exists("generated/castle-clean.png"));
    assert!(p.exists("generated/forest-wide.png"));
}

#[test]
fn invalid_graphs_are_refused_before_any_request() {
    let p = Project::new();
    p.file(
        "plans/bad.toml",
        r#"[[task]]
id = "a"
edit = "remove_watermark"
input = "b"
prompt = "x"

[[task]]
id = "b"
edit = "remove_watermark"
input = "a"
prompt = "x"

[[task]]
id = "c"
edit = "remove_watermark"
input = "nope"
prompt = "x"

[[task]]
id = "d"
model = "wan2.2-t2i-flash"
prompt = "x"
n = 2

[[task]]
id = "e"
edit = "remove_watermark"
input = "d#3"
prompt = "x"

[[task]]
id = "f"
edit = "remove_watermark"
input = "missing/photo.png"
prompt = "x"
"#,
    );
    let run = p.wanx(&["build"]);
    run.status(2);
    assert!(
        run.stderr.contains("a → b → a") || run.stderr.contains("b → a → b"),
        "the cycle is named:\n{}",
        run.stderr
    );
    assert!(run.stderr.contains("nope"), "{}", run.stderr);
    assert!(run.stderr.contains("d#3"), "{}", run.stderr);
    assert!(run.stderr.contains("missing/photo.png"), "{}", run.stderr);
    assert_eq!(p.ledger().submissions + p.ledger().rejected, 0);
    assert!(!p.exists(".wanx"));
}

#[test]
fn a_local_reference_image_for_wanx_v1_goes_through_temporary_storage() {
    let p = Project::new();
    std::fs::create_dir_all(p.path("plans")).unwrap();
    std::fs::write(
        p.path("plans/ref.png"),
        wanx::emulator::placeholder_png::render(512, 512, b"reference"),
    )
    .unwrap();
    p.file(
        "plans/v1.toml",
        "[[task]]\nid = \"sketchy\"\nmodel = \"wanx-v1\"\nprompt = \"a cat\"\nref_img = \"ref.png\"\nref_mode = \"refonly\"\nstyle = \"sketch\"\n",
    );
    p.wanx(&["build"]).success();
    let ledger = p.ledger();
    assert_eq!(ledger.uploads, 1);
    assert_eq!(ledger.requests[0].media, vec!["oss"]);
    assert_eq!(
        ledger.requests[0].header("X-DashScope-OssResourceResolve"),
        Some("enable")
    );
    assert_eq!(ledger.requests[0].body["parameters"]["style"], "<sketch>");
}
