//! `--locked`: CI's proof that committed images match committed plans.

use crate::util::{Project, TWO_TASKS, assert_output};

#[test]
fn locked_passes_when_fresh_and_exits_3_after_an_edit_sending_nothing() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    p.wanx(&["build"]).success();
    p.wanx(&["build", "--locked"]).success();

    p.edit("plans/a.toml", "a quiet harbor", "a busy harbor");
    let before = p.snapshot();
    let run = p.wanx(&["build", "--locked"]);
    run.status(3);
    assert_output(
        &run.stderr,
        "error: 1 task is not fresh and `--locked` forbids changing `wanx.lock`

  hint: run `wanx plan` to see what changed, then `wanx build` without `--locked` and commit `wanx.lock`
",
    );
    assert_eq!(p.ledger().submissions, 2, "nothing was sent");
    assert_eq!(p.snapshot(), before, "nothing was written");
}

#[test]
fn a_fresh_clone_with_committed_images_and_lock_is_fresh_without_any_cache() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    p.wanx(&["build"]).success();
    std::fs::remove_dir_all(p.path(".wanx")).unwrap();
    let json = p.wanx(&["build", "--locked", "--json"]).success().json();
    assert_eq!(json["fresh"], 2);
    assert_eq!(p.ledger().submissions, 2);
}
