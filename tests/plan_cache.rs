//! The plan cache (src/plan/cache.rs) and the lock's mirror (`.wanx/lock.cache`, src/project/lock.rs):
//! an unchanged plan is not parsed again and an unchanged lock is not parsed as text, yet an edit that
//! keeps a file's size and mtime is still seen, and a cache that is corrupted costs a miss with the
//! same result.

use crate::util::{Project, TWO_TASKS};

/// Every byte of `rel` flipped in a few places, and the file cut short: each is a miss.
fn corruptions(p: &Project, rel: &str) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(p.path(rel)).unwrap();
    assert!(bytes.len() > 100, "{rel} holds something");
    let mut out = Vec::new();
    for at in [0, 12, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x5a;
        out.push(bad);
    }
    out.push(bytes[..bytes.len() / 2].to_vec());
    out.push(b"not a cache".to_vec());
    out
}

const TOWER: &str = "[[task]]\nid = \"tower\"\nmodel = \"wan2.2-t2i-plus\"\nsize = \"512*512\"\nprompt = \"a stone tower\"\n";

#[test]
fn a_plan_edit_keeping_size_and_mtime_is_seen_through_the_plan_cache() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    p.file("plans/b.toml", TOWER);
    p.wanx(&["build"]).success();
    // The first build made `.wanx/`; the next load is cached there.
    assert!(!p.exists(".wanx/plans.cache"));
    p.wanx(&["plan"]).success();
    assert!(p.exists(".wanx/plans.cache"), "the load was cached");
    // Warm: the whole project comes from the cache.
    assert_eq!(p.wanx(&["build", "--json"]).success().json()["fresh"], 3);
    p.edit_keeping_stat("plans/a.toml", "at dusk", "at dawn");
    let json = p.wanx(&["build", "--json"]).success().json();
    assert_eq!(
        (json["generated"].as_u64(), json["fresh"].as_u64()),
        (Some(1), Some(2)),
        "{json}"
    );
    let last = p.ledger().requests.last().unwrap().body.clone();
    assert_eq!(last["input"]["prompt"], "a lighthouse at dawn", "{last}");
    // The unchanged file came from the cache; the other was parsed: an edit to it is seen too.
    p.edit_keeping_stat("plans/b.toml", "stone", "brick");
    let json = p.wanx(&["build", "--json"]).success().json();
    assert_eq!(json["generated"], 1, "{json}");
    let last = p.ledger().requests.last().unwrap().body.clone();
    assert_eq!(last["input"]["prompt"], "a brick tower", "{last}");
}

#[test]
fn a_corrupted_plan_cache_is_a_miss_with_the_same_result() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    p.file("plans/b.toml", TOWER);
    p.wanx(&["build"]).success();
    let plan = p.wanx(&["plan", "--json"]).success().json()["tasks"].clone();
    for bad in corruptions(&p, ".wanx/plans.cache") {
        std::fs::write(p.path(".wanx/plans.cache"), &bad).unwrap();
        assert_eq!(p.wanx(&["plan", "--json"]).success().json()["tasks"], plan);
        // The load that missed wrote the cache again.
        assert_ne!(std::fs::read(p.path(".wanx/plans.cache")).unwrap(), bad);
        std::fs::write(p.path(".wanx/plans.cache"), &bad).unwrap();
        let json = p.wanx(&["build", "--json"]).success().json();
        assert_eq!(
            (json["fresh"].as_u64(), json["generated"].as_u64()),
            (Some(3), Some(0)),
            "{json}"
        );
    }
    assert_eq!(p.ledger().submissions, 3, "nothing was paid for again");
}

#[test]
fn errors_across_files_read_alike_with_and_without_the_cache() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    p.file("plans/b.toml", TOWER);
    p.wanx(&["build"]).success();
    p.wanx(&["plan"]).success();
    // `b.toml` now reuses an id of `a.toml`, which the cache holds.
    p.edit("plans/b.toml", "id = \"tower\"", "id = \"harbor\"");
    let warm = p.wanx(&["plan"]);
    warm.status(2);
    assert!(
        warm.stderr.contains("task id `harbor` is used twice"),
        "{}",
        warm.stderr
    );
    std::fs::remove_file(p.path(".wanx/plans.cache")).unwrap();
    let cold = p.wanx(&["plan"]);
    cold.status(2);
    assert_eq!(warm.stderr, cold.stderr);
}

