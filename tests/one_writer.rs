//! One writer per project: a second `wanx build` waits for the first (or, with `--no-wait`, stops
//! with exit 5), so two builds started together never pay twice and never corrupt `wanx.lock`.

use std::time::Duration;

use wanx::emulator::EmulatorConfig;

use crate::util::{Project, Run, SpawnCaptured, TWO_TASKS};

#[test]
fn two_builds_started_together_both_succeed_and_each_task_is_billed_once() {
    let p = Project::with_emulator(EmulatorConfig {
        latency: Duration::from_millis(300),
        ..EmulatorConfig::default()
    });
    p.file("plans/a.toml", TWO_TASKS);
    let first = p.command(&["build"]).output_async();
    let second = p.command(&["build"]).output_async();
    let (first, second): (Run, Run) = (first.wait(), second.wait());
    first.success();
    second.success();
    let ledger = p.ledger();
    assert_eq!(ledger.submissions, 2, "each task was submitted once");
    assert_eq!(ledger.images_billed, 3);
    assert!(
        first.stderr.contains("Waiting") || second.stderr.contains("Waiting"),
        "one build said it waited for the other:\n{}\n---\n{}",
        first.stderr,
        second.stderr
    );
    assert!(
        first.stderr.contains("to finish with this project")
            || second.stderr.contains("to finish with this project"),
    );
    let lock = p.lock();
    assert_eq!(
        lock.tasks.keys().map(String::as_str).collect::<Vec<_>>(),
        ["harbor", "lighthouse"]
    );
    assert_eq!(p.png_size("generated/harbor_2.png"), (512, 512));
    // And a third build finds everything fresh.
    let json = p.wanx(&["build", "--json"]).success().json();
    assert_eq!(json["fresh"], 2);
}

#[test]
fn no_wait_stops_with_exit_5_naming_the_holder_and_sends_nothing() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    std::fs::create_dir_all(p.path(".wanx")).unwrap();
    let held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(p.path(".wanx/lock"))
        .unwrap();
    held.try_lock().unwrap();
    std::fs::write(p.path(".wanx/lock"), "424242").unwrap();
    let before = p.snapshot();

    let run = p.wanx(&["build", "--no-wait"]);
    run.status(5);
    assert!(
        run.stderr
            .contains("another wanx (pid 424242) is using this project"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--no-wait"), "the hint: {}", run.stderr);
    assert_eq!(p.ledger().submissions, 0, "nothing was sent");
    assert_eq!(p.snapshot(), before, "nothing was written");

    // A dry run only prints: it does not need the lock.
    p.wanx(&["build", "--dry-run", "--no-wait"]).success();
    drop(held);
    p.wanx(&["build", "--no-wait"]).success();
    assert_eq!(p.ledger().submissions, 2);
}
