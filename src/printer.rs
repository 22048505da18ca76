//! `Printer`: all human output goes through here, to stderr; stdout carries only data (`--json`).
//! Respects `--quiet`, `-v`, `NO_COLOR` and whether stderr is a terminal. On a terminal, a build also
//! keeps one live progress line at the bottom, redrawn under each status line.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

/// The live progress line, if one is showing (terminal only).
static PROGRESS: Mutex<Option<String>> = Mutex::new(None);

#[derive(Clone, Copy, Debug)]
pub struct Printer {
    pub quiet: bool,
    pub verbose: u8,
    pub color: bool,
    pub tty: bool,
}

impl Printer {
    pub fn new(quiet: bool, verbose: u8) -> Printer {
        let tty = std::io::stderr().is_terminal();
        let color = tty
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && std::env::var("TERM").map_or(true, |t| t != "dumb");
        Printer {
            quiet,
            verbose,
            color,
            tty,
        }
    }

    /// A status line: a right-aligned verb (like cargo's `Compiling`), then the text.
    pub fn status(&self, verb: &str, text: &str) {
        if self.quiet {
            return;
        }
        let (on, off) = if self.color {
            ("\x1b[1;32m", "\x1b[0m")
        } else {
            ("", "")
        };
        Self::line(&format!("{on}{verb:>12}{off} {text}"));
    }

    /// A status line in the warning colour.
    pub fn warn(&self, verb: &str, text: &str) {
        if self.quiet {
            return;
        }
        let (on, off) = if self.color {
            ("\x1b[1;33m", "\x1b[0m")
        } else {
            ("", "")
        };
        Self::line(&format!("{on}{verb:>12}{off} {text}"));
    }

    /// A failure line: shown even with `--quiet`.
    pub fn fail(&self, verb: &str, text: &str) {
        let (on, off) = if self.color {
            ("\x1b[1;31m", "\x1b[0m")
        } else {
            ("", "")
        };
        Self::line(&format!("{on}{verb:>12}{off} {text}"));
    }

    /// Shows (or replaces) the live progress line; a no-op unless stderr is a terminal.
    pub fn progress(&self, text: &str) {
        if self.quiet || !self.tty {
            return;
        }
        let mut progress = PROGRESS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        eprint_safe(&format!("\r\x1b[2K{text}"));
        *progress = Some(text.to_owned());
    }

    /// Removes the live progress line.
    pub fn clear_progress(&self) {
        let mut progress = PROGRESS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if progress.take().is_some() {
            eprint_safe("\r\x1b[2K");
        }
    }

    /// One line on stderr, keeping the progress line below it.
    fn line(line: &str) {
        let progress = PROGRESS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match progress.as_deref() {
            Some(bar) => eprint_safe(&format!("\r\x1b[2K{line}\n{bar}")),
            None => eprintln_safe(line),
        }
    }

    /// Detail shown with `-v`.
    pub fn verbose(&self, verb: &str, text: &str) {
        if self.verbose > 0 {
            self.status(verb, text);
        }
    }

    /// Pre-rendered multi-line text (diagnostics), shown even with `--quiet` when `always`.
    pub fn block(&self, text: &str, always: bool) {
        if always || !self.quiet {
            eprint_safe(text);
        }
    }

    /// A line of data on stdout (tables of `wanx plan`, JSON).
    pub fn data(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        // A closed pipe (`wanx plan | head`) is not an error.
        let _ = writeln!(out, "{text}");
    }
}

fn eprintln_safe(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn eprint_safe(text: &str) {
    let _ = write!(std::io::stderr().lock(), "{text}");
}
