//! The up-to-date record (`.wanx/uptodate`, src/build/uptodate.rs): a build after a build that had
//! nothing to do answers from the record alone, printing what the full no-op prints, and any change
//! since (a plan or the lock edited at the same size and mtime, a plan added, an output deleted, the
//! database written, another selection or provider) is built as it would be without the record.

use crate::util::{Project, TWO_TASKS, assert_output};

/// Builds until the record stands for the project: the build after a change writes none, the
/// no-op after it does, and a third answers from it (said with `-v`).
fn settle(p: &Project) {
    p.wanx(&["build"]).success();
    p.wanx(&["build"]).success();
    assert!(p.exists(".wanx/uptodate"), "a no-op leaves the record");
    let run = p.wanx(&["-v", "build"]);
    run.success();
    assert!(
        run.stderr
            .contains("Fresh nothing changed since the last build"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_no_op_after_a_no_op_answers_from_the_record_and_says_the_same() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    p.wanx(&["build"]).success();
    assert!(
        !p.exists(".wanx/uptodate"),
        "a build that generated leaves no record"
    );
    let full = p.wanx(&["build"]);
    full.success();
    assert!(p.exists(".wanx/uptodate"));
    let quick = p.wanx(&["build"]);
    quick.success();
    assert_output(&quick.stderr, &full.stderr);
    let verbose = p.wanx(&["-v", "build"]);
    verbose.success();
    assert_output(
        &verbose.stderr,
        &format!(
            "       Fresh nothing changed since the last build (1 plan file, `wanx.lock` and 3 outputs and inputs as it left them)\n{}",
            full.stderr
        ),
    );
    assert_eq!(p.ledger().submissions, 2, "nothing more was sent");
    // No build with nothing to do is recorded: one build did something.
    let stats = p.wanx(&["stats", "--json"]).success().json();
    assert_eq!(stats["by_month"][0]["builds"], 1, "{stats}");
    // `--json` lists every task: it takes the full path and says the same.
    let json = p.wanx(&["build", "--json"]).success().json();
    assert_eq!(
        (json["fresh"].as_u64(), json["cumulative"]["runs"].as_u64()),
        (Some(2), Some(1))
    );
}

#[test]
fn every_change_since_the_record_is_built_as_without_it() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    settle(&p);

    // A plan edited in place, same size, same mtime: its hash differs.
    p.edit_keeping_stat("plans/a.toml", "at dusk", "at dawn");
    let run = p.wanx(&["build"]);
    run.success();
    assert!(run.stderr.contains("1 generated"), "{}", run.stderr);
    let last = p.ledger().requests.last().unwrap().body.clone();
    assert_eq!(last["input"]["prompt"], "a lighthouse at dawn", "{last}");
    settle(&p);

    // An output deleted: restored.
    std::fs::remove_file(p.path("generated/lighthouse.png")).unwrap();
    let run = p.wanx(&["build"]);
    run.success();
    assert!(run.stderr.contains("1 restored"), "{}", run.stderr);
    assert!(p.exists("generated/lighthouse.png"));
    settle(&p);

    // An output overwritten: not wanx's file any more, so the build refuses to replace it; with
    // its bytes put back, it is fresh again.
    let bytes = std::fs::read(p.path("generated/harbor_1.png")).unwrap();
    std::fs::write(p.path("generated/harbor_1.png"), b"not the image").unwrap();
    let run = p.wanx(&["build"]);
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("would replace a file wanx did not write"),
        "{}",
        run.stderr
    );
    std::fs::write(p.path("generated/harbor_1.png"), &bytes).unwrap();
    settle(&p);

    // `wanx.lock` edited in place (one hex digit of a key), same size, same mtime: the task's
    // record no longer matches, so it is restored from the cache and the lock written back.
    let lock = p.read("wanx.lock");
    let key = p.lock().tasks["lighthouse"].key.clone();
    let flipped = format!(
        "{}{}",
        if key.starts_with('0') { '1' } else { '0' },
        &key[1..]
    );
    p.edit_keeping_stat("wanx.lock", &key, &flipped);
    let run = p.wanx(&["build"]);
    run.success();
    assert!(run.stderr.contains("1 restored"), "{}", run.stderr);
    assert_eq!(p.read("wanx.lock"), lock);
    settle(&p);

    // A plan file added: its task is generated.
    p.file(
        "plans/b.toml",
        "[[task]]\nid = \"tower\"\nmodel = \"wan2.2-t2i-flash\"\nsize = \"512*512\"\nprompt = \"a stone tower\"\n",
    );
    let run = p.wanx(&["build"]);
    run.success();
    assert!(
        run.stderr.contains("1 generated (1 image billed), 2 fresh"),
        "{}",
        run.stderr
    );
    settle(&p);

    // The database written behind the record's back (a charge booked by another process): the
    // totals printed are the database's.
    let db = rusqlite::Connection::open(p.path(".wanx/wanx.db")).unwrap();
    db.execute(
        "INSERT INTO charges (at, emulated, task_id, model, remote_task_id, images, cost)
         VALUES (1, 1, 'x', 'wan2.2-t2i-flash', NULL, 1, 1000000)",
        [],
    )
    .unwrap();
    drop(db);
    // Every charge so far is the emulator's bill; the inserted one adds ¥1.00.
    let total = format!("so far: spent ¥{:.2}", p.ledger().amount + 1.0);
    let run = p.wanx(&["-v", "build"]);
    run.success();
    assert!(!run.stderr.contains("nothing changed"), "{}", run.stderr);
    assert!(
        run.stderr.contains(&total),
        "the totals include the charge ({total}): {}",
        run.stderr
    );

    // Another selection, or `--emulate`: not what the record was made for.
    settle(&p);
    let run = p.wanx(&["-v", "build", "lighthouse"]);
    run.success();
    assert!(!run.stderr.contains("nothing changed"), "{}", run.stderr);
    assert!(run.stderr.contains("Finished 1 fresh\n"), "{}", run.stderr);
    settle(&p);
    let run = p.wanx(&["-v", "build", "--emulate"]);
    run.success();
    assert!(!run.stderr.contains("nothing changed"), "{}", run.stderr);
    assert!(run.stderr.contains("Finished 3 fresh\n"), "{}", run.stderr);
}

