//! `why`: why a task is not fresh, in the plan's own words. Each build records a compact canonical
//! form of every request it built (provider, model, price, the body's fields, each input's digest)
//! in the store under the task's id; planning compares the task's request with the last one built
//! for it and names what differs: `prompt: "…light, highly detailed" → "…light, oil on canvas"`,
//! `size: 1024*1024 → 1440*1024`, `input art/a.png: bytes changed`, `upstream `scene` was
//! regenerated`, `model price changed`, `provider: built against the emulator, now DashScope`.
//! Comparing is pure; only [`canonical`] reads the files a request sends.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::compile::Compiled;
use crate::plan::task::InputRef;
use crate::planner::reconcile::{Action, Decision, Reason};
use crate::planner::unit::{MediaSource, Unit};

/// One thing that differs from the last build, for people (`text`) and scripts (the rest).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    /// A field of the request (`prompt`, `size`, …); absent for the other kinds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What kind of change a non-field one is: `new_task`, `restored_after_removal`,
    /// `input_changed`, `upstream_regenerated`, `price_changed`, `provider_changed`,
    /// `output_deleted`, `output_modified`, `renamed`, `forced`, `changed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Value>,
    /// The input, upstream task or output concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub text: String,
}

impl Change {
    fn kind(kind: &'static str, text: String) -> Change {
        Change {
            field: None,
            kind: Some(kind),
            from: None,
            to: None,
            subject: None,
            text,
        }
    }

    fn about(mut self, subject: &str) -> Change {
        self.subject = Some(subject.to_owned());
        self
    }
}

/// The reasons joined for one line: `prompt: "…" → "…"; size: 1024*1024 → 1440*1024`.
pub fn line(changes: &[Change]) -> String {
    changes
        .iter()
        .map(|c| c.text.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The canonical form of a unit's request: what [`diff`] compares. Reads the local inputs' bytes
/// (only for tasks that are not fresh). `None` when the request was not compiled (a fresh task).
pub fn canonical(provider: &str, unit: &Unit<'_>) -> Option<Value> {
    if unit.compiled.body.is_null() {
        return None;
    }
    let media: Vec<Value> = unit
        .compiled
        .media
        .iter()
        .zip(&unit.media)
        .map(|(slot, source)| {
            let digest = match source {
                MediaSource::Blob(hash) => hash.clone(),
                MediaSource::File(path) => crate::store::blob_store::hash_file(path)
                    .map(|(h, _)| h)
                    .unwrap_or_default(),
            };
            json!({"pointer": slot.pointer, "source": source_name(&slot.source), "digest": digest})
        })
        .collect();
    Some(canonical_of(provider, &unit.compiled, &media))
}

fn canonical_of(provider: &str, compiled: &Compiled, media: &[Value]) -> Value {
    let mut fields = Map::new();
    for part in ["input", "parameters"] {
        if let Some(Value::Object(object)) = compiled.body.get(part) {
            for (name, value) in object {
                let pointer = format!("/{part}/{name}");
                if compiled
                    .media
                    .iter()
                    .any(|m| m.pointer.starts_with(&pointer))
                {
                    continue;
                }
                fields.insert(name.clone(), value.clone());
            }
        }
    }
    json!({
        "provider": provider,
        "model": compiled.model,
        "price": compiled.price.as_yuan(),
        "fields": fields,
        "media": media,
    })
}

/// `plans/../art/a.png` or `task scene` (image k).
fn source_name(source: &InputRef) -> String {
    match source {
        InputRef::File(path) => path.display().to_string(),
        InputRef::Task { id, index: None } => format!("task:{id}"),
        InputRef::Task { id, index: Some(k) } => format!("task:{id}:{k}"),
        InputRef::Url(url) => url.clone(),
    }
}

/// What differs between the last built request and this one, field by field.
pub fn diff(old: &Value, new: &Value) -> Vec<Change> {
    let mut changes = Vec::new();
    let (op, np) = (str_of(old, "provider"), str_of(new, "provider"));
    if op != np {
        let mut c = Change::kind(
            "provider_changed",
            format!(
                "provider: built against {}, now {}",
                provider_name(op),
                provider_name(np)
            ),
        );
        c.from = Some(json!(op));
        c.to = Some(json!(np));
        changes.push(c);
    }
    if old.get("model") != new.get("model") {
        changes.push(field_change("model", old.get("model"), new.get("model")));
    }
    let empty = Map::new();
    let of = old
        .get("fields")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let nf = new
        .get("fields")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut names: Vec<&String> = of.keys().chain(nf.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        if of.get(name) != nf.get(name) {
            changes.push(field_change(name, of.get(name), nf.get(name)));
        }
    }
    let none = Vec::new();
    let om = old.get("media").and_then(Value::as_array).unwrap_or(&none);
    let nm = new.get("media").and_then(Value::as_array).unwrap_or(&none);
    for (i, slot) in nm.iter().enumerate() {
        let source = str_of(slot, "source");
        let before = om
            .iter()
            .find(|o| str_of(o, "source") == source)
            .or_else(|| om.get(i));
        let Some(before) = before else {
            continue;
        };
        if str_of(before, "source") != source {
            let from = json!(display_source(before.get("source").unwrap_or(&Value::Null)));
            let to = json!(display_source(&json!(source)));
            changes.push(field_change("input", Some(&from), Some(&to)).about(source));
        } else if str_of(before, "digest") != str_of(slot, "digest") {
            let c = match source.strip_prefix("task:") {
                Some(task) => {
                    let task = task.split(':').next().unwrap_or(task);
                    Change::kind(
                        "upstream_regenerated",
                        format!("upstream {task} was regenerated"),
                    )
                    .about(task)
                }
                None => Change::kind("input_changed", format!("input {source}: bytes changed"))
                    .about(source),
            };
            changes.push(c);
        }
    }
    if nm.len() != om.len() {
        changes.push(field_change(
            "inputs",
            Some(&json!(om.len())),
            Some(&json!(nm.len())),
        ));
    }
    if old.get("price") != new.get("price") {
        let mut c = Change::kind("price_changed", "model price changed".to_owned());
        c.from = old.get("price").cloned();
        c.to = new.get("price").cloned();
        changes.push(c);
    }
    changes
}

fn display_source(v: &Value) -> String {
    let s = v.as_str().unwrap_or_default();
    match s.strip_prefix("task:") {
        Some(task) => format!("task {task}"),
        None => s.to_owned(),
    }
}

fn str_of<'v>(v: &'v Value, name: &str) -> &'v str {
    v.get(name).and_then(Value::as_str).unwrap_or_default()
}

