//! One entry of `wanx.lock` and the values its text is made of: the format's version and header,
//! exact money amounts, project-relative output paths. The lock's readers and writer (the fast and
//! slow parsers, the mirror, the canonical text) all build on this file, and on nothing of each other.

use std::fmt::Write as _;

use crate::money::Money;

/// The format version this wanx reads and writes.
pub const LOCK_VERSION: u32 = 1;

/// The first line of every lock wanx writes.
pub(super) const HEADER: &str = "# This file is written by wanx. It records, per task, the request key and the images it produced.\n";

/// What one task last produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockEntry {
    /// The blake3 request key (hex).
    pub key: String,
    /// The real model id the request was sent to.
    pub model: String,
    /// How many images were requested and billed.
    pub images: u32,
    pub cost: Money,
    /// Unix seconds when the images were generated.
    pub generated_at: i64,
    pub outputs: Vec<LockOutput>,
}

/// One output file of a task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockOutput {
    /// Project-relative, `/`-separated.
    pub path: String,
    /// The blake3 of the file's bytes (hex).
    pub blake3: String,
    pub size: u64,
}

/// Parses a decimal yuan amount with at most six decimals into exact `Money`.
pub(super) fn parse_money(s: &str) -> Option<Money> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(frac) || frac.len() > 6 {
        return None;
    }
    if digits.contains('.') && frac.is_empty() {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let mut micros: i64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    for _ in frac.len()..6 {
        micros *= 10;
    }
    let abs = whole.checked_mul(1_000_000)?.checked_add(micros)?;
    Some(Money(if negative { -abs } else { abs }))
}

/// Whether `path` is project-relative and stays inside the project.
pub(super) fn is_project_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && !path.contains(':')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != ".." && part != ".")
}

/// Appends `0.56`, `2.00`, `0.183481`: the digits of `Money`'s display, without the currency sign.
pub(super) fn push_money(out: &mut String, m: Money) {
    if m.0 < 0 {
        out.push('-');
    }
    let abs = m.0.unsigned_abs();
    let (whole, mut frac, mut places) = (abs / 1_000_000, abs % 1_000_000, 6);
    while places > 2 && frac % 10 == 0 {
        frac /= 10;
        places -= 1;
    }
    let _ = write!(out, "{whole}.{frac:0places$}");
}
