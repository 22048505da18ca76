//! Setting a project up and living with it: `wanx init`, project-wide `[defaults]`, default edit
//! prompts, the cache's bound (`wanx gc`, `wanx stats`), completions and the man page, colour, and a
//! quiet no-op.

use std::path::Path;
use std::process::Command;

use crate::util::{Project, Run, TWO_TASKS, assert_output};

/// `wanx ARGS` in `dir`, with no emulator and no key (what a new user has).
fn wanx_in(dir: &Path, args: &[&str]) -> Run {
    Command::new(env!("CARGO_BIN_EXE_wanx"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("DASHSCOPE_API_KEY")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
        .into()
}

fn blob_files(p: &Project) -> Vec<String> {
    let mut out = Vec::new();
    let root = p.path(".wanx/blobs");
    for shard in std::fs::read_dir(&root).unwrap().flatten() {
        if !shard.path().is_dir() || shard.file_name().len() != 2 {
            continue;
        }
        for blob in std::fs::read_dir(shard.path()).unwrap().flatten() {
            out.push(format!(
                "{}{}",
                shard.file_name().to_string_lossy(),
                blob.file_name().to_string_lossy()
            ));
        }
    }
    out.sort();
    out
}

fn locked_blobs(p: &Project) -> Vec<String> {
    let lock: toml::Table = toml::from_str(&p.read("wanx.lock")).unwrap();
    let mut out: Vec<String> = lock["task"]
        .as_table()
        .unwrap()
        .values()
        .flat_map(|t| t["outputs"].as_array().unwrap().clone())
        .map(|o| o["blake3"].as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out.dedup();
    out
}

// --- wanx init ---------------------------------------------------------------------------------

#[test]
fn init_in_an_empty_dir_writes_a_project_that_builds() {
    let dir = tempfile::tempdir().unwrap();
    let run = wanx_in(dir.path(), &["init"]);
    run.success();
    assert!(run.stdout.contains("wanx plan"), "{}", run.stdout);
    assert!(
        run.stdout.contains("wanx build --emulate"),
        "{}",
        run.stdout
    );
    assert!(dir.path().join("wanx.toml").is_file());
    assert!(dir.path().join("plans/example.toml").is_file());
    let ignore = std::fs::read_to_string(dir.path().join(".gitignore")).unwrap();
    assert!(ignore.lines().any(|l| l == ".wanx/"), "{ignore}");
    wanx_in(dir.path(), &["plan"]).success();
    wanx_in(dir.path(), &["build", "--emulate"]).success();
    assert!(dir.path().join("generated/hello.png").is_file());
}

#[test]
fn init_refuses_to_overwrite_a_project() {
    let p = Project::new();
    p.file("wanx.toml", "# mine\n");
    let run = p.wanx(&["init"]);
    run.status(2);
    assert!(run.stderr.contains("already exists"), "{}", run.stderr);
    assert_eq!(p.read("wanx.toml"), "# mine\n");
    assert!(!p.exists("plans/example.toml"));
}

#[test]
fn init_from_a_seed_json_imports_every_task_into_toml() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/seed-cyberpunk.json"),
        dir.path().join("seed.json"),
    )
    .unwrap();
    wanx_in(dir.path(), &["init", "--from", "seed.json"]).success();
    let plan = std::fs::read_to_string(dir.path().join("plans/seed.toml")).unwrap();
    assert!(plan.contains("id = \"scene-001-poster\""), "{plan}");
    // The JSON stays where it was, outside `plans/`: the project has the TOML plan only.
    let run = wanx_in(dir.path(), &["plan", "--json"]);
    run.success();
    let ids: Vec<String> = run.json()["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    wanx_in(dir.path(), &["build", "--emulate"]).success();
}

// --- [defaults] ----------------------------------------------------------------------------------

#[test]
fn project_defaults_apply_to_every_plan_and_a_plan_and_task_override_them_in_order() {
    let p = Project::new();
    p.file(
        "wanx.toml",
        "[defaults]\nmodel = \"wan2.2-t2i-flash\"\nsize = \"512*512\"\n",
    );
    p.file(
        "plans/a.toml",
        "[[task]]\nid = \"plain\"\nprompt = \"a cat\"\n",
    );
    p.file(
        "plans/b.toml",
        "[defaults]\nsize = \"768*768\"\n\n[[task]]\nid = \"plan-size\"\nprompt = \"a dog\"\n\n[[task]]\nid = \"task-size\"\nprompt = \"a bird\"\nsize = \"1024*1024\"\n",
    );
    p.wanx(&["build"]).success();
    assert_eq!(p.png_size("generated/plain.png"), (512, 512));
    assert_eq!(p.png_size("generated/plan-size.png"), (768, 768));
    assert_eq!(p.png_size("generated/task-size.png"), (1024, 1024));
    assert!(
        p.ledger()
            .requests
            .iter()
            .all(|r| r.body["model"] == "wan2.2-t2i-flash")
    );
    // The key cache is keyed by `wanx.toml`'s bytes: a new project default regenerates what it changes.
    p.edit("wanx.toml", "512*512", "640*640");
    let run = p.wanx(&["plan", "--json"]);
    let tasks = run.json()["tasks"].as_array().unwrap().clone();
    let action = |id: &str| {
        tasks.iter().find(|t| t["id"] == id).unwrap()["action"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(action("plain"), "generate");
    assert_eq!(action("plan-size"), "fresh");
    assert_eq!(action("task-size"), "fresh");
}

#[test]
fn an_inherited_size_is_ignored_on_an_edit_and_a_written_one_is_an_error() {
    let p = Project::new();
    p.file("wanx.toml", "[defaults]\nsize = \"1024*1024\"\n");
    p.file(
        "plans/a.toml",
        "[defaults]\nmodel = \"wan2.2-t2i-flash\"\n\n[[task]]\nid = \"base\"\nprompt = \"a castle\"\n\n[[task]]\nid = \"clean\"\nedit = \"remove_watermark\"\ninput = \"base\"\n",
    );
    let explain = p.wanx(&["explain", "clean"]);
    explain.success();
    assert!(
        explain.stderr.contains("the inherited `size` is ignored"),
        "{}",
        explain.stderr
    );
    assert!(!explain.stdout.contains("\"size\""), "{}", explain.stdout);
    p.wanx(&["build"]).success();
    assert!(p.exists("generated/clean.png"));

    p.file(
        "plans/a.toml",
        "[[task]]\nid = \"base\"\nmodel = \"wan2.2-t2i-flash\"\nprompt = \"a castle\"\n\n[[task]]\nid = \"clean\"\nedit = \"remove_watermark\"\ninput = \"base\"\nsize = \"1024*1024\"\n",
    );
    let run = p.wanx(&["plan"]);
    run.status(2);
    assert_output(
        &run.stderr,
        r#"error: `wanx2.1-imageedit` takes its size from the input image
  --> plans/a.toml:10:8
   |
10 | size = "1024*1024"
   |        ^^^^^^^^^^^ field `task[1].size`
   |
   = hint: remove `size`
error: 1 problem in the project's files

  hint: nothing was sent and no file was changed; fix the problems above and run again
"#,
    );
}

// --- default edit prompts ------------------------------------------------------------------------

#[test]
fn edits_with_a_fixed_intent_get_a_default_prompt_shown_in_explain_and_keyed() {
    let p = Project::new();
    p.file(
        "plans/a.toml",
        "[[task]]\nid = \"base\"\nmodel = \"wan2.2-t2i-flash\"\nprompt = \"a castle\"\n\n[[task]]\nid = \"wide\"\nedit = \"extend\"\ninput = \"base\"\nextend = { direction = \"right\", ratio = 1.5 }\n",
    );
    let run = p.wanx(&["explain", "wide"]);
    run.success();
    assert!(
        run.stdout.contains(
            "extend the image beyond its borders, continuing its content and style seamlessly"
        ),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("default instruction"), "{}", run.stdout);
    let key = |run: &Run| {
        run.stdout
            .lines()
            .find_map(|l| l.strip_prefix("key       "))
            .map(str::to_owned)
    };
    p.wanx(&["build", "base"]).success();
    let before = key(&p.wanx(&["explain", "wide"]));
    p.edit(
        "plans/a.toml",
        "ratio = 1.5 }\n",
        "ratio = 1.5 }\nprompt = \"continue the hills\"\n",
    );
    let after = key(&p.wanx(&["explain", "wide"]));
    assert!(before.is_some());
    assert_ne!(before, after, "the prompt is part of the key");

    // An edit that needs a description still needs a prompt.
    p.file(
        "plans/a.toml",
        "[[task]]\nid = \"base\"\nmodel = \"wan2.2-t2i-flash\"\nprompt = \"a castle\"\n\n[[task]]\nid = \"fix\"\nedit = \"repair\"\ninput = \"base\"\n",
    );
    let run = p.wanx(&["plan"]);
    run.status(2);
    assert_output(
        &run.stderr,
        r#"error: this task has no `prompt`
 --> plans/a.toml:6:1
  |
6 | [[task]]
  | ^^^^^^^^ field `task[1].prompt`
  |
  = hint: the edit API needs a prompt describing the result, e.g. `prompt = "extend the background"`
error: 1 problem in the project's files

  hint: nothing was sent and no file was changed; fix the problems above and run again
"#,
    );
}

#[test]
fn a_seed_plan_with_edits_and_no_prompt_loads() {
    let p = Project::new();
    p.file("plans/in.png", "");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/assets/style-reference.png"
        ),
        p.path("plans/in.png"),
    )
    .unwrap();
    p.file(
        "plans/seed.json",
        r#"{"plan_id": "edits", "batches": [{"tasks": [
            {"task_id": "pretty", "task_type": "beautify", "input_image_url": "in.png"},
            {"task_id": "styled", "task_type": "style_transfer", "input_image_url": "in.png"},
            {"task_id": "wider", "task_type": "extend", "input_image_url": "in.png",
             "extend_config": {"direction": "left", "ratio": 1.5}}
        ]}]}"#,
    );
    let run = p.wanx(&["plan", "--json"]);
    run.success();
    assert_eq!(run.json()["tasks"].as_array().unwrap().len(), 3);
}

