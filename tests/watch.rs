//! `wanx watch --json` end to end: a child process watching a temp project, driven by real file edits,
//! read through its JSON event lines (every wait is for an event, bounded by one overall deadline), and
//! checked against what the test's own emulator received.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{Project, TWO_TASKS};

/// How long a whole test may wait for the events it expects.
const DEADLINE: Duration = Duration::from_secs(60);

/// A running `wanx watch --json`.
struct Watcher {
    child: Child,
    events: mpsc::Receiver<Value>,
    seen: Vec<Value>,
    deadline: Instant,
}

impl Watcher {
    fn start(p: &Project, extra: &[&str]) -> Watcher {
        let mut args = vec!["watch", "--json"];
        args.extend_from_slice(extra);
        let mut child = p
            .command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Watcher {
            child,
            events,
            seen: Vec::new(),
            deadline: Instant::now() + DEADLINE,
        }
    }

    /// The next event matching `want`, waiting for it (events before it are kept in `seen`).
    #[track_caller]
    fn wait_for(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    self.seen.push(event.clone());
                    if want(&event) {
                        return event;
                    }
                }
                Err(e) => panic!(
                    "no {what} ({e}); events so far:\n{}",
                    self.seen
                        .iter()
                        .map(Value::to_string)
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            }
        }
    }

    /// The `built` event of build `seq`.
    #[track_caller]
    fn built(&mut self, seq: u64) -> Value {
        let built = self.wait_for(&format!("build {seq}"), |e| {
            e["event"] == "built" && e["seq"] == seq
        });
        eprintln!(
            "build {seq}: latency {} (ms from the first file event)",
            built["latency_ms"]
        );
        built
    }

    /// Events of one type for build `seq`, among those seen.
    fn seen(&self, event: &str, seq: u64) -> Vec<&Value> {
        self.seen
            .iter()
            .filter(|e| e["event"] == event && e["seq"] == seq)
            .collect()
    }

    #[track_caller]
    fn assert_running(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "wanx watch exited"
        );
    }

    /// Sends SIGINT and returns the exit code.
    fn interrupt(&mut self) -> i32 {
        let status = std::process::Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.wait_for("the stopped event", |e| e["event"] == "stopped");
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < self.deadline, "wanx watch did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn count(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no `{field}` in {v}"))
}

/// In a watch that built TWO_TASKS (seq 0): an edited prompt regenerates exactly that task (seq 1);
/// the undo restores it from the cache, sending nothing (seq 2).
fn edit_then_undo(p: &Project, w: &mut Watcher) {
    let original = std::fs::read(p.path("generated/lighthouse.png")).unwrap();

    // An edited prompt: exactly that task is regenerated.
    p.edit(
        "plans/a.toml",
        "a lighthouse at dusk",
        "a lighthouse at dawn",
    );
    let built = w.built(1);
    assert_eq!(
        (count(&built, "generated"), count(&built, "fresh")),
        (1, 1),
        "{built}"
    );
    let results = w.seen("result", 1);
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0]["id"], "lighthouse");
    // Only the edited task was looked at: the other is as the first build left it.
    let plan = w.seen("plan", 1)[0].clone();
    assert_eq!(
        (count(&plan, "planned"), count(&plan, "fresh")),
        (1, 1),
        "{plan}"
    );
    let ledger = p.ledger();
    assert_eq!(ledger.submissions, 3);
    assert_eq!(
        ledger.requests[2].body["input"]["prompt"],
        "a lighthouse at dawn"
    );

    // The undo: restored from the cache, nothing sent.
    p.edit(
        "plans/a.toml",
        "a lighthouse at dawn",
        "a lighthouse at dusk",
    );
    let built = w.built(2);
    assert_eq!(
        (count(&built, "generated"), count(&built, "restored")),
        (0, 1),
        "{built}"
    );
    assert_eq!(count(&built, "submissions"), 0);
    assert_eq!(count(w.seen("plan", 2)[0], "planned"), 1);
    assert_eq!(p.ledger().submissions, 3, "the undo sent nothing");
    assert_eq!(
        std::fs::read(p.path("generated/lighthouse.png")).unwrap(),
        original
    );
}

/// Then (seq 3) a broken save: the diagnostics, and the watch goes on; the fix builds (seq 4).
fn break_then_fix(p: &Project, w: &mut Watcher) {
    // A broken save: the diagnostics, and the watch goes on.
    let good = p.read("plans/a.toml");
    p.file("plans/a.toml", &format!("{good}\nbroken = [\n"));
    let invalid = w.wait_for("the invalid event", |e| e["event"] == "invalid");
    assert_eq!(invalid["seq"], 3);
    let d = &invalid["diagnostics"][0];
    assert_eq!(d["file"], "plans/a.toml", "{invalid}");
    assert!(count(d, "line") > 0, "{invalid}");
    w.assert_running();

    // The fix builds (nothing changed since the last good plan: all fresh, nothing sent).
    p.file("plans/a.toml", &good);
    let built = w.built(4);
    assert_eq!(
        (count(&built, "fresh"), count(&built, "generated")),
        (2, 0),
        "{built}"
    );
}

