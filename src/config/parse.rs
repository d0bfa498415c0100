//! Stage 1: TOML text → [`RawConfig`], reporting every structural problem.
//!
//! serde stops at the first error. To report them all, the document is parsed
//! once into toml's span-carrying tree; each time deserialization fails, the
//! innermost entry that contains the error's span is cut out of the tree, the
//! problem is recorded, and deserialization runs again. The entries that were
//! cut out are remembered as [`Rejected`], so the validator does not then
//! complain that a key it needs is missing.

use std::collections::BTreeSet;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned as TomlSpanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::names;
use super::raw::RawConfig;
use crate::diagnostic::Diagnostic;

/// Keys that were present but unusable, as (start of the containing table's
/// span, key). The validator stays quiet about such keys being missing.
#[derive(Debug, Default, Clone)]
pub struct Rejected(BTreeSet<(usize, String)>);

impl Rejected {
    pub fn contains(&self, table: &Range<usize>, key: &str) -> bool {
        self.0.contains(&(table.start, key.to_owned()))
    }
}

/// What stage 1 produced: the raw config when the document could be read at
/// all, and every problem found.
#[derive(Debug)]
pub struct Parsed {
    pub raw: Option<RawConfig>,
    pub rejected: Rejected,
    pub diagnostics: Vec<Diagnostic>,
}

/// Parses `source` and deserializes it, collecting every problem.
pub fn parse(source: &str) -> Parsed {
    let (mut doc, errors) = DeTable::parse_recoverable(source);
    if !errors.is_empty() {
        // A document with broken syntax is not checked further: what the
        // parser recovered is a guess, and checks on a guess mislead.
        return Parsed {
            raw: None,
            rejected: Rejected::default(),
            diagnostics: syntax_diagnostics(&errors, source),
        };
    }
    let mut rejected = Rejected::default();
    let mut diagnostics = Vec::new();
    let doc_span = doc.span();
    loop {
        let value = TomlSpanned::new(doc_span.clone(), DeValue::Table(doc.get_ref().clone()));
        let error = match RawConfig::deserialize(ValueDeserializer::from(value)) {
            Ok(raw) => {
                return Parsed {
                    raw: Some(raw),
                    rejected,
                    diagnostics,
                };
            }
            Err(error) => error,
        };
        // Each round removes one entry, so the loop ends after at most as many
        // rounds as the document has entries.
        let cut = error
            .span()
            .and_then(|span| cut_innermost(doc.get_mut(), doc_span.clone(), &span));
        match cut {
            Some(cut) => {
                let (diagnostic, meant) = structural_diagnostic(&error, &cut);
                diagnostics.push(diagnostic);
                let key = cut.path.last().cloned().unwrap_or_default();
                rejected.0.insert((cut.table_span.start, key));
                // A misspelt key stands for the one it was meant to be: the
                // validator must not also report that one as missing.
                if let Some(meant) = meant {
                    rejected.0.insert((cut.table_span.start, meant));
                }
            }
            None => {
                diagnostics.push(
                    Diagnostic::error(describe(error.message()))
                        .at(error.span().unwrap_or(0..0), "here"),
                );
                return Parsed {
                    raw: None,
                    rejected,
                    diagnostics,
                };
            }
        }
    }
}

/// An entry cut out of the document.
#[derive(Debug)]
struct Cut {
    /// Keys from the root to the entry.
    path: Vec<String>,
    key_span: Range<usize>,
    value_span: Range<usize>,
    /// The span of the table that held the entry.
    table_span: Range<usize>,
}

/// Removes the deepest entry whose key or value contains `error`.
///
/// The whole tree is searched, not just the branches whose spans contain the
/// error: a table opened by a `[header]` has a span that does not cover the
/// sub-tables declared elsewhere in the file.
fn cut_innermost(
    table: &mut DeTable<'_>,
    table_span: Range<usize>,
    error: &Range<usize>,
) -> Option<Cut> {
    let mut best: Option<(usize, Vec<String>)> = None;
    find(table, error, &mut Vec::new(), &mut best);
    let (_, path) = best?;
    let (last, parents) = path.split_last()?;
    let mut current = table;
    let mut span = table_span;
    for key in parents {
        let entry = current.get_mut(key.as_str())?;
        span = entry.span();
        match entry.get_mut() {
            DeValue::Table(t) => current = t,
            _ => return None,
        }
    }
    let (key, value) = current.remove_entry(last.as_str())?;
    Some(Cut {
        key_span: key.span(),
        value_span: value.span(),
        path,
        table_span: span,
    })
}

fn find(
    table: &DeTable<'_>,
    error: &Range<usize>,
    path: &mut Vec<String>,
    best: &mut Option<(usize, Vec<String>)>,
) {
    let contains = |outer: &Range<usize>| outer.start <= error.start && error.end <= outer.end;
    for (key, value) in table.iter() {
        path.push(key.get_ref().to_string());
        if contains(&key.span()) || contains(&value.span()) {
            let depth = path.len();
            if best.as_ref().is_none_or(|(d, _)| depth > *d) {
                *best = Some((depth, path.clone()));
            }
        }
        if let DeValue::Table(inner) = value.get_ref() {
            find(inner, error, path, best);
        }
        path.pop();
    }
}

