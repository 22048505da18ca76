//! Invalid input spends nothing, writes nothing, and says where and why (exit 2).

use crate::util::{Project, TWO_TASKS};

#[test]
fn every_error_in_every_file_is_reported_with_its_location_and_nothing_happens() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    p.file(
        "plans/b.toml",
        "[[task]]\nid = \"wide\"\nmodel = \"wan2.2-t2i-flash\"\nprompt = \"x\"\nsize = \"2000*1024\"\n\n[[task]]\nid = \"lighthouse\"\nmodel = \"wan2.2-t2i-flash\"\nprompt = \"dup\"\n\n[[task]]\nid = \"typo\"\nmodel = \"wan2.2-t2i-flash\"\nprompt = \"x\"\nnegative_promt = \"blurry\"\n",
    );
    let before = p.snapshot();
    let run = p.wanx(&["build"]);
    run.status(2);
    assert!(
        run.stderr.contains("plans/b.toml:5:8"),
        "size error located:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("1440"),
        "the allowed range is the hint:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("plans/b.toml:8:"),
        "duplicate id located:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("plans/a.toml:"),
        "the first definition is named:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("plans/b.toml:16:"),
        "unknown field located:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("negative_prompt"),
        "did-you-mean:\n{}",
        run.stderr
    );
    assert_eq!(p.snapshot(), before, "no file was written");
    assert!(!p.exists(".wanx"));
    assert_eq!(
        p.ledger().submissions + p.ledger().rejected,
        0,
        "no request was sent"
    );
}

#[test]
fn a_broken_manifest_names_its_line() {
    let p = Project::new();
    p.file("wanx.toml", "[build]\njobs = \"many\"\n");
    let run = p.wanx(&["plan"]);
    run.status(2);
    assert!(run.stderr.contains("wanx.toml:2:"), "{}", run.stderr);
}

#[test]
fn an_unknown_task_on_the_command_line_suggests_a_name() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    let run = p.wanx(&["build", "lighthose"]);
    run.status(2);
    assert!(
        run.stderr.contains("did you mean `lighthouse`?"),
        "{}",
        run.stderr
    );
}
