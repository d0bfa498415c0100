//! Problems found in a user's file, with the spans they point at.
//!
//! Every stage that reads user input reports through [`Diagnostic`]; the CLI
//! renders them with file, line, column, the source line and a caret under
//! the offending span. Rendering is deterministic: diagnostics are sorted by
//! position, and plain text is produced whenever colour is off.

use std::ops::Range;

use codespan_reporting::diagnostic as cs;
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term;

/// How bad a problem is: errors make `huxley validate` exit 1, warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// A span of the source with a short remark under its caret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub span: Range<usize>,
    pub message: String,
    /// The primary label carries the diagnostic's location; secondary ones
    /// point at related places ("first used here").
    pub primary: bool,
}

/// One problem in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    pub labels: Vec<Label>,
    /// Lines printed after the snippet, each starting with `help:` or `note:`.
    pub notes: Vec<String>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>) -> Self {
        Self::new(Severity::Error, message)
    }

    pub fn warning(message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, message)
    }

    fn new(severity: Severity, message: impl Into<String>) -> Self {
        Self {
            severity,
            message: message.into(),
            labels: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Sets the primary location.
    pub fn at(mut self, span: Range<usize>, label: impl Into<String>) -> Self {
        self.labels.push(Label {
            span,
            message: label.into(),
            primary: true,
        });
        self
    }

    /// Adds a secondary location.
    pub fn also(mut self, span: Range<usize>, label: impl Into<String>) -> Self {
        self.labels.push(Label {
            span,
            message: label.into(),
            primary: false,
        });
        self
    }

    /// Adds a `help:` line: what to do about it.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.notes.push(format!("help: {}", help.into()));
        self
    }

    /// Adds a `note:` line: why it is a problem.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(format!("note: {}", note.into()));
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Where the diagnostic points: the start of its primary label.
    pub fn position(&self) -> usize {
        self.labels
            .iter()
            .find(|l| l.primary)
            .map_or(0, |l| l.span.start)
    }
}

/// Sorts diagnostics into reading order: by position, errors before warnings.
pub fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| {
        (a.position(), a.severity, &a.message).cmp(&(b.position(), b.severity, &b.message))
    });
}

/// A source file and the diagnostics found in it, ready to print.
#[derive(Debug)]
pub struct Report<'a> {
    /// The path as the user gave it, so the output names the file they know.
    pub path: &'a str,
    pub source: &'a str,
    /// Byte ranges whose text must not be printed (secret values written
    /// in plain text by mistake); they are shown as `*`.
    pub redact: &'a [Range<usize>],
    pub diagnostics: &'a [Diagnostic],
}

impl Report<'_> {
    /// Renders every diagnostic, followed by a one-line summary.
    pub fn render(&self, color: bool) -> String {
        let source = redacted(self.source, self.redact);
        let file = SimpleFile::new(self.path, source.as_str());
        let config = term::Config::default();
        let mut out = Vec::new();
        for diagnostic in self.diagnostics {
            let cs = to_codespan(diagnostic, source.len());
            let result = if color {
                let styles = term::Styles::default();
                let mut writer =
                    term::StylesWriter::new(term::termcolor::Ansi::new(&mut out), &styles);
                term::emit_to_write_style(&mut writer, &config, &file, &cs)
            } else {
                term::emit_to_io_write(&mut out, &config, &file, &cs)
            };
            if let Err(err) = result {
                // Rendering only fails on spans outside the file: a bug, but
                // the user still deserves the message itself.
                out.extend_from_slice(
                    format!("error: {} ({err})\n", diagnostic.message).as_bytes(),
                );
            }
        }
        let mut text = String::from_utf8_lossy(&out).into_owned();
        text.push_str(&self.summary());
        text
    }

    fn summary(&self) -> String {
        let errors = self.diagnostics.iter().filter(|d| d.is_error()).count();
        let warnings = self.diagnostics.len() - errors;
        match (errors, warnings) {
            (0, 0) => String::new(),
            (0, w) => format!("{}: {}\n", self.path, plural(w, "warning")),
            (e, 0) => format!("{}: {}\n", self.path, plural(e, "error")),
            (e, w) => format!(
                "{}: {}, {}\n",
                self.path,
                plural(e, "error"),
                plural(w, "warning")
            ),
        }
    }
}

/// Where a byte offset is: 1-based line and column, the column counted
/// in characters (Unicode code points).
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[start..].chars().count() + 1)
}

/// A diagnostic's message with its `help:` and `note:` lines, for formats
/// that show no snippet.
fn full_message(d: &Diagnostic) -> String {
    let mut text = d.message.clone();
    if let Some(label) = d.labels.iter().find(|l| l.primary && !l.message.is_empty()) {
        text.push_str(&format!(" ({})", label.message));
    }
    for note in &d.notes {
        text.push('\n');
        text.push_str(note);
    }
    text
}