/// The syntax errors, with duplicates explained once: a table defined
/// twice is one error naming both definitions (the parser also reports
/// every key of the second one), and a key defined twice names the first.
fn syntax_diagnostics(errors: &[toml::de::Error], source: &str) -> Vec<Diagnostic> {
    let line_of = |at: usize| {
        let start = source[..at.min(source.len())]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        let end = source[start..]
            .find('\n')
            .map_or(source.len(), |i| start + i);
        start..end
    };
    // The bodies of tables defined a second time: their keys' duplicates
    // are the same mistake.
    let mut repeated_bodies: Vec<std::ops::Range<usize>> = Vec::new();
    let mut diagnostics = Vec::new();
    for error in errors {
        let span = error.span().unwrap_or(0..0);
        if error.message() != "duplicate key" {
            diagnostics.push(syntax_diagnostic(error, source));
            continue;
        }
        if repeated_bodies
            .iter()
            .any(|body| body.contains(&span.start))
        {
            continue;
        }
        let line = line_of(span.start);
        let text = source[line.clone()].trim();
        if text.starts_with('[') {
            let header_start =
                line.start + (source[line.clone()].len() - source[line.clone()].trim_start().len());
            let header = header_start..header_start + text.len();
            let first = source[..line.start]
                .match_indices(text)
                .map(|(i, _)| i)
                .find(|&i| source[line_of(i)].trim() == text);
            let body_end = source[line.end..]
                .match_indices("\n[")
                .next()
                .map_or(source.len(), |(i, _)| line.end + i);
            repeated_bodies.push(line.end..body_end);
            let mut d = Diagnostic::error(format!("table `{text}` is defined twice"))
                .at(header, "defined again here");
            if let Some(first) = first {
                d = d.also(first..first + text.len(), "first defined here");
            }
            diagnostics.push(d.help("merge the two into one table"));
        } else {
            let key = source.get(span.clone()).unwrap_or("").trim();
            let table_start = source[..line.start].rfind("\n[").map_or(0, |i| i + 1);
            let first = source[table_start..line.start]
                .match_indices(key)
                .map(|(i, _)| table_start + i)
                .find(|&i| {
                    let l = line_of(i);
                    !key.is_empty()
                        && source[l.clone()].trim_start().starts_with(key)
                        && i == l.start + (source[l.clone()].len() - source[l].trim_start().len())
                });
            let mut d = Diagnostic::error(format!("key `{key}` is defined twice"))
                .at(span.clone(), "defined again here");
            if let Some(first) = first {
                d = d.also(first..first + key.len(), "first defined here");
            }
            diagnostics.push(d.help("keep one of them"));
        }
    }
    diagnostics
}

fn syntax_diagnostic(error: &toml::de::Error, source: &str) -> Diagnostic {
    let span = error.span().unwrap_or(0..0);
    // A zero-width span at the end of a line has nothing to put a caret
    // under; widen it to the next character when there is one.
    let next = source
        .get(span.start..)
        .and_then(|rest| rest.chars().next());
    let span = match next {
        Some(c) if span.is_empty() && c != '\n' && c != '\r' => {
            span.start..span.start + c.len_utf8()
        }
        _ => span,
    };
    Diagnostic::error(format!("TOML syntax error: {}", error.message()))
        .at(span, "here")
        .help("see https://toml.io/en/v1.0.0 for the syntax")
}

/// The diagnostic for a deserialization error, and for a misspelt key the
/// key it was probably meant to be.
fn structural_diagnostic(error: &toml::de::Error, cut: &Cut) -> (Diagnostic, Option<String>) {
    let key = cut.path.last().map_or("", String::as_str);
    let table = cut.path[..cut.path.len().saturating_sub(1)].join(".");
    let place = if table.is_empty() {
        "at the top level".to_owned()
    } else {
        format!("in `[{table}]`")
    };
    if let Some((unknown, expected)) = names::parse_unknown_field(error.message()) {
        let d = Diagnostic::error(format!("unknown key `{unknown}` {place}"))
            .at(cut.key_span.clone(), "unknown key");
        return match names::did_you_mean(&unknown, expected.iter().map(String::as_str)) {
            Some(suggestion) => (
                d.help(format!("did you mean `{suggestion}`?")),
                Some(suggestion.to_owned()),
            ),
            None if expected.is_empty() => (d.help("this table takes no keys"), None),
            None => (
                d.help(format!("the keys here are: {}", expected.join(", "))),
                None,
            ),
        };
    }
    let span = error.span().unwrap_or(cut.value_span.clone());
    if let Some(number) = out_of_range(error.message()) {
        let diagnostic = Diagnostic::error(format!("`{key}` {place} is out of range"))
            .at(span, format!("{number} is larger than any TOML integer"));
        let help = match key {
            "port" | "host-port" | "tcp" => "ports are 1 to 65535".to_owned(),
            _ => format!("TOML integers are at most {}", i64::MAX),
        };
        return (diagnostic.help(help), None);
    }
    let diagnostic = Diagnostic::error(format!("wrong type for `{key}` {place}"))
        .at(span, describe(error.message()));
    (diagnostic, None)
}

