//! wanx's TOML plan format: `[defaults]` and `[[task]]` tables. The document is parsed once with spans;
//! each table is then deserialized on its own into a [`RawTask`], so one bad task (or one bad field)
//! does not hide the problems in the rest. Validation is shared with the seed format in [`crate::plan`].

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::plan::raw::{FieldPaths, RawTask};
use crate::plan::sink::Sink;
use crate::project::manifest::unknown_field_hint;
use crate::term::diagnostic::did_you_mean;

const SECTIONS: [&str; 2] = ["defaults", "task"];

/// Parses plan file `file` of the sink into raw tasks, `[defaults]` applied, reporting every problem.
pub(crate) fn parse(file: usize, sink: &mut Sink) -> Vec<RawTask> {
    let files = sink.files;
    let source = files[file].source.as_str();
    let root = match DeTable::parse(source) {
        Ok(root) => root.into_inner(),
        Err(e) => {
            sink.error(file, e.span(), e.message().to_owned(), None, None);
            return Vec::new();
        }
    };
    let mut defaults = None;
    let mut task_values = Vec::new();
    for (key, value) in root {
        match key.get_ref().as_ref() {
            "defaults" => defaults = Some(defaults_table(value, file, sink)),
            "task" => {
                let span = value.span();
                match value.into_inner() {
                    DeValue::Array(items) => task_values = items.into_iter().collect(),
                    _ => sink.error(
                        file,
                        Some(span),
                        "`task` must be an array of tables",
                        Some("task".to_owned()),
                        Some("write each task as a `[[task]]` table".to_owned()),
                    ),
                }
            }
            other => {
                let hint = unknown_key_hint(other, &key, &value);
                sink.error(
                    file,
                    Some(key.span()),
                    format!("unknown key `{other}`"),
                    Some(other.to_owned()),
                    Some(hint),
                );
            }
        }
    }
    let mut tasks = Vec::with_capacity(task_values.len());
    // Read again only if some task is invalid, and then once for all of them.
    let mut fresh: Option<Vec<Spanned<DeValue>>> = None;
    for (index, value) in task_values.into_iter().enumerate() {
        let mut again = || {
            fresh
                .get_or_insert_with(|| match reparse(source, "task").map(Spanned::into_inner) {
                    Some(DeValue::Array(items)) => items.into_iter().collect(),
                    _ => Vec::new(),
                })
                .get(index)
                .cloned()
        };
        let mut task = table(
            value,
            &format!("task[{index}]"),
            file,
            sink,
            FieldPaths::Toml {
                task: Some(index),
                inherited: Vec::new(),
            },
            &mut again,
        );
        if let Some(defaults) = &defaults {
            task.inherit(defaults);
        }
        tasks.push(task);
    }
    tasks
}

/// The plan's `[defaults]` table (which cannot set an `id`).
fn defaults_table(value: Spanned<DeValue<'_>>, file: usize, sink: &mut Sink) -> RawTask {
    let source = sink.files[file].source.as_str();
    let mut again = || reparse(source, "defaults");
    let mut d = table(
        value,
        "defaults",
        file,
        sink,
        FieldPaths::Toml {
            task: None,
            inherited: Vec::new(),
        },
        &mut again,
    );
    if let Some(id) = d.id.take() {
        sink.error(
            file,
            Some(id.span()),
            "`id` cannot be set in `[defaults]`",
            Some("defaults.id".to_owned()),
            Some("each `[[task]]` needs its own `id`".to_owned()),
        );
    }
    d
}

/// The hint for an unknown top-level key: a task field outside a table, or a misspelt section.
fn unknown_key_hint(
    other: &str,
    key: &Spanned<std::borrow::Cow<'_, str>>,
    value: &Spanned<DeValue<'_>>,
) -> String {
    let entry = DeTable::from_iter([(key.clone(), value.clone())]);
    if RawTask::deserialize(ValueDeserializer::from(Spanned::new(
        0..0,
        DeValue::Table(entry),
    )))
    .is_ok()
    {
        return "task fields go in a `[[task]]` table, or in `[defaults]` for every task"
            .to_owned();
    }
    match did_you_mean(other, SECTIONS) {
        Some(name) => format!("did you mean `{name}`?"),
        None => "a plan has `[defaults]` and `[[task]]` tables".to_owned(),
    }
}

