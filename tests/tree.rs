//! The user's tree is sacred (issue 12): outputs that collide, land on project files, cannot be
//! written or are left behind are refused or handled before anything is sent, and no byte wanx did
//! not write is lost.

use std::collections::BTreeSet;

use crate::util::Project;

const HEAD: &str = "[defaults]\nmodel = \"wan2.2-t2i-flash\"\nsize = \"512*512\"\n";

/// Builds the project and checks it is refused with exit 2 before anything is sent or written, the
/// message naming `expect` and every location in `at`.
#[track_caller]
fn refused(p: &Project, expect: &str, at: &[&str]) -> String {
    let before = p.snapshot_all();
    let run = p.wanx(&["build"]);
    run.status(2);
    assert!(
        run.stderr.contains(expect),
        "expected `{expect}` in:\n{}",
        run.stderr
    );
    for location in at {
        assert!(
            run.stderr.contains(location),
            "expected `{location}` in:\n{}",
            run.stderr
        );
    }
    let ledger = p.ledger();
    assert_eq!(ledger.submissions + ledger.rejected, 0, "nothing was sent");
    assert_eq!(ledger.uploads, 0, "nothing was uploaded");
    assert_eq!(p.snapshot_all(), before, "nothing was written");
    run.stderr
}

fn task(id: &str, extra: &str) -> String {
    format!("\n[[task]]\nid = \"{id}\"\nprompt = \"{id}\"\n{extra}\n")
}

// --- 1. two tasks, one file ------------------------------------------------------------------

#[test]
fn two_tasks_writing_one_file_are_refused_naming_both() {
    let cases = [
        ("filename = \"same.png\"", "filename = \"same.png\""),
        (
            "n = 2\nfilename = \"x_{index}.png\"",
            "filename = \"x_1.png\"",
        ),
        ("filename = \"./A.png\"", "filename = \"A.png\""),
        (
            "out_dir = \"d//\"\nfilename = \"A.png\"",
            "out_dir = \"d\"\nfilename = \"A.png\"",
        ),
        ("filename = \"Hero.png\"", "filename = \"hero.PNG\""),
    ];
    for (a, b) in cases {
        let p = Project::new();
        p.file("plans/a.toml", &format!("{HEAD}{}", task("a", a)));
        p.file("plans/b.toml", &format!("{HEAD}{}", task("b", b)));
        let stderr = refused(&p, "both write", &["plans/a.toml:6", "plans/b.toml:6"]);
        assert!(
            stderr.contains("`a`") && stderr.contains("`b`"),
            "{a} / {b}:\n{stderr}"
        );
    }
}

// --- 2. outputs onto project files -------------------------------------------------------------

#[test]
fn an_output_onto_a_project_file_is_refused() {
    let cases = [
        ("out_dir = \".\"\nfilename = \"wanx.toml\"", "wanx.toml"),
        ("out_dir = \".\"\nfilename = \"WANX.lock\"", "wanx.lock"),
        ("out_dir = \"plans\"\nfilename = \"a.toml\"", "plan file"),
        ("out_dir = \".\"\nfilename = \".wanx/x.png\"", ".wanx"),
        ("out_dir = \".\"\nfilename = \".git/{id}.png\"", ".git"),
    ];
    for (fields, expect) in cases {
        let p = Project::new();
        p.file("plans/a.toml", &format!("{HEAD}{}", task("a", fields)));
        refused(&p, expect, &["plans/a.toml:6"]);
    }
    // A task's own input.
    let p = Project::new();
    p.file("plans/art/in.png", "not really a png");
    p.file(
        "plans/a.toml",
        &task(
            "a",
            "edit = \"beautify\"\nmodel = \"wanx2.1-imageedit\"\ninput = \"art/in.png\"\nout_dir = \"plans/art\"\nfilename = \"in.png\"",
        ),
    );
    refused(&p, "input", &["plans/a.toml:3"]);
}

// --- 3. names the filesystem refuses -------------------------------------------------------------

#[test]
fn output_names_the_filesystem_refuses_are_refused_before_sending() {
    let long = "x".repeat(300);
    let cases = [
        (
            "filename = \"a\\u0000.png\"".to_owned(),
            "control character",
        ),
        (
            "filename = \"a\\u0007b.png\"".to_owned(),
            "control character",
        ),
        (format!("filename = \"{long}.png\""), "255 bytes"),
        ("filename = \"CON.png\"".to_owned(), "reserved"),
        ("filename = \"a.\"".to_owned(), "ends with"),
    ];
    for (fields, expect) in cases {
        let p = Project::new();
        p.file("plans/a.toml", &format!("{HEAD}{}", task("a", &fields)));
        refused(&p, expect, &["plans/a.toml:6"]);
    }
    let p = Project::new();
    p.file(
        "plans/a.toml",
        &format!("{HEAD}{}", task(&"i".repeat(300), "")),
    );
    refused(&p, "255 bytes", &["plans/a.toml:6"]);
}

