//! `reconcile`: the pure decision at the heart of a build. From the tasks (with their keys), what
//! `wanx.lock` records, what the store holds and what is on disk, it chooses one action per task:
//! `fresh` (nothing to do), `restore` (copy from the blob store, free) or `generate` (paid), each with
//! its reason and its price. It performs no I/O; `wanx plan` prints exactly its result.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::compile::cache_key::CacheKey;
use crate::money::Money;
use crate::plan::task::OutputSpec;
use crate::tree::output_name;

/// One task as reconcile sees it.
pub struct Item<'a> {
    pub id: &'a str,
    pub key: CacheKey,
    pub n: u32,
    /// The candidates written as outputs (1-based), when not all `n`.
    pub pick: Option<&'a [u32]>,
    /// Price of one image.
    pub price: Money,
    pub output: &'a OutputSpec,
}

/// A generation that is recorded somewhere: in the lock (with its output paths) or in the store.
/// It borrows from the lock or the store's results: a snapshot of a large project copies no string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded<'a> {
    pub key: &'a str,
    pub generated_at: i64,
    /// blake3 of each image, in index order.
    pub images: Vec<&'a str>,
    /// Project-relative output paths, in index order (from the lock; empty for store results).
    pub outputs: Vec<&'a str>,
}

/// Everything reconcile may look at, gathered beforehand.
#[derive(Default)]
pub struct Snapshot<'a> {
    /// `wanx.lock` entries by task id.
    pub lock: HashMap<&'a str, Recorded<'a>>,
    /// Store results by key hex.
    pub cached: HashMap<&'a str, Recorded<'a>>,
    /// Blobs present in the blob store.
    pub blobs: HashSet<&'a str>,
    /// The blake3 of files on disk at the paths of interest; `None` when missing.
    pub disk: HashMap<&'a str, Option<Cow<'a, str>>>,
    /// Images an earlier build paid for under a key without completing it, by key hex: a
    /// generation of that key asks only for the rest.
    pub partial: HashMap<&'a str, u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Fresh,
    /// Copy these blobs to the outputs; free.
    Restore {
        images: Vec<String>,
        generated_at: i64,
    },
    /// Pay for a new generation.
    Generate,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Fresh => "fresh",
            Action::Restore { .. } => "restore",
            Action::Generate => "generate",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    UpToDate,
    /// The lock has no entry for the task.
    New,
    /// The lock has no entry for the task, but the cache has its images (a task added back).
    NewCached,
    /// The compiled request differs from the one the lock records.
    Changed,
    OutputMissing(String),
    OutputModified(String),
    /// The output naming changed; the images did not.
    Renamed,
    Forced,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::UpToDate => f.write_str("up to date"),
            Reason::New => f.write_str("new task"),
            Reason::NewCached => f.write_str("not in `wanx.lock`, but cached"),
            Reason::Changed => f.write_str("request changed"),
            Reason::OutputMissing(p) => write!(f, "`{p}` is missing"),
            Reason::OutputModified(p) => write!(f, "`{p}` was modified"),
            Reason::Renamed => f.write_str("output names changed"),
            Reason::Forced => f.write_str("--force"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub reason: Reason,
    /// Where the images are or will be. For `generate`, predicted with the build's start time.
    pub outputs: Vec<String>,
    /// What this task's images cost at the registry price: paid for `generate` (less the images an
    /// earlier build already paid for), saved otherwise.
    pub value: Money,
    /// For `generate`: images an earlier build paid for under this key, kept and not requested
    /// again. Zero otherwise.
    pub held: u32,
    /// For `restore`: the images come from the remote cache (see `remote_cache`).
    pub remote: bool,
}

impl Decision {
    /// Money this decision spends.
    pub fn cost(&self) -> Money {
        if self.action == Action::Generate {
            self.value
        } else {
            Money::ZERO
        }
    }

    /// Money this decision keeps from being paid again: a restore's price. A fresh task saves
    /// nothing new (its images were already there), so it is not counted again on every no-op.
    pub fn saved(&self) -> Money {
        if matches!(self.action, Action::Restore { .. }) {
            self.value
        } else {
            Money::ZERO
        }
    }
}

