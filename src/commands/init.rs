//! `wanx init`: starts a project in a directory, the way `cargo init` and `uv init` do. It writes a
//! commented `wanx.toml`, one example plan (or, with `--from seed.json`, the seed JSON plan imported
//! into wanx's TOML format), and the `.gitignore` lines for wanx's local cache, then prints the two
//! commands to run next. It refuses to overwrite anything: an existing `wanx.toml` or plan file
//! stops it before it writes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::project::manifest::FILE_NAME;
use crate::term::printer::Printer;

/// The manifest `wanx init` writes: every section, commented, at its default.
pub const MANIFEST: &str = r#"# The wanx project manifest. Every field has a default; an empty file is a valid project.
# https://github.com/… (see the README's "The project" section for every field)

[project]
plans = ["plans/**/*.toml", "plans/**/*.json"]   # where the plan files are, relative to this file
out_dir = "generated"                             # where images go, unless a plan says otherwise
# filename = "{id}.png"                           # {id} {index} {n} {key} {timestamp}

# Task fields for every plan file (a plan's own [defaults] and each task override them).
[defaults]
model = "wan2.2-t2i-flash"
# size = "1024*1024"     # ignored by edit tasks, which take their size from the input image

[provider]
# api_key_env = "DASHSCOPE_API_KEY"                    # the variable holding your DashScope key
# base_url = "https://dashscope.aliyuncs.com/api/v1"   # Beijing; -intl (Singapore) or -us

[build]
max_spend = 5.0          # CNY: refuse any build whose generations would cost more (exit 4)
# jobs = 16              # tasks in flight at once

[cache]
# max_size = "5GB"       # least recently used images beyond this are evicted (never what wanx.lock needs)
"#;

/// The example plan `wanx init` writes.
pub const EXAMPLE_PLAN: &str = r#"# A plan: [[task]] tables, one request each. `wanx explain ID` shows the exact request.

[[task]]
id = "hello"
prompt = "a small red fox sitting in the snow, watercolor illustration"
# size = "1024*1024"
# n = 1
"#;

/// What `.gitignore` needs: the local cache, never committed.
const GITIGNORE: &str = ".wanx/";

/// `wanx init [--from SEED_JSON]` in `dir`.
pub fn init(dir: &Path, from: Option<&Path>, printer: &Printer) -> Result<()> {
    let manifest = dir.join(FILE_NAME);
    if manifest.exists() {
        return Err(Error::Usage {
            message: format!("`{}` already exists", manifest.display()),
            hint: Some(
                "this is a wanx project already: `wanx plan` shows what it would build".to_owned(),
            ),
        });
    }
    let (plan_name, plan_text) = match from {
        Some(seed) => {
            let text =
                std::fs::read_to_string(seed).map_err(|e| Error::io("could not read", seed, e))?;
            let value: Value = serde_json::from_str(&text).map_err(|e| Error::Usage {
                message: format!("`{}` is not JSON: {e}", seed.display()),
                hint: Some(
                    "`--from` takes a seed JSON plan (`plan_id`, `batches[].tasks[]`)".to_owned(),
                ),
            })?;
            let stem = seed
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("imported")
                .to_owned();
            (
                format!("{stem}.toml"),
                import_seed(&value, &seed.display().to_string())?,
            )
        }
        None => ("example.toml".to_owned(), EXAMPLE_PLAN.to_owned()),
    };
    let plan = dir.join("plans").join(&plan_name);
    if plan.exists() {
        return Err(Error::Usage {
            message: format!("`{}` already exists", plan.display()),
            hint: Some("move it away, or write `wanx.toml` by hand".to_owned()),
        });
    }
    let plans_dir = dir.join("plans");
    std::fs::create_dir_all(&plans_dir)
        .map_err(|e| Error::io("could not create", &plans_dir, e))?;
    write_new(&plan, &plan_text)?;
    write_new(&manifest, MANIFEST)?;
    let gitignore = dir.join(".gitignore");
    let ignored = add_gitignore(&gitignore)?;
    printer.status("Created", &format!("{FILE_NAME}, plans/{plan_name}"));
    if ignored {
        printer.status("Updated", "`.gitignore`: `.wanx/` (the local cache)");
    }
    // The next steps go to stdout: they are what the user reads and copies.
    printer.data("Next:\n  wanx plan               # what a build would do, and what it would cost\n  wanx build --emulate    # build against the local emulator: no API key, no cost");
    Ok(())
}

