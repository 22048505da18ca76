//! The remote cache, against a real WebDAV server (nginx): a clone shares what another generated,
//! `--locked` passes on a fresh runner without an API key, and a remote that is read-only,
//! corrupted, down or authenticated never costs a wrong image or a leaked secret.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::util::{Project, Run};
use crate::webdav::Nginx;

/// Two text-to-image tasks (one of two images) and an edit that consumes the first.
const PLAN: &str = r#"[[task]]
id = "lighthouse"
model = "wan2.2-t2i-flash"
size = "512*512"
prompt = "a lighthouse at dusk"

[[task]]
id = "harbor"
model = "wan2.2-t2i-flash"
size = "512*512"
prompt = "a quiet harbor"
n = 2
filename = "{id}_{index}.png"

[[task]]
id = "lighthouse-wide"
edit = "extend"
input = "lighthouse"
prompt = "more sea to the right"
extend = { direction = "right", ratio = 1.5 }
"#;

const OUTPUTS: [&str; 4] = [
    "generated/lighthouse.png",
    "generated/harbor_1.png",
    "generated/harbor_2.png",
    "generated/lighthouse-wide.png",
];

/// A project with `PLAN`, and `manifest` as its `wanx.toml`.
fn project(manifest: &str) -> Project {
    let p = Project::new();
    p.file("wanx.toml", manifest);
    p.file("plans/a.toml", PLAN);
    p
}

/// A second clone of `from`: its manifest, plans and (if `with_lock`) lock, no images, no `.wanx/`.
fn clone_of(from: &Project, with_lock: bool) -> Project {
    let p = project(&from.read("wanx.toml"));
    if with_lock {
        p.file("wanx.lock", &from.read("wanx.lock"));
    }
    p
}

fn outputs(p: &Project) -> BTreeMap<String, Vec<u8>> {
    OUTPUTS
        .iter()
        .map(|o| ((*o).to_owned(), std::fs::read(p.path(o)).unwrap()))
        .collect()
}

/// `wanx.lock` without its `cost` lines (a restore records what it spent: nothing).
fn lock_images(p: &Project) -> String {
    p.read("wanx.lock")
        .lines()
        .filter(|l| !l.starts_with("cost = "))
        .collect::<Vec<_>>()
        .join("\n")
}

fn warnings(run: &Run) -> Vec<&str> {
    run.stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("Warning") && l.contains("remote cache"))
        .collect()
}

#[test]
fn a_second_clone_restores_every_task_from_the_remote_cache_and_locked_passes_without_a_key() {
    let Some(nginx) = Nginx::start("remote cache sharing") else {
        return;
    };
    let url = nginx.url();
    let a = project("");
    a.wanx(&["build", "--remote-cache", &url]).success();
    assert_eq!(a.ledger().submissions, 3);
    let files = nginx.files();
    assert_eq!(
        files.iter().filter(|f| f.starts_with("ac/")).count(),
        3,
        "{files:?}"
    );
    assert_eq!(files.iter().filter(|f| f.starts_with("cas/")).count(), 4);

    // A fully fresh build asks the remote nothing.
    let before = nginx.requests().len();
    a.wanx(&["build", "--remote-cache", &url]).success();
    assert_eq!(
        nginx.requests().len(),
        before,
        "a no-op made remote requests"
    );

    // A fresh CI runner: the committed plans and lock, an empty `.wanx/`, no API key.
    let b = clone_of(&a, true);
    let plan = b
        .wanx(&["plan", "--json", "--remote-cache", &url])
        .success()
        .json();
    assert_eq!(plan["restored"], 3, "{plan:#}");
    assert_eq!(plan["restored_remote"], 3);
    assert!(!b.exists(".wanx/blobs"), "`wanx plan` downloaded images");
    let text = b
        .wanx(&["plan", "--remote-cache", &url])
        .success()
        .stdout
        .clone();
    assert_eq!(text.matches("restore (remote)").count(), 3, "{text}");

    let run = b
        .command(&["build", "--locked", "--json"])
        .env_remove("DASHSCOPE_API_KEY")
        .env("WANX_REMOTE_CACHE", &url)
        .output()
        .unwrap();
    let run = Run::from(run);
    let json = run.success().json();
    assert_eq!(json["restored"], 3, "{json:#}");
    assert_eq!(json["restored_remote"], 3);
    assert_eq!(json["generated"], 0);
    assert!(json["saved"].as_f64().unwrap() > 0.0);
    for task in json["tasks"].as_array().unwrap() {
        assert_eq!(task["action"], "restore");
        assert_eq!(task["remote"], true, "{task:#}");
    }
    assert_eq!(b.ledger().submissions, 0, "the second clone paid");
    assert_eq!(a.ledger().submissions, 3);
    assert_eq!(outputs(&b), outputs(&a), "restored images differ");
    assert_eq!(lock_images(&b), lock_images(&a));

    // A clone without the lock restores too, and writes the same lock.
    let c = clone_of(&a, false);
    let json = c
        .wanx(&["build", "--json", "--remote-cache", &url])
        .success()
        .json();
    assert_eq!(json["restored_remote"], 3, "{json:#}");
    assert_eq!(c.ledger().submissions, 0);
    assert_eq!(outputs(&c), outputs(&a));
    assert_eq!(lock_images(&c), lock_images(&a));
}

