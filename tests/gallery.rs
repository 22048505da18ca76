//! `wanx gallery` and `wanx watch --serve`, seen in a real headless Chromium: every task's card and
//! image load with its prompt, and a saved prompt edit replaces the card's image on the open page
//! without a reload.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::browser::Browser;
use crate::util::{Project, TWO_TASKS};

/// How long a whole test may wait for the page.
const DEADLINE: Duration = Duration::from_secs(90);

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let dest = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).unwrap();
        }
    }
}

/// This repository's example project, in `EXAMPLES/` of a temp dir, built against the emulator.
fn examples() -> Project {
    let p = Project::new();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(p.path(EXAMPLES)).unwrap();
    std::fs::copy(
        repo.join("wanx.toml"),
        p.path(&format!("{EXAMPLES}/wanx.toml")),
    )
    .unwrap();
    copy_dir(
        &repo.join("examples"),
        &p.path(&format!("{EXAMPLES}/examples")),
    );
    p.wanx(&["-C", EXAMPLES, "build", "--emulate", "-q"])
        .success();
    p
}

/// The example project's folder: the page's title.
const EXAMPLES: &str = "wanx-examples";

#[test]
fn gallery_writes_a_self_contained_page_of_every_task_in_graph_order() {
    let p = examples();
    let run = p.wanx(&["-C", EXAMPLES, "gallery", "--emulate", "--out", "site"]);
    run.success();
    let site = p.path(&format!("{EXAMPLES}/site"));
    assert_eq!(
        run.stdout.trim(),
        site.join("index.html").display().to_string()
    );
    let html = std::fs::read_to_string(site.join("index.html")).unwrap();
    let lock = p.read(&format!("{EXAMPLES}/wanx.lock"));
    let tasks: Vec<&str> = lock
        .lines()
        .filter_map(|l| l.strip_prefix("[task.\""))
        .map(|l| l.trim_end_matches("\"]"))
        .collect();
    assert!(tasks.len() >= 10, "the lock names {tasks:?}");
    for id in &tasks {
        assert!(
            html.contains(&format!("id=\"card-{id}\"")),
            "no card for {id}"
        );
    }
    // Nothing from the network: every image is in the folder, by hash.
    assert!(!html.contains("http://") && !html.contains("https://"));
    for src in html
        .split("src=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
    {
        assert!(
            site.join(src).is_file(),
            "{src} is not in the gallery folder"
        );
    }
    // Graph order: an edit comes after the task whose image it consumes.
    let at = |id: &str| html.find(&format!("id=\"card-{id}\"")).unwrap();
    assert!(at("castle") < at("castle-banner") && at("castle-banner") < at("castle-banner-clean"));
    assert!(
        html.contains("→ <b>castle-banner</b>"),
        "the chain is shown"
    );
    // Every card is fresh: the page says what `wanx plan --emulate` says, and sent nothing.
    assert_eq!(html.matches("data-status=\"fresh\"").count(), tasks.len());
}

#[test]
fn gallery_shows_a_tasks_earlier_versions_and_stale_status() {
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    p.wanx(&["build", "-q"]).success();
    p.edit(
        "plans/a.toml",
        "a lighthouse at dusk",
        "a lighthouse at dawn",
    );
    p.wanx(&["build", "-q"]).success();
    p.edit("plans/a.toml", "a quiet harbor", "a busy harbor");
    let before = p.ledger();
    p.wanx(&["gallery"]).success();
    let after = p.ledger();
    assert_eq!(
        (after.submissions, after.queries),
        (before.submissions, before.queries),
        "a gallery sends nothing"
    );
    let html = p.read(".wanx/gallery/index.html");
    let card = |id: &str| {
        let start = html.find(&format!("id=\"card-{id}\"")).unwrap();
        let end = html[start..].find("</article>").unwrap();
        html[start..start + end].to_owned()
    };
    let lighthouse = card("lighthouse");
    assert!(lighthouse.contains("Earlier versions (1)"), "{lighthouse}");
    assert!(lighthouse.contains("a lighthouse at dusk"));
    assert!(lighthouse.contains("data-status=\"fresh\""));
    let harbor = card("harbor");
    assert!(harbor.contains("data-status=\"stale\""), "{harbor}");
    assert!(
        harbor.contains("request changed: generate, ¥0.28"),
        "{harbor}"
    );
}

#[test]
fn the_gallery_of_the_examples_loads_every_card_and_image_in_a_browser() {
    let Some(browser) =
        Browser::start("the_gallery_of_the_examples_loads_every_card_and_image_in_a_browser")
    else {
        return;
    };
    let p = examples();
    let run = p.wanx(&["-C", EXAMPLES, "gallery", "--emulate"]);
    run.success();
    let index = run.stdout.trim().to_owned();
    browser.open(&format!("file://{index}"));
    let deadline = Instant::now() + DEADLINE;
    let expected = p
        .read(&format!("{EXAMPLES}/wanx.lock"))
        .matches("\nkey = ")
        .count() as u64;
    // One card per task, once the page has them all (waited for, not assumed).
    browser.wait_until(
        &format!("{expected} cards"),
        deadline,
        "return document.querySelectorAll('.card').length === arguments[0];",
        &json!([expected]),
    );
    let cards = expected;
    for i in 0..cards {
        // Thumbnails are lazy: bring each card into view, then wait for its images.
        let loaded = browser.wait_until(
            &format!("card {i}'s images"),
            deadline,
            "var c = document.querySelectorAll('.card')[arguments[0]]; c.scrollIntoView();
             var imgs = c.querySelectorAll('.images img');
             if (imgs.length === 0) return null;
             for (var j = 0; j < imgs.length; j++) if (!imgs[j].complete || imgs[j].naturalWidth === 0) return null;
             return { id: c.dataset.id, alt: imgs[0].alt, prompt: c.querySelector('.prompt').textContent,
                      width: imgs[0].naturalWidth, ratio: imgs[0].getAttribute('width') / imgs[0].getAttribute('height'),
                      shown: imgs[0].clientWidth / imgs[0].clientHeight };",
            &json!([i]),
        );
        assert!(loaded["width"].as_u64().unwrap() > 0);
        assert!(!loaded["prompt"].as_str().unwrap().is_empty(), "{loaded}");
        assert_eq!(
            loaded["alt"], loaded["prompt"],
            "the prompt is the alt text"
        );
        let (ratio, shown) = (
            loaded["ratio"].as_f64().unwrap(),
            loaded["shown"].as_f64().unwrap(),
        );
        assert!(
            (ratio - shown).abs() / ratio < 0.05,
            "aspect ratio kept: {loaded}"
        );
    }
    // The filter by status hides what does not match.
    let shown = browser.eval(
        "var s = document.getElementById('f-status'); s.value = 'failed'; s.dispatchEvent(new Event('change'));
         var n = document.querySelectorAll('.card:not([hidden])').length;
         s.value = ''; s.dispatchEvent(new Event('change')); return n;",
        &json!([]),
    );
    assert_eq!(shown, 0);
    // The README's screenshot.
    browser.eval("window.scrollTo(0, 0)", &json!([]));
    browser.wait_until(
        "the first row's images",
        deadline,
        "var imgs = Array.prototype.slice.call(document.querySelectorAll('.card img')).slice(0, 8);
         return imgs.every(function (i) { return i.complete && i.naturalWidth > 0; });",
        &json!([]),
    );
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gallery.png");
    std::fs::write(&out, &png).unwrap();
    if let Some(dest) = std::env::var_os("WANX_UPDATE_SCREENSHOT") {
        std::fs::write(Path::new(env!("CARGO_MANIFEST_DIR")).join(dest), &png).unwrap();
    }
}

#[test]
fn watch_serve_replaces_a_cards_image_in_place_when_its_prompt_is_saved() {
    let Some(browser) =
        Browser::start("watch_serve_replaces_a_cards_image_in_place_when_its_prompt_is_saved")
    else {
        return;
    };
    let p = Project::new();
    p.file("plans/a.toml", TWO_TASKS);
    let mut child = p
        .command(&["watch", "--emulate", "--serve", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, events) = mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + DEADLINE;
    let wait_for = |want: &dyn Fn(&Value) -> bool| loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = events.recv_timeout(left).expect("the watch's events");
        if want(&event) {
            return event;
        }
    };
    let serving = wait_for(&|e| e["event"] == "serving");
    let url = serving["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "loopback by default: {url}"
    );
    wait_for(&|e| e["event"] == "built" && e["seq"] == 0);
    browser.open(&url);
    let image = "var i = document.querySelector('#card-lighthouse .images img');
                 return i && i.complete && i.naturalWidth > 0 ? i.getAttribute('src') : null;";
    let before = browser.wait_until("the lighthouse's image", deadline, image, &json!([]));
    browser.eval("window.wanxNotReloaded = true", &json!([]));
    p.edit(
        "plans/a.toml",
        "a lighthouse at dusk",
        "a lighthouse in a storm",
    );
    let after = browser.wait_until(
        "a new lighthouse image on the open page",
        deadline,
        "var i = document.querySelector('#card-lighthouse .images img');
         if (!i || !i.complete || i.naturalWidth === 0 || i.getAttribute('src') === arguments[0]) return null;
         return { src: i.getAttribute('src'), alt: i.alt, kept: window.wanxNotReloaded === true,
                  status: document.getElementById('card-lighthouse').dataset.status };",
        &json!([before]),
    );
    assert_eq!(after["kept"], true, "the page was not reloaded");
    assert!(
        after["alt"]
            .as_str()
            .unwrap()
            .contains("a lighthouse in a storm"),
        "{after}"
    );
    // The other card is untouched, and the spend figure is there.
    let harbor = browser.eval(
        "return document.querySelectorAll('#card-harbor .images img').length",
        &json!([]),
    );
    assert_eq!(harbor, 2);
    browser.wait_until(
        "the session's spend",
        deadline,
        "var s = document.getElementById('session-spent'); return s && s.textContent !== '¥0.00' ? s.textContent : null;",
        &json!([]),
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn gallery_shows_a_task_that_failed_in_the_last_build_as_failed_until_it_is_built() {
    let p = Project::with_emulator_toml(
        "[[faults]]\non = \"submit\"\nnth = [1]\nfault = { kind = \"task_failed\", message = \"the algorithm failed\" }\n",
    );
    p.file(
        "plans/a.toml",
        "[[task]]\nid = \"one\"\nmodel = \"wan2.2-t2i-flash\"\nprompt = \"x\"\n",
    );
    p.wanx(&["build", "-q"]).status(1);
    p.wanx(&["gallery"]).success();
    let html = p.read(".wanx/gallery/index.html");
    let start = html.find("id=\"card-one\"").unwrap();
    let card = &html[start..start + html[start..].find("</article>").unwrap()];
    assert!(card.contains("data-status=\"failed\""), "{card}");
    assert!(card.contains("the algorithm failed"), "{card}");
    // Built at the next attempt: no longer failed.
    p.wanx(&["build", "-q"]).success();
    p.wanx(&["gallery"]).success();
    let html = p.read(".wanx/gallery/index.html");
    let start = html.find("id=\"card-one\"").unwrap();
    let card = &html[start..start + html[start..].find("</article>").unwrap()];
    assert!(card.contains("data-status=\"fresh\""), "{card}");
}