/// Deserializes one table into a [`RawTask`]. On an error the offending key is reported and dropped
/// and the rest is read again, so every bad field of the table is reported.
///
/// The first attempt consumes `value` (no copy: valid tables are the common case); after a failure
/// `again` supplies a fresh copy of the table to find and report every problem in it.
fn table<'s>(
    value: Spanned<DeValue<'s>>,
    name: &str,
    file: usize,
    sink: &mut Sink,
    paths: FieldPaths,
    again: &mut dyn FnMut() -> Option<Spanned<DeValue<'s>>>,
) -> RawTask {
    let span = value.span();
    if let DeValue::Table(entries) = value.get_ref() {
        let at = header_span(&span, entries);
        if let Ok(mut raw) = RawTask::deserialize(ValueDeserializer::from(value)) {
            raw.at = at;
            raw.paths = paths;
            return raw;
        }
    }
    let Some(value) = again() else {
        return RawTask {
            at: span,
            paths,
            broken: true,
            ..RawTask::default()
        };
    };
    let DeValue::Table(mut entries) = value.into_inner() else {
        sink.error(
            file,
            Some(span.clone()),
            format!("`{name}` must be a table"),
            Some(name.to_owned()),
            None,
        );
        return RawTask {
            at: span,
            paths,
            broken: true,
            ..RawTask::default()
        };
    };
    let mut poisoned = Vec::new();
    loop {
        let attempt = Spanned::new(span.clone(), DeValue::Table(entries.clone()));
        match RawTask::deserialize(ValueDeserializer::from(attempt)) {
            Ok(mut raw) => {
                raw.at = header_span(&span, &entries);
                raw.paths = paths;
                raw.poisoned = poisoned;
                return raw;
            }
            Err(e) => {
                let at = e.span().unwrap_or_else(|| span.clone());
                let key = entries
                    .iter()
                    .find(|(k, v)| contains(&k.span(), at.start) || contains(&v.span(), at.start))
                    .map(|(k, _)| k.get_ref().to_string());
                let message = e.message();
                // serde lists every expected field; the hint names the likely one instead.
                let (short, hint) = match unknown_field_hint(message) {
                    Some(hint) => (
                        message
                            .split(", expected")
                            .next()
                            .unwrap_or(message)
                            .to_owned(),
                        Some(hint),
                    ),
                    None => (message.to_owned(), None),
                };
                let field = key
                    .as_deref()
                    .map_or_else(|| name.to_owned(), |k| format!("{name}.{k}"));
                sink.error(file, Some(at), short, Some(field), hint);
                let Some(key) = key else {
                    return RawTask {
                        at: span,
                        paths,
                        broken: true,
                        ..RawTask::default()
                    };
                };
                entries.remove(key.as_str());
                poisoned.push(key);
            }
        }
    }
}

/// A fresh copy of the document's `key`, read again.
fn reparse<'s>(source: &'s str, key: &str) -> Option<Spanned<DeValue<'s>>> {
    let mut root = DeTable::parse(source).ok()?.into_inner();
    root.remove(key)
}

fn contains(range: &Range<usize>, at: usize) -> bool {
    range.start <= at && at < range.end.max(range.start + 1)
}