#[test]
fn read_only_mode_puts_nothing_on_the_server() {
    let Some(nginx) = Nginx::start("remote cache read-only") else {
        return;
    };
    let url = nginx.url();
    let a = project("");
    a.wanx(&["build", "--remote-cache", &url, "--remote-cache-read-only"])
        .success();
    let b = project(&format!(
        "[cache]\nremote = \"{url}\"\nremote_upload = false\n"
    ));
    b.wanx(&["build"]).success();
    assert_eq!((a.ledger().submissions, b.ledger().submissions), (3, 3));
    assert_eq!(nginx.files(), Vec::<String>::new());
    assert!(
        !nginx.requests().iter().any(|r| r.starts_with("PUT")),
        "{:?}",
        nginx.requests()
    );
    // It did read: each generation was looked up first.
    assert!(
        nginx
            .requests()
            .iter()
            .any(|r| r.starts_with("GET /cache/ac/"))
    );
}

#[test]
fn a_corrupted_blob_on_the_server_is_a_miss_and_one_warning_never_a_wrong_image() {
    let Some(nginx) = Nginx::start("remote cache corruption") else {
        return;
    };
    let url = nginx.url();
    let a = project("");
    a.wanx(&["build", "--remote-cache", &url]).success();
    // Damage the blob of `harbor_2.png` on the server: same length, other bytes.
    let good = std::fs::read(a.path("generated/harbor_2.png")).unwrap();
    let cas = nginx.store().join("cas");
    let damaged = std::fs::read_dir(&cas)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read(p).unwrap() == good)
        .expect("the image is on the server");
    let mut junk = good.clone();
    let middle = junk.len() / 2;
    junk[middle] ^= 0xff;
    std::fs::write(&damaged, &junk).unwrap();

    let b = clone_of(&a, true);
    let run = b.wanx(&["build", "--json", "--remote-cache", &url]);
    let json = run.success().json();
    let warned = warnings(&run);
    assert_eq!(warned.len(), 1, "{}", run.stderr);
    assert!(warned[0].contains("SHA-256"), "{}", warned[0]);
    assert_eq!(json["restored_remote"], 2, "{json:#}");
    assert_eq!(json["generated"], 1);
    assert_eq!(b.ledger().submissions, 1, "only `harbor` is paid for again");
    assert_eq!(outputs(&b), outputs(&a), "a wrong image reached the tree");
    // Nor did it enter the local cache.
    let blobs = b.snapshot_all();
    assert!(!blobs.values().any(|bytes| *bytes == junk));
}

