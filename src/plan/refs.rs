//! References between tasks (an edit's `input = "hero#2"`): each use is collected while tasks are
//! validated, then checked once every task is known: the image number within the task's `n`, a bare
//! id only for a task of one image, and no chain that loops back on itself.

use std::collections::HashMap;
use std::ops::Range;

use crate::plan::sink::Sink;
use crate::plan::task::Task;

/// One use of another task's output, checked once every task is known.
pub(super) struct RefUse {
    pub(super) file: usize,
    pub(super) span: Range<usize>,
    pub(super) field: String,
    /// The task using it (its index in the loaded tasks), `None` if it failed validation.
    pub(super) from: Option<usize>,
    pub(super) id: String,
    pub(super) index: Option<u32>,
}

/// `#K` within the referenced task's `n`, a bare id only for a task of one image, and no cycles.
pub(super) fn check_references(
    tasks: &[Task],
    failed: &HashMap<String, u32>,
    refs: &[RefUse],
    sink: &mut Sink,
) {
    let by_id: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    let mut edges: Vec<Vec<(usize, usize)>> = vec![Vec::new(); tasks.len()];
    for (r_index, r) in refs.iter().enumerate() {
        // A task that failed validation is still checked against its `n`, if that was valid.
        let target = by_id.get(r.id.as_str()).copied();
        let Some(n) = target
            .map(|t| tasks[t].written())
            .or_else(|| failed.get(&r.id).copied())
        else {
            continue;
        };
        match r.index {
            Some(k) if k > n => sink.error(
                r.file,
                Some(r.span.clone()),
                format!(
                    "`{}#{k}` asks for image {k}, but task `{}` makes {n} image{}",
                    r.id,
                    r.id,
                    if n == 1 { "" } else { "s" }
                ),
                Some(r.field.clone()),
                Some(format!(
                    "images are numbered from 1 to the task's `n` ({n})"
                )),
            ),
            None if n > 1 => sink.error(
                r.file,
                Some(r.span.clone()),
                format!("task `{}` makes {n} images; say which one", r.id),
                Some(r.field.clone()),
                Some(format!("write `{}#1` … `{}#{n}`", r.id, r.id)),
            ),
            _ => {}
        }
        if let (Some(from), Some(target)) = (r.from, target) {
            edges[from].push((target, r_index));
        }
    }
    // Iterative depth-first search; a back edge closes a cycle.
    let mut state = vec![0u8; tasks.len()]; // 0 new, 1 on the stack, 2 done
    for start in 0..tasks.len() {
        if state[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&(target, r_index)) = edges[node].get(*next) {
                *next += 1;
                match state[target] {
                    0 => {
                        state[target] = 1;
                        stack.push((target, 0));
                    }
                    1 => {
                        let from = stack.iter().position(|(n, _)| *n == target).unwrap_or(0);
                        let mut names: Vec<&str> = stack[from..]
                            .iter()
                            .map(|(n, _)| tasks[*n].id.as_str())
                            .collect();
                        names.push(tasks[target].id.as_str());
                        let r = &refs[r_index];
                        sink.error(
                            r.file,
                            Some(r.span.clone()),
                            format!("tasks depend on each other in a cycle: {}", names.join(" → ")),
                            Some(r.field.clone()),
                            Some("an edit task can only use images of tasks that do not depend on it".to_owned()),
                        );
                    }
                    _ => {}
                }
            } else {
                state[node] = 2;
                stack.pop();
            }
        }
    }
}