/// Decides every item; `force` says which to generate whatever is cached. `now` predicts
/// `{timestamp}` names for generations.
pub fn reconcile(
    items: &[Item<'_>],
    snapshot: &Snapshot<'_>,
    force: impl Fn(&str) -> bool,
    now: i64,
) -> Vec<Decision> {
    items
        .iter()
        .map(|item| decide(item, snapshot, force(item.id), now))
        .collect()
}

fn decide<'s>(item: &Item<'_>, snap: &Snapshot<'s>, force: bool, now: i64) -> Decision {
    let value = item.price.times(item.n);
    let hex = item.key.to_hex();
    let key: &str = &hex;
    // With a pick, the outputs are the picked candidates of the pool (known from the store only).
    let written = item.pick.map_or(item.n, |p| p.len() as u32);
    let paths = |at: i64| output_name::render(item.output, item.id, written, &item.key, at);
    let picked = |pool: &[&'s str]| picked(pool, item.n, item.pick);
    let pool_picked = snap.cached.get(key).and_then(|rec| picked(&rec.images));
    let generate = |reason: Reason| {
        let held = snap.partial.get(key).map_or(0, |h| (*h).min(item.n));
        Decision {
            action: Action::Generate,
            reason,
            outputs: paths(now),
            value: item.price.times(item.n - held),
            held,
            remote: false,
        }
    };
    if force {
        return generate(Reason::Forced);
    }
    // The lock's record of this pool, used as is only when it holds exactly `n` images.
    let pooled = snap.lock.get(item.id).filter(|r| r.key == key);
    let locked = pooled.filter(|r| match item.pick {
        None => r.images.len() == item.n as usize,
        // Fresh only while its outputs are the picked candidates of the pool.
        Some(_) => pool_picked.as_deref() == Some(&r.images[..]),
    });
    let reason = match (snap.lock.get(item.id), locked) {
        (None, _) => Reason::New,
        (Some(_), None) => Reason::Changed,
        (Some(_), Some(rec)) => match check_outputs(rec, &paths(rec.generated_at), snap) {
            None => {
                return Decision {
                    action: Action::Fresh,
                    reason: Reason::UpToDate,
                    outputs: owned(&rec.outputs),
                    value,
                    held: 0,
                    remote: false,
                };
            }
            Some(reason) => reason,
        },
    };
    // Not fresh: restore from the blob store if some record of this pool has the first `n` images
    // there (a pool of four restores a task of one for free).
    // The lock's record is a pool only without a pick (with one, it holds the picked outputs).
    let source = snap
        .cached
        .get(key)
        .into_iter()
        .chain(pooled.filter(|_| item.pick.is_none()))
        .find_map(|rec| {
            picked(&rec.images)
                .filter(|images| images.iter().all(|h| snap.blobs.contains(h)))
                .map(|images| (rec, images))
        });
    match source {
        Some((rec, images)) => Decision {
            action: Action::Restore {
                images: owned(&images),
                generated_at: rec.generated_at,
            },
            reason: if reason == Reason::New {
                Reason::NewCached
            } else {
                reason
            },
            outputs: paths(rec.generated_at),
            value,
            held: 0,
            remote: false,
        },
        None => generate(reason),
    }
}

/// The images of `pool` a task of `n` writes: the first `n`, or the picked candidates among them.
/// `None` while the pool holds fewer than `n`.
fn picked<'s>(pool: &[&'s str], n: u32, pick: Option<&[u32]>) -> Option<Vec<&'s str>> {
    match pick {
        _ if pool.len() < n as usize => None,
        None => Some(pool[..n as usize].to_vec()),
        Some(picks) => picks
            .iter()
            .map(|i| pool.get((*i as usize).wrapping_sub(1)).copied())
            .collect(),
    }
}

fn owned(strings: &[&str]) -> Vec<String> {
    strings.iter().map(|s| (*s).to_owned()).collect()
}

/// `None` when every output the lock records is where the current naming puts it, with its bytes.
fn check_outputs(rec: &Recorded<'_>, expected: &[String], snap: &Snapshot<'_>) -> Option<Reason> {
    if !expected
        .iter()
        .map(String::as_str)
        .eq(rec.outputs.iter().copied())
    {
        return Some(Reason::Renamed);
    }
    for (path, hash) in rec.outputs.iter().zip(&rec.images) {
        match snap.disk.get(path) {
            Some(Some(on_disk)) if on_disk == hash => {}
            Some(Some(_)) => return Some(Reason::OutputModified((*path).to_owned())),
            _ => return Some(Reason::OutputMissing((*path).to_owned())),
        }
    }
    None
}