// --- the cache's bound -----------------------------------------------------------------------------

#[test]
fn gc_keeps_every_locked_blob_and_brings_the_cache_under_its_bound() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    p.wanx(&["build"]).success();
    // Two edits leave two unlocked results in the cache.
    p.edit(
        "plans/a.toml",
        "a lighthouse at dusk",
        "a lighthouse at dawn",
    );
    p.wanx(&["build"]).success();
    p.edit(
        "plans/a.toml",
        "a lighthouse at dawn",
        "a lighthouse at noon",
    );
    p.wanx(&["build"]).success();
    let locked = locked_blobs(&p);
    let before = blob_files(&p);
    assert_eq!(before.len(), locked.len() + 2, "{before:?}");

    let dry = p.wanx(&["gc", "--dry-run", "--max-size", "0"]);
    dry.success();
    assert!(dry.stderr.contains("Would remove"), "{}", dry.stderr);
    assert_eq!(blob_files(&p), before, "a dry run removes nothing");

    p.wanx(&["gc", "--max-size", "0"]).success();
    assert_eq!(blob_files(&p), locked, "exactly the locked blobs are left");
    p.wanx(&["build", "--locked"]).success();
    p.wanx(&["verify"]).success();
    // The forgotten result is generated again, not restored from a missing blob.
    p.edit(
        "plans/a.toml",
        "a lighthouse at noon",
        "a lighthouse at dusk",
    );
    let submissions = p.ledger().submissions;
    p.wanx(&["build"]).success();
    assert_eq!(p.ledger().submissions, submissions + 1);
}

