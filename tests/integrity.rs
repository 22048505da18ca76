//! A blob whose bytes do not match its hash is never materialized (invariant 5), a truncated
//! download is never cached (invariant 6), and `wanx verify` finds and repairs damage.

use std::path::PathBuf;

use wanx::emulator::EmulatorConfig;
use wanx::emulator::config::{Fault, FaultEvent, FaultRule};

use crate::util::{Project, TWO_TASKS};

/// The blake3 that `wanx.lock` records for output `path`.
fn recorded(p: &Project, path: &str) -> String {
    let lock = p.lock();
    lock.tasks
        .values()
        .flat_map(|e| &e.outputs)
        .find(|o| o.path == path)
        .unwrap_or_else(|| panic!("{path} is not in wanx.lock"))
        .blake3
        .clone()
}

/// The pixels of the PNG at `path`, which must decode completely.
fn decode_whole_png(path: &std::path::Path) -> Vec<u8> {
    let file = std::fs::File::open(path).unwrap();
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    reader
        .next_frame(&mut buf)
        .unwrap_or_else(|e| panic!("{} does not decode whole: {e}", path.display()));
    buf
}

fn blob(p: &Project, hash: &str) -> PathBuf {
    p.path(&format!(".wanx/blobs/{}/{}", &hash[..2], &hash[2..]))
}

fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn a_corrupt_blob_is_never_restored_and_the_next_build_generates_the_image_again() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    p.wanx(&["build"]).success();
    let hash = recorded(&p, "generated/lighthouse.png");
    std::fs::write(blob(&p, &hash), b"\x89PNG\r\n\x1a\nbit rot").unwrap();
    std::fs::remove_file(p.path("generated/lighthouse.png")).unwrap();

    let run = p.wanx(&["build"]);
    run.status(1);
    assert!(run.stderr.contains("is corrupt"), "{}", run.stderr);
    assert!(run.stderr.contains("quarantine"), "{}", run.stderr);
    assert!(
        !p.exists("generated/lighthouse.png"),
        "the corrupt bytes were not materialized"
    );
    assert_eq!(p.ledger().submissions, 2, "nothing was paid by surprise");
    assert_eq!(
        std::fs::read(p.path(&format!(".wanx/quarantine/{hash}"))).unwrap(),
        b"\x89PNG\r\n\x1a\nbit rot"
    );

    // The plan now says it, with its price; the next build pays for it once.
    let plan = p.wanx(&["plan"]).success().stdout.clone();
    assert!(
        plan.contains("generate") && plan.contains("lighthouse"),
        "{plan}"
    );
    p.wanx(&["build"]).success();
    assert_eq!(p.ledger().submissions, 3);
    assert_eq!(p.png_size("generated/lighthouse.png"), (512, 512));
    p.wanx(&["verify"]).success();
}

#[test]
fn verify_reports_damage_read_only_then_repairs_what_the_cache_can() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    p.wanx(&["build"]).success();
    let v = p.wanx(&["verify"]);
    v.success();
    assert!(
        v.stderr
            .contains("3 outputs and 3 blobs checked: all intact"),
        "{}",
        v.stderr
    );

    // harbor_1: its blob rots (its output is intact). harbor_2: its output is edited (its blob is
    // intact). lighthouse: its blob rots and its output is deleted (nothing intact is left).
    let h1 = recorded(&p, "generated/harbor_1.png");
    let h2 = recorded(&p, "generated/harbor_2.png");
    let light = recorded(&p, "generated/lighthouse.png");
    let good_h2 = std::fs::read(p.path("generated/harbor_2.png")).unwrap();
    std::fs::write(blob(&p, &h1), b"rot").unwrap();
    std::fs::write(p.path("generated/harbor_2.png"), b"edited").unwrap();
    std::fs::write(blob(&p, &light), b"rot").unwrap();
    std::fs::remove_file(p.path("generated/lighthouse.png")).unwrap();
    std::fs::write(p.path(".wanx/blobs/stray.tmp"), b"?").unwrap();

    let before = p.snapshot();
    let blobs_before: Vec<_> = files_under(&p.path(".wanx/blobs"));
    let run = p.wanx(&["verify"]);
    run.status(1);
    for expected in [
        h1.as_str(),
        light.as_str(),
        "`generated/harbor_2.png` (task `harbor`) does not match",
        "`generated/lighthouse.png` (task `lighthouse`) is missing",
        "stray.tmp",
        "5 problems found",
        "--repair",
    ] {
        assert!(
            run.stderr.contains(expected),
            "`{expected}` in:\n{}",
            run.stderr
        );
    }
    assert_eq!(
        p.snapshot(),
        before,
        "verify without --repair changes nothing"
    );
    assert_eq!(files_under(&p.path(".wanx/blobs")), blobs_before);

    // The edited output is not wanx's to replace without `--force` (issue 12).
    let run = p.wanx(&["verify", "--repair"]);
    run.status(1);
    assert!(
        run.stderr.contains("2 problems could not be repaired"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read(p.path("generated/harbor_2.png")).unwrap(),
        b"edited"
    );
    let run = p.wanx(&["verify", "--repair", "--force"]);
    run.status(1);
    assert!(
        run.stderr.contains("1 problem could not be repaired"),
        "{}",
        run.stderr
    );
    // The blob healed from its intact output; the edited output restored from its intact blob.
    assert_eq!(
        blake3::hash(&std::fs::read(blob(&p, &h1)).unwrap())
            .to_hex()
            .as_str(),
        h1
    );
    assert_eq!(
        std::fs::read(p.path("generated/harbor_2.png")).unwrap(),
        good_h2
    );
    assert_eq!(blake3::hash(&good_h2).to_hex().as_str(), h2);
    // The rotten blob with no intact copy is quarantined, not deleted; its output stays missing.
    assert!(!blob(&p, &light).exists());
    assert_eq!(
        std::fs::read(p.path(&format!(".wanx/quarantine/{light}"))).unwrap(),
        b"rot"
    );
    assert!(!p.exists("generated/lighthouse.png"));
    assert!(!p.path(".wanx/blobs/stray.tmp").exists());

    // What the cache could not restore, a build generates (once); then all is intact.
    let json = p.wanx(&["build", "--json"]).success().json();
    assert_eq!(json["generated"], 1);
    assert_eq!(p.ledger().submissions, 3);
    p.wanx(&["verify"]).success();
}

