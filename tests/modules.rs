//! The crate's module graph has no cycle (issue 13). Each file under `src/` is a module; an edge runs
//! from a module to every module it names (`crate::a::b`, `super::`, either with brace groups
//! expanded, or a child module's name in its parent, a `mod.rs` or an `x.rs` beside `x/`) outside
//! its own `#[cfg(test)]` code. A cycle means two stages know each other, which is
//! what the folders exist to prevent: the fix is to move the shared type down to the lower stage, or
//! to pass a value instead of importing the module that makes it.
//!
//! This reads the source as text, not through rustc: a cheap, deterministic check that fails on a new
//! cycle and names its modules and edges.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Module path (`plan::toml_format`, `plan` for `plan/mod.rs`) of every `.rs` file under `src/`.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, src: &Path, out: &mut BTreeMap<String, PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("src/ is readable") {
            let path = entry.expect("src/ is readable").path();
            if path.is_dir() {
                walk(&path, src, out);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            if parts == ["lib"] || parts == ["main"] {
                continue;
            }
            out.insert(parts.join("::"), path);
        }
    }
    let mut out = BTreeMap::new();
    walk(src, src, &mut out);
    out
}

/// The text of a module without its comments and its unit tests.
fn code(text: &str) -> String {
    let cut = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    text[..cut]
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The longest known module that `path` (segments after `crate::`) starts with.
fn resolve(path: &str, known: &BTreeMap<String, PathBuf>) -> Option<String> {
    let segments: Vec<&str> = path.split("::").collect();
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find(|candidate| known.contains_key(candidate))
}

/// Identifier-like paths (`a::b::c`) that start right after `prefix` in `text`, with a brace group
/// after one expanded (`a::{b, c::d}` gives `a`, `a::b` and `a::c::d`).
fn paths_after(text: &str, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().next_back();
        let after = &rest[at + prefix.len()..];
        let end = path_end(after);
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            let path = after[..end].trim_end_matches(':');
            found.push(path.to_string());
            if let Some(group) = after[end..].strip_prefix('{') {
                found.extend(group_items(group).into_iter().map(|item| join(path, &item)));
            }
        }
        rest = &after[end..];
    }
    found
}

fn path_end(text: &str) -> usize {
    text.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(text.len())
}

fn join(path: &str, item: &str) -> String {
    if path.is_empty() {
        item.to_string()
    } else {
        format!("{path}::{item}")
    }
}

/// The paths a brace group names, up to its closing brace (nested groups expanded).
fn group_items(group: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut rest = group;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        if rest.is_empty() || rest.starts_with('}') {
            return items;
        }
        let end = path_end(rest);
        let path = rest[..end].trim_end_matches(':');
        rest = &rest[end..];
        if let Some(inner) = rest.strip_prefix('{') {
            items.extend(group_items(inner).into_iter().map(|i| join(path, &i)));
            // Past the nested group's closing brace.
            let mut depth = 1;
            let close = inner
                .char_indices()
                .find(|(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(inner.len(), |(i, _)| i + 1);
            rest = &inner[close..];
        } else if !path.is_empty() && path != "self" {
            items.push(path.to_string());
        }
        // Past ` as name` and anything else up to the next item.
        rest = rest.trim_start_matches(|c: char| c != ',' && c != '}');
    }
}

fn graph(src: &Path) -> Graph {
    let known = modules(src);
    let mut graph = Graph::new();
    for (module, file) in &known {
        let text = code(&std::fs::read_to_string(file).unwrap());
        let mut edges = BTreeSet::new();
        for path in paths_after(&text, "crate::") {
            edges.extend(resolve(&path, &known));
        }
        let parent = module.rsplit_once("::").map(|(p, _)| p.to_string());
        if let Some(parent) = &parent {
            for path in paths_after(&text, "super::") {
                edges
                    .extend(resolve(&format!("{parent}::{path}"), &known).or(Some(parent.clone())));
            }
        }
        // A module (`mod.rs`, or `x.rs` beside `x/`) naming its own children without `crate::`.
        {
            for child in known
                .keys()
                .filter_map(|k| k.strip_prefix(&format!("{module}::")))
            {
                if !child.contains("::") && text.contains(&format!("{child}::")) {
                    edges.insert(format!("{module}::{child}"));
                }
            }
        }
        edges.remove(module);
        graph.insert(module.clone(), edges);
    }
    graph
}

/// Strongly connected components of more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in &s.graph[v] {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found.sort();
    s.found
}

#[test]
fn the_module_graph_has_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph(&src);
    assert!(
        graph.len() > 40,
        "found only {} modules under {}",
        graph.len(),
        src.display()
    );
    let found = cycles(&graph);
    let mut report = String::new();
    for component in &found {
        let _ = writeln!(report, "cycle among {}:", component.join(", "));
        for module in component {
            let inside: Vec<_> = graph[module]
                .iter()
                .filter(|m| component.contains(m))
                .collect();
            let _ = writeln!(report, "  {module} -> {inside:?}");
        }
    }
    assert!(found.is_empty(), "{report}");
}

#[test]
fn the_checker_sees_a_cycle() {
    let graph: Graph = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(m, e)| (m.to_string(), e.into_iter().map(str::to_string).collect()))
    .collect();
    assert_eq!(
        cycles(&graph),
        vec![vec!["a".to_string(), "b".to_string(), "c".to_string()]]
    );
    assert_eq!(
        paths_after("use crate::plan::raw::{Sink};\n x::crate::no", "crate::"),
        ["plan::raw", "plan::raw::Sink"]
    );
    assert_eq!(
        paths_after(
            "use crate::project::{self, lock::{LockFile, text as t}, manifest};",
            "crate::"
        ),
        [
            "project",
            "project::lock::LockFile",
            "project::lock::text",
            "project::manifest"
        ]
    );
    assert_eq!(
        paths_after("use super::{a, b::C};", "super::"),
        ["", "a", "b::C"]
    );
}