#[test]
fn plans_with_notes_read_alike_from_the_cache() {
    let p = Project::new();
    // A negative prompt longer than the service keeps gives a note.
    p.file(
        "plans/a.toml",
        &format!(
            "[[task]]\nid = \"long\"\nmodel = \"wan2.2-t2i-flash\"\nsize = \"512*512\"\nprompt = \"a field\"\nnegative_prompt = \"{}\"\n",
            "blur ".repeat(120)
        ),
    );
    p.file("plans/b.toml", TOWER);
    let cold = p.wanx(&["plan"]).success().stderr.clone();
    assert!(cold.contains("the service drops the rest"), "{cold}");
    p.wanx(&["build"]).success();
    p.wanx(&["plan"]).success();
    assert!(p.exists(".wanx/plans.cache"));
    let warm = p.wanx(&["plan"]).success().stderr.clone();
    assert_eq!(warm, cold);
    // One file changed: the other's notes still come from the cache.
    p.edit("plans/b.toml", "stone", "brick");
    let partly = p.wanx(&["plan"]).success().stderr.clone();
    assert_eq!(partly, cold);
}

#[test]
fn a_lock_edit_keeping_size_and_mtime_is_seen_through_its_mirror() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    p.wanx(&["build"]).success();
    assert!(
        p.exists(".wanx/lock.cache"),
        "the build mirrored the lock it wrote"
    );
    p.wanx(&["build"]).success();
    // The lock's key for one task is now another: that task is not fresh any more.
    let lock = p.read("wanx.lock");
    let at = lock.find("key = \"").unwrap() + "key = \"".len();
    let old = &lock[at..at + 64];
    let new: String = old
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect();
    p.edit_keeping_stat("wanx.lock", old, &new);
    let json = p.wanx(&["build", "--json"]).success().json();
    assert_eq!(json["fresh"], 1, "{json}");
    assert_eq!(p.ledger().submissions, 2, "restored, not paid for again");
    assert!(
        !p.read("wanx.lock").contains(&new),
        "the lock was written again"
    );
}

#[test]
fn a_corrupted_lock_mirror_is_a_miss_with_the_same_result() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    p.wanx(&["build"]).success();
    p.wanx(&["build"]).success();
    let lock = p.read("wanx.lock");
    for bad in corruptions(&p, ".wanx/lock.cache") {
        std::fs::write(p.path(".wanx/lock.cache"), &bad).unwrap();
        let json = p.wanx(&["build", "--json"]).success().json();
        assert_eq!(
            (json["fresh"].as_u64(), json["generated"].as_u64()),
            (Some(2), Some(0)),
            "{json}"
        );
        assert_eq!(p.read("wanx.lock"), lock);
    }
    assert_eq!(p.ledger().submissions, 2);
}

#[test]
fn a_missing_local_input_reads_alike_with_and_without_the_cache() {
    let p = Project::new();
    std::fs::create_dir_all(p.path("plans/photos")).unwrap();
    let photo = wanx::emulator::placeholder_png::render(600, 600, b"a photo");
    std::fs::write(p.path("plans/photos/shop.png"), &photo).unwrap();
    p.file("plans/a.toml", TWO_TASKS);
    p.file(
        "plans/b.toml",
        "[[task]]\nid = \"shop-clean\"\nedit = \"remove_watermark\"\ninput = \"photos/shop.png\"\nprompt = \"remove the watermark\"\n",
    );
    p.wanx(&["build"]).success();
    p.wanx(&["plan"]).success();
    assert!(p.exists(".wanx/plans.cache"));
    std::fs::remove_file(p.path("plans/photos/shop.png")).unwrap();
    let warm = p.wanx(&["plan"]);
    warm.status(2);
    std::fs::remove_file(p.path(".wanx/plans.cache")).unwrap();
    let cold = p.wanx(&["plan"]);
    cold.status(2);
    assert_eq!(warm.stderr, cold.stderr);
}
