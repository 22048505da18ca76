//! `json_error`: with `--json`, every failure still prints one object on stdout, so a script gets a
//! result for every outcome: `{"error": {"code": 4, "message": …, "hint": …, "diagnostics": […]}}`.

use serde_json::{Value, json};

use crate::error::Error;
use crate::term::diagnostic::{Diagnostic, Severity};

/// The error as one JSON object.
pub fn to_json(e: &Error) -> Value {
    let diagnostics: Vec<Value> = match e {
        Error::Invalid { diagnostics, .. } => diagnostics.iter().map(diagnostic).collect(),
        _ => Vec::new(),
    };
    json!({"error": {
        "code": e.code(),
        "message": e.to_string(),
        "hint": e.hint(),
        "diagnostics": diagnostics,
    }})
}

fn diagnostic(d: &Diagnostic) -> Value {
    json!({
        "severity": match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        },
        "file": d.path.display().to_string(),
        "line": d.line,
        "column": d.column,
        "field": d.field,
        "message": d.message,
        "hint": d.hint,
    })
}