// --- 4. a file wanx did not write ------------------------------------------------------------------

#[test]
fn an_output_edited_by_hand_survives_build_and_repair_and_force_keeps_it() {
    let p = Project::new();
    p.file("plans/a.toml", &format!("{HEAD}{}", task("a", "")));
    p.wanx(&["build"]).success();
    let edited = b"my own pixels".to_vec();
    std::fs::write(p.path("generated/a.png"), &edited).unwrap();

    let plan = p.wanx(&["plan"]);
    plan.success();
    assert!(
        plan.stderr.contains("generated/a.png") && plan.stderr.contains("modified"),
        "{}",
        plan.stderr
    );

    let run = p.wanx(&["build"]);
    run.status(1);
    assert!(run.stderr.contains("generated/a.png"), "{}", run.stderr);
    assert!(run.stderr.contains("--force"), "{}", run.stderr);
    assert_eq!(std::fs::read(p.path("generated/a.png")).unwrap(), edited);

    let repair = p.wanx(&["verify", "--repair"]);
    repair.status(1);
    assert!(repair.stderr.contains("--force"), "{}", repair.stderr);
    assert_eq!(std::fs::read(p.path("generated/a.png")).unwrap(), edited);

    let billed = p.ledger().images_billed;
    let forced = p.wanx(&["verify", "--repair", "--force"]);
    forced.success();
    assert_ne!(std::fs::read(p.path("generated/a.png")).unwrap(), edited);
    assert!(
        forced.stderr.contains(".wanx/replaced/"),
        "{}",
        forced.stderr
    );
    let kept = kept_files(&p);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read(&kept[0]).unwrap(), edited);
    assert_eq!(p.ledger().images_billed, billed, "repair is free");

    // The same through a build: --force generates again and keeps the hand-made file.
    std::fs::write(p.path("generated/a.png"), b"edited again").unwrap();
    let forced = p.wanx(&["build", "--force"]);
    forced.success();
    assert!(
        forced.stderr.contains(".wanx/replaced/"),
        "{}",
        forced.stderr
    );
    let kept = kept_files(&p);
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(
        kept.iter()
            .any(|k| std::fs::read(k).unwrap() == b"edited again")
    );
    p.wanx(&["verify"]).success();
}

#[test]
fn an_untracked_file_at_an_output_path_is_not_overwritten() {
    let p = Project::new();
    p.file("generated/a.png", "a file the user made");
    p.file("plans/a.toml", &format!("{HEAD}{}", task("a", "")));
    let run = p.wanx(&["build"]);
    run.status(1);
    assert!(run.stderr.contains("generated/a.png"), "{}", run.stderr);
    assert_eq!(p.ledger().submissions, 0, "refused before paying");
    assert_eq!(p.read("generated/a.png"), "a file the user made");
}

fn kept_files(p: &Project) -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&p.path(".wanx/replaced"), &mut out);
    out
}

// --- 5. stale outputs ----------------------------------------------------------------------------

fn outputs_on_disk(p: &Project) -> BTreeSet<String> {
    p.snapshot()
        .into_keys()
        .filter(|k| k.starts_with("generated/"))
        .collect()
}

fn outputs_in_lock(p: &Project) -> BTreeSet<String> {
    let lock = p.lock();
    lock.tasks
        .values()
        .flat_map(|e| &e.outputs)
        .map(|o| o.path.clone())
        .collect()
}

