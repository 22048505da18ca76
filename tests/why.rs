//! Why a task is not fresh, in the plan's words: each kind of change, as text and as JSON.

use crate::util::{Project, assert_output};

const PLAN: &str = r#"[[task]]
id = "scene"
model = "wan2.2-t2i-flash"
size = "1024*1024"
prompt = "a lighthouse at dusk, volumetric light, highly detailed"

[[task]]
id = "styled"
model = "wanx2.1-imageedit"
function = "stylization_all"
prompt = "make it oil"
input = "scene"
"#;

const EDIT: &str = r#"
[[task]]
id = "edit"
model = "wanx2.1-imageedit"
function = "stylization_all"
prompt = "make it oil"
input = "../art/old-photo.png"
"#;

/// The plan's JSON entry of `id`.
fn task(json: &serde_json::Value, id: &str) -> serde_json::Value {
    json["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("no task {id} in {json}"))
        .clone()
}

fn built() -> Project {
    let p = Project::new();
    p.file("plans/a.toml", PLAN);
    p.wanx(&["build"]).success();
    p
}

#[test]
fn a_prompt_and_a_size_edit_are_named_field_by_field() {
    let p = built();
    p.edit("plans/a.toml", "highly detailed", "oil on canvas");
    p.edit("plans/a.toml", "1024*1024", "1440*1024");
    let plan = p.wanx(&["plan"]).success().stdout.clone();
    let reason = "prompt: \"…volumetric light, highly detailed\" → \"…volumetric light, oil on canvas\"; size: 1024*1024 → 1440*1024";
    assert_output(
        &plan,
        &format!(
            "\
generate  scene   wan2.2-t2i-flash    {reason}  ¥0.14 (1 × ¥0.14)
generate  styled  wanx2.1-imageedit   waits for `scene`             up to ¥0.14 (1 × ¥0.14)

2 to generate (2 images, ¥0.28 (emulated)), 0 to restore, 0 fresh; saving ¥0.00
1 of them consume images generated first; if those come out byte-identical, they cost nothing
"
        ),
    );
    let json = p.wanx(&["plan", "--json"]).success().json();
    let scene = task(&json, "scene");
    assert_eq!(scene["reason"], reason);
    assert_eq!(
        scene["changes"][1],
        serde_json::json!({"field": "size", "from": "1024*1024", "to": "1440*1024",
            "text": "size: 1024*1024 → 1440*1024"})
    );
    assert_eq!(scene["changes"][0]["field"], "prompt");
    assert_eq!(
        scene["changes"][0]["to"],
        "a lighthouse at dusk, volumetric light, oil on canvas"
    );
    let explain = p.wanx(&["explain", "scene"]).success().stdout.clone();
    assert!(
        explain.contains("why       size: 1024*1024 → 1440*1024"),
        "{explain}"
    );
    // The build says it too, one line per task, and the consumer names its upstream.
    let build = p.wanx(&["build", "--json"]);
    build.success();
    assert!(
        build.stderr.contains(&format!(
            "Generated scene → generated/scene.png (¥0.14), because {reason}"
        )),
        "{}",
        build.stderr
    );
    assert!(
        build
            .stderr
            .contains("because upstream scene was regenerated"),
        "{}",
        build.stderr
    );
    let styled = task(&build.json(), "styled");
    assert_eq!(
        styled["changes"][0],
        serde_json::json!({"kind": "upstream_regenerated", "subject": "scene",
            "text": "upstream scene was regenerated"})
    );
}

#[test]
fn an_input_files_new_bytes_are_named() {
    let p = built();
    std::fs::create_dir_all(p.path("art")).unwrap();
    std::fs::copy(p.path("generated/scene.png"), p.path("art/old-photo.png")).unwrap();
    p.file("plans/a.toml", &format!("{PLAN}{EDIT}"));
    let json = p.wanx(&["plan", "--json"]).success().json();
    assert_eq!(task(&json, "edit")["reason"], "new task");
    assert_eq!(task(&json, "edit")["changes"][0]["kind"], "new_task");
    p.wanx(&["build"]).success();
    std::fs::copy(p.path("generated/styled.png"), p.path("art/old-photo.png")).unwrap();
    let json = p.wanx(&["plan", "--json"]).success().json();
    let edit = task(&json, "edit");
    assert_eq!(edit["reason"], "input art/old-photo.png: bytes changed");
    assert_eq!(edit["changes"][0]["kind"], "input_changed");
    assert_eq!(edit["changes"][0]["subject"], "art/old-photo.png");
}

#[test]
fn outputs_deleted_or_modified_and_tasks_brought_back_are_named() {
    let p = built();
    std::fs::remove_file(p.path("generated/scene.png")).unwrap();
    let plan = p.wanx(&["plan"]).success().stdout.clone();
    assert_output(
        &plan,
        "\
restore   scene   wan2.2-t2i-flash    output deleted: generated/scene.png  free
fresh     styled  wanx2.1-imageedit   up to date                    free

0 to generate (0 images, ¥0.00 (emulated)), 1 to restore, 1 fresh; saving ¥0.14
",
    );
    std::fs::write(p.path("generated/styled.png"), b"not the image").unwrap();
    let json = p.wanx(&["plan", "--json"]).success().json();
    assert_eq!(
        task(&json, "styled")["changes"][0],
        serde_json::json!({"kind": "output_modified", "subject": "generated/styled.png",
            "text": "output modified by hand: generated/styled.png"})
    );
    assert_eq!(task(&json, "scene")["changes"][0]["kind"], "output_deleted");

    // Removed from the plan (its lock entry pruned), then brought back as it was: restored free.
    let q = built();
    q.file("plans/a.toml", "");
    q.wanx(&["build"]).success();
    q.file("plans/a.toml", PLAN);
    let json = q.wanx(&["plan", "--json"]).success().json();
    let scene = task(&json, "scene");
    assert_eq!(scene["action"], "restore");
    assert_eq!(scene["reason"], "restored after it was removed");
    assert_eq!(scene["changes"][0]["kind"], "restored_after_removal");
}

#[test]
fn a_switch_of_provider_is_named() {
    let p = built();
    let run: crate::util::Run = p
        .command(&["plan", "--json"])
        .env_remove("DASHSCOPE_HTTP_BASE_URL")
        .output()
        .unwrap()
        .into();
    let scene = task(&run.success().json(), "scene");
    assert_eq!(
        scene["changes"][0],
        serde_json::json!({"kind": "provider_changed", "from": "wanx-emulator", "to": "dashscope",
            "text": "provider: built against the emulator, now DashScope"})
    );
}

#[test]
fn status_lists_only_what_is_not_fresh_and_exits_3() {
    let p = built();
    let run = p.wanx(&["status"]);
    run.success();
    assert_eq!(run.stdout, "");
    p.edit("plans/a.toml", "1024*1024", "1440*1024");
    let run = p.wanx(&["status"]);
    run.status(3);
    assert_eq!(
        run.stdout,
        "generate  scene  ¥0.14  size: 1024*1024 → 1440*1024\n\
         generate  styled  up to ¥0.14  waits for `scene`\n\
         2 tasks not fresh, ¥0.28 to build\n"
    );
    assert_eq!(p.ledger().submissions, 2, "status sends nothing");
}

#[test]
fn graph_marks_stale_tasks() {
    let p = built();
    p.edit("plans/a.toml", "make it oil", "make it ink");
    let run = p.wanx(&["graph"]);
    assert_eq!(run.success().stdout, "scene\n└─ styled  (stale)\n");
    let dot = p
        .wanx(&["graph", "--format", "dot"])
        .success()
        .stdout
        .clone();
    assert!(dot.contains("\"scene\" -> \"styled\";"), "{dot}");
}