#[test]
fn watch_rebuilds_exactly_what_each_save_changed_and_never_its_own_writes() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    let mut w = Watcher::start(&p, &[]);

    let built = w.built(0);
    assert_eq!(count(&built, "generated"), 2, "{built}");
    assert_eq!(p.ledger().submissions, 2);
    edit_then_undo(&p, &mut w);
    break_then_fix(&p, &mut w);

    // A new plan file: its task is built.
    p.file(
        "plans/more/b.toml",
        "[[task]]\nid = \"boat\"\nmodel = \"wan2.2-t2i-flash\"\nsize = \"512*512\"\nprompt = \"a red boat\"\n",
    );
    let built = w.built(5);
    assert_eq!(
        (count(&built, "generated"), count(&built, "fresh")),
        (1, 2),
        "{built}"
    );
    // A task added: every task is looked at.
    assert_eq!(count(w.seen("plan", 5)[0], "planned"), 3);
    assert_eq!(p.png_size("generated/boat.png"), (512, 512));
    assert_eq!(p.ledger().submissions, 4);

    // wanx's own writes (outputs, wanx.lock, .wanx/) caused no change: a last edit to wanx.toml is
    // the next change seen, and every change seen was one of ours.
    p.file("wanx.toml", "# touched\n");
    let change = w.wait_for("the wanx.toml change", |e| {
        e["event"] == "change" && e["seq"] == 6
    });
    assert_eq!(change["paths"], serde_json::json!(["wanx.toml"]));
    w.built(6);
    let changes: Vec<&Value> = w.seen.iter().filter(|e| e["event"] == "change").collect();
    let paths: Vec<String> = changes.iter().map(|c| c["paths"].to_string()).collect();
    assert_eq!(
        paths,
        [
            "[]",
            r#"["plans/a.toml"]"#,
            r#"["plans/a.toml"]"#,
            r#"["plans/a.toml"]"#,
            r#"["plans/a.toml"]"#,
            r#"["plans/more/b.toml"]"#,
            r#"["wanx.toml"]"#,
        ]
    );
    assert_eq!(p.ledger().submissions, 4);

    assert_eq!(w.interrupt(), 0);
    let stopped = w.seen.last().unwrap();
    assert_eq!(stopped["session"]["builds"], 6);
    // SIGINT stopped it (an idle watch: no build was cut short).
    assert_eq!(stopped["interrupted"], true);
    assert_eq!(stopped["cut_short"], false);
    // Money means what it means in `wanx build`: spent is the bill, saved the one restore (the
    // undo); the builds where everything stayed fresh saved nothing.
    let fen = |v: &Value| (v.as_f64().unwrap() * 100.0).round() as i64;
    let billed = (p.ledger().amount * 100.0).round() as i64;
    assert_eq!(fen(&stopped["session"]["spent"]), billed, "{stopped}");
    assert_eq!(fen(&stopped["session"]["saved"]), 14, "{stopped}");
    let noop = p.wanx(&["build", "--json"]).success().json();
    assert_eq!(fen(&noop["cumulative"]["spent"]), billed, "{noop}");
    assert_eq!(fen(&noop["cumulative"]["saved"]), 14, "{noop}");
}

#[test]
fn a_lock_changed_on_disk_between_builds_is_read_again_not_taken_from_memory() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    let mut w = Watcher::start(&p, &[]);
    assert_eq!(count(&w.built(0), "generated"), 2);
    // The lock as an older checkout had it: without `harbor`, and the same in every other byte.
    // The watch ignores `wanx.lock` (it is wanx's own), so no build follows.
    let lock = p.read("wanx.lock");
    let start = lock.find("\n[task.\"harbor\"]").unwrap();
    let end = lock.find("\n[task.\"lighthouse\"]").unwrap();
    p.file("wanx.lock", &format!("{}{}", &lock[..start], &lock[end..]));

    // A save rebuilds `lighthouse` alone: the lock it writes is the one on disk with that entry
    // changed, not the watch's memory of the lock it wrote last.
    p.edit(
        "plans/a.toml",
        "a lighthouse at dusk",
        "a lighthouse at dawn",
    );
    let built = w.built(1);
    assert_eq!(count(&built, "generated"), 1, "{built}");
    let written = p.read("wanx.lock");
    assert!(!written.contains("harbor"), "{written}");
    assert!(written.contains("[task.\"lighthouse\"]"), "{written}");
    assert_ne!(written, format!("{}{}", &lock[..start], &lock[end..]));

    // The next full build records `harbor` again, restored from the cache: nothing is paid twice.
    p.file("wanx.toml", "# touched\n");
    let built = w.built(2);
    assert_eq!(
        (count(&built, "restored"), count(&built, "generated")),
        (1, 0),
        "{built}"
    );
    assert!(p.read("wanx.lock").contains("[task.\"harbor\"]"));
    assert_eq!(p.ledger().submissions, 3);
}

