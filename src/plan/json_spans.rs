//! Byte spans of the values in a JSON document, keyed by JSON pointer (RFC 6901), so errors found after
//! `serde_json` has parsed a seed plan can still point at the offending value. A small hand-written
//! scanner: it expects JSON that `serde_json` already accepted, and never panics on anything else.
//! Its recursion is bounded: values nested deeper than [`MAX_DEPTH`] are skipped by an iterative scan
//! and get no span of their own (serde_json ignores values without a depth limit, so a 10,000-deep
//! array can reach this scanner).

use std::collections::HashMap;
use std::ops::Range;

/// How deep the scanner records spans (serde_json's own recursion limit is 128).
pub const MAX_DEPTH: usize = 128;

/// Maps every value's JSON pointer (`""` for the root, `/batches/0/tasks/2/parameters/size`) to the byte
/// range of that value in `src` (strings include their quotes).
pub fn spans(src: &str) -> HashMap<String, Range<usize>> {
    let mut scanner = Scanner {
        src,
        bytes: src.as_bytes(),
        pos: 0,
        pointer: String::new(),
        out: HashMap::new(),
        depth: 0,
    };
    scanner.value();
    scanner.out
}

struct Scanner<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    pointer: String,
    out: HashMap<String, Range<usize>>,
    /// Objects and arrays open around the cursor.
    depth: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
    }

    /// Scans one value at the cursor and records its span under the current pointer.
    fn value(&mut self) {
        self.whitespace();
        let start = self.pos;
        match self.peek() {
            None => return,
            Some(b'{' | b'[') if self.depth >= MAX_DEPTH => self.skip_nested(),
            Some(b'{') => {
                self.depth += 1;
                self.object();
                self.depth -= 1;
            }
            Some(b'[') => {
                self.depth += 1;
                self.array();
                self.depth -= 1;
            }
            Some(b'"') => self.string(),
            Some(_) => {
                while !matches!(
                    self.peek(),
                    None | Some(b',' | b']' | b'}' | b' ' | b'\t' | b'\r' | b'\n')
                ) {
                    self.pos += 1;
                }
            }
        }
        self.out.insert(self.pointer.clone(), start..self.pos);
    }

    /// Moves past the object or array at the cursor without recursing or recording anything.
    fn skip_nested(&mut self) {
        let mut open = 0usize;
        while let Some(b) = self.peek() {
            match b {
                b'"' => {
                    self.string();
                    continue;
                }
                b'{' | b'[' => open += 1,
                b'}' | b']' => {
                    open = open.saturating_sub(1);
                    if open == 0 {
                        self.pos += 1;
                        return;
                    }
                }
                _ => {}
            }
            self.pos += 1;
        }
    }

    /// Moves past a string starting at the cursor's `"`.
    fn string(&mut self) {
        self.pos += 1;
        while let Some(b) = self.peek() {
            self.pos += 1;
            match b {
                b'\\' => self.pos += 1,
                b'"' => return,
                _ => {}
            }
        }
    }

    fn object(&mut self) {
        self.pos += 1;
        loop {
            self.whitespace();
            match self.peek() {
                Some(b'"') => {}
                Some(b'}') => {
                    self.pos += 1;
                    return;
                }
                _ => return,
            }
            let key_start = self.pos;
            self.string();
            let raw = &self.src[key_start..self.pos.min(self.src.len())];
            let key = if raw.contains('\\') {
                serde_json::from_str::<String>(raw).unwrap_or_default()
            } else {
                raw.trim_matches('"').to_owned()
            };
            self.whitespace();
            if self.peek() != Some(b':') {
                return;
            }
            self.pos += 1;
            let len = self.pointer.len();
            self.pointer.push('/');
            push_escaped(&mut self.pointer, &key);
            self.value();
            self.pointer.truncate(len);
            self.whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return;
                }
                _ => return,
            }
        }
    }

    fn array(&mut self) {
        self.pos += 1;
        self.whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return;
        }
        let mut index = 0usize;
        loop {
            let len = self.pointer.len();
            self.pointer.push('/');
            self.pointer.push_str(&index.to_string());
            self.value();
            self.pointer.truncate(len);
            index += 1;
            self.whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return;
                }
                _ => return,
            }
        }
    }
}

/// RFC 6901: `~` is written `~0` and `/` is written `~1`.
fn push_escaped(pointer: &mut String, key: &str) {
    for c in key.chars() {
        match c {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            c => pointer.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text<'a>(src: &'a str, map: &HashMap<String, Range<usize>>, pointer: &str) -> &'a str {
        &src[map[pointer].clone()]
    }

    #[test]
    fn maps_nested_values_to_their_bytes() {
        let src = r#" {"a": [1, {"b": "x\"y"}, true], "c": {"d": null, "e": -1.5e3}, "f": []} "#;
        let map = spans(src);
        assert_eq!(text(src, &map, ""), &src[1..src.len() - 1]);
        assert_eq!(text(src, &map, "/a/0"), "1");
        assert_eq!(text(src, &map, "/a/1/b"), r#""x\"y""#);
        assert_eq!(text(src, &map, "/a/2"), "true");
        assert_eq!(text(src, &map, "/c/d"), "null");
        assert_eq!(text(src, &map, "/c/e"), "-1.5e3");
        assert_eq!(text(src, &map, "/f"), "[]");
        assert!(!map.contains_key("/f/0"));
    }

    #[test]
    fn escapes_keys_and_decodes_escaped_keys() {
        let src = "{\"a/b\": 1, \"t~\": 2, \"\\u0041\": 3, \"中文\": \"值\"}";
        let map = spans(src);
        assert_eq!(text(src, &map, "/a~1b"), "1");
        assert_eq!(text(src, &map, "/t~0"), "2");
        assert_eq!(text(src, &map, "/A"), "3");
        assert_eq!(text(src, &map, "/中文"), "\"值\"");
    }

    #[test]
    fn deep_nesting_is_skipped_past_the_depth_limit_without_recursing() {
        let depth = 100_000;
        let src = format!(
            "{{\"a\": {}{}, \"b\": 2}}",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let map = spans(&src);
        assert_eq!(text(&src, &map, "/b"), "2");
        assert!(map.contains_key(&format!("/a{}", "/0".repeat(MAX_DEPTH - 2))));
        assert!(!map.contains_key(&format!("/a{}", "/0".repeat(MAX_DEPTH + 1))));
    }

    #[test]
    fn never_panics_on_broken_input() {
        for src in [
            "",
            "{",
            "{\"a\"",
            "{\"a\":",
            "[1,",
            "\"abc",
            "{\"a\" 1}",
            "]",
        ] {
            let _ = spans(src);
        }
    }
}