/// Where to point at a task as a whole: its table's span if it has one, else its first key.
fn header_span(span: &Range<usize>, entries: &DeTable<'_>) -> Range<usize> {
    if span.end > span.start {
        return span.clone();
    }
    entries
        .keys()
        .map(Spanned::span)
        .min_by_key(|s| s.start)
        .unwrap_or_else(|| span.clone())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::error::Error;
    use crate::plan::task::{EditKind, InputRef, Prompt};
    use crate::plan::tests::manifest;
    use crate::plan::{Loaded, load_source};
    use crate::registry::Registry;
    use crate::size::Size;
    use crate::term::diagnostic::Diagnostic;

    fn load(src: &str) -> Result<Loaded, Vec<Diagnostic>> {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest(dir.path());
        match load_source(Path::new("plans/a.toml"), src, &m, &Registry::builtin()) {
            Ok(l) => Ok(l),
            Err(Error::Invalid { diagnostics, .. }) => Err(diagnostics),
            Err(e) => panic!("{e}"),
        }
    }

    fn errors(src: &str) -> Vec<Diagnostic> {
        load(src).expect_err("the plan should be invalid")
    }

    fn position(src: &str, needle: &str) -> (usize, usize) {
        let at = src.find(needle).unwrap();
        let line = src[..at].matches('\n').count() + 1;
        let col = src[..at].rsplit('\n').next().unwrap().chars().count() + 1;
        (line, col)
    }

    #[test]
    fn a_minimal_plan_loads() {
        let src = "[[task]]\nid = \"hero\"\nmodel = \"wan2.2-t2i-flash\"\nprompt = \"a lighthouse at dusk\"\n";
        let loaded = load(src).unwrap();
        let t = &loaded.tasks[0];
        assert_eq!(t.id, "hero");
        assert_eq!(t.model, "wan2.2-t2i-flash");
        assert_eq!(t.prompt, Prompt::Text("a lighthouse at dusk".into()));
        assert_eq!(t.n, 1);
        assert_eq!(t.size, Some(Size::new(1024, 1024)));
        assert_eq!(t.output.dir, "generated");
        assert_eq!(t.output.filename, "{id}.png");
        assert_eq!((t.origin.line, t.origin.column), (2, 6));
        assert!(loaded.notes.is_empty());
    }

    #[test]
    fn defaults_fill_in_and_tasks_override() {
        let src = r#"
[defaults]
model = "wanx2.2-t2i-flash"
n = 2
negative = ["general"]
composer = { layout = "center" }
filename = "{id}.png"

[[task]]
id = "a"
prompt = "one"

[[task]]
id = "b"
prompt = "two"
n = 1
composer = { material = "wood" }
"#;
        let loaded = load(src).unwrap();
        let [a, b] = &loaded.tasks[..] else { panic!() };
        assert_eq!(a.model, "wan2.2-t2i-flash");
        assert_eq!(a.n, 2);
        assert_eq!(a.negative_presets, vec!["general".to_owned()]);
        assert_eq!(a.output.filename, "{id}_{index}.png");
        assert_eq!(
            a.composer.as_ref().unwrap().layout.as_deref(),
            Some("center")
        );
        assert_eq!(b.n, 1);
        assert_eq!(b.output.filename, "{id}.png");
        let composer = b.composer.as_ref().unwrap();
        assert_eq!(
            (composer.layout.as_deref(), composer.material.as_deref()),
            (None, Some("wood"))
        );
        // The alias note and the `{index}` note come from `[defaults]`: one each.
        assert_eq!(loaded.notes.len(), 2, "{:?}", loaded.notes);
        assert!(
            loaded
                .notes
                .iter()
                .any(|n| n.message.contains("`wan2.2-t2i-flash`") && n.line == 3)
        );
        assert!(
            loaded
                .notes
                .iter()
                .any(|n| n.message.contains("{id}_{index}.png") && n.line == 7)
        );
    }

    #[test]
    fn structured_prompt() {
        let src = r#"[[task]]
id = "p"
model = "wan2.2-t2i-flash"
prompt = { subject = "a hacker", lighting = "neon", quality = "8K" }
"#;
        let loaded = load(src).unwrap();
        let Prompt::Template(t) = &loaded.tasks[0].prompt else {
            panic!()
        };
        assert_eq!(t.subject, "a hacker");
        assert_eq!(t.lighting.as_deref(), Some("neon"));
        assert_eq!(t.details, None);

        let errs = errors(
            "[[task]]\nid = \"p\"\nmodel = \"wan2.2-t2i-flash\"\nprompt = { details = \"x\" }\n",
        );
        assert_eq!((errs[0].line, errs[0].column), (4, 10));
        assert!(errs[0].message.contains("subject"), "{}", errs[0].message);
        let errs = errors(
            "[[task]]\nid = \"p\"\nmodel = \"wan2.2-t2i-flash\"\nprompt = { subjet = \"x\" }\n",
        );
        assert_eq!(errs[0].hint.as_deref(), Some("did you mean `subject`?"));
    }

    #[test]
    fn size_beyond_the_model_range_is_an_error_at_its_value() {
        let src = "[[task]]\nid = \"a\"\nmodel = \"wan2.2-t2i-flash\"\nprompt = \"x\"\nsize = \"2000*1024\"\n";
        let errs = errors(src);
        assert_eq!(errs.len(), 1);
        assert_eq!((errs[0].line, errs[0].column), (5, 8));
        assert_eq!(errs[0].field.as_deref(), Some("task[0].size"));
        assert!(
            errs[0].hint.as_deref().unwrap().contains("1440"),
            "{:?}",
            errs[0].hint
        );
    }

    #[test]
    fn qwen_size_moves_to_the_nearest_listed_one() {
        let src =
            "[[task]]\nid = \"a\"\nmodel = \"qwen-image\"\nprompt = \"x\"\nsize = \"768*1024\"\n";
        let loaded = load(src).unwrap();
        assert_eq!(loaded.tasks[0].size, Some(Size::new(1104, 1472)));
        assert_eq!(loaded.notes[0].line, 5);
        assert!(loaded.notes[0].message.contains("1104*1472"));
    }

    #[test]
    fn unknown_field_suggests_the_right_one() {
        let src = "[[task]]\nid = \"a\"\nmodel = \"wan2.2-t2i-flash\"\nprompt = \"x\"\nnegative_promt = \"blurry\"\n";
        let errs = errors(src);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!((errs[0].line, errs[0].column), (5, 1));
        assert_eq!(errs[0].message, "unknown field `negative_promt`");
        assert_eq!(
            errs[0].hint.as_deref(),
            Some("did you mean `negative_prompt`?")
        );
        assert_eq!(errs[0].field.as_deref(), Some("task[0].negative_promt"));
    }

    #[test]
    fn bad_colour_style_and_n_are_all_reported() {
        let src = r##"[[task]]
id = "a"
model = "wan2.2-t2i-flash"
prompt = "x"
n = 5
style = "watercolour"
composer = { color_palette = ["#00F5FF", "#12345G"], layout = "thirds" }

[[task]]
id = "q"
model = "qwen-image"
prompt = "poster"
n = 2
"##;
        let errs = errors(src);
        let find = |field: &str| {
            errs.iter()
                .find(|d| d.field.as_deref() == Some(field))
                .unwrap_or_else(|| panic!("no error for {field}: {errs:#?}"))
        };
        let n = find("task[0].n");
        assert_eq!((n.line, n.column), (5, 5));
        assert_eq!(
            n.hint.as_deref(),
            Some("`n` must be between 1 and 4 for `wan2.2-t2i-flash`")
        );
        let style = find("task[0].style");
        assert_eq!(style.line, 6);
        assert_eq!(style.hint.as_deref(), Some("did you mean `watercolor`?"));
        let colour = find("task[0].composer.color_palette[1]");
        assert_eq!((colour.line, colour.column), position(src, "\"#12345G\""));
        assert!(colour.hint.as_deref().unwrap().contains("#RRGGBB"));
        let layout = find("task[0].composer.layout");
        assert!(
            layout.hint.as_deref().unwrap().contains("rule_of_thirds"),
            "{:?}",
            layout.hint
        );
        let qn = find("task[1].n");
        assert_eq!(qn.line, 13);
        assert_eq!(
            qn.hint.as_deref(),
            Some("`qwen-image` generates exactly 1 image per task")
        );
        assert_eq!(errs.len(), 5);
    }

    #[test]
    fn wire_errors_do_not_hide_the_rest_of_the_task() {
        let src = "[[task]]\nid = \"a\"\nmodel = \"wan2.2-t2i-flash\"\nprompt = \"x\"\nseed = \"forty\"\nmodle = 1\nsize = \"9*9\"\n";
        let errs = errors(src);
        let lines: Vec<usize> = errs.iter().map(|d| d.line).collect();
        assert_eq!(lines, vec![5, 6, 7], "{errs:#?}");
        assert_eq!(errs[1].hint.as_deref(), Some("did you mean `model`?"));
    }

    #[test]
    fn missing_fields_and_unknown_model() {
        let src = "[[task]]\nid = \"a\"\n\n[[task]]\nid = \"b\"\nmodel = \"wan2.2-flash\"\nprompt = \"x\"\n";
        let errs = errors(src);
        assert!(
            errs.iter()
                .any(|d| d.message == "this task has no `model`" && d.line == 1)
        );
        assert!(
            errs.iter()
                .any(|d| d.message == "this task has no `prompt`" && d.line == 1)
        );
        let model = errs.iter().find(|d| d.line == 6).unwrap();
        assert_eq!(
            model.hint.as_deref(),
            Some("did you mean `wan2.2-t2i-flash`?")
        );
    }

    #[test]
    fn ids_must_be_file_name_safe() {
        let errs = errors("[[task]]\nid = \"a/b\"\nmodel = \"wan2.2-t2i-flash\"\nprompt = \"x\"\n");
        assert_eq!((errs[0].line, errs[0].column), (2, 6));
        assert!(errs[0].message.contains('/'));
    }

    #[test]
    fn edit_tasks_get_an_edit_model_and_check_their_fields() {
        let src = r#"
[defaults]
model = "wan2.2-t2i-flash"

[[task]]
id = "hero"
prompt = "a lighthouse"

[[task]]
id = "wide"
prompt = "extend the sea"
edit = "extend"
input = "hero"
extend = { direction = "right", ratio = 1.5 }

[[task]]
id = "styled"
prompt = "in this style"
edit = "style_transfer"
input = "hero"
style_reference = "https://example.com/style.jpg"
"#;
        let loaded = load(src).unwrap();
        let wide = &loaded.tasks[1];
        assert_eq!(wide.model, "wanx2.1-imageedit");
        assert_eq!(wide.size, None);
        let edit = wide.edit.as_ref().unwrap();
        assert_eq!(edit.kind, EditKind::Extend);
        assert_eq!(
            edit.input,
            InputRef::Task {
                id: "hero".into(),
                index: None
            }
        );
        assert_eq!(loaded.tasks[2].model, "wan2.5-i2i-preview");

        let bad = r#"
[[task]]
id = "e"
model = "wan2.2-t2i-flash"
prompt = "x"
edit = "extend"
input = "https://example.com/a.png"
extend = { direction = "sideways", ratio = 2.5 }

[[task]]
id = "f"
model = "wan2.2-t2i-flash"
prompt = "x"
input = "https://example.com/a.png"
ref_img = "https://example.com/b.png"
"#;
        let errs = errors(bad);
        let fields: Vec<_> = errs.iter().filter_map(|d| d.field.as_deref()).collect();
        assert_eq!(
            fields,
            vec![
                "task[0].model",
                "task[0].extend.direction",
                "task[0].extend.ratio",
                "task[1].input",
                "task[1].ref_img"
            ],
            "{errs:#?}"
        );
        assert!(
            errs[0]
                .hint
                .as_deref()
                .unwrap()
                .contains("wanx2.1-imageedit")
        );
    }

    #[test]
    fn task_references_are_checked_after_loading() {
        let src = r#"
[[task]]
id = "hero"
model = "wan2.2-t2i-flash"
prompt = "x"
n = 2

[[task]]
id = "a"
prompt = "x"
edit = "repair"
input = "hero#3"

[[task]]
id = "b"
prompt = "x"
edit = "repair"
input = "c"

[[task]]
id = "c"
prompt = "x"
edit = "repair"
input = "b"

[[task]]
id = "d"
prompt = "x"
edit = "repair"
input = "heor#1"
"#;
        let errs = errors(src);
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert!(
            errs[0].message.contains("`hero#3` asks for image 3"),
            "{}",
            errs[0].message
        );
        assert!(errs[1].message.contains("b → c → b"), "{}", errs[1].message);
        assert_eq!(
            errs[2].hint.as_deref(),
            Some("did you mean the task `hero`?")
        );
    }

    #[test]
    fn a_failed_task_adds_no_dependency_edges() {
        // Regression: the references of a task that failed validation were attributed to the next
        // valid task, which reported `y → y` as a cycle.
        let src = r#"
[[task]]
id = "x"
model = "wan2.2-t2i-flash"
prompt = "p"

[[task]]
id = "bad"
prompt = "p"
edit = "repair"
input = "y"
strength = 5.0

[[task]]
id = "y"
prompt = "p"
edit = "repair"
input = "x"
"#;
        let errs = errors(src);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!(errs[0].field.as_deref(), Some("task[1].strength"));
    }

    #[test]
    fn local_inputs_resolve_from_the_plan_directory_and_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("plans/img")).unwrap();
        std::fs::write(dir.path().join("plans/img/a.png"), b"png").unwrap();
        std::fs::write(dir.path().join("outside.png"), b"png").unwrap();
        let m = manifest(&dir.path().join("plans/.."));
        let m = crate::project::manifest::Manifest {
            root: dir.path().to_path_buf(),
            ..m
        };
        let src =
            "[[task]]\nid = \"e\"\nprompt = \"x\"\nedit = \"repair\"\ninput = \"img/a.png\"\n";
        let loaded = load_source(Path::new("plans/a.toml"), src, &m, &Registry::builtin()).unwrap();
        assert_eq!(
            loaded.tasks[0].edit.as_ref().unwrap().input,
            InputRef::File("plans/img/a.png".into())
        );
        for input in ["../../x.png", "/etc/passwd", "missing.png"] {
            let src = format!(
                "[[task]]\nid = \"e\"\nprompt = \"x\"\nedit = \"repair\"\ninput = \"{input}\"\n"
            );
            let Err(Error::Invalid { diagnostics, .. }) =
                load_source(Path::new("plans/a.toml"), &src, &m, &Registry::builtin())
            else {
                panic!("{input} should be refused")
            };
            assert_eq!(
                (diagnostics[0].line, diagnostics[0].column),
                (5, 9),
                "{input}"
            );
        }
    }

    #[test]
    fn output_naming_is_checked() {
        let src = "[[task]]\nid = \"a\"\nmodel = \"wan2.2-t2i-flash\"\nprompt = \"x\"\nout_dir = \"../elsewhere\"\n\n[[task]]\nid = \"b\"\nmodel = \"wan2.2-t2i-flash\"\nprompt = \"x\"\nfilename = \"{id}_{idx}.png\"\n";
        let errs = errors(src);
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].line, 5);
        assert_eq!(errs[1].line, 11);
        assert_eq!(errs[1].hint.as_deref(), Some("did you mean `{index}`?"));
    }

    #[test]
    fn top_level_typos_and_stray_task_fields() {
        let errs = errors("[[tasks]]\nid = \"a\"\n\nmodel = \"x\"\n");
        assert_eq!(errs[0].hint.as_deref(), Some("did you mean `task`?"));
        let errs = errors("model = \"wan2.2-t2i-flash\"\n");
        assert!(
            errs[0].hint.as_deref().unwrap().contains("[[task]]"),
            "{errs:?}"
        );
        let errs = errors("[defaults]\nid = \"x\"\n");
        assert_eq!(errs[0].field.as_deref(), Some("defaults.id"));
        let errs = errors("[defaults]\nmodle = \"x\"\nn = \"two\"\n");
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(errs[0].field.as_deref(), Some("defaults.modle"));
        assert_eq!(errs[0].hint.as_deref(), Some("did you mean `model`?"));
        assert_eq!((errs[1].line, errs[1].column), (3, 5));
    }

    #[test]
    fn wanx_v1_takes_native_styles_and_reference_images() {
        let src = r#"
[[task]]
id = "v1"
model = "wanx-v1"
prompt = "a cat"
style = "<sketch>"
ref_img = "https://example.com/cat.png"
ref_strength = 0.7
ref_mode = "refonly"

[[task]]
id = "v2"
model = "wan2.2-t2i-flash"
prompt = "a cat"
style = "<watercolor>"
"#;
        let errs = errors(src);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!(
            errs[0].hint.as_deref(),
            Some("write `style = \"watercolor\"`, which works on every model")
        );
        let ok = src.replace("style = \"<watercolor>\"", "style = \"auto\"");
        let loaded = load(&ok).unwrap();
        let v1 = &loaded.tasks[0];
        assert_eq!(v1.style.as_deref(), Some("<sketch>"));
        let reference = v1.reference.as_ref().unwrap();
        assert_eq!(reference.mode, Some(crate::plan::task::RefMode::Refonly));
        assert_eq!(loaded.tasks[1].style, None);
    }

    #[test]
    fn a_long_prompt_is_a_note() {
        let long = "word ".repeat(200);
        let src =
            format!("[[task]]\nid = \"a\"\nmodel = \"wan2.2-t2i-flash\"\nprompt = \"{long}\"\n");
        let loaded = load(&src).unwrap();
        assert!(
            loaded.notes[0].message.contains("keeps the first 800"),
            "{:?}",
            loaded.notes
        );
    }

    #[test]
    fn syntax_error_has_a_location() {
        let errs = errors("[[task]]\nid = \"a\nmodel = 1\n");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, 2);
    }

    #[test]
    fn extra_tables_pass_through_as_json() {
        let src = "[[task]]\nid = \"a\"\nmodel = \"wan2.2-t2i-flash\"\nprompt = \"x\"\nextra_parameters = { quality = 3, when = 1979-05-27T07:32:00Z, nested = { list = [1, \"a\"] } }\n";
        let loaded = load(src).unwrap();
        let extra = &loaded.tasks[0].extra_parameters;
        assert_eq!(extra["quality"], serde_json::json!(3));
        assert_eq!(extra["when"], serde_json::json!("1979-05-27T07:32:00Z"));
        assert_eq!(extra["nested"], serde_json::json!({"list": [1, "a"]}));
    }

    #[test]
    fn duplicate_ids_across_files_name_the_first() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("plans")).unwrap();
        std::fs::write(dir.path().join("wanx.toml"), "").unwrap();
        let task =
            "[defaults]\nmodel = \"wan2.2-t2i-flash\"\n\n[[task]]\nid = \"hero\"\nprompt = \"x\"\n";
        std::fs::write(dir.path().join("plans/a.toml"), task).unwrap();
        std::fs::write(dir.path().join("plans/b.toml"), format!("# second\n{task}")).unwrap();
        std::fs::create_dir_all(dir.path().join("generated")).unwrap();
        let (m, registry) =
            crate::project::manifest::Manifest::load(&dir.path().join("wanx.toml")).unwrap();
        let Err(Error::Invalid { diagnostics, .. }) = crate::plan::load(&m, &registry) else {
            panic!()
        };
        assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
        let d = &diagnostics[0];
        assert_eq!(d.path, Path::new("plans/b.toml"));
        assert_eq!((d.line, d.column), (6, 6));
        assert_eq!(
            d.hint.as_deref(),
            Some("first defined at plans/a.toml:5:6; task ids must be unique across the project")
        );
    }

    #[test]
    fn load_finds_plans_in_sorted_order_and_skips_hidden_dirs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("wanx.toml"), "").unwrap();
        for sub in ["plans/z", "plans/.hidden", "plans/a"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let task = |id: &str| {
            format!("[[task]]\nid = \"{id}\"\nmodel = \"wan2.2-t2i-flash\"\nprompt = \"x\"\n")
        };
        std::fs::write(dir.path().join("plans/z/1.toml"), task("z1")).unwrap();
        std::fs::write(dir.path().join("plans/a/2.toml"), task("a2")).unwrap();
        std::fs::write(dir.path().join("plans/.hidden/3.toml"), task("h3")).unwrap();
        std::fs::write(dir.path().join("plans/0.toml"), task("p0")).unwrap();
        let (m, registry) =
            crate::project::manifest::Manifest::load(&dir.path().join("wanx.toml")).unwrap();
        let loaded = crate::plan::load(&m, &registry).unwrap();
        let ids: Vec<_> = loaded.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["p0", "a2", "z1"]);
        assert_eq!(loaded.tasks[1].origin.file, Path::new("plans/a/2.toml"));
    }
}