/// Writes `text` to a new file `path`, failing if it exists.
fn write_new(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io("could not create", path, e))?;
    file.write_all(text.as_bytes())
        .map_err(|e| Error::io("could not write", path, e))
}

/// Appends `.wanx/` to `.gitignore` unless it is listed. Returns whether it wrote.
fn add_gitignore(path: &PathBuf) -> Result<bool> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io("could not read", path, e)),
    };
    if existing
        .lines()
        .any(|l| matches!(l.trim(), ".wanx" | ".wanx/" | "/.wanx" | "/.wanx/"))
    {
        return Ok(false);
    }
    let mut text = existing;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("# wanx's local cache (results database and image blobs)\n");
    text.push_str(GITIGNORE);
    text.push('\n');
    std::fs::write(path, text).map_err(|e| Error::io("could not write", path, e))?;
    Ok(true)
}

/// Converts a seed JSON plan into wanx's TOML plan format, field for field, keeping the seed's
/// vocabulary (wanx's TOML accepts it all and lowers it the same way).
pub fn import_seed(seed: &Value, shown: &str) -> Result<String> {
    let bad = |what: &str| Error::Usage {
        message: format!("`{shown}` is not a seed plan: {what}"),
        hint: Some(
            "a seed plan has `batches[].tasks[]`, each with `task_id` and `prompt_config`"
                .to_owned(),
        ),
    };
    let batches = seed
        .get("batches")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("it has no `batches`"))?;
    let mut doc = toml::Table::new();
    let mut defaults = toml::Table::new();
    if let Some(out) = seed.get("output_config") {
        output(out, &mut defaults);
    }
    if !defaults.is_empty() {
        doc.insert("defaults".into(), toml::Value::Table(defaults));
    }
    let mut tasks = Vec::new();
    for batch in batches {
        for task in batch
            .get("tasks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            tasks.push(toml::Value::Table(
                import_task(task).ok_or_else(|| bad("a task has no `task_id`"))?,
            ));
        }
    }
    doc.insert("task".into(), toml::Value::Array(tasks));
    let body =
        toml::to_string(&doc).map_err(|e| Error::Other(format!("could not write TOML: {e}")))?;
    let mut header = format!("# Imported by `wanx init --from {shown}`.\n");
    if let Some(exec) = seed.get("execution_config") {
        if let Some(var) = exec.get("api_key_env").and_then(Value::as_str) {
            let _ = writeln!(
                header,
                "# The seed read its key from `{var}`: set `[provider] api_key_env` in wanx.toml if that is not DASHSCOPE_API_KEY."
            );
        }
        if let Some(url) = exec.get("api_endpoint").and_then(Value::as_str) {
            let _ = writeln!(
                header,
                "# The seed's endpoint was {url}: `[provider] base_url` in wanx.toml picks the region."
            );
        }
    }
    Ok(format!("{header}\n{body}"))
}

