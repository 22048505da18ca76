//! The gallery's HTML, one template (maud, checked at compile time) for the static page of `wanx
//! gallery` and the live page of `wanx watch --serve`: a card per task with its images at their
//! aspect ratio (lazy thumbnails, the prompt as alt text, full size on click), its request, status
//! and earlier versions, a filter by plan file and status, and the totals. Everything is inline: no
//! CDN, no network. On a live page a small script follows the server's events and replaces a card in
//! place when it changes.

use std::collections::HashMap;

use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::gallery::{Card, Gallery, Image, format_date};
use crate::money::Money;

/// Statuses a card can have, in the filter's order.
pub const STATUSES: &[&str] = &["fresh", "stale", "failed", "planned", "generating"];

/// The whole page. `live`: served by `wanx watch --serve`, following its events.
pub fn page(gallery: &Gallery, live: bool) -> String {
    let firsts = first_images(gallery);
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (gallery.title) " · wanx gallery" }
                style { (PreEscaped(CSS)) }
            }
            body data-live=(live) {
                header {
                    h1 { (gallery.title) " " small { "wanx gallery" } }
                    (totals(gallery, None))
                    form #filters role="search" onsubmit="return false" {
                        label { "Plan " select #f-plan {
                            option value="" { "all plans" }
                            @for plan in &gallery.plans { option value=(plan) { (plan) } }
                        } }
                        label { "Status " select #f-status {
                            option value="" { "any status" }
                            @for s in STATUSES { option value=(s) { (s) } }
                        } }
                        output #count aria-live="polite" { (gallery.cards.len()) " tasks" }
                    }
                }
                main #cards {
                    @for c in &gallery.cards { (card_markup(c, &firsts)) }
                }
                @if gallery.cards.is_empty() {
                    p.empty { "No tasks: add a plan file (see `wanx init` or the README)." }
                }
                footer { "Made by wanx on " (format_date(gallery.made_at)) ". Statuses are what `wanx plan"
                    @if gallery.emulated { " --emulate" } "` would say." }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    };
    markup.into_string()
}

/// The totals line: all-time spent and saved from the ledger, and on a live page this session's
/// running spend.
pub fn totals(gallery: &Gallery, session: Option<(Money, Money)>) -> Markup {
    let real = &gallery.ledger.real;
    let emulated = &gallery.ledger.emulated;
    html! {
        p #totals {
            "Spent " b #spent { (real.spent) } ", saved " b #saved { (real.saved) }
            " over " (real.runs) " build" @if real.runs != 1 { "s" }
            @if emulated.runs > 0 {
                " · emulated: spent " (emulated.spent) ", saved " (emulated.saved) " (no real money)"
            }
            @if let Some((spent, saved)) = session {
                " · this session: spent " b #session-spent { (spent) } ", saved " (saved)
            }
        }
    }
}

/// One card, as the page shows it and as a live update replaces it.
pub fn card(c: &Card, gallery: &Gallery) -> String {
    card_markup(c, &first_images(gallery)).into_string()
}

fn first_images(gallery: &Gallery) -> HashMap<&str, &Image> {
    gallery
        .cards
        .iter()
        .filter_map(|c| c.images.first().map(|i| (c.id.as_str(), i)))
        .collect()
}