#[test]
fn a_damaged_record_is_a_miss_with_the_same_result() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    settle(&p);
    let expected = p.wanx(&["build"]).success().stderr.clone();
    let bytes = std::fs::read(p.path(".wanx/uptodate")).unwrap();
    for at in [0, 9, 45, bytes.len() / 2, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x5a;
        std::fs::write(p.path(".wanx/uptodate"), &bad).unwrap();
        let run = p.wanx(&["-v", "build"]);
        run.success();
        assert!(!run.stderr.contains("nothing changed"), "{}", run.stderr);
        assert!(run.stderr.ends_with(&expected), "{}", run.stderr);
    }
    assert_eq!(p.ledger().submissions, 2);
}

#[test]
fn a_local_input_changed_since_the_record_is_seen() {
    let p = Project::new();
    let photo = wanx::emulator::placeholder_png::render(64, 64, b"a photo");
    std::fs::create_dir_all(p.path("plans/photos")).unwrap();
    std::fs::write(p.path("plans/photos/shop.png"), &photo).unwrap();
    p.file(
        "plans/edit.toml",
        "[[task]]\nid = \"shop-clean\"\nedit = \"remove_watermark\"\ninput = \"photos/shop.png\"\nprompt = \"remove the watermark\"\n",
    );
    settle(&p);
    assert_eq!(p.ledger().submissions, 1);
    std::fs::write(
        p.path("plans/photos/shop.png"),
        wanx::emulator::placeholder_png::render(64, 64, b"another photo"),
    )
    .unwrap();
    let run = p.wanx(&["-v", "build"]);
    run.success();
    assert!(!run.stderr.contains("nothing changed"), "{}", run.stderr);
    assert!(run.stderr.contains("1 generated"), "{}", run.stderr);
    assert_eq!(p.ledger().submissions, 2, "the new photo was sent");
    settle(&p);
    assert_eq!(p.ledger().submissions, 2);
}
