//! Crash safety: a build killed (SIGKILL) at random moments and restarted, Ctrl-C once and twice, a
//! kill between submission and download, and the budget. What the emulator billed proves invariant
//! 1: nothing is paid twice unless wanx said it may have been.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wanx::emulator::Ledger;

use crate::util::{Project, Run, TWO_TASKS};

/// Bound for every wait on a condition (a line on stderr, the emulator's ledger).
const PATIENCE: Duration = Duration::from_secs(20);

/// A `wanx` running in the background whose stderr can be read while it runs.
struct Live {
    child: Child,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    stdout: Arc<Mutex<String>>,
}

impl Live {
    fn start(mut command: Command) -> Live {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            drain(child.stdout.take().unwrap(), Arc::clone(&stdout)),
            drain(child.stderr.take().unwrap(), Arc::clone(&stderr)),
        ];
        Live {
            child,
            stderr,
            readers,
            stdout,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (bounded) until stderr contains `needle`; panics with what it has otherwise.
    fn wait_for_stderr(&mut self, needle: &str) {
        self.wait_for_stderr_times(needle, 1);
    }

    /// Waits (bounded) until stderr contains `needle` `times` times.
    fn wait_for_stderr_times(&mut self, needle: &str, times: usize) {
        let deadline = Instant::now() + PATIENCE;
        while self.stderr().matches(needle).count() < times {
            if let Some(status) = self.child.try_wait().unwrap() {
                // It may have written the line just before exiting.
                std::thread::sleep(Duration::from_millis(50));
                assert!(
                    self.stderr().matches(needle).count() >= times,
                    "wanx exited ({status}) before printing `{needle}` {times} time(s):\n{}",
                    self.stderr()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no `{needle}` on stderr within {PATIENCE:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends SIGINT, as Ctrl-C in a terminal does.
    fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -INT failed");
    }

    /// Whether it is still running.
    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Kills it with SIGKILL (no chance to clean up) and collects what it printed.
    fn kill(mut self) -> Run {
        // It may have exited on its own in the meantime: then there is nothing to kill.
        let _ = self.child.kill();
        self.wait()
    }

    fn wait(mut self) -> Run {
        let status = self.child.wait().unwrap();
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        Run {
            code: status.code().unwrap_or(-1),
            stdout: self.stdout.lock().unwrap().clone(),
            stderr: self.stderr(),
        }
    }
}

fn drain(mut pipe: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => into
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    })
}

/// Waits (bounded) until `done` holds for the emulator's ledger, and returns that ledger.
fn wait_for_ledger(p: &Project, what: &str, done: impl Fn(&Ledger) -> bool) -> Ledger {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let ledger = p.ledger();
        if done(&ledger) {
            return ledger;
        }
        assert!(
            Instant::now() < deadline,
            "the emulator never showed {what}: {ledger:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every task the emulator accepted has ended (and so is billed, if it will be).
fn all_ended(ledger: &Ledger) -> bool {
    ledger
        .per_model
        .values()
        .flat_map(|m| &m.timeline)
        .all(|span| span.finished_ms.is_some())
}

/// Decodes a whole PNG (not only its header) and returns its size.
fn decode_png(p: &Project, rel: &str) -> (u32, u32) {
    let file = std::fs::File::open(p.path(rel)).unwrap_or_else(|e| panic!("no {rel}: {e}"));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap_or_else(|e| panic!("{rel} is not a PNG: {e}"));
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader
        .next_frame(&mut buf)
        .unwrap_or_else(|e| panic!("{rel} does not decode: {e}"));
    (frame.width, frame.height)
}

/// A deterministic pseudo-random sequence (xorshift64*), so every run of the test kills at the
/// same moments after start.
struct Rng(u64);

impl Rng {
    fn next_unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Tasks in the kill test.
const KILL_TASKS: usize = 60;

/// The `n` of kill-test task `index`: every sixth has two images.
fn images_of(index: usize) -> u32 {
    if index.is_multiple_of(6) { 2 } else { 1 }
}

fn kill_plan() -> String {
    use std::fmt::Write as _;
    let mut plan = String::from("[defaults]\nmodel = \"wan2.2-t2i-flash\"\nsize = \"512*512\"\n");
    for i in 0..KILL_TASKS {
        let _ = write!(
            plan,
            "\n[[task]]\nid = \"t{i:02}\"\nprompt = \"scene [t{i:02}] of the kill test\"\n"
        );
        if images_of(i) == 2 {
            plan.push_str("n = 2\nfilename = \"{id}_{index}.png\"\n");
        }
    }
    plan
}

fn outputs_of(index: usize) -> Vec<String> {
    if images_of(index) == 2 {
        vec![
            format!("generated/t{index:02}_1.png"),
            format!("generated/t{index:02}_2.png"),
        ]
    } else {
        vec![format!("generated/t{index:02}.png")]
    }
}

/// The ids of the tasks wanx warned "may have been billed twice" about, once per warning.
fn reported_duplicates(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.contains("may have been billed twice"))
        .map(|l| {
            let rest = l.trim_start().trim_start_matches("Warning").trim_start();
            rest.split(':').next().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn a_build_killed_at_random_moments_and_restarted_pays_only_for_what_it_reports() {
    let p = Project::with_emulator_toml(
        r#"
[latency_per_model."wan2.2-t2i-flash"]
base_ms = 300
jitter_ms = 300

[quotas."wan2.2-t2i-flash"]
concurrency = 8
submit_rps = 20
"#,
    );
    p.file(
        "wanx.toml",
        "[models.\"wan2.2-t2i-flash\"]\nconcurrency = 8\nsubmit_rps = 20\n",
    );
    p.file("plans/kill.toml", &kill_plan());

    let started = Instant::now();
    let (kills, mut stderr) = kill_builds_at_random_moments(&p);
    let last = p.wanx(&["build"]);
    stderr.push_str(&last.stderr);
    last.success();
    assert!(
        kills >= 10,
        "only {kills} kills landed before the build finished"
    );

    let strays = assert_whole_outputs(&p);
    p.wanx(&["build", "--locked"]).success();
    p.wanx(&["verify"]).success();
    let noop = p.wanx(&["build", "--json"]).success().json();

    // What was paid: every task's images once, plus at most the duplicates wanx warned about.
    let ledger = wait_for_ledger(&p, "every accepted task ended", all_ended);
    let n_of: BTreeMap<String, u32> = (0..KILL_TASKS)
        .map(|i| (format!("t{i:02}"), images_of(i)))
        .collect();
    let needed: u64 = n_of.values().map(|n| u64::from(*n)).sum();
    let reported = reported_duplicates(&stderr);
    let reported_images: u64 = reported.iter().map(|id| u64::from(n_of[id])).sum();
    eprintln!(
        "kill test: {kills} kills in {:.1}s; {} submissions; {} duplicates reported ({reported_images} images); {} images billed for {needed} needed; {} temp files left",
        started.elapsed().as_secs_f64(),
        ledger.submissions,
        reported.len(),
        ledger.images_billed,
        strays.len()
    );
    assert_every_resubmission_warned(&ledger, &n_of, &reported, &stderr);
    assert!(
        ledger.images_billed >= needed && ledger.images_billed <= needed + reported_images,
        "billed {} images for {needed} needed and {reported_images} reported duplicates:\n{stderr}",
        ledger.images_billed
    );
    // What wanx says all its builds spent is the bill, to the fen, killed builds included; a
    // duplicate it warned about ("may have been billed") is the only money it may not have seen.
    let fen = |yuan: f64| (yuan * 100.0).round() as i64;
    let spent = fen(noop["cumulative"]["spent"].as_f64().unwrap());
    let billed = fen(ledger.amount);
    assert!(
        spent <= billed && billed <= spent + 14 * reported_images as i64,
        "wanx says it spent {spent} fen; the emulator billed {billed} ({reported_images} images warned about):\n{noop}"
    );
    assert_eq!(fen(noop["spent"].as_f64().unwrap()), 0, "{noop}");
}

/// Starts `wanx build` again and again, killing it after a random delay, until a dozen kills landed
/// or a build finished. Returns the kills and every build's stderr.
fn kill_builds_at_random_moments(p: &Project) -> (u32, String) {
    let mut rng = Rng(0x5eed_2024_c0ff_ee11);
    let mut stderr = String::new();
    let mut kills = 0;
    for _ in 0..30 {
        if kills >= 12 {
            break;
        }
        // Skewed toward short delays (50 ms to 1.5 s): half the kills land in the first 410 ms,
        // where the journal is resumed and the first tasks are submitted.
        let unit = rng.next_unit();
        let delay = Duration::from_millis(50 + (1450.0 * unit * unit) as u64);
        let mut live = Live::start(p.command(&["build"]));
        std::thread::sleep(delay);
        let run = if live.running() {
            kills += 1;
            live.kill()
        } else {
            live.wait()
        };
        stderr.push_str(&run.stderr);
        if run.code == 0 {
            // It finished before the kill: the rest would be no-ops.
            break;
        }
        assert_eq!(
            run.code, -1,
            "a build exited on its own but not successfully:\n{}",
            run.stderr
        );
    }
    (kills, stderr)
}

/// Every task's outputs are whole images; a kill mid-write leaves a temp file beside them, never a
/// half-written output. Returns the files in `generated/` that are no output (the temp files).
fn assert_whole_outputs(p: &Project) -> Vec<String> {
    for i in 0..KILL_TASKS {
        for rel in outputs_of(i) {
            assert_eq!(decode_png(p, &rel), (512, 512), "{rel}");
        }
    }
    let lock = p.lock();
    assert_eq!(lock.tasks.len(), KILL_TASKS);
    // A kill mid-write leaves a temp file beside the outputs, never a half-written output.
    let expected: Vec<String> = (0..KILL_TASKS).flat_map(outputs_of).collect();
    let strays: Vec<String> = p
        .snapshot()
        .into_keys()
        .filter(|f| f.starts_with("generated/") && !expected.contains(f))
        .collect();
    assert!(
        strays.iter().all(|f| f.contains("/.wanx-")),
        "unexpected files: {strays:?}"
    );
    strays
}

/// Per task: every submission after the first was warned about (`reported`).
fn assert_every_resubmission_warned(
    ledger: &Ledger,
    n_of: &BTreeMap<String, u32>,
    reported: &[String],
    stderr: &str,
) {
    let mut submitted: BTreeMap<&str, u32> = BTreeMap::new();
    for request in &ledger.requests {
        let prompt = request.body["input"]["prompt"].as_str().unwrap_or_default();
        let id = n_of
            .keys()
            .find(|id| prompt.contains(&format!("[{id}]")))
            .unwrap_or_else(|| panic!("a request for no task: {prompt}"));
        *submitted.entry(id.as_str()).or_default() += 1;
    }
    for (id, times) in &submitted {
        let warned = reported.iter().filter(|r| r == id).count() as u32;
        assert!(
            *times <= 1 + warned,
            "`{id}` was submitted {times} times but wanx warned {warned} times:\n{stderr}"
        );
    }
    assert_eq!(submitted.len(), KILL_TASKS, "every task was submitted");
}

/// Three tasks, built one at a time (`-j 1`).
const THREE_TASKS: &str = r#"[defaults]
model = "wan2.2-t2i-flash"
size = "512*512"

[[task]]
id = "first"
prompt = "the first picture"

[[task]]
id = "second"
prompt = "the second picture"

[[task]]
id = "third"
prompt = "the third picture"
"#;

/// The id in the first `Submitted ID (task …)` line.
fn first_submitted(stderr: &str) -> String {
    let line = stderr
        .lines()
        .find(|l| l.trim_start().starts_with("Submitted"))
        .unwrap_or_else(|| panic!("no Submitted line:\n{stderr}"));
    line.split_whitespace().nth(1).unwrap().to_owned()
}

#[test]
fn ctrl_c_finishes_the_task_in_flight_submits_nothing_more_and_exits_130() {
    let p = Project::with_latency(Duration::from_secs(1));
    p.file("plans/a.toml", THREE_TASKS);
    let mut live = Live::start(p.command(&["-v", "build", "-j", "1"]));
    live.wait_for_stderr("Submitted");
    live.interrupt();
    let run = live.wait();
    run.status(130);
    assert!(
        run.stderr.contains("Interrupted") && run.stderr.contains("submitting nothing more"),
        "{}",
        run.stderr
    );
    let done = first_submitted(&run.stderr);
    assert_eq!(decode_png(&p, &format!("generated/{done}.png")), (512, 512));
    let ledger = p.ledger();
    assert_eq!(ledger.submissions, 1, "nothing was submitted after Ctrl-C");
    for id in ["first", "second", "third"] {
        assert_eq!(p.exists(&format!("generated/{id}.png")), id == done, "{id}");
    }

    let json = p.wanx(&["build", "--json"]).success().json();
    assert_eq!(json["generated"], 2, "{json}");
    assert_eq!(json["fresh"], 1, "{json}");
    assert_eq!(p.ledger().submissions, 3, "only the rest was generated");
}

#[test]
fn a_second_ctrl_c_exits_at_once_and_the_next_build_recovers_the_task_in_flight() {
    let p = Project::with_latency(Duration::from_secs(2));
    p.file("plans/a.toml", TWO_TASKS);
    let mut live = Live::start(p.command(&["-v", "build", "-j", "1"]));
    live.wait_for_stderr("Submitted");
    live.interrupt();
    live.wait_for_stderr("Interrupted");
    live.interrupt();
    let run = live.wait();
    run.status(130);
    assert!(
        run.stderr.contains("leaving the tasks in flight journaled"),
        "{}",
        run.stderr
    );
    let in_flight = first_submitted(&run.stderr);
    assert_eq!(p.ledger().submissions, 1);
    assert!(
        !p.exists("generated/lighthouse.png") && !p.exists("generated/harbor_1.png"),
        "it exited before its task finished"
    );

    let next = p.wanx(&["build"]);
    next.success();
    assert!(
        next.stderr.contains("Recovered") && next.stderr.contains(&format!("{in_flight}:")),
        "{}",
        next.stderr
    );
    assert_eq!(
        p.ledger().submissions,
        2,
        "`{in_flight}` was not submitted again; the other task was"
    );
    assert_eq!(decode_png(&p, "generated/lighthouse.png"), (512, 512));
    assert_eq!(decode_png(&p, "generated/harbor_1.png"), (512, 512));
    assert_eq!(decode_png(&p, "generated/harbor_2.png"), (512, 512));
}

#[test]
fn killed_after_submission_before_download_the_next_build_recovers_without_paying_again() {
    let p = Project::with_latency(Duration::from_secs(2));
    p.file(
        "plans/a.toml",
        "[[task]]\nid = \"lighthouse\"\nmodel = \"wan2.2-t2i-flash\"\nsize = \"512*512\"\nprompt = \"a lighthouse at dusk\"\n",
    );
    let mut live = Live::start(p.command(&["-v", "build"]));
    // `Submitted` is printed once the remote id is journaled.
    live.wait_for_stderr("Submitted");
    let killed = live.kill();
    assert_eq!(killed.code, -1, "it was killed:\n{}", killed.stderr);
    assert!(!p.exists("generated/lighthouse.png"));

    let next = p.wanx(&["build", "--json"]);
    let json = next.success().json();
    assert!(
        next.stderr.contains("Recovered") && next.stderr.contains("lighthouse:"),
        "{}",
        next.stderr
    );
    // A paid generation (booked by the build that resumed it: the killed one recorded nothing),
    // never a free restore.
    assert!(!next.stderr.contains("(free)"), "{}", next.stderr);
    assert_eq!(json["generated"], 1, "{json}");
    assert_eq!(json["restored"], 0, "{json}");
    assert_eq!(json["saved"].as_f64(), Some(0.0), "{json}");
    let ledger = p.ledger();
    assert_eq!(ledger.submissions, 1, "submitted once in all");
    assert_eq!(ledger.images_billed, 1);
    assert_eq!(json["spent"].as_f64(), Some(ledger.amount), "{json}");
    assert_eq!(
        json["cumulative"]["spent"].as_f64(),
        Some(ledger.amount),
        "{json}"
    );
    assert_eq!(json["tasks"][0]["status"], "generated", "{json}");
    assert_eq!(
        json["tasks"][0]["cost"].as_f64(),
        Some(ledger.amount),
        "{json}"
    );
    assert_eq!(decode_png(&p, "generated/lighthouse.png"), (512, 512));
    p.wanx(&["build", "--locked"]).success();
}

/// One task of two images, each request taking 1.5 s; the first request makes only one of them.
fn harbor_whose_first_request_makes_one_of_two() -> Project {
    let p = Project::with_emulator_toml(
        r#"latency_ms = 1500
[[faults]]
on = "submit"
nth = [1]
fault = { kind = "partial_failure", failed = 1 }
"#,
    );
    p.file(
        "plans/a.toml",
        "[[task]]\nid = \"harbor\"\nmodel = \"wan2.2-t2i-flash\"\nsize = \"512*512\"\nn = 2\nprompt = \"a harbor at dawn\"\n",
    );
    p
}

#[test]
fn killed_during_a_partial_failures_follow_up_the_next_build_recovers_both_requests_without_paying_again()
 {
    // The first request for two images makes one; wanx asks for the missing one and is killed while
    // that follow-up runs. The next build must combine both requests' images, not pay for two more.
    let p = harbor_whose_first_request_makes_one_of_two();
    let mut live = Live::start(p.command(&["-v", "build"]));
    live.wait_for_stderr_times("Submitted", 2);
    let killed = live.kill();
    assert_eq!(killed.code, -1, "it was killed:\n{}", killed.stderr);
    assert_eq!(p.ledger().submissions, 2);

    let next = p.wanx(&["build", "--json"]);
    let json = next.success().json();
    assert!(
        next.stderr.contains("Recovered") && next.stderr.contains("harbor: 2 image(s)"),
        "{}",
        next.stderr
    );
    assert_eq!(json["generated"], 1, "{json}");
    assert_eq!(json["restored"], 0, "{json}");
    let ledger = p.ledger();
    assert_eq!(ledger.submissions, 2, "nothing was submitted again");
    assert_eq!(ledger.images_billed, 2, "one image from each request");
    assert_eq!(
        json["cumulative"]["spent"].as_f64(),
        Some(ledger.amount),
        "{json}"
    );
    assert_eq!(decode_png(&p, "generated/harbor_1.png"), (512, 512));
    assert_eq!(decode_png(&p, "generated/harbor_2.png"), (512, 512));
    p.wanx(&["build", "--locked"]).success();
}

#[test]
fn ctrl_c_between_a_partial_result_and_its_follow_up_keeps_the_paid_image_for_the_next_build() {
    let p = harbor_whose_first_request_makes_one_of_two();
    let mut live = Live::start(p.command(&["-v", "build"]));
    live.wait_for_stderr("Submitted");
    live.interrupt();
    let run = live.wait();
    run.status(130);
    assert!(
        run.stderr.contains(
            "the 1 image(s) paid for are kept, and the next build asks only for the 1 missing"
        ),
        "{}",
        run.stderr
    );
    let ledger = p.ledger();
    assert_eq!(ledger.submissions, 1, "the follow-up was not sent");
    assert_eq!(ledger.images_billed, 1);

    let next = p.wanx(&["build", "--json"]);
    let json = next.success().json();
    assert_eq!(json["generated"], 1, "{json}");
    let ledger = p.ledger();
    assert_eq!(ledger.submissions, 2);
    assert_eq!(
        ledger.requests[1].body["parameters"]["n"], 1,
        "only the missing image was requested"
    );
    assert_eq!(
        ledger.images_billed, 2,
        "two images billed for two images made"
    );
    assert_eq!(decode_png(&p, "generated/harbor_1.png"), (512, 512));
    assert_eq!(decode_png(&p, "generated/harbor_2.png"), (512, 512));
    p.wanx(&["build", "--locked"]).success();
}

/// Nothing at all reached the emulator.
#[track_caller]
fn assert_untouched(p: &Project) {
    let ledger = p.ledger();
    assert_eq!(
        (
            ledger.submissions,
            ledger.rejected,
            ledger.queries,
            ledger.upload_policies
        ),
        (0, 0, 0, 0),
        "the emulator was asked nothing"
    );
}

#[test]
fn over_budget_exits_4_naming_the_costliest_tasks_and_sends_nothing() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    let plan = p.wanx(&["plan"]);
    plan.success();
    assert!(plan.stdout.contains("0.42"), "the total: {}", plan.stdout);

    let run = p.wanx(&["build", "--max-spend", "0.20"]);
    run.status(4);
    assert!(
        run.stderr.contains("harbor") && run.stderr.contains("lighthouse"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.find("harbor") < run.stderr.find("lighthouse"),
        "the costliest first: {}",
        run.stderr
    );
    assert_untouched(&p);
    assert!(!p.exists("generated"));

    p.file("wanx.toml", "[build]\nmax_spend = 0.20\n");
    let run = p.wanx(&["build"]);
    run.status(4);
    assert!(run.stderr.contains("harbor"), "{}", run.stderr);
    assert_untouched(&p);

    p.wanx(&["build", "--max-spend", "0.50"]).success();
    assert_eq!(p.ledger().images_billed, 3);
    assert_eq!(decode_png(&p, "generated/harbor_2.png"), (512, 512));
}

/// Regression: the "may have been billed twice" warning was printed only after every other
/// journaled task had been resumed, but its journal entry was closed at once; a crash in between
/// lost the warning for good and the next build paid again without a word.
#[test]
fn a_crash_while_resuming_never_loses_the_billed_twice_warning() {
    let p = Project::with_latency(Duration::from_secs(2));
    p.file("plans/a.toml", TWO_TASKS);
    // An earlier build killed while `lighthouse` runs remotely (journaled with its remote id)...
    let mut live = Live::start(p.command(&["-v", "build", "-j", "1", "lighthouse"]));
    live.wait_for_stderr("Submitted");
    live.kill();
    // ...and while submitting `harbor` (journaled without one).
    // (Written into the build database directly, as wanx journals an intent before submitting.)
    let db = rusqlite::Connection::open(p.path(".wanx/wanx.db")).unwrap();
    db.busy_timeout(PATIENCE).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    db.execute(
        "INSERT INTO journal (key, task_id, model, request_json, images, created_at)
         VALUES (?1, 'harbor', 'wan2.2-t2i-flash', '{}', 2, ?2)",
        rusqlite::params!["0".repeat(64), now as i64],
    )
    .unwrap();
    let harbor_journaled = || -> bool {
        db.query_row(
            "SELECT count(*) FROM journal WHERE task_id = 'harbor'",
            [],
            |row| row.get::<_, i64>(0),
        )
        .unwrap()
            > 0
    };

    // The next build resumes `lighthouse` for about two seconds; it is killed the moment it has
    // forgotten `harbor`'s entry.
    let live = Live::start(p.command(&["build"]));
    let deadline = Instant::now() + PATIENCE;
    while harbor_journaled() {
        assert!(Instant::now() < deadline, "harbor's entry was never closed");
        std::thread::sleep(Duration::from_millis(2));
    }
    let killed = live.kill();
    assert!(
        reported_duplicates(&killed.stderr).contains(&"harbor".to_owned()),
        "the entry was closed before the warning was printed:\n{}",
        killed.stderr
    );

    let last = p.wanx(&["build"]);
    last.success();
    assert!(last.stderr.contains("Recovered"), "{}", last.stderr);
    assert_eq!(
        p.ledger().submissions,
        2,
        "lighthouse was not submitted again"
    );
}