/// The rule every result of `huxley validate` reports under in SARIF.
pub const SARIF_RULE: &str = "huxley/config";

impl Report<'_> {
    /// The diagnostics as GitHub Actions workflow commands
    /// (`::error file=…,line=…,col=…,endLine=…,endColumn=…::message`), one
    /// a line, which the runner shows as annotations on the file.
    pub fn github(&self) -> String {
        // Workflow commands' escaping: data escapes %, CR and LF;
        // properties also `:` and `,`.
        let data = |s: &str| {
            s.replace('%', "%25")
                .replace('\r', "%0D")
                .replace('\n', "%0A")
        };
        let property = |s: &str| data(s).replace(':', "%3A").replace(',', "%2C");
        let mut out = String::new();
        for d in self.diagnostics {
            let level = match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let mut properties = vec![format!("file={}", property(self.path))];
            if let Some(label) = d.labels.iter().find(|l| l.primary) {
                let (line, col) = line_column(self.source, label.span.start);
                let (end_line, end_col) = line_column(self.source, label.span.end);
                properties.push(format!("line={line}"));
                properties.push(format!("col={col}"));
                properties.push(format!("endLine={end_line}"));
                properties.push(format!("endColumn={end_col}"));
            }
            properties.push(format!("title={}", property("huxley validate")));
            out.push_str(&format!(
                "::{level} {}::{}\n",
                properties.join(","),
                data(&full_message(d))
            ));
        }
        out
    }

    /// The diagnostics as a SARIF 2.1.0 log, for code scanning.
    pub fn sarif(&self, version: &str) -> serde_json::Value {
        use serde_json::json;
        let uri = uri_reference(self.path);
        let region = |span: &Range<usize>| {
            let (start_line, start_column) = line_column(self.source, span.start);
            let (end_line, end_column) = line_column(self.source, span.end.max(span.start));
            json!({
                "startLine": start_line,
                "startColumn": start_column,
                "endLine": end_line,
                "endColumn": end_column,
            })
        };
        let location = |span: &Range<usize>| {
            json!({
                "physicalLocation": {
                    "artifactLocation": { "uri": uri },
                    "region": region(span),
                }
            })
        };
        let results: Vec<serde_json::Value> = self
            .diagnostics
            .iter()
            .map(|d| {
                let mut result = json!({
                    "ruleId": SARIF_RULE,
                    "ruleIndex": 0,
                    "level": match d.severity {
                        Severity::Error => "error",
                        Severity::Warning => "warning",
                    },
                    "message": { "text": full_message(d) },
                    "locations": d.labels.iter().filter(|l| l.primary)
                        .map(|l| location(&l.span)).collect::<Vec<_>>(),
                });
                let related: Vec<serde_json::Value> = d
                    .labels
                    .iter()
                    .filter(|l| !l.primary)
                    .enumerate()
                    .map(|(i, l)| {
                        let mut related = location(&l.span);
                        related["id"] = json!(i);
                        related["message"] = json!({ "text": l.message });
                        related
                    })
                    .collect();
                if !related.is_empty() {
                    result["relatedLocations"] = json!(related);
                }
                result
            })
            .collect();
        json!({
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "version": "2.1.0",
            "runs": [{
                "tool": {
                    "driver": {
                        "name": "huxley",
                        "version": version,
                        "rules": [{
                            "id": SARIF_RULE,
                            "name": "HuxleyConfig",
                            "shortDescription": { "text": "huxley.toml breaks a rule of its format" },
                            "fullDescription": { "text": "What `huxley validate` checks: the file's syntax, every key and value against the reference, names, ports, quotas and references between services. Each result says how to fix it." },
                            "defaultConfiguration": { "level": "error" },
                        }],
                    }
                },
                "columnKind": "unicodeCodePoints",
                "results": results,
            }]
        })
    }
}

