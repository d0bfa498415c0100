//! Reading `huxley.toml`: text → [`raw`] (stage 1, [`parse`]) → validated
//! [`crate::model::Config`] (stage 2, [`validate`]).
//!
//! [`check`] runs both stages and returns every problem found, sorted by
//! position; a model comes out only when there is no error.

pub mod names;
pub mod parse;
pub mod raw;
pub mod spanned;
pub mod validate;

use std::ops::Range;

use crate::diagnostic::{self, Diagnostic};
use crate::model::Config;

/// The outcome of checking one file.
#[derive(Debug)]
pub struct Checked {
    /// Present only when there is no error.
    pub config: Option<Config>,
    /// Errors and warnings, in reading order.
    pub diagnostics: Vec<Diagnostic>,
    /// Spans of secret values written in plain text, never to be printed.
    pub redact: Vec<Range<usize>>,
}

impl Checked {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Parses and validates the text of a `huxley.toml`.
pub fn check(source: &str) -> Checked {
    let parsed = parse::parse(source);
    let mut diagnostics = parsed.diagnostics;
    let mut redact = Vec::new();
    let mut config = None;
    if let Some(raw) = &parsed.raw {
        let validated = validate::validate(source, raw, &parsed.rejected);
        diagnostics.extend(validated.diagnostics);
        redact = validated.redact;
        if !diagnostics.iter().any(Diagnostic::is_error) {
            config = validated.config;
        }
    }
    diagnostic::sort(&mut diagnostics);
    Checked {
        config,
        diagnostics,
        redact,
    }
}
