//! `wanx graph`: the task graph (which task consumes which task's images), as a text tree, Graphviz
//! `dot` or Mermaid, with the tasks a build would not leave alone marked stale.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use crate::build::{self, Project};
use crate::cli::{Format, Selection};
use crate::error::Result;
use crate::planner::reconcile::Action;
use crate::planner::upstream_ids;

pub fn graph(project: &Project, emulate: bool, format: Format) -> Result<String> {
    let selection = Selection {
        tasks: Vec::new(),
        emulate,
        ..Selection::default()
    };
    let planned = build::plan(project, &selection, &HashSet::new())?;
    let mut stale: HashSet<&str> = planned
        .units
        .iter()
        .zip(&planned.decisions)
        .filter(|(_, d)| d.action != Action::Fresh)
        .map(|(u, _)| u.task.id.as_str())
        .collect();
    stale.extend(planned.waiting.iter().map(|w| w.task.id.as_str()));
    let tasks: Vec<&str> = project.loaded.tasks.iter().map(|t| t.id.as_str()).collect();
    let mut edges: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut consumers: HashSet<&str> = HashSet::new();
    for task in &project.loaded.tasks {
        let mut ups: Vec<&str> = upstream_ids(task).collect();
        ups.dedup();
        for up in ups {
            edges.entry(up).or_default().push(task.id.as_str());
            consumers.insert(task.id.as_str());
        }
    }
    Ok(render(&tasks, &edges, &consumers, &stale, format))
}

fn render(
    tasks: &[&str],
    edges: &BTreeMap<&str, Vec<&str>>,
    consumers: &HashSet<&str>,
    stale: &HashSet<&str>,
    format: Format,
) -> String {
    let mut out = String::new();
    match format {
        Format::Dot => {
            out.push_str("digraph wanx {\n  rankdir=LR;\n");
            for id in tasks {
                let attributes = if stale.contains(id) {
                    " [style=filled, fillcolor=\"#ffd8a8\", xlabel=\"stale\"]"
                } else {
                    ""
                };
                let _ = writeln!(out, "  \"{id}\"{attributes};");
            }
            for (from, tos) in edges {
                for to in tos {
                    let _ = writeln!(out, "  \"{from}\" -> \"{to}\";");
                }
            }
            out.push_str("}\n");
        }
        Format::Mermaid => {
            out.push_str("graph LR\n");
            for id in tasks {
                let mark = if stale.contains(id) { ":::stale" } else { "" };
                let _ = writeln!(out, "  {}[\"{id}\"]{mark}", node(id));
            }
            for (from, tos) in edges {
                for to in tos {
                    let _ = writeln!(out, "  {} --> {}", node(from), node(to));
                }
            }
            out.push_str("  classDef stale fill:#ffd8a8\n");
        }
        Format::Text => {
            for id in tasks.iter().filter(|id| !consumers.contains(*id)) {
                tree(&mut out, id, edges, stale, "", &mut Vec::new());
            }
        }
    }
    out
}

/// Mermaid node ids may not hold every character a task id may.
fn node(id: &str) -> String {
    let safe: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("t_{safe}")
}

fn tree<'a>(
    out: &mut String,
    id: &'a str,
    edges: &BTreeMap<&'a str, Vec<&'a str>>,
    stale: &HashSet<&str>,
    indent: &str,
    path: &mut Vec<&'a str>,
) {
    let mark = if stale.contains(id) { "  (stale)" } else { "" };
    let _ = writeln!(out, "{id}{mark}");
    if path.contains(&id) {
        return;
    }
    path.push(id);
    let children = edges.get(id).map(Vec::as_slice).unwrap_or_default();
    for (i, child) in children.iter().enumerate() {
        let last = i + 1 == children.len();
        out.push_str(indent);
        out.push_str(if last { "└─ " } else { "├─ " });
        let deeper = format!("{indent}{}", if last { "   " } else { "│  " });
        tree(out, child, edges, stale, &deeper, path);
    }
    path.pop();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_dot_and_mermaid_mark_stale_tasks() {
        let tasks = ["scene", "styled", "other"];
        let edges = BTreeMap::from([("scene", vec!["styled"])]);
        let consumers = HashSet::from(["styled"]);
        let stale = HashSet::from(["styled"]);
        assert_eq!(
            render(&tasks, &edges, &consumers, &stale, Format::Text),
            "scene\n└─ styled  (stale)\nother\n"
        );
        let dot = render(&tasks, &edges, &consumers, &stale, Format::Dot);
        assert!(dot.contains("\"scene\" -> \"styled\";"), "{dot}");
        assert!(dot.contains("\"styled\" [style=filled"), "{dot}");
        let mermaid = render(&tasks, &edges, &consumers, &stale, Format::Mermaid);
        assert!(mermaid.contains("t_scene --> t_styled"), "{mermaid}");
        assert!(
            mermaid.contains("t_styled[\"styled\"]:::stale"),
            "{mermaid}"
        );
    }
}