fn import_task(task: &Value) -> Option<toml::Table> {
    let mut t = toml::Table::new();
    t.insert("id".into(), string(task.get("task_id")?)?);
    if let Some(p) = task.get("prompt_config") {
        let template: toml::Table = [
            "subject",
            "details",
            "environment",
            "lighting",
            "style",
            "quality",
        ]
        .into_iter()
        .filter_map(|k| Some((k.to_owned(), string(p.get(k)?)?)))
        .collect();
        if let Some(prompt) = p.get("prompt").and_then(string) {
            t.insert("prompt".into(), prompt);
        } else if !template.is_empty() {
            t.insert("prompt".into(), toml::Value::Table(template));
        }
        copy(p, "negative_prompt", "negative_prompt", &mut t);
    }
    let edit_sources = [Some(task), task.get("parameters")];
    if let Some(params) = task.get("parameters") {
        for key in [
            "model",
            "size",
            "n",
            "seed",
            "style",
            "prompt_extend",
            "watermark",
            "ref_img",
            "ref_strength",
            "ref_mode",
            "negative",
        ] {
            copy(params, key, key, &mut t);
        }
        insert_composer(params, &mut t);
    }
    if let Some(c) = task.get("composer_config")
        && c.get("enabled").and_then(Value::as_bool) == Some(true)
        && !t.contains_key("composer")
    {
        insert_composer(c, &mut t);
    }
    if let Some(q) = task.get("qwen_image_config")
        && q.get("enabled").and_then(Value::as_bool) == Some(true)
        && let Some(text) = q.get("text_content").and_then(json_to_toml)
    {
        t.insert("text".into(), text);
    }
    for source in edit_sources.into_iter().flatten() {
        copy(source, "task_type", "edit", &mut t);
        copy(source, "input_image_url", "input", &mut t);
        copy(source, "extend_config", "extend", &mut t);
        copy(source, "style_reference_url", "style_reference", &mut t);
    }
    if let Some(out) = task.get("output_config") {
        output(out, &mut t);
    }
    Some(t)
}

fn output(out: &Value, into: &mut toml::Table) {
    if let Some(dir) = out.get("save_directory").and_then(Value::as_str) {
        into.insert(
            "out_dir".into(),
            toml::Value::String(dir.trim_end_matches('/').to_owned()),
        );
    }
    copy(out, "filename_pattern", "filename", into);
}

fn copy(from: &Value, key: &str, to: &str, into: &mut toml::Table) {
    if into.contains_key(to) {
        return;
    }
    if let Some(v) = from.get(key).and_then(json_to_toml) {
        into.insert(to.to_owned(), v);
    }
}

fn string(v: &Value) -> Option<toml::Value> {
    v.as_str().map(|s| toml::Value::String(s.to_owned()))
}

/// JSON → TOML; `null` (which TOML lacks) is left out.
fn json_to_toml(v: &Value) -> Option<toml::Value> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64()?),
        },
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(items) => toml::Value::Array(items.iter().filter_map(json_to_toml).collect()),
        Value::Object(map) => toml::Value::Table(
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), json_to_toml(v)?)))
                .collect(),
        ),
    })
}

/// The composer's fields found in `source` (the task's `parameters` or its `composer_config`), as
/// the task's `composer` table, if there is one.
fn insert_composer(source: &Value, t: &mut toml::Table) {
    let composer: toml::Table = ["color_palette", "layout", "material", "semantic"]
        .into_iter()
        .filter_map(|k| Some((k.to_owned(), json_to_toml(source.get(k)?)?)))
        .collect();
    if !composer.is_empty() {
        t.insert("composer".into(), toml::Value::Table(composer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_task_becomes_a_toml_task() {
        let seed: Value = serde_json::json!({
            "plan_id": "p",
            "batches": [{"tasks": [
                {"task_id": "a", "prompt_config": {"prompt": "x", "negative_prompt": "y"},
                 "parameters": {"model": "wanx2.2-t2i-flash", "n": 2, "layout": "centered"}},
                {"task_id": "b", "task_type": "beautify", "input_image_url": "a"}
            ]}],
            "output_config": {"save_directory": "out/", "filename_pattern": "{task_id}.png"}
        });
        let text = import_seed(&seed, "seed.json").unwrap();
        let doc: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(doc["defaults"]["out_dir"].as_str(), Some("out"));
        let tasks = doc["task"].as_array().unwrap();
        assert_eq!(tasks[0]["model"].as_str(), Some("wanx2.2-t2i-flash"));
        assert_eq!(tasks[0]["composer"]["layout"].as_str(), Some("centered"));
        assert_eq!(tasks[1]["edit"].as_str(), Some("beautify"));
        assert_eq!(tasks[1]["input"].as_str(), Some("a"));
    }
}