#[test]
fn a_build_applies_max_size_from_the_manifest_and_stats_reports_it() {
    let p = Project::new();
    p.file("wanx.toml", "[cache]\nmax_size = \"0\"\n");
    p.file("plans/a.toml", TWO_TASKS);
    p.wanx(&["build"]).success();
    p.edit("plans/a.toml", "a quiet harbor", "a busy harbor");
    let run = p.wanx(&["build"]);
    run.success();
    assert!(run.stderr.contains("Evicted"), "{}", run.stderr);
    assert_eq!(blob_files(&p), locked_blobs(&p));
    let stats = p.wanx(&["stats", "--json"]);
    stats.success();
    let stats = stats.json();
    assert_eq!(stats["cache_images"], 3);
    assert_eq!(stats["by_month"][0]["builds"], 2);
    assert_eq!(stats["by_model"][0]["model"], "wan2.2-t2i-flash");
    let human = p.wanx(&["stats"]);
    assert!(human.stdout.contains("Cache size"), "{}", human.stdout);

    p.file("wanx.toml", "[cache]\nmax_size = \"lots\"\n");
    p.wanx(&["plan"]).status(2);
}

// --- completions, man page, colour, env ---------------------------------------------------------

#[test]
fn completions_are_generated_for_each_shell_and_task_ids_complete_from_the_project() {
    let p = Project::new();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let run = p.wanx(&["completions", shell]);
        run.success();
        assert!(run.stdout.contains("wanx"), "{shell}: {}", run.stdout);
        assert!(run.stdout.contains("max-spend"), "{shell}: {}", run.stdout);
    }
    let man = p.wanx(&["man"]);
    man.success();
    assert!(man.stdout.contains(".TH wanx"), "{}", man.stdout);

    p.file("plans/a.toml", TWO_TASKS);
    let run: Run = p
        .command(&["--", "wanx", "build", "light"])
        .env("COMPLETE", "fish")
        .output()
        .unwrap()
        .into();
    run.success();
    assert!(run.stdout.starts_with("lighthouse"), "{}", run.stdout);
    assert!(!run.stdout.contains("harbor"), "{}", run.stdout);
}

