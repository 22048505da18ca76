//! Hostile input for the plan loaders (DESIGN invariant 4): arbitrary text, byte-level mutations of
//! valid plans (NUL bytes, invalid UTF-8 read lossily, truncation), structured plans with random
//! field names and values, deep nesting and huge files. The loader must never panic, and every error
//! it returns must say where (line ≥ 1), unless it is about the file as a whole.
//!
//! Bounded so the suite runs in a few seconds: 256 cases per property, small sizes.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{Map, Value};

use crate::error::Error;
use crate::plan::load_source;
use crate::plan::tests::manifest;
use crate::registry::Registry;
use crate::term::diagnostic::Diagnostic;

const TOML_PLAN: &str = include_str!("../../examples/game-assets.toml");
const JSON_PLAN: &str = include_str!("../../examples/seed-cyberpunk.json");

/// Task fields of wanx's TOML format, to build plans that get past the parser.
const TOML_FIELDS: [&str; 24] = [
    "id",
    "model",
    "prompt",
    "negative_prompt",
    "negative",
    "size",
    "n",
    "seed",
    "style",
    "prompt_extend",
    "watermark",
    "ref_img",
    "ref_strength",
    "ref_mode",
    "composer",
    "text",
    "edit",
    "input",
    "extend",
    "style_reference",
    "out_dir",
    "filename",
    "extra_input",
    "extra_parameters",
];

/// Loads `source` as the plan file `name` in an empty project; returns the error diagnostics.
fn load(name: &str, source: &str) -> Vec<Diagnostic> {
    let dir = tempfile::tempdir().expect("a temp dir");
    let m = manifest(dir.path());
    match load_source(Path::new(name), source, &m, &Registry::builtin()) {
        Ok(_) => Vec::new(),
        Err(Error::Invalid { diagnostics, .. }) => diagnostics,
        Err(e) => panic!("the loader returned an error that is not a diagnostic: {e}"),
    }
}

/// The property every load must have: each error is located, and names the file it is about.
fn check(name: &str, source: &str) -> Result<(), TestCaseError> {
    for d in load(name, source) {
        prop_assert_eq!(d.path.as_path(), Path::new(name));
        if d.is_error() {
            prop_assert!(
                d.line >= 1,
                "unlocated error `{}` for:\n{:?}",
                d.message,
                source
            );
            prop_assert!(d.column >= 1, "no column: `{}`", d.message);
            let lines = source.split('\n').count();
            prop_assert!(
                d.line <= lines,
                "line {} of {}: `{}`",
                d.line,
                lines,
                d.message
            );
        }
    }
    Ok(())
}