fn card_markup(c: &Card, firsts: &HashMap<&str, &Image>) -> Markup {
    html! {
        article.card id={"card-" (c.id)} data-id=(c.id) data-plan=(c.plan) data-status=(c.status)
            aria-labelledby={"t-" (c.id)} {
            div.images {
                @for image in &c.images { (thumb(image, &c.prompt, "")) }
                @if c.images.is_empty() { div.noimage { "no image yet" } }
            }
            div.body {
                h2 id={"t-" (c.id)} { (c.id) }
                p.status { span class={"badge " (c.status)} { (c.status) } " " span.reason { (c.reason) } }
                @if !c.inputs.is_empty() {
                    p.chain {
                        @for (i, input) in c.inputs.iter().enumerate() {
                            @if i > 0 { ", " }
                            a href={"#card-" (input)} {
                                @if let Some(image) = firsts.get(input.as_str()) {
                                    img.input src={"thumbs/" (image.hash) ".jpg"} alt="" width="32"
                                        height=(32 * image.height / image.width.max(1)) loading="lazy";
                                }
                                (input)
                            }
                        }
                        " → " b { (c.id) }
                    }
                }
                p.prompt { (c.prompt) }
                @if let Some(negative) = &c.negative_prompt {
                    p.negative { span { "negative" } " " (negative) }
                }
                dl {
                    dt { "model" } dd { (c.model) }
                    @if let Some(size) = &c.size { dt { "size" } dd { (size) } }
                    dt { "seed" } dd { @if let Some(seed) = c.seed { (seed) } @else { "random" } }
                    dt { "cost" } dd { (c.cost) }
                    dt { "made" } dd { @if let Some(at) = c.made_at { time { (format_date(at)) } } @else { "never" } }
                    dt { "key" } dd { code title=(c.key) { (c.key.get(..12).unwrap_or(&c.key)) } }
                    dt { "plan" } dd { (c.plan) }
                }
                @if !c.history.is_empty() {
                    details.history {
                        summary { "Earlier versions (" (c.history.len()) ")" }
                        ol {
                            @for v in &c.history {
                                li {
                                    @for image in &v.images { (thumb(image, &v.prompt, "small")) }
                                    p { (v.prompt) }
                                    p.meta { time { (format_date(v.made_at)) } " · " code title=(v.key) { (v.key.get(..12).unwrap_or(&v.key)) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A lazy thumbnail at the image's aspect ratio, linking to the full-size image.
fn thumb(image: &Image, prompt: &str, class: &str) -> Markup {
    html! {
        a.full class=(class) href={"images/" (image.hash) "." (image.ext)}
            title={ "full size, " (image.width) "×" (image.height) } {
            img src={"thumbs/" (image.hash) ".jpg"} alt=(prompt) width=(image.width)
                height=(image.height) loading="lazy" decoding="async" data-hash=(image.hash);
        }
    }
}

const CSS: &str = r"
:root { color-scheme: light dark; --fg: #1d1d1f; --bg: #f5f5f7; --card: #fff; --muted: #6e6e73;
  --line: #d2d2d7; --fresh: #1a7f37; --stale: #9a6700; --failed: #cf222e; --live: #0969da; }
@media (prefers-color-scheme: dark) { :root { --fg: #f5f5f7; --bg: #161617; --card: #232325;
  --muted: #a1a1a6; --line: #3a3a3c; --fresh: #3fb950; --stale: #d29922; --failed: #f85149; --live: #58a6ff; } }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; color: var(--fg); background: var(--bg); }
header { padding: 1rem; border-bottom: 1px solid var(--line); position: sticky; top: 0; background: var(--bg); z-index: 1; }
h1 { margin: 0 0 .25rem; font-size: 1.4rem; } h1 small { color: var(--muted); font-weight: normal; font-size: .9rem; }
#totals { margin: 0 0 .5rem; color: var(--muted); } #totals b { color: var(--fg); }
form { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: center; }
select { font: inherit; padding: .2rem; }
#cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 280px), 1fr)); gap: 1rem; padding: 1rem; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; overflow: hidden;
  content-visibility: auto; contain-intrinsic-size: auto 560px; display: flex; flex-direction: column; }
.card[hidden] { display: none; }
.card:target, .card:focus-within { outline: 2px solid var(--live); }
.images { display: flex; flex-wrap: wrap; gap: 2px; background: var(--line); }
.images a { flex: 1 1 45%; display: block; }
.images a:only-child { flex-basis: 100%; }
img { display: block; width: 100%; height: auto; }
a:focus-visible, summary:focus-visible, select:focus-visible { outline: 3px solid var(--live); outline-offset: 2px; }
.noimage { padding: 3rem 1rem; text-align: center; color: var(--muted); width: 100%; background: var(--card); }
.body { padding: .6rem .8rem .8rem; }
h2 { margin: 0; font-size: 1.05rem; word-break: break-all; }
.status { margin: .2rem 0; font-size: .85rem; color: var(--muted); }
.badge { display: inline-block; padding: 0 .45rem; border-radius: 99px; color: #fff; font-weight: 600; background: var(--muted); }
.badge.fresh { background: var(--fresh); } .badge.stale { background: var(--stale); }
.badge.failed { background: var(--failed); } .badge.planned, .badge.generating { background: var(--live); }
.chain { font-size: .85rem; margin: .3rem 0; } .chain a { color: var(--live); }
.chain img.input { display: inline-block; width: 32px; vertical-align: middle; margin-right: .2rem; border-radius: 3px; }
.prompt { margin: .4rem 0; }
.negative { margin: .2rem 0; font-size: .85rem; color: var(--muted); }
.negative span { font-weight: 600; }
dl { display: grid; grid-template-columns: auto 1fr; gap: 0 .6rem; margin: .4rem 0 0; font-size: .82rem; }
dt { color: var(--muted); } dd { margin: 0; overflow-wrap: anywhere; }
details { margin-top: .5rem; font-size: .85rem; }
details ol { list-style: none; padding: 0; margin: .4rem 0 0; display: grid; gap: .6rem; }
details li { border-top: 1px solid var(--line); padding-top: .4rem; }
details li a.small { display: inline-block; width: 96px; margin-right: 2px; }
details p { margin: .2rem 0; } .meta { color: var(--muted); }
footer { padding: 1rem; color: var(--muted); font-size: .8rem; }
.empty { padding: 1rem; }
";

const SCRIPT: &str = r"
(function () {
  var cards = document.getElementById('cards');
  var plan = document.getElementById('f-plan');
  var status = document.getElementById('f-status');
  var count = document.getElementById('count');
  function filter() {
    var all = cards.querySelectorAll('.card'), shown = 0;
    for (var i = 0; i < all.length; i++) {
      var c = all[i];
      var ok = (!plan.value || c.dataset.plan === plan.value) &&
               (!status.value || c.dataset.status === status.value);
      c.hidden = !ok;
      if (ok) shown++;
    }
    count.textContent = shown === all.length ? all.length + ' tasks' : shown + ' of ' + all.length + ' tasks';
  }
  plan.addEventListener('change', filter);
  status.addEventListener('change', filter);
  if (document.body.dataset.live !== 'true' || !window.EventSource) return;
  var events = new EventSource('events');
  function parse(html) {
    var t = document.createElement('template');
    t.innerHTML = html.trim();
    return t.content.firstElementChild;
  }
  events.addEventListener('card', function (e) {
    var d = JSON.parse(e.data), fresh = parse(d.html);
    var old = document.getElementById('card-' + d.id);
    var focused = old && old.contains(document.activeElement);
    if (old) old.replaceWith(fresh); else cards.appendChild(fresh);
    if (focused) { var f = fresh.querySelector('a, summary'); if (f) f.focus(); }
    filter();
  });
  events.addEventListener('remove', function (e) {
    var old = document.getElementById('card-' + JSON.parse(e.data).id);
    if (old) old.remove();
    filter();
  });
  events.addEventListener('order', function (e) {
    JSON.parse(e.data).forEach(function (id) {
      var c = document.getElementById('card-' + id);
      if (c) cards.appendChild(c);
    });
  });
  events.addEventListener('totals', function (e) {
    document.getElementById('totals').replaceWith(parse(JSON.parse(e.data).html));
  });
})();
";