#[test]
fn a_remote_cache_that_is_down_costs_one_warning_and_the_build_succeeds_locally() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/cache");
    let p = project("");
    let run = p.wanx(&["build", "--json", "--remote-cache", &url]);
    let json = run.success().json();
    assert_eq!(json["generated"], 3);
    assert_eq!(p.ledger().submissions, 3);
    let warned = warnings(&run);
    assert_eq!(warned.len(), 1, "{}", run.stderr);
    assert!(warned[0].contains("unreachable"), "{}", warned[0]);
    for o in OUTPUTS {
        assert!(p.exists(o), "{o}");
    }
}

#[test]
fn remote_cache_credentials_appear_in_no_output_db_or_lock() {
    let Some(nginx) = Nginx::start("remote cache credentials") else {
        return;
    };
    let secret = "s3cret-canary-4242";
    let manifest = format!(
        "[cache]\nremote = \"{}\"\nremote_credentials_env = \"CACHE_AUTH\"\n",
        nginx.url()
    );
    let a = project(&manifest);
    let b = project(&manifest);
    let mut runs = Vec::new();
    for (p, args) in [
        (&a, &["build", "-vv", "--json"][..]),
        (&b, &["plan", "-vv", "--json"][..]),
        (&b, &["build", "-vv", "--json"][..]),
    ] {
        let out = p
            .command(args)
            .env("CACHE_AUTH", format!("ci-bot:{secret}"))
            .output()
            .unwrap();
        runs.push(Run::from(out));
    }
    assert_eq!(runs[2].success().json()["restored_remote"], 3);
    // The server saw them (basic auth: `$remote_user`), and nothing else did.
    assert!(
        nginx.requests().iter().all(|r| r.ends_with("user=ci-bot")),
        "{:?}",
        nginx.requests()
    );
    for run in &runs {
        assert!(!run.stdout.contains(secret) && !run.stderr.contains(secret));
    }
    for p in [&a, &b] {
        for (path, bytes) in p.snapshot_all() {
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(secret), "the secret is in {path}");
        }
    }
}

/// A server answering nonsense is a miss too: an entry that does not decode.
#[test]
fn junk_in_the_action_cache_is_a_miss_and_a_warning() {
    let Some(nginx) = Nginx::start("remote cache junk") else {
        return;
    };
    let url = nginx.url();
    let a = project("");
    a.wanx(&["build", "--remote-cache", &url]).success();
    for entry in std::fs::read_dir(nginx.store().join("ac")).unwrap() {
        std::fs::write(entry.unwrap().path(), "<html>502 Bad Gateway</html>").unwrap();
    }
    let b = clone_of(&a, true);
    let run = b.wanx(&["build", "--json", "--remote-cache", &url]);
    let json: Value = run.success().json();
    assert_eq!(json["generated"], 3);
    assert_eq!(json["restored_remote"], 0);
    assert_eq!(
        warnings(&run).len(),
        3,
        "one per entry looked up: {}",
        run.stderr
    );
    assert_eq!(outputs(&b), outputs(&a));
}

#[test]
fn a_remote_cache_refusing_writes_costs_one_warning_and_the_build_succeeds() {
    let Some(nginx) = Nginx::start_with(
        "remote cache refusing writes",
        "limit_except GET HEAD { deny all; }",
    ) else {
        return;
    };
    let p = project("");
    let run = p.wanx(&["build", "--json", "--remote-cache", &nginx.url()]);
    assert_eq!(run.success().json()["generated"], 3);
    let warned = warnings(&run);
    assert_eq!(warned.len(), 1, "{}", run.stderr);
    assert!(
        warned[0].contains("refused an upload (HTTP 403)"),
        "{}",
        warned[0]
    );
    assert_eq!(nginx.files(), Vec::<String>::new());
    for o in OUTPUTS {
        assert!(p.exists(o), "{o}");
    }
}
