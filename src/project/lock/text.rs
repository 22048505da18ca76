//! The canonical text of `wanx.lock` (see [`crate::project::lock`]), and how a changed lock is
//! written: the text a lock was read from or last written as is kept with the offset at which each
//! entry's section starts, so the next write copies every section whose entry did not change and
//! renders only the others. Under `wanx watch` an undo changes one entry of thousands: its write is
//! a copy of the file with one section replaced. Debug builds check each result against a full
//! rendering.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::entry::{HEADER, LOCK_VERSION, LockEntry, push_money};

/// A lock's text in canonical form.
#[derive(Debug)]
pub(super) struct Text {
    pub(super) source: String,
    /// Where each entry's section starts (the blank line before its `[task."…"]`), in id order.
    starts: Vec<usize>,
    /// The blake3 of `text`.
    pub(super) digest: [u8; 32],
}

impl Text {
    /// `text`, in canonical form, whose entries' sections start at `starts`.
    pub(super) fn new(text: String, starts: Vec<usize>) -> Text {
        let digest = *blake3::hash(text.as_bytes()).as_bytes();
        Text {
            source: text,
            starts,
            digest,
        }
    }

    /// [`Text::new`] for sections said to start at `starts` (a mirror's word): `None` unless there
    /// are `entries` of them, in order, each at the blank line before a `[task.` header.
    pub(super) fn at(text: String, starts: Vec<usize>, entries: usize) -> Option<Text> {
        let bytes = text.as_bytes();
        let sound = starts.len() == entries
            && starts.windows(2).all(|w| w[0] < w[1])
            && starts
                .iter()
                .all(|s| bytes.get(*s..).is_some_and(|b| b.starts_with(b"\n[task.")));
        sound.then(|| Text::new(text, starts))
    }

    /// The section of the `k`-th entry.
    fn section(&self, k: usize) -> &str {
        let end = self.starts.get(k + 1).copied().unwrap_or(self.source.len());
        &self.source[self.starts[k]..end]
    }

    pub(super) fn starts(&self) -> &[usize] {
        &self.starts
    }
}

/// The canonical text of `tasks`. With `old` (the text of an earlier state, and the ids changed
/// since, each with whether that text has an entry for it), each unchanged entry's section is
/// copied from it.
pub(super) fn render(
    tasks: &BTreeMap<String, LockEntry>,
    old: Option<(&Text, &BTreeMap<String, bool>)>,
) -> Text {
    let capacity = old.map_or(128 + tasks.len() * 640, |(t, changed)| {
        t.source.len() + changed.len() * 640
    });
    let mut out = String::with_capacity(capacity);
    out.push_str(HEADER);
    let _ = writeln!(out, "version = {LOCK_VERSION}");
    let mut starts = Vec::with_capacity(tasks.len());
    match old {
        None => {
            for (id, entry) in tasks {
                starts.push(out.len());
                push_entry(&mut out, id, entry);
            }
        }
        Some((old, changed)) => {
            // The ids the old text has and `tasks` no longer: their sections are skipped.
            let mut gone = changed
                .iter()
                .filter(|(id, had)| **had && !tasks.contains_key(*id))
                .map(|(id, _)| id.as_str())
                .peekable();
            let mut k = 0;
            for (id, entry) in tasks {
                while gone.next_if(|g| *g < id.as_str()).is_some() {
                    k += 1;
                }
                starts.push(out.len());
                match changed.get(id) {
                    None => {
                        out.push_str(old.section(k));
                        k += 1;
                    }
                    Some(had) => {
                        push_entry(&mut out, id, entry);
                        k += usize::from(*had);
                    }
                }
            }
            debug_assert_eq!(k + gone.count(), old.starts.len());
        }
    }
    let text = Text::new(out, starts);
    debug_assert!(
        old.is_none() || text.source == render(tasks, None).source,
        "a spliced lock differs from its full rendering"
    );
    text
}

/// Appends the section of one entry: a blank line, its table, its fields in a fixed order.
fn push_entry(out: &mut String, id: &str, entry: &LockEntry) {
    out.push_str("\n[task.");
    push_string(out, id);
    out.push_str("]\nkey = ");
    push_string(out, &entry.key);
    out.push_str("\nmodel = ");
    push_string(out, &entry.model);
    let _ = write!(out, "\nimages = {}\ncost = \"", entry.images);
    push_money(out, entry.cost);
    let _ = write!(
        out,
        "\"\ngenerated_at = {}\noutputs = [",
        entry.generated_at
    );
    if entry.outputs.is_empty() {
        out.push_str("]\n");
        return;
    }
    out.push('\n');
    for output in &entry.outputs {
        out.push_str("  { path = ");
        push_string(out, &output.path);
        out.push_str(", blake3 = ");
        push_string(out, &output.blake3);
        let _ = writeln!(out, ", size = {} }},", output.size);
    }
    out.push_str("]\n");
}

/// Appends `s` as a TOML basic string, escaping what TOML requires (quote, backslash, control
/// characters) and nothing else, so ids in any script stay readable.
pub(super) fn push_string(out: &mut String, s: &str) {
    out.push('"');
    if !s
        .bytes()
        .any(|b| b < b' ' || matches!(b, b'"' | b'\\' | 0x7f))
    {
        // The common case (hex digests, ordinary ids and paths): nothing to escape.
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c < ' ' || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