/// The number of an integer too large for TOML (which serde reports as the
/// wrong type: "invalid type: integer `N`, expected i64").
fn out_of_range(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("invalid type: integer `")?;
    let (number, rest) = rest.split_once('`')?;
    let expected = rest
        .trim_start_matches(" as i128")
        .strip_prefix(", expected ")?;
    matches!(expected, "i64" | "u64" | "u32" | "i32" | "u16").then_some(number)
}

/// Rewrites serde's wording ("invalid type: string \"x\", expected i64") in
/// the words of a TOML user ("expected an integer, found a string").
fn describe(message: &str) -> String {
    let Some(rest) = message.strip_prefix("invalid type: ") else {
        return message.to_owned();
    };
    let Some((found, expected)) = rest.rsplit_once(", expected ") else {
        return message.to_owned();
    };
    let found = match found.split_whitespace().next().unwrap_or(found) {
        "string" => "a string",
        "integer" => "an integer",
        "floating" => "a float",
        "boolean" => "a boolean",
        "sequence" => "an array",
        "map" => "a table",
        _ => found,
    };
    let expected = match expected {
        "i64" | "u64" | "u32" | "i32" | "u16" => "an integer",
        "f64" => "a number",
        "a boolean" => "true or false",
        "a sequence" => "an array",
        "a map" => "a table",
        other => other,
    };
    format!("expected {expected}, found {found}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_uses_toml_words() {
        assert_eq!(
            describe("invalid type: string \"eighty\", expected i64"),
            "expected an integer, found a string"
        );
        // Regression: a port too large for TOML said "expected an integer,
        // found an integer".
        assert_eq!(
            out_of_range("invalid type: integer `99999999999999999999` as i128, expected i64"),
            Some("99999999999999999999")
        );
        assert_eq!(
            out_of_range("invalid type: string \"x\", expected i64"),
            None
        );
        assert_eq!(
            describe("invalid type: string \"eighty\", expected i64"),
            "expected an integer, found a string"
        );
        assert_eq!(
            describe("invalid type: integer `3`, expected a sequence"),
            "expected an array, found an integer"
        );
        assert_eq!(describe("something else"), "something else");
    }

    #[test]
    fn every_structural_problem_is_reported() {
        let source = r#"
[cluster]
name = "acme"
colour = "blue"
[cluster.nodes]
instance-type = 5
min = 1
max = 2
[apps.blog.services.web]
imagee = "nginx"
port = "eighty"
"#;
        let parsed = parse(source);
        let messages: Vec<_> = parsed
            .diagnostics
            .iter()
            .map(|d| d.message.as_str())
            .collect();
        assert_eq!(messages.len(), 4, "{messages:?}");
        assert!(messages.contains(&"unknown key `colour` in `[cluster]`"));
        assert!(messages.contains(&"wrong type for `instance-type` in `[cluster.nodes]`"));
        assert!(messages.contains(&"unknown key `imagee` in `[apps.blog.services.web]`"));
        assert!(messages.contains(&"wrong type for `port` in `[apps.blog.services.web]`"));
        let raw = parsed.raw.expect("the rest still deserializes");
        let cluster = raw.cluster.expect("cluster");
        assert_eq!(cluster.value.name.expect("name").value, "acme");
    }

    #[test]
    fn rejected_keys_are_remembered_per_table() {
        let parsed = parse("[cluster]\nname = 5\n");
        let raw = parsed.raw.expect("raw");
        let cluster = raw.cluster.expect("cluster");
        assert!(parsed.rejected.contains(&cluster.span, "name"));
        assert!(!parsed.rejected.contains(&cluster.span, "region"));
    }

    /// Regression: `prot = 8080` also drew "host-port needs a port".
    #[test]
    fn a_misspelt_key_counts_as_the_key_it_was_meant_to_be() {
        let parsed = parse("[apps.a.services.b]\nprot = 80\n");
        let raw = parsed.raw.expect("raw");
        let apps = raw.apps.expect("apps");
        let app = apps.into_values().next().expect("app");
        let services = app.value.services.expect("services");
        let service = services.into_values().next().expect("service");
        assert!(parsed.rejected.contains(&service.span, "prot"));
        assert!(parsed.rejected.contains(&service.span, "port"));
    }

    #[test]
    fn syntax_errors_stop_before_checking() {
        let parsed = parse("[cluster\nname = \"a\"\n");
        assert!(parsed.raw.is_none());
        assert!(!parsed.diagnostics.is_empty());
        assert!(
            parsed.diagnostics[0]
                .message
                .starts_with("TOML syntax error")
        );
    }
}
