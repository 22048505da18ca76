//! The planner's key cache (src/planner/key_cache.rs): an unchanged plan file keeps its tasks' keys without
//! being compiled again, and any change to what a key depends on is still seen.

use std::time::Duration;

use crate::util::{Project, TWO_TASKS};

#[test]
fn an_edit_keeping_size_mtime_and_inode_is_seen() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    p.wanx(&["build"]).success();
    let meta = std::fs::metadata(p.path("plans/a.toml")).unwrap();
    // Same length, written in place (same inode), mtime put back: only the bytes differ.
    p.edit("plans/a.toml", "at dusk", "at dawn");
    p.set_mtime("plans/a.toml", meta.modified().unwrap());
    let after = std::fs::metadata(p.path("plans/a.toml")).unwrap();
    assert_eq!(after.len(), meta.len());
    assert_eq!(after.modified().unwrap(), meta.modified().unwrap());
    let json = p.wanx(&["build", "--json"]).success().json();
    assert_eq!(
        (json["generated"].as_u64(), json["fresh"].as_u64()),
        (Some(1), Some(1))
    );
    let last = p.ledger().requests.last().unwrap().body.clone();
    assert_eq!(last["input"]["prompt"], "a lighthouse at dawn", "{last}");
}

#[test]
fn a_change_to_wanx_toml_that_changes_the_request_rekeys_unchanged_plans() {
    let p = Project::new();
    p.file(
        "wanx.toml",
        "[models.house]\nbase = \"wan2.2-t2i-flash\"\nid = \"wan2.2-t2i-flash\"\n",
    );
    p.file(
        "plans/a.toml",
        "[[task]]\nid = \"tower\"\nmodel = \"house\"\nsize = \"512*512\"\nprompt = \"a tower\"\n",
    );
    p.wanx(&["build"]).success();
    assert_eq!(p.wanx(&["build", "--json"]).success().json()["fresh"], 1);
    p.file(
        "wanx.toml",
        "[models.house]\nbase = \"wan2.2-t2i-plus\"\nid = \"wan2.2-t2i-plus\"\n",
    );
    let json = p.wanx(&["build", "--json"]).success().json();
    assert_eq!(json["generated"], 1, "{json}");
    let ledger = p.ledger();
    assert_eq!(ledger.submissions, 2);
    assert_eq!(
        ledger.requests.last().unwrap().body["model"],
        "wan2.2-t2i-plus"
    );
}

#[test]
fn a_plan_file_mixing_cached_tasks_and_a_local_input_still_checks_the_input() {
    let p = Project::new();
    std::fs::create_dir_all(p.path("plans/photos")).unwrap();
    let photo = wanx::emulator::placeholder_png::render(600, 600, b"a photo");
    std::fs::write(p.path("plans/photos/shop.png"), &photo).unwrap();
    p.file(
        "plans/a.toml",
        r#"[[task]]
id = "lighthouse"
model = "wan2.2-t2i-flash"
size = "512*512"
prompt = "a lighthouse at dusk"

[[task]]
id = "shop-clean"
edit = "remove_watermark"
input = "photos/shop.png"
prompt = "remove the watermark"

[[task]]
id = "harbor"
model = "wan2.2-t2i-flash"
size = "512*512"
prompt = "a quiet harbor"
"#,
    );
    p.wanx(&["build"]).success();
    assert_eq!(p.wanx(&["build", "--json"]).success().json()["fresh"], 3);
    // New bytes of the same size, mtime put back: the plan file itself is unchanged.
    let meta = std::fs::metadata(p.path("plans/photos/shop.png")).unwrap();
    let other = wanx::emulator::placeholder_png::render(600, 600, b"another photo");
    std::fs::write(p.path("plans/photos/shop.png"), &other).unwrap();
    p.set_mtime("plans/photos/shop.png", meta.modified().unwrap());
    let json = p.wanx(&["build", "--json"]).success().json();
    assert_eq!(
        (json["generated"].as_u64(), json["fresh"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(p.ledger().submissions, 4);
}

#[test]
fn plans_with_and_without_cached_keys_read_alike() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    p.file(
        "plans/b.toml",
        "[[task]]\nid = \"tower\"\nmodel = \"wan2.2-t2i-plus\"\nsize = \"512*512\"\nprompt = \"a tower\"\n",
    );
    // The first `wanx plan` compiles and stores the keys, the second reads them.
    let cold = p.wanx(&["plan", "--json"]).success().stdout.clone();
    let warm = p.wanx(&["plan", "--json"]).success().stdout.clone();
    assert_eq!(cold, warm);
    p.wanx(&["build"]).success();
    let plain = p.wanx(&["plan"]).success().stdout.clone();
    std::fs::remove_file(p.path(".wanx/wanx.db")).ok();
    for wal in ["wanx.db-wal", "wanx.db-shm"] {
        std::fs::remove_file(p.path(&format!(".wanx/{wal}"))).ok();
    }
    assert_eq!(p.wanx(&["plan"]).success().stdout, plain);
}

#[test]
fn a_forced_build_from_cached_keys_sends_the_full_request_under_the_same_key() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    p.wanx(&["build"]).success();
    let lock = p.read("wanx.lock");
    std::thread::sleep(Duration::from_millis(10));
    let json = p
        .wanx(&["build", "--force", "lighthouse", "--json"])
        .success()
        .json();
    assert_eq!(json["generated"], 1);
    let ledger = p.ledger();
    assert_eq!(ledger.submissions, 3);
    let first = &ledger.requests[0].body;
    let forced = &ledger.requests.last().unwrap().body;
    let lighthouse = if first["input"]["prompt"] == "a lighthouse at dusk" {
        first
    } else {
        &ledger.requests[1].body
    };
    assert_eq!(forced, lighthouse);
    let key = |text: &str| {
        text.lines()
            .skip_while(|l| *l != "[task.\"lighthouse\"]")
            .find(|l| l.starts_with("key"))
            .map(str::to_owned)
    };
    assert_eq!(key(&p.read("wanx.lock")), key(&lock));
}