#[test]
fn color_never_prints_no_escape_codes_and_always_does() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    let run = |choice: &str| -> Run {
        p.command(&["--color", choice, "build"])
            .env_remove("NO_COLOR")
            .env("CLICOLOR_FORCE", "1")
            .output()
            .unwrap()
            .into()
    };
    let never = run("never");
    never.success();
    assert!(!never.stderr.contains('\x1b'), "{:?}", never.stderr);
    assert!(never.stderr.contains("Finished"));
    let always = run("always");
    assert!(always.stderr.contains('\x1b'), "{:?}", always.stderr);
    // `WANX_COLOR` is `--color`, and `NO_COLOR` turns `auto` off even when forced by nothing else.
    let env: Run = p
        .command(&["build"])
        .env("WANX_COLOR", "never")
        .env("CLICOLOR_FORCE", "1")
        .output()
        .unwrap()
        .into();
    assert!(!env.stderr.contains('\x1b'), "{:?}", env.stderr);
}

#[test]
fn max_spend_must_be_a_non_negative_number_and_wanx_max_spend_sets_it() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    for bad in ["NaN", "-1", "inf"] {
        let run = p.wanx(&["build", &format!("--max-spend={bad}")]);
        run.status(2);
    }
    let run: Run = p
        .command(&["build"])
        .env("WANX_MAX_SPEND", "0.1")
        .output()
        .unwrap()
        .into();
    run.status(4);
    assert_eq!(p.ledger().submissions, 0);
}

// --- quiet by default ------------------------------------------------------------------------------

#[test]
fn the_examples_no_op_prints_at_most_two_lines() {
    let p = Project::new();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    p.file(
        "wanx.toml",
        &std::fs::read_to_string(repo.join("wanx.toml")).unwrap(),
    );
    for entry in std::fs::read_dir(repo.join("examples")).unwrap().flatten() {
        if entry.path().is_file() {
            let name = entry.file_name().to_string_lossy().into_owned();
            p.file(
                &format!("examples/{name}"),
                &std::fs::read_to_string(entry.path()).unwrap(),
            );
        }
    }
    std::fs::create_dir_all(p.path("examples/assets")).unwrap();
    std::fs::copy(
        repo.join("examples/assets/style-reference.png"),
        p.path("examples/assets/style-reference.png"),
    )
    .unwrap();
    let first = p.wanx(&["build", "--emulate"]);
    first.success();
    // The first build generates the seed plan's tasks: its notes are shown then.
    assert!(
        first.stderr.contains("seed-cyberpunk.json"),
        "{}",
        first.stderr
    );
    let second = p.wanx(&["build", "--emulate"]);
    second.success();
    assert!(
        second.stderr.lines().count() <= 2,
        "the no-op said:\n{}",
        second.stderr
    );
    assert!(second.stderr.contains("fresh"), "{}", second.stderr);
    // The notes are in `wanx plan`.
    let plan = p.wanx(&["plan"]);
    assert!(
        plan.stderr.contains("seed-cyberpunk.json"),
        "{}",
        plan.stderr
    );
}