/// A byte-level edit of a valid plan.
#[derive(Clone, Debug)]
enum Mutation {
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Replace(usize, u8),
    Truncate(usize),
    Duplicate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let bytes = prop::collection::vec(
        prop_oneof![
            Just(0u8),
            Just(b'"'),
            Just(b'['),
            Just(b'{'),
            Just(b'\n'),
            Just(b'\\'),
            Just(0xff),
            Just(0xe4),
            any::<u8>()
        ],
        1..8,
    );
    prop_oneof![
        (any::<usize>(), bytes).prop_map(|(at, b)| Mutation::Insert(at, b)),
        (any::<usize>(), 1..40usize).prop_map(|(at, n)| Mutation::Delete(at, n)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Replace(at, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1..200usize).prop_map(|(at, n)| Mutation::Duplicate(at, n)),
    ]
}

fn mutate(source: &str, edits: &[Mutation]) -> String {
    let mut bytes = source.as_bytes().to_vec();
    for edit in edits {
        let len = bytes.len().max(1);
        match edit {
            Mutation::Insert(at, b) => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            Mutation::Delete(at, n) => {
                let at = at % len;
                let end = (at + n).min(bytes.len());
                bytes.drain(at.min(end)..end);
            }
            Mutation::Replace(at, b) => {
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] = *b;
                }
            }
            Mutation::Truncate(at) => bytes.truncate(at % len),
            Mutation::Duplicate(at, n) => {
                let at = at % len;
                let end = (at + n).min(bytes.len());
                let copy = bytes[at.min(end)..end].to_vec();
                bytes.splice(end..end, copy);
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Strings that stress escaping, spans and validation.
fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        Just(String::new()),
        Just("\0".to_owned()),
        Just("../../etc/passwd".to_owned()),
        Just("/abs/{id}.png".to_owned()),
        Just("{index}{n}{key}{timestamp}{".to_owned()),
        Just("中文提示词，赛博朋克".to_owned()),
        Just("#00F5FF".to_owned()),
        Just("1024*1024".to_owned()),
        Just("99999999999*1".to_owned()),
        Just("a#0".to_owned()),
        "[a-z_]{1,12}",
        (0..3000usize).prop_map(|n| "x".repeat(n)),
    ]
}

/// Random JSON values, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        nasty_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        prop::sample::select(TOML_FIELDS.to_vec()).prop_map(str::to_owned),
                        prop::sample::select(vec![
                            "prompt_config",
                            "parameters",
                            "composer_config",
                            "qwen_image_config",
                            "output_config",
                            "tasks",
                            "batches",
                            "task_id",
                            "subject",
                            "color_palette",
                            "filename_pattern",
                            "directory",
                        ])
                        .prop_map(str::to_owned),
                        "[a-z_]{1,10}",
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A TOML value written by hand (toml's serializer refuses some shapes we want to feed in).
fn toml_value(v: &Value) -> String {
    match v {
        Value::Null => "\"\"".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            let s = n.to_string();
            if s.contains(['e', 'E']) && !s.contains('.') {
                // TOML floats need a fractional part or exponent; serde_json prints `1e300`.
                s.replacen('e', ".0e", 1)
            } else {
                s
            }
        }
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(toml_value).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{ {} }}",
            map.iter()
                .map(|(k, v)| format!("{} = {}", toml_key(k), toml_value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn toml_key(k: &str) -> String {
    serde_json::to_string(k).unwrap_or_default()
}

/// One TOML table's fields: mostly real field names, some random ones, random values.
fn toml_table() -> impl Strategy<Value = Vec<(String, Value)>> {
    let field = (
        prop_oneof![
            4 => prop::sample::select(TOML_FIELDS.to_vec()).prop_map(str::to_owned),
            1 => "[a-z_]{1,10}",
        ],
        json_value(),
    );
    prop::collection::vec(field, 0..8)
}

/// A TOML plan of `[defaults]` and `[[task]]` tables with random fields.
fn toml_plan() -> impl Strategy<Value = String> {
    (
        prop::option::of(toml_table()),
        prop::collection::vec(toml_table(), 0..5),
    )
        .prop_map(|(defaults, tasks)| {
            let mut out = String::new();
            let mut write = |header: &str, fields: &[(String, Value)]| {
                out.push_str(header);
                out.push('\n');
                for (k, v) in fields {
                    let _ = writeln!(out, "{} = {}", toml_key(k), toml_value(v));
                }
                out.push('\n');
            };
            if let Some(d) = defaults {
                write("[defaults]", &d);
            }
            for (i, t) in tasks.iter().enumerate() {
                // Most tasks get the fields a valid task needs, so the random ones reach validation.
                let mut full: Vec<(String, Value)> = Vec::new();
                if i % 4 != 3 {
                    for (k, v) in [
                        ("id", format!("t{i}")),
                        ("model", "wan2.2-t2i-flash".to_owned()),
                        ("prompt", "x".to_owned()),
                    ] {
                        if !t.iter().any(|(name, _)| name == k) {
                            full.push((k.to_owned(), Value::String(v)));
                        }
                    }
                }
                full.extend(t.iter().cloned());
                write("[[task]]", &full);
            }
            out
        })
}

/// A seed plan with random tasks inside the seed's structure.
fn json_plan() -> impl Strategy<Value = String> {
    prop::collection::vec(json_value(), 0..4).prop_map(|tasks| {
        serde_json::json!({
            "plan_id": "p",
            "execution_config": { "api_key_env": "DASHSCOPE_API_KEY" },
            "batches": [{ "batch_id": "b", "tasks": tasks }],
        })
        .to_string()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics_and_errors_are_located(text in "(?s).{0,300}") {
        check("plans/a.toml", &text)?;
        check("plans/a.json", &text)?;
    }

    #[test]
    fn arbitrary_bytes_read_lossily_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let text = String::from_utf8_lossy(&bytes);
        check("plans/a.toml", &text)?;
        check("plans/a.json", &text)?;
    }

    #[test]
    fn mutated_toml_plans_never_panic(edits in prop::collection::vec(mutation(), 1..6)) {
        check("plans/a.toml", &mutate(TOML_PLAN, &edits))?;
    }

    #[test]
    fn mutated_seed_plans_never_panic(edits in prop::collection::vec(mutation(), 1..6)) {
        check("plans/a.json", &mutate(JSON_PLAN, &edits))?;
    }

    #[test]
    fn structured_toml_plans_with_random_fields_never_panic(plan in toml_plan()) {
        check("plans/a.toml", &plan)?;
    }

    #[test]
    fn structured_seed_plans_with_random_tasks_never_panic(plan in json_plan()) {
        check("plans/a.json", &plan)?;
    }

    #[test]
    fn random_json_documents_never_panic(value in json_value()) {
        check("plans/a.json", &value.to_string())?;
    }
}

#[test]
fn deep_nesting_does_not_overflow_the_stack() {
    let depth = 10_000;
    let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    for (name, source) in [
        (
            "plans/a.toml",
            format!("[[task]]\nid = \"a\"\nprompt = {arrays}\n"),
        ),
        ("plans/b.toml", format!("x = {arrays}\n")),
        (
            "plans/c.toml",
            format!(
                "[[task]]\nid = \"a\"\nextra_input = {}1{}\n",
                "{ a = ".repeat(depth),
                " }".repeat(depth)
            ),
        ),
        ("plans/a.json", arrays.clone()),
        (
            "plans/b.json",
            format!("{{\"batches\": [{{\"tasks\": [{arrays}]}}]}}"),
        ),
        (
            "plans/c.json",
            format!("{}1{}", "{\"a\": ".repeat(depth), "}".repeat(depth)),
        ),
    ] {
        let errors = load(name, &source);
        assert!(!errors.is_empty(), "{name} is not a valid plan");
        assert!(errors.iter().all(|d| d.line >= 1), "{name}: {errors:?}");
    }
    // The span scanner on its own, given nesting serde_json would refuse.
    let spans = crate::plan::json_spans::spans(&arrays);
    assert!(spans.contains_key(""));
}

#[test]
fn a_huge_plan_is_handled_without_pathological_time() {
    // About 20 MB: one valid task, then one enormous prompt and many junk lines.
    let mut source =
        String::from("[[task]]\nid = \"a\"\nmodel = \"wan2.2-t2i-flash\"\nprompt = \"");
    source.push_str(&"x".repeat(10 << 20));
    source.push_str("\"\n");
    while source.len() < 20 << 20 {
        source.push_str("# a comment line that goes on for a while, to make the file large\n");
    }
    let started = Instant::now();
    let _ = load("plans/a.toml", &source);
    let toml = started.elapsed();
    let json = format!(
        "{{\"plan_id\": \"p\", \"batches\": [{{\"tasks\": [{{\"task_id\": \"a\", \"prompt_config\": {{\"prompt\": \"{}\"}}}}]}}]}}",
        "y".repeat(20 << 20)
    );
    let started = Instant::now();
    let _ = load("plans/a.json", &json);
    let json_time = started.elapsed();
    // Generous: linear work on 20 MB takes well under a second even unoptimized; quadratic would not finish.
    assert!(toml < Duration::from_secs(30), "{toml:?}");
    assert!(json_time < Duration::from_secs(30), "{json_time:?}");
}
