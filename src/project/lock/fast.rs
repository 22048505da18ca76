//! The fast path: a strict line parser for exactly the text wanx writes ([`super::text`]). It returns
//! `None` at the first surprise; in particular it accepts only what wanx would have written
//! itself (ids in strictly ascending order, strings without escapes or control characters, numbers
//! in canonical decimal), so its result serializes back to the same bytes. Debug builds check that.
//!
//! It also returns where each entry's section starts, which the next write copies unchanged
//! sections from (see [`super::text`]).

use std::collections::BTreeMap;

use super::entry::{
    HEADER, LOCK_VERSION, LockEntry, LockOutput, is_project_relative, parse_money, push_money,
};

/// The entries of the canonical text `source`, and where their sections start.
pub(super) fn parse(source: &str) -> Option<(BTreeMap<String, LockEntry>, Vec<usize>)> {
    let body = source.strip_prefix(HEADER)?;
    let mut lines = body.split('\n');
    if lines.next()? != format!("version = {LOCK_VERSION}") {
        return None;
    }
    let mut tasks = BTreeMap::new();
    let mut starts = Vec::new();
    let mut scratch = String::new();
    let mut previous: Option<&str> = None;
    loop {
        // A blank line before each task; the file's last newline leaves one more blank piece.
        let blank = lines.next()?;
        if !blank.is_empty() {
            return None;
        }
        let Some(header) = lines.next() else {
            break;
        };
        let id = string(header.strip_prefix("[task.")?.strip_suffix(']')?)?;
        if previous.is_some_and(|p| p >= id) {
            return None;
        }
        previous = Some(id);
        let entry = entry(&mut lines, &mut scratch)?;
        // The section starts at its blank line (the newline that ends it).
        starts.push(blank.as_ptr() as usize - source.as_ptr() as usize);
        tasks.insert(id.to_owned(), entry);
    }
    debug_assert_eq!(
        super::text::render(&tasks, None).source,
        source,
        "the fast path accepted a non-canonical lock"
    );
    Some((tasks, starts))
}

fn entry<'a>(lines: &mut impl Iterator<Item = &'a str>, scratch: &mut String) -> Option<LockEntry> {
    let key = string(lines.next()?.strip_prefix("key = ")?)?.to_owned();
    let model = string(lines.next()?.strip_prefix("model = ")?)?.to_owned();
    let images = u32::try_from(unsigned(lines.next()?.strip_prefix("images = ")?)?).ok()?;
    let cost_text = string(lines.next()?.strip_prefix("cost = ")?)?;
    let cost = parse_money(cost_text)?;
    scratch.clear();
    push_money(scratch, cost);
    if scratch != cost_text {
        return None;
    }
    let generated_at = signed(lines.next()?.strip_prefix("generated_at = ")?)?;
    let mut outputs = Vec::new();
    match lines.next()? {
        "outputs = []" => {}
        "outputs = [" => {
            loop {
                let line = lines.next()?;
                if line == "]" {
                    break;
                }
                outputs.push(output(line)?);
            }
            // wanx writes no outputs as `[]`.
            if outputs.is_empty() {
                return None;
            }
        }
        _ => return None,
    }
    Some(LockEntry {
        key,
        model,
        images,
        cost,
        generated_at,
        outputs,
    })
}

fn output(line: &str) -> Option<LockOutput> {
    let rest = line.strip_prefix("  { path = ")?;
    let (path, rest) = string_prefix(rest)?;
    let rest = rest.strip_prefix(", blake3 = ")?;
    let (blake3, rest) = string_prefix(rest)?;
    let size = unsigned(rest.strip_prefix(", size = ")?.strip_suffix(" },")?)?;
    if !is_project_relative(path) {
        return None;
    }
    Some(LockOutput {
        path: path.to_owned(),
        blake3: blake3.to_owned(),
        size,
    })
}

/// The contents of a quoted string that is all of `s`.
fn string(s: &str) -> Option<&str> {
    match string_prefix(s)? {
        (inner, "") => Some(inner),
        _ => None,
    }
}

/// A quoted string at the start of `s`, and what follows it. Strings wanx would escape
/// (a backslash or a control character inside) are left to the slow path.
fn string_prefix(s: &str) -> Option<(&str, &str)> {
    let rest = s.strip_prefix('"')?;
    let end = rest.find('"')?;
    let inner = &rest[..end];
    if inner.bytes().any(|b| b < b' ' || b == b'\\' || b == 0x7f) {
        return None;
    }
    Some((inner, &rest[end + 1..]))
}

/// A decimal as wanx writes it: digits only, no leading zero.
fn unsigned(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical { s.parse().ok() } else { None }
}

fn signed(s: &str) -> Option<i64> {
    match s.strip_prefix('-') {
        Some(digits) if digits != "0" => {
            unsigned(digits)?;
            s.parse().ok()
        }
        Some(_) => None,
        None => i64::try_from(unsigned(s)?).ok(),
    }
}