#[test]
fn a_save_during_a_build_drops_only_the_unsubmitted_tasks_it_made_obsolete() {
    // One task at a time, each taking 1.5 s: `b` and `c` wait while `a` runs.
    let p = Project::with_latency(Duration::from_millis(1500));
    p.file(
        "plans/a.toml",
        "[defaults]\nmodel = \"wan2.2-t2i-flash\"\nsize = \"512*512\"\n\n\
         [[task]]\nid = \"a\"\nprompt = \"first\"\n\n\
         [[task]]\nid = \"b\"\nprompt = \"second\"\n\n\
         [[task]]\nid = \"c\"\nprompt = \"third\"\n",
    );
    let mut w = Watcher::start(&p, &["-j", "1"]);
    let first = w.wait_for("the first submission", |e| e["event"] == "submitted");
    // Which task goes first is up to the scheduler; edit another one, still waiting for its turn.
    let (edited, old_prompt) = if first["id"] == "b" {
        ("c", "third")
    } else {
        ("b", "second")
    };
    let new_prompt = format!("{old_prompt}, edited");
    p.edit(
        "plans/a.toml",
        &format!("\"{old_prompt}\""),
        &format!("\"{new_prompt}\""),
    );
    let change = w.wait_for("the change", |e| e["event"] == "change" && e["seq"] == 1);
    assert_eq!(change["during_build"], true);

    let built = w.built(0);
    assert_eq!(
        (count(&built, "generated"), count(&built, "dropped")),
        (2, 1),
        "{built}"
    );
    let dropped: Vec<&Value> = w
        .seen("result", 0)
        .into_iter()
        .filter(|r| r["status"] == "dropped")
        .collect();
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0]["id"], edited);

    let built = w.built(1);
    assert_eq!(
        (count(&built, "generated"), count(&built, "fresh")),
        (1, 2),
        "{built}"
    );
    let mut prompts: Vec<String> = p
        .ledger()
        .requests
        .iter()
        .map(|r| r.body["input"]["prompt"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(prompts.pop().as_deref(), Some(new_prompt.as_str()));
    prompts.sort();
    let mut expected = vec!["first", "second", "third"];
    expected.retain(|p| *p != old_prompt);
    assert_eq!(
        prompts, expected,
        "the obsolete `{old_prompt}` was never sent"
    );
}

#[test]
fn watch_plans_a_chain_whole_and_rebuilds_the_downstream_of_an_edited_upstream() {
    let p = Project::new();
    p.file(
        "plans/chain.toml",
        r#"[[task]]
id = "castle"
model = "wan2.2-t2i-flash"
prompt = "a castle on a hill"
size = "512*512"

[[task]]
id = "castle-clean"
edit = "remove_watermark"
input = "castle"
prompt = "remove the watermark"
"#,
    );
    let mut w = Watcher::start(&p, &["-j", "2"]);
    let built = w.built(0);
    assert_eq!(count(&built, "generated"), 2, "{built}");
    let plan = w.seen("plan", 0)[0].clone();
    let generate = plan["generate"].as_array().unwrap();
    let downstream = generate
        .iter()
        .find(|g| g["id"] == "castle-clean")
        .unwrap_or_else(|| panic!("the waiting task is in the plan: {plan}"));
    assert_eq!(downstream["waits_for"], serde_json::json!(["castle"]));
    let results: Vec<&Value> = w.seen("result", 0);
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(results.iter().all(|r| r["status"] == "generated"));

    p.edit(
        "plans/chain.toml",
        "a castle on a hill",
        "a castle by the sea",
    );
    let built = w.built(1);
    assert_eq!(count(&built, "generated"), 2, "{built}");
    assert_eq!(p.ledger().submissions, 4);
    w.assert_running();
}

#[test]
fn watch_shows_restores_from_the_remote_cache_in_its_plan_and_result_events() {
    let Some(nginx) = crate::webdav::Nginx::start("watch with a remote cache") else {
        return;
    };
    let url = nginx.url();
    let a = Project::new();
    a.file("plans/a.toml", TWO_TASKS);
    a.wanx(&["build", "--remote-cache", &url]).success();
    let b = Project::new();
    b.file("plans/a.toml", TWO_TASKS);
    let mut w = Watcher::start(&b, &["--remote-cache", &url]);
    let plan = w.wait_for("the first plan", |e| e["event"] == "plan");
    let mut remote: Vec<&str> = plan["restore_remote"]
        .as_array()
        .unwrap_or_else(|| panic!("no `restore_remote` in {plan}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    remote.sort_unstable();
    assert_eq!(remote, ["harbor", "lighthouse"], "{plan}");
    assert_eq!(plan["generate"].as_array().unwrap().len(), 0);
    let built = w.built(0);
    assert_eq!(count(&built, "restored"), 2, "{built}");
    assert_eq!(
        b.ledger().submissions,
        0,
        "the watch paid for shared images"
    );
    assert_eq!(w.interrupt(), 0);
}