fn truncate_downloads(nth: Option<Vec<u64>>) -> EmulatorConfig {
    EmulatorConfig {
        latency: std::time::Duration::from_millis(20),
        faults: vec![FaultRule {
            on: FaultEvent::Download,
            nth,
            rate: None,
            model: None,
            fault: Fault::Truncate,
        }],
        ..EmulatorConfig::default()
    }
}

const ONE_TASK: &str =
    "[[task]]\nid = \"a\"\nmodel = \"wan2.2-t2i-flash\"\nsize = \"512*512\"\nprompt = \"x\"\n";

#[test]
fn a_truncated_download_is_fetched_again_and_never_cached() {
    let p = Project::with_emulator(truncate_downloads(Some(vec![1])));
    p.file("plans/a.toml", ONE_TASK);
    p.wanx(&["build"]).success();
    let ledger = p.ledger();
    assert_eq!(ledger.faults_injected, 1);
    assert_eq!(
        ledger.downloads, 2,
        "the truncated image was downloaded again"
    );
    assert_eq!(ledger.submissions, 1, "and not paid for again");
    // The output decodes completely, and the cache holds only whole images.
    decode_whole_png(&p.path("generated/a.png"));
    let blobs = files_under(&p.path(".wanx/blobs"));
    assert_eq!(blobs.len(), 1);
    assert_eq!(
        decode_whole_png(&blobs[0]),
        decode_whole_png(&p.path("generated/a.png"))
    );
    p.wanx(&["verify"]).success();
}

#[test]
fn a_download_truncated_every_time_fails_the_task_and_caches_nothing() {
    let p = Project::with_emulator(truncate_downloads(None));
    p.file("plans/a.toml", ONE_TASK);
    let run = p.wanx(&["build"]);
    run.status(1);
    assert!(run.stderr.contains("truncated"), "{}", run.stderr);
    assert!(
        !p.exists("generated/a.png"),
        "no truncated file in the outputs"
    );
    assert!(
        files_under(&p.path(".wanx/blobs")).is_empty(),
        "nothing was cached"
    );
    assert!(!p.read("wanx.lock").contains("[task.a]"));
    assert_eq!(p.ledger().submissions, 1);
}

#[test]
fn a_damaged_build_database_exits_6_not_1_and_nothing_is_sent() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    p.wanx(&["build"]).success();
    for leftover in ["wanx.db-wal", "wanx.db-shm"] {
        let _ = std::fs::remove_file(p.path(&format!(".wanx/{leftover}")));
    }
    std::fs::write(p.path(".wanx/wanx.db"), vec![b'x'; 8192]).unwrap();
    p.edit(
        "plans/a.toml",
        "a lighthouse at dusk",
        "a lighthouse at dawn",
    );

    let run = p.wanx(&["build"]);
    run.status(6);
    assert!(
        run.stderr.contains("the build database") && run.stderr.contains("wanx.db"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("hint: `.wanx/` is a cache"),
        "{}",
        run.stderr
    );
    assert_eq!(p.ledger().submissions, 2, "nothing was sent");
}
