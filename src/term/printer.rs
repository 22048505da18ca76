//! `Printer`: all human output goes through here, to stderr; stdout carries only data (`--json`).
//! Respects `--quiet`, `-v`, and colour as the ecosystem decides it: `--color auto|always|never` (or
//! `WANX_COLOR`), then `NO_COLOR` and `CLICOLOR_FORCE`, then whether stderr is a terminal. anstream is
//! the one owner of the terminal's colour: every line goes through its stream, which strips styles
//! wherever colour is off, so nothing else decides it. A build's progress bar is [`crate::term::progress`].

use std::io::{IsTerminal, Write};

use anstyle::{AnsiColor, Style};

use crate::error::Error;

/// `--color` (and `WANX_COLOR`): when stderr gets colour. Defined here, where it is decided; the
/// command line only parses it.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ColorChoice {
    #[default]
    Auto,
    Always,
    Never,
}

#[derive(Clone, Copy, Debug)]
pub struct Printer {
    pub quiet: bool,
    pub verbose: u8,
    /// Whether stderr gets colour (after `--color`, `NO_COLOR`, `CLICOLOR_FORCE` and the terminal).
    pub color: bool,
    /// Whether stderr is a terminal (progress bars are drawn only there).
    pub tty: bool,
}

const GREEN: Style = AnsiColor::Green.on_default().bold();
const YELLOW: Style = AnsiColor::Yellow.on_default().bold();
const RED: Style = AnsiColor::Red.on_default().bold();

impl Printer {
    /// A printer with colour decided by `--color` and the environment (anstream's rules).
    pub fn new(quiet: bool, verbose: u8) -> Printer {
        Printer::with_color(quiet, verbose, ColorChoice::Auto)
    }

    /// A printer with colour as `choice` says; `auto` follows `NO_COLOR`, `CLICOLOR_FORCE`, `TERM`
    /// and the terminal. Sets anstream's global choice, so every stream agrees.
    pub fn with_color(quiet: bool, verbose: u8, choice: ColorChoice) -> Printer {
        let global = match choice {
            ColorChoice::Auto => anstream::ColorChoice::Auto,
            ColorChoice::Always => anstream::ColorChoice::Always,
            ColorChoice::Never => anstream::ColorChoice::Never,
        };
        global.write_global();
        let stderr = std::io::stderr();
        let tty = stderr.is_terminal();
        let color = !matches!(
            anstream::AutoStream::choice(&stderr),
            anstream::ColorChoice::Never
        );
        Printer {
            quiet,
            verbose,
            color,
            tty,
        }
    }

    /// `text` in `style` (the stream strips it where colour is off).
    pub fn paint(style: Style, text: &str) -> String {
        format!("{style}{text}{style:#}")
    }

    /// A status line: a right-aligned verb (like cargo's `Compiling`), then the text.
    pub fn status(&self, verb: &str, text: &str) {
        if !self.quiet {
            Self::line(GREEN, verb, text);
        }
    }

    /// A status line in the warning colour.
    pub fn warn(&self, verb: &str, text: &str) {
        if !self.quiet {
            Self::line(YELLOW, verb, text);
        }
    }

    /// A failure line: shown even with `--quiet`.
    #[expect(
        clippy::unused_self,
        reason = "every line goes through the command's printer, even one `--quiet` does not hide"
    )]
    pub fn fail(&self, verb: &str, text: &str) {
        Self::line(RED, verb, text);
    }

    /// `error` in the error style, for the one error line of a run.
    pub fn error_label() -> String {
        Self::paint(RED, "error")
    }

    fn line(style: Style, verb: &str, text: &str) {
        let verb = Self::paint(style, &format!("{verb:>12}"));
        eprint_safe(&format!("{verb} {text}\n"));
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

    /// Prints an error once, with its diagnostics and hint, even with `--quiet` (`wanx watch`
    /// reports its rebuilds' errors here too).
    pub fn report_error(&self, e: &Error) {
        if let Error::Invalid { diagnostics, .. } = e {
            for d in diagnostics {
                self.block(&d.render(self.color), true);
            }
        }
        let mut text = format!("{}: {e}\n", Printer::error_label());
        if let Some(hint) = e.hint() {
            text.push_str("\n  hint: ");
            text.push_str(&hint);
            text.push('\n');
        }
        self.block(&text, true);
    }

    /// A line of data on stdout (tables of `wanx plan`, JSON).
    #[expect(
        clippy::unused_self,
        reason = "every line goes through the command's printer, even one `--quiet` does not hide"
    )]
    pub fn data(&self, text: &str) {
        let mut out = anstream::stdout().lock();
        // A closed pipe (`wanx plan | head`) is not an error.
        let _ = writeln!(out, "{text}");
    }
}

fn eprint_safe(text: &str) {
    let _ = write!(anstream::stderr().lock(), "{text}");
}