/// `the emulator`, `DashScope`, or a compatible service's host.
fn provider_name(identity: &str) -> String {
    match identity {
        "wanx-emulator" => "the emulator".to_owned(),
        "dashscope" => "DashScope".to_owned(),
        other => other
            .strip_prefix("compatible:")
            .unwrap_or(other)
            .to_owned(),
    }
}

/// `prompt: "…light, highly detailed" → "…light, oil on canvas"`; `size: 1024*1024 → 1440*1024`;
/// a field added or removed shows `(none)` on its missing side.
fn field_change(name: &str, from: Option<&Value>, to: Option<&Value>) -> Change {
    let text = match (from, to) {
        (Some(Value::String(a)), Some(Value::String(b))) if a.contains(' ') || b.contains(' ') => {
            let (a, b) = crate::planner::word_diff::changed_region(a, b);
            format!("{name}: \"{a}\" → \"{b}\"")
        }
        _ => format!("{name}: {} → {}", show(from), show(to)),
    };
    Change {
        field: Some(name.to_owned()),
        kind: None,
        from: Some(from.cloned().unwrap_or(Value::Null)),
        to: Some(to.cloned().unwrap_or(Value::Null)),
        subject: None,
        text,
    }
}

fn show(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "(none)".to_owned(),
        Some(Value::String(s)) if s.contains(' ') => format!("\"{s}\""),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The reasons for one decision: `last` is the request last built for the task (with its key),
/// `current` this build's (with its key hex).
pub fn explain(d: &Decision, last: Option<(&str, &Value)>, current: Option<&Value>) -> Vec<Change> {
    match &d.reason {
        Reason::UpToDate => Vec::new(),
        Reason::Forced => vec![Change::kind("forced", "--force".to_owned())],
        Reason::Renamed => vec![Change::kind("renamed", "output names changed".to_owned())],
        Reason::OutputMissing(p) => {
            vec![Change::kind("output_deleted", format!("output deleted: {p}")).about(p)]
        }
        Reason::OutputModified(p) => {
            vec![Change::kind("output_modified", format!("output modified by hand: {p}")).about(p)]
        }
        Reason::New | Reason::NewCached | Reason::Changed => {
            let Some((_, last)) = last else {
                // No earlier build of this task id: new, even when an identical request of
                // another task has its images cached.
                return vec![if matches!(d.reason, Reason::New | Reason::NewCached) {
                    Change::kind("new_task", "new task".to_owned())
                } else {
                    Change::kind("changed", "request changed".to_owned())
                }];
            };
            let changes = current.map(|c| diff(last, c)).unwrap_or_default();
            if changes.is_empty() {
                let kind = if matches!(d.reason, Reason::New | Reason::NewCached)
                    || matches!(d.action, Action::Restore { .. })
                {
                    Change::kind(
                        "restored_after_removal",
                        "restored after it was removed".to_owned(),
                    )
                } else {
                    Change::kind("changed", "request changed".to_owned())
                };
                return vec![kind];
            }
            changes
        }
    }
}

/// Reasons for every decided task that is not fresh, and the canonical form of each request to
/// build. Reads the store's last built requests and the inputs of those tasks only.
#[allow(clippy::type_complexity, reason = "two maps by task id")]
pub fn reasons(
    store: &crate::store::Store,
    provider: &crate::compile::cache_key::Provider,
    units: &[Unit<'_>],
    decisions: &[Decision],
) -> crate::error::Result<(HashMap<String, Vec<Change>>, HashMap<String, Value>)> {
    let stale: Vec<(&Unit<'_>, &Decision)> = units
        .iter()
        .zip(decisions)
        .filter(|(_, d)| d.action != Action::Fresh)
        .collect();
    if stale.is_empty() {
        return Ok((HashMap::new(), HashMap::new()));
    }
    let ids: Vec<&str> = stale.iter().map(|(u, _)| u.task.id.as_str()).collect();
    let last = store.built_requests(&ids)?;
    let identity = provider.identity();
    let mut why = HashMap::with_capacity(stale.len());
    let mut requests = HashMap::with_capacity(stale.len());
    for (unit, d) in stale {
        let current = canonical(&identity, unit);
        let before = last.get(&unit.task.id).map(|(k, v)| (k.as_str(), v));
        why.insert(unit.task.id.clone(), explain(d, before, current.as_ref()));
        if let Some(current) = current {
            requests.insert(unit.task.id.clone(), current);
        }
    }
    Ok((why, requests))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(provider: &str, fields: &Value, media: &Value, price: f64) -> Value {
        json!({"provider": provider, "model": "wan2.2-t2i-flash", "price": price, "fields": fields, "media": media})
    }

    #[test]
    fn names_each_field_in_the_plans_words() {
        let old = req(
            "wanx-emulator",
            &json!({"prompt": "a lighthouse at dusk, volumetric light, highly detailed", "size": "1024*1024"}),
            &json!([{"pointer": "/input/ref_img", "source": "plans/../art/old-photo.png", "digest": "aa"},
                   {"pointer": "/input/base", "source": "task:scene", "digest": "cc"}]),
            0.14,
        );
        let new = req(
            "dashscope",
            &json!({"prompt": "a lighthouse at dusk, volumetric light, oil on canvas", "size": "1440*1024"}),
            &json!([{"pointer": "/input/ref_img", "source": "plans/../art/old-photo.png", "digest": "bb"},
                   {"pointer": "/input/base", "source": "task:scene", "digest": "dd"}]),
            0.2,
        );
        let texts: Vec<String> = diff(&old, &new).into_iter().map(|c| c.text).collect();
        assert_eq!(
            texts,
            [
                "provider: built against the emulator, now DashScope",
                "prompt: \"…volumetric light, highly detailed\" → \"…volumetric light, oil on canvas\"",
                "size: 1024*1024 → 1440*1024",
                "input plans/../art/old-photo.png: bytes changed",
                "upstream scene was regenerated",
                "model price changed",
            ]
        );
    }

    #[test]
    fn field_changes_serialize_as_field_from_to() {
        let c = field_change("size", Some(&json!("1024*1024")), Some(&json!("1440*1024")));
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({"field": "size", "from": "1024*1024", "to": "1440*1024", "text": "size: 1024*1024 → 1440*1024"})
        );
    }
}
