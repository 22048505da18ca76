//! No image is written, and no input read, outside the project root (DESIGN invariant 2): `..`,
//! absolute paths, odd task ids and symlinked directories are refused before anything is sent.

use crate::util::Project;

const HEAD: &str = "[[task]]\nmodel = \"wan2.2-t2i-flash\"\nsize = \"512*512\"\nprompt = \"x\"\n";

/// Runs `wanx build` on a plan with one task made of `HEAD` and `fields`, and checks it is refused
/// with exit 2, a message containing `expect`, nothing sent and nothing written.
#[track_caller]
fn refused(p: &Project, fields: &str, expect: &str) -> String {
    p.file("plans/a.toml", &format!("{HEAD}{fields}\n"));
    let before = p.snapshot();
    let run = p.wanx(&["build"]);
    run.status(2);
    assert!(
        run.stderr.contains(expect),
        "expected `{expect}` in:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("plans/a.toml:"),
        "located:\n{}",
        run.stderr
    );
    assert_eq!(p.ledger().submissions, 0, "nothing was sent");
    assert_eq!(p.ledger().uploads, 0, "nothing was uploaded");
    assert_eq!(p.snapshot(), before, "nothing was written");
    run.stderr
}

/// A directory beside the project, unique to this test, that must stay empty.
fn sibling(p: &Project, name: &str) -> std::path::PathBuf {
    let dir = p.root().parent().unwrap().join(format!(
        "{}-{name}",
        p.root().file_name().unwrap().to_string_lossy()
    ));
    assert!(!dir.exists());
    dir
}

#[test]
fn out_dir_climbing_out_with_dotdot_is_refused() {
    let p = Project::new();
    let escape = sibling(&p, "dotdot");
    let rel = format!("../{}", escape.file_name().unwrap().to_string_lossy());
    refused(
        &p,
        &format!("id = \"a\"\nout_dir = \"{rel}\""),
        "leaves its directory with `..`",
    );
    assert!(!escape.exists());
}

#[test]
fn absolute_out_dir_is_refused() {
    let p = Project::new();
    let outside = tempfile::tempdir().unwrap();
    let abs = outside.path().join("x");
    refused(
        &p,
        &format!("id = \"a\"\nout_dir = \"{}\"", abs.display()),
        "is absolute",
    );
    assert!(!abs.exists());
}

#[test]
fn filename_climbing_out_is_refused() {
    let p = Project::new();
    refused(
        &p,
        "id = \"a\"\nfilename = \"../{id}.png\"",
        "leaves its directory with `..`",
    );
    refused(
        &p,
        "id = \"a\"\nfilename = \"/tmp/{id}.png\"",
        "is absolute",
    );
    assert!(!p.root().parent().unwrap().join("a.png").exists());
}

#[test]
fn task_ids_cannot_carry_path_separators_or_dotdot() {
    let p = Project::new();
    refused(&p, "id = \"../evil\"", "starts with `.`");
    refused(&p, "id = \"..\"", "starts with `.`");
    refused(&p, "id = \"a/b\"", "contains `/`");
    refused(&p, "id = \"a\\\\b\"", "contains `\\`");
}

#[test]
fn inputs_outside_the_project_are_refused_and_never_read() {
    let p = Project::new();
    let secret = p.root().parent().unwrap().join(format!(
        "{}-secret.png",
        p.root().file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&secret, b"\x89PNG secret").unwrap();
    let name = secret.file_name().unwrap().to_string_lossy().into_owned();
    let edit = "edit = \"remove_watermark\"\nmodel = \"wanx2.1-imageedit\"";
    let strip = |s: &str| s.replace("model = \"wan2.2-t2i-flash\"\nsize = \"512*512\"\n", "");
    let fields = format!("id = \"a\"\n{edit}\ninput = \"../../{name}\"");
    p.file("plans/a.toml", &strip(&format!("{HEAD}{fields}\n")));
    let run = p.wanx(&["build"]);
    run.status(2);
    assert!(
        run.stderr.contains("is outside the project"),
        "{}",
        run.stderr
    );
    let fields = format!("id = \"a\"\n{edit}\ninput = \"{}\"", secret.display());
    p.file("plans/a.toml", &strip(&format!("{HEAD}{fields}\n")));
    let run = p.wanx(&["build"]);
    run.status(2);
    assert!(
        run.stderr.contains("is outside the project"),
        "{}",
        run.stderr
    );
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&secret, p.path("plans/inside.png")).unwrap();
        let fields = format!("id = \"a\"\n{edit}\ninput = \"inside.png\"");
        p.file("plans/a.toml", &strip(&format!("{HEAD}{fields}\n")));
        let run = p.wanx(&["build"]);
        run.status(2);
        assert!(
            run.stderr.contains("is outside the project"),
            "{}",
            run.stderr
        );
    }
    assert_eq!(p.ledger().submissions, 0);
    assert_eq!(p.ledger().uploads, 0);
    std::fs::remove_file(&secret).unwrap();
}

#[cfg(unix)]
#[test]
fn an_out_dir_symlinked_outside_is_refused_at_validation() {
    let p = Project::new();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), p.path("elsewhere")).unwrap();
    let stderr = refused(
        &p,
        "id = \"a\"\nout_dir = \"elsewhere/sub\"",
        "leads outside the project through a symlink",
    );
    assert!(stderr.contains("out_dir"), "{stderr}");
    // Through the filename's directory too.
    refused(
        &p,
        "id = \"a\"\nout_dir = \".\"\nfilename = \"elsewhere/{id}.png\"",
        "leads outside the project",
    );
    // And the manifest's default `generated/` being such a symlink.
    std::os::unix::fs::symlink(outside.path(), p.path("generated")).unwrap();
    p.file("plans/a.toml", &format!("{HEAD}id = \"a\"\n"));
    let run = p.wanx(&["build"]);
    run.status(2);
    assert!(run.stderr.contains("wanx.toml"), "{}", run.stderr);
    assert!(
        run.stderr.contains("`generated` leads outside"),
        "{}",
        run.stderr
    );
    assert_eq!(p.ledger().submissions, 0);
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "nothing written outside"
    );
}

#[cfg(unix)]
#[test]
fn an_out_dir_replaced_by_a_symlink_after_a_build_is_refused_before_restoring_through_it() {
    // The output directory becomes a symlink between builds: the next build, which would restore
    // the missing image, refuses at validation and nothing lands outside. (Were the directory
    // swapped during a build, the executor's write-time check refuses the write instead.)
    let p = Project::new();
    p.file("plans/a.toml", &format!("{HEAD}id = \"a\"\n"));
    p.wanx(&["build"]).success();
    let outside = tempfile::tempdir().unwrap();
    std::fs::remove_dir_all(p.path("generated")).unwrap();
    std::os::unix::fs::symlink(outside.path(), p.path("generated")).unwrap();
    let run = p.wanx(&["build"]);
    run.status(2);
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "nothing written outside"
    );
    assert_eq!(p.ledger().submissions, 1);
}
