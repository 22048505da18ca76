//! Invalid input spends nothing, writes nothing, and says where and why (exit 2).

use crate::util::{Project, TWO_TASKS, assert_output};

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
    // Every problem, located (the size with its allowed range as the hint, the duplicate id with its
    // first definition, the unknown field with a did-you-mean), and nothing else.
    assert_output(
        &run.stderr,
        r#"error: size `2000*1024` has a width of 2000 pixels, outside this model's range (`wan2.2-t2i-flash`)
 --> plans/b.toml:5:8
  |
5 | size = "2000*1024"
  |        ^^^^^^^^^^^ field `task[0].size`
  |
  = hint: each side must be between 512 and 1440 pixels, at most 2073600 pixels in all (e.g. `1024*1024`, `1440*1024`)
error: task id `lighthouse` is used twice
 --> plans/b.toml:8:6
  |
8 | id = "lighthouse"
  |      ^^^^^^^^^^^^ field `task[1].id`
  |
 ::: plans/a.toml:6:6
  |
6 | id = "lighthouse"
  |      ------------ first defined here
  |
  = hint: first defined at plans/a.toml:6:6; task ids must be unique across the project
error: unknown field `negative_promt`
  --> plans/b.toml:16:1
   |
16 | negative_promt = "blurry"
   | ^^^^^^^^^^^^^^ field `task[2].negative_promt`
   |
   = hint: did you mean `negative_prompt`?
error: 3 problems in the project's files

  hint: nothing was sent and no file was changed; fix the problems above and run again
"#,
    );
    assert_eq!(run.stdout, "");
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
    assert_output(
        &run.stderr,
        r#"error: invalid type: string "many", expected usize
 --> wanx.toml:2:8
  |
2 | jobs = "many"
  |        ^^^^^^
error: 1 problem in the project's files

  hint: nothing was sent and no file was changed; fix the problems above and run again
"#,
    );
}

#[test]
fn an_unknown_task_on_the_command_line_suggests_a_name() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    let run = p.wanx(&["build", "lighthose"]);
    run.status(2);
    assert_output(
        &run.stderr,
        "error: no task named `lighthose` in this project

  hint: did you mean `lighthouse`?
",
    );
}