/// Totals over a set of decisions, for `wanx plan` and the report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub fresh: usize,
    pub restore: usize,
    /// Of `restore`, those from the remote cache.
    pub restore_remote: usize,
    pub generate: usize,
    pub images_to_generate: u32,
    pub cost: Money,
    pub saved: Money,
}

impl Totals {
    /// `2 to generate (3 images, ¥0.42 (emulated)), 1 to restore, 4 fresh`.
    pub fn describe(&self, emulated: bool) -> String {
        let label = if emulated { " (emulated)" } else { "" };
        let plural = if self.images_to_generate == 1 {
            ""
        } else {
            "s"
        };
        let remote = if self.restore_remote > 0 {
            format!(" ({} from the remote cache)", self.restore_remote)
        } else {
            String::new()
        };
        format!(
            "{} to generate ({} image{plural}, {}{label}), {} to restore{remote}, {} fresh",
            self.generate, self.images_to_generate, self.cost, self.restore, self.fresh
        )
    }
}

pub fn totals<'a>(decisions: impl IntoIterator<Item = (&'a Decision, u32)>) -> Totals {
    let mut t = Totals::default();
    for (d, n) in decisions {
        match d.action {
            Action::Fresh => t.fresh += 1,
            Action::Restore { .. } => {
                t.restore += 1;
                t.restore_remote += usize::from(d.remote);
            }
            Action::Generate => {
                t.generate += 1;
                t.images_to_generate += n - d.held;
            }
        }
        t.cost += d.cost();
        t.saved += d.saved();
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> CacheKey {
        CacheKey::from_hex(&format!("{byte:02x}").repeat(32)).unwrap()
    }

    fn spec() -> OutputSpec {
        OutputSpec {
            dir: "out".into(),
            filename: "{id}_{index}.png".into(),
        }
    }

    fn item<'a>(id: &'a str, k: CacheKey, output: &'a OutputSpec) -> Item<'a> {
        Item {
            id,
            key: k,
            n: 2,
            pick: None,
            price: Money::from_yuan(0.14),
            output,
        }
    }

    fn recorded<'a>(k: CacheKey, outputs: &[&'a str]) -> Recorded<'a> {
        Recorded {
            key: k.hex().leak(),
            generated_at: 100,
            images: vec!["h1", "h2"],
            outputs: outputs.to_vec(),
        }
    }

    fn snapshot_with_outputs(k: CacheKey) -> Snapshot<'static> {
        let mut s = Snapshot::default();
        s.lock
            .insert("a", recorded(k, &["out/a_1.png", "out/a_2.png"]));
        s.disk.insert("out/a_1.png", Some("h1".into()));
        s.disk.insert("out/a_2.png", Some("h2".into()));
        s
    }

    #[test]
    fn matching_lock_and_disk_is_fresh_and_saves_nothing_new() {
        let o = spec();
        let d = reconcile(
            &[item("a", key(1), &o)],
            &snapshot_with_outputs(key(1)),
            |_| false,
            0,
        );
        assert_eq!(d[0].action, Action::Fresh);
        assert_eq!(d[0].saved(), Money::ZERO);
        assert_eq!(d[0].cost(), Money::ZERO);
    }

    #[test]
    fn a_missing_output_is_restored_from_blobs() {
        let o = spec();
        let mut s = snapshot_with_outputs(key(1));
        s.disk.insert("out/a_2.png", None);
        s.blobs.extend(["h1", "h2"]);
        let d = &reconcile(&[item("a", key(1), &o)], &s, |_| false, 0)[0];
        assert_eq!(
            d.action,
            Action::Restore {
                images: vec!["h1".into(), "h2".into()],
                generated_at: 100
            }
        );
        assert_eq!(d.reason, Reason::OutputMissing("out/a_2.png".into()));
    }

    #[test]
    fn a_missing_output_without_blobs_is_generated() {
        let o = spec();
        let mut s = snapshot_with_outputs(key(1));
        s.disk.insert("out/a_1.png", Some("edited".into()));
        let d = &reconcile(&[item("a", key(1), &o)], &s, |_| false, 0)[0];
        assert_eq!(d.action, Action::Generate);
        assert_eq!(d.reason, Reason::OutputModified("out/a_1.png".into()));
        assert_eq!(d.cost(), Money::from_yuan(0.28));
    }

    #[test]
    fn a_changed_key_generates_unless_the_store_has_it() {
        let o = spec();
        let mut s = snapshot_with_outputs(key(1));
        let d = &reconcile(&[item("a", key(2), &o)], &s, |_| false, 7)[0];
        assert_eq!(
            (d.action.clone(), d.reason.clone()),
            (Action::Generate, Reason::Changed)
        );
        let hex: &str = key(2).hex().leak();
        s.cached.insert(
            hex,
            Recorded {
                key: hex,
                generated_at: 50,
                images: vec!["x1", "x2"],
                outputs: vec![],
            },
        );
        s.blobs.extend(["x1", "x2"]);
        let d = &reconcile(&[item("a", key(2), &o)], &s, |_| false, 7)[0];
        assert_eq!(
            d.action,
            Action::Restore {
                images: vec!["x1".into(), "x2".into()],
                generated_at: 50
            }
        );
        assert_eq!(d.cost(), Money::ZERO);
    }

    #[test]
    fn renaming_the_pattern_restores_instead_of_paying() {
        let renamed = OutputSpec {
            dir: "out".into(),
            filename: "hero-{index}.png".into(),
        };
        let mut s = snapshot_with_outputs(key(1));
        s.blobs.extend(["h1", "h2"]);
        let d = &reconcile(&[item("a", key(1), &renamed)], &s, |_| false, 0)[0];
        assert_eq!(d.reason, Reason::Renamed);
        assert!(matches!(d.action, Action::Restore { .. }));
        assert_eq!(d.outputs, vec!["out/hero-1.png", "out/hero-2.png"]);
    }

    #[test]
    fn new_and_forced_tasks_generate() {
        let o = spec();
        let d = reconcile(
            &[item("new", key(3), &o)],
            &Snapshot::default(),
            |_| false,
            0,
        );
        assert_eq!(d[0].reason, Reason::New);
        let d = reconcile(
            &[item("a", key(1), &o)],
            &snapshot_with_outputs(key(1)),
            |_| true,
            0,
        );
        assert_eq!(
            (d[0].action.clone(), d[0].reason.clone()),
            (Action::Generate, Reason::Forced)
        );
    }

    #[test]
    fn a_pool_of_four_restores_a_smaller_n_or_the_picked_candidates() {
        let o = spec();
        let hex = key(6).hex();
        let mut snap = Snapshot::default();
        let pool = Recorded {
            key: &hex,
            generated_at: 7,
            images: vec!["p1", "p2", "p3", "p4"],
            outputs: vec![],
        };
        snap.cached.insert(&hex, pool);
        snap.blobs.extend(["p1", "p2", "p3", "p4"]);
        let restored = |d: &Decision| match &d.action {
            Action::Restore { images, .. } => images.clone(),
            other => panic!("{other:?}"),
        };
        let d = reconcile(&[item("a", key(6), &o)], &snap, |_| false, 0);
        assert_eq!(restored(&d[0]), ["p1", "p2"]);
        let picks = [3];
        let mut picked = item("a", key(6), &o);
        picked.pick = Some(&picks);
        let d = reconcile(&[picked], &snap, |_| false, 0);
        assert_eq!(restored(&d[0]), ["p3"]);
        assert_eq!(d[0].outputs.len(), 1);
        assert_eq!(super::picked(&["p1"], 2, None), None, "short of n");
    }

    #[test]
    fn a_generation_with_a_partial_result_is_priced_for_the_missing_images_only() {
        let o = spec();
        let mut snap = Snapshot::default();
        let hex = key(4).hex();
        snap.partial.insert(&hex, 1);
        let d = reconcile(&[item("p", key(4), &o)], &snap, |_| false, 0);
        assert_eq!((d[0].action.clone(), d[0].held), (Action::Generate, 1));
        assert_eq!(d[0].cost(), Money::from_yuan(0.14));
        let t = totals(d.iter().map(|d| (d, 2)));
        assert_eq!((t.images_to_generate, t.cost), (1, Money::from_yuan(0.14)));
        // Another key's partial is not this one's.
        let d = reconcile(&[item("q", key(5), &o)], &snap, |_| false, 0);
        assert_eq!((d[0].held, d[0].cost()), (0, Money::from_yuan(0.28)));
    }
}
