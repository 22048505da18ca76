//! The terminal's one owner. Every byte a person reads goes through [`printer::Printer`] on stderr,
//! with colour decided once (anstream: `--color`, `NO_COLOR`, `CLICOLOR_FORCE`, whether stderr is a
//! terminal); the live progress bar is [`progress`] (indicatif, drawn only on a terminal); plan errors
//! are rendered with their source lines by [`diagnostic`]; and with `--json` every failure still prints
//! one object on stdout through [`json_error`]. stdout carries only data, so scripts can trust it.

pub mod diagnostic;
pub mod json_error;
pub mod printer;
pub mod progress;