/// A path as a URI reference: unreserved characters and `/` as they are,
/// every other byte percent-encoded; relative to where huxley ran (as
/// code scanning wants it, from the repository's root), or a `file:` URI
/// when absolute.
fn uri_reference(path: &str) -> String {
    let path = path.strip_prefix("./").unwrap_or(path);
    let mut out = String::from(if path.starts_with('/') { "file://" } else { "" });
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `1 error`, `3 errors`.
pub fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn redacted(source: &str, ranges: &[Range<usize>]) -> String {
    let mut bytes = source.as_bytes().to_vec();
    for range in ranges {
        // Ranges come from the TOML parser and lie on character boundaries,
        // so replacing every byte with ASCII keeps the text valid UTF-8 and
        // keeps every other span's offsets.
        for b in bytes
            .iter_mut()
            .take(range.end.min(source.len()))
            .skip(range.start)
        {
            *b = b'*';
        }
    }
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn to_codespan(d: &Diagnostic, len: usize) -> cs::Diagnostic<()> {
    let base = match d.severity {
        Severity::Error => cs::Diagnostic::error(),
        Severity::Warning => cs::Diagnostic::warning(),
    };
    let clamp = |r: &Range<usize>| r.start.min(len)..r.end.min(len);
    base.with_message(&d.message)
        .with_labels(
            d.labels
                .iter()
                .map(|l| {
                    let label = if l.primary {
                        cs::Label::primary((), clamp(&l.span))
                    } else {
                        cs::Label::secondary((), clamp(&l.span))
                    };
                    label.with_message(&l.message)
                })
                .collect(),
        )
        .with_notes(d.notes.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_names_file_line_and_column() {
        let source = "a = 1\nbad = 2\n";
        let d = [Diagnostic::error("unknown key `bad`")
            .at(6..9, "here")
            .help("remove it")];
        let text = Report {
            path: "x.toml",
            source,
            redact: &[],
            diagnostics: &d,
        }
        .render(false);
        assert!(text.contains("x.toml:2:1"), "{text}");
        assert!(text.contains("^^^ here"), "{text}");
        assert!(text.contains("= help: remove it"), "{text}");
        assert!(text.ends_with("x.toml: 1 error\n"), "{text}");
    }

    fn two_problems() -> (&'static str, Vec<Diagnostic>) {
        let source = "a = 1\n[x]\nbäd = \"y,z\"\n";
        let d = vec![
            Diagnostic::error("unknown key `bäd`: 50%, or a:b")
                .at(10..14, "here")
                .also(0..1, "first here")
                .help("remove it"),
            Diagnostic::warning("section `x` is empty").at(6..9, ""),
        ];
        (source, d)
    }

    #[test]
    fn github_annotations_name_file_line_and_column_escaped() {
        let (source, d) = two_problems();
        let text = Report {
            path: "dir, one/huxley.toml",
            source,
            redact: &[],
            diagnostics: &d,
        }
        .github();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "::error file=dir%2C one/huxley.toml,line=3,col=1,endLine=3,endColumn=4,title=huxley validate::unknown key `bäd`: 50%25, or a:b (here)%0Ahelp: remove it",
                "::warning file=dir%2C one/huxley.toml,line=2,col=1,endLine=2,endColumn=4,title=huxley validate::section `x` is empty",
            ]
        );
    }

    #[test]
    fn sarif_has_one_result_per_problem_with_its_region() {
        let (source, d) = two_problems();
        let log = Report {
            path: "dir one/huxley.toml",
            source,
            redact: &[],
            diagnostics: &d,
        }
        .sarif("1.2.3");
        assert_eq!(log["version"], "2.1.0");
        let run = &log["runs"][0];
        assert_eq!(run["tool"]["driver"]["version"], "1.2.3");
        let results = run["results"].as_array().expect("results");
        assert_eq!(results.len(), 2);
        assert_eq!(results[0]["level"], "error");
        assert_eq!(results[1]["level"], "warning");
        let location = &results[0]["locations"][0]["physicalLocation"];
        assert_eq!(location["artifactLocation"]["uri"], "dir%20one/huxley.toml");
        assert_eq!(uri_reference("./huxley.toml"), "huxley.toml");
        assert_eq!(
            uri_reference("/srv/a b/huxley.toml"),
            "file:///srv/a%20b/huxley.toml"
        );
        assert_eq!(
            location["region"],
            serde_json::json!({ "startLine": 3, "startColumn": 1, "endLine": 3, "endColumn": 4 })
        );
        assert_eq!(
            results[0]["relatedLocations"][0]["message"]["text"],
            "first here"
        );
        assert!(
            results[0]["message"]["text"]
                .as_str()
                .is_some_and(|t| t.ends_with("(here)\nhelp: remove it")),
            "{}",
            results[0]["message"]
        );
    }

    #[test]
    fn redaction_hides_the_value_but_keeps_positions() {
        let source = "k = \"hunter2\"\nz = 1\n";
        let d = [Diagnostic::error("later").at(14..15, "here")];
        let secret = [Range { start: 4, end: 13 }];
        let text = Report {
            path: "x.toml",
            source,
            redact: &secret,
            diagnostics: &d,
        }
        .render(false);
        assert!(!text.contains("hunter2"));
        assert!(text.contains("x.toml:2:1"), "{text}");
    }

    #[test]
    fn sort_orders_by_position() {
        let mut d = vec![
            Diagnostic::error("b").at(10..11, ""),
            Diagnostic::error("a").at(2..3, ""),
        ];
        sort(&mut d);
        assert_eq!(d[0].message, "a");
    }
}