// --- small things a user trips on ------------------------------------------------------------------

#[test]
fn locked_names_a_stale_lock_entry_and_a_re_added_task_is_restored_as_cached_not_new() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    p.wanx(&["build"]).success();
    let without_harbor = TWO_TASKS
        .split("\n[[task]]\nid = \"harbor\"")
        .next()
        .unwrap();
    p.file("plans/a.toml", without_harbor);
    let run = p.wanx(&["build", "--locked"]);
    run.status(3);
    assert!(
        run.stderr
            .contains("still records 1 task no longer in the plans (`harbor`)"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("is not fresh"), "{}", run.stderr);
    p.wanx(&["build"]).success();
    p.file("plans/a.toml", TWO_TASKS);
    let plan = p.wanx(&["plan"]);
    assert!(
        plan.stdout.contains("restored after it was removed"),
        "{}",
        plan.stdout
    );
    assert!(!plan.stdout.contains("new task"), "{}", plan.stdout);
}

#[test]
fn the_restore_line_names_the_file_that_was_restored() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    p.wanx(&["build"]).success();
    std::fs::remove_file(p.path("generated/harbor_2.png")).unwrap();
    let run = p.wanx(&["build"]);
    run.success();
    assert!(
        run.stderr.contains(
            "harbor → generated/harbor_2.png (free), because output deleted: generated/harbor_2.png"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn a_task_failed_fault_needs_no_code() {
    let p = Project::with_emulator_toml(
        "[[faults]]\non = \"submit\"\nnth = [1]\nfault = { kind = \"task_failed\" }\n",
    );
    p.file(
        "plans/a.toml",
        "[[task]]\nid = \"one\"\nmodel = \"wan2.2-t2i-flash\"\nprompt = \"x\"\n",
    );
    let run = p.wanx(&["build"]);
    run.status(1);
    assert!(run.stderr.contains("1 failed"), "{}", run.stderr);
    assert!(!run.stderr.contains("generated ("), "{}", run.stderr);
}

#[test]
fn an_emulator_config_error_points_at_the_readme() {
    let p = Project::new();
    p.file("emu.toml", "latency_ms = \"slow\"\n");
    let run = p.wanx(&["emulator", "--port", "0", "--config", "emu.toml"]);
    run.status(2);
    assert!(run.stderr.contains("README"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("src/emulator/mod.rs"),
        "{}",
        run.stderr
    );
}

#[test]
fn stats_gives_money_spent_and_saved_by_model_as_the_ledger_billed_it() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    p.wanx(&["build"]).success();
    // An undo restores the harbor's two images: ¥0.28 saved on that model.
    p.edit("plans/a.toml", "a quiet harbor", "a busy harbor");
    p.wanx(&["build"]).success();
    p.edit("plans/a.toml", "a busy harbor", "a quiet harbor");
    let undo = p.wanx(&["build", "--json"]).success().json();
    assert_eq!(undo["restored"], 1, "{undo}");
    let stats = p.wanx(&["stats", "--json"]).success().json();
    let model = &stats["by_model"][0];
    assert_eq!(model["model"], "wan2.2-t2i-flash", "{stats}");
    let ledger = p.ledger();
    assert_eq!(model["images_billed"], ledger.images_billed, "{stats}");
    let fen = |v: &serde_json::Value| (v.as_f64().unwrap() * 100.0).round() as i64;
    assert_eq!(fen(&model["spent"]), (ledger.amount * 100.0).round() as i64);
    assert_eq!(model["images_restored"], 2, "{stats}");
    assert_eq!(fen(&model["saved"]), 28, "{stats}");
    let human = p.wanx(&["stats"]).success().stdout.clone();
    assert!(human.contains("by model"), "{human}");
}