#[test]
fn renamed_removed_and_shrunk_tasks_leave_exactly_the_locked_outputs() {
    let p = Project::new();
    let plan = format!(
        "{HEAD}{}{}{}",
        task("keep", "filename = \"old-{id}.png\""),
        task("gone", ""),
        task("many", "n = 4"),
    );
    p.file("plans/a.toml", &plan);
    p.wanx(&["build"]).success();
    assert_eq!(outputs_on_disk(&p).len(), 6);
    let billed = p.ledger().images_billed;

    // Rename a pattern and remove a task.
    p.file(
        "plans/a.toml",
        &format!(
            "{HEAD}{}{}",
            task("keep", "filename = \"new-{id}.png\""),
            task("many", "n = 4")
        ),
    );
    let run = p.wanx(&["build"]);
    run.success();
    assert!(
        run.stderr
            .contains("Removed old output generated/old-keep.png"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("generated/gone.png"), "{}", run.stderr);
    assert!(!p.exists("generated/old-keep.png"));
    assert!(!p.exists("generated/gone.png"));

    // n 4 → 1: a_1…a_4 are stale, except the one edited by hand, which is kept and reported.
    p.edit("plans/a.toml", "n = 4", "n = 1");
    std::fs::write(p.path("generated/many_4.png"), b"touched by hand").unwrap();
    let run = p.wanx(&["build"]);
    run.success();
    assert!(
        run.stderr.contains("Kept old output generated/many_4.png"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("Removed old output generated/many_1.png"),
        "{}",
        run.stderr
    );
    let mut expected = outputs_in_lock(&p);
    expected.insert("generated/many_4.png".to_owned());
    assert_eq!(outputs_on_disk(&p), expected, "{}", run.stderr);
    std::fs::remove_file(p.path("generated/many_4.png")).unwrap();
    assert_eq!(outputs_on_disk(&p), outputs_in_lock(&p));
    p.wanx(&["verify"]).success();

    // The removed images are still restorable for free.
    p.file("plans/a.toml", &plan);
    let before = p.ledger().images_billed;
    p.wanx(&["build"]).success();
    assert_eq!(p.ledger().images_billed, before, "restored, not paid again");
    assert!(p.exists("generated/gone.png"));
    assert!(p.exists("generated/old-keep.png"));
    assert_eq!(outputs_on_disk(&p), outputs_in_lock(&p));
    assert!(billed <= before);
}

#[test]
fn verify_reports_leftovers_and_clean_removes_only_what_wanx_wrote() {
    let p = Project::new();
    p.file("plans/a.toml", &format!("{HEAD}{}", task("a", "")));
    p.wanx(&["build"]).success();
    // A leftover as an older wanx left it: the lock forgot it, the bytes are wanx's.
    std::fs::copy(p.path("generated/a.png"), p.path("generated/old.png")).unwrap();
    p.file("generated/notes.txt", "mine");
    let run = p.wanx(&["verify"]);
    run.status(1);
    assert!(run.stderr.contains("generated/old.png"), "{}", run.stderr);
    assert!(!run.stderr.contains("notes.txt"), "{}", run.stderr);

    let dry = p.wanx(&["clean", "--dry-run"]);
    dry.success();
    assert!(dry.stderr.contains("generated/old.png"), "{}", dry.stderr);
    assert!(p.exists("generated/old.png"));
    let clean = p.wanx(&["clean"]);
    clean.success();
    assert!(!p.exists("generated/old.png"));
    assert_eq!(p.read("generated/notes.txt"), "mine");
    assert!(p.exists("generated/a.png"));
    p.wanx(&["verify"]).success();
}

// --- 6. inputs and globs -----------------------------------------------------------------------

#[test]
fn an_input_over_the_api_limit_is_refused_before_it_is_read() {
    let p = Project::new();
    let big = std::fs::File::create(p.path("huge.png")).unwrap();
    big.set_len(1 << 30).unwrap();
    drop(big);
    p.file(
        "plans/a.toml",
        &format!(
            "{HEAD}{}",
            task(
                "a",
                "edit = \"beautify\"\nmodel = \"wanx2.1-imageedit\"\ninput = \"../huge.png\""
            )
        ),
    );
    let stderr = refused(&p, "huge.png", &["plans/a.toml:"]);
    assert!(stderr.contains("10 MB"), "{stderr}");
}

#[test]
fn plan_globs_outside_the_project_are_refused() {
    let p = Project::new();
    p.file("wanx.toml", "[project]\nplans = [\"../../**/*.toml\"]\n");
    refused(&p, "outside the project", &["wanx.toml:2"]);
}

// --- 7. .wanx/ ignores itself ------------------------------------------------------------------------

#[test]
fn the_state_directory_ignores_itself_and_is_tagged_as_a_cache() {
    let p = Project::new();
    p.file("plans/a.toml", &format!("{HEAD}{}", task("a", "")));
    p.wanx(&["build"]).success();
    assert_eq!(p.read(".wanx/.gitignore"), "*\n");
    assert!(
        p.read(".wanx/CACHEDIR.TAG")
            .starts_with("Signature: 8a477f597d28d172789f06886806bc55")
    );
}

// --- 8. messages ---------------------------------------------------------------------------------------

#[test]
fn a_missing_directory_is_named_as_missing() {
    let p = Project::new();
    let run = p.wanx(&["-C", "/nonexistent-wanx-dir", "plan"]);
    run.status(2);
    assert!(run.stderr.contains("does not exist"), "{}", run.stderr);
    assert!(!run.stderr.contains("any parent"), "{}", run.stderr);
}
