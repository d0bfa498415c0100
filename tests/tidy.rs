//! The layout stays as drawn (as rust-analyzer's tidy tests keep theirs):
//! this reads every `crate::…` path under `src/` and fails on an import
//! the layering forbids, naming the file and the line, and on a source
//! file over 1,000 lines.
//!
//! The layers, from the bottom up (see `src/lib.rs`):
//! - leaves: `clock`, `digest`, `diagnostic`, `files`, `signal`, `tls`; `spec` (the
//!   contracts); `ui` (text for people, over `spec`); `aws` (the only SDK
//!   seam, returning its own or `spec` types);
//! - the pipeline, one way: `model` → `config` → `compile` → `plan` →
//!   `apply` (each may use those before it), with `output` and `schema`;
//! - `scheduler`: pure, over `spec` and `model`;
//! - the runtime: `control`, `agent`, `hook`, none of which reaches the
//!   pipeline;
//! - `cli` and `testing` on top.
//!
//! Code under `#[cfg(test)] mod tests` is not counted: a test may build a
//! kick.toml through the compiler.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each top-level module may import, besides itself.
fn allowed() -> BTreeMap<&'static str, Vec<&'static str>> {
    let leaves = ["clock", "digest", "diagnostic", "files", "signal"];
    let mut rules: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for leaf in leaves {
        rules.insert(leaf, vec![]);
    }
    rules.insert("tls", vec!["digest"]);
    rules.insert("spec", vec!["digest"]);
    rules.insert("ui", vec!["spec"]);
    rules.insert("aws", vec!["spec", "digest"]);
    let base = ["spec", "clock", "digest", "diagnostic", "ui"];
    let pipeline = ["model", "config", "compile", "plan", "apply"];
    for (i, stage) in pipeline.iter().enumerate() {
        let mut may: Vec<&str> = base.to_vec();
        may.extend(&pipeline[..i]);
        if i >= 2 {
            may.push("aws");
        }
        if *stage == "apply" {
            may.push("tls");
        }
        rules.insert(stage, may);
    }
    rules.insert("output", vec!["compile", "spec"]);
    rules.insert("schema", vec!["config", "plan"]);
    rules.insert("scheduler", vec!["spec", "model"]);
    let runtime = [
        "spec",
        "clock",
        "aws",
        "tls",
        "files",
        "signal",
        "ui",
        "digest",
        "diagnostic",
    ];
    let mut control = runtime.to_vec();
    control.push("scheduler");
    rules.insert("control", control);
    rules.insert("agent", runtime.to_vec());
    rules.insert("hook", runtime.to_vec());
    rules
}

/// Modules that may import any module but each other.
const TOP: [&str; 2] = ["cli", "testing"];

/// Inside `control/`: what each part may import of the others (handlers
/// call controllers and state, never the reverse).
fn control_allowed(part: &str) -> &'static [&'static str] {
    match part {
        "state" => &[],
        "controllers" => &["state"],
        "api" => &["state", "controllers"],
        // Server life (election, listeners, leading) wires them all.
        _ => &["state", "controllers", "api"],
    }
}

struct Import {
    file: PathBuf,
    line: usize,
    target: String,
    inner: Option<String>,
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The `crate::x::y` paths of a file's non-test code (not a `tests.rs`),
/// with their lines.
fn imports(file: &Path, text: &str) -> Vec<Import> {
    let mut found = Vec::new();
    // A module's tests in a file of their own (`#[cfg(test)] mod tests;`).
    if file.file_name().is_some_and(|n| n == "tests.rs") {
        return found;
    }
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("#[cfg(test)]") {
            let next = text.lines().nth(n + 1).unwrap_or_default();
            if next.starts_with("mod ") {
                break;
            }
        }
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let word = |s: &str| -> String {
                s.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect()
            };
            let target = word(after);
            let inner = after
                .strip_prefix(&format!("{target}::"))
                .map(word)
                .filter(|w| !w.is_empty());
            found.push(Import {
                file: file.to_owned(),
                line: n + 1,
                target,
                inner,
            });
            rest = after;
        }
    }
    found
}

fn top_of(src: &Path, file: &Path) -> (String, Option<String>) {
    let relative = file.strip_prefix(src).expect("under src");
    let mut parts = relative.iter().map(|p| p.to_string_lossy().into_owned());
    let first = parts.next().unwrap_or_default();
    let second = parts.next().map(|s| s.trim_end_matches(".rs").to_owned());
    (first.trim_end_matches(".rs").to_owned(), second)
}

#[test]
fn imports_follow_the_layers() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let rules = allowed();
    let mut problems = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let (top, part) = top_of(&src, file);
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read");
        for import in imports(file, &text) {
            let shown = format!(
                "{}:{}",
                import
                    .file
                    .strip_prefix(&root)
                    .unwrap_or(&import.file)
                    .display(),
                import.line
            );
            if import.target == top {
                if top == "control"
                    && let (Some(from), Some(to)) = (&part, &import.inner)
                    && from != to
                    && ["state", "controllers", "api"].contains(&to.as_str())
                    && !control_allowed(from).contains(&to.as_str())
                {
                    problems.push(format!(
                        "{shown}: control::{from} may not import control::{to} (handlers call controllers and state, never the reverse)"
                    ));
                }
                continue;
            }
            edges
                .entry(top.clone())
                .or_default()
                .insert(import.target.clone());
            if TOP.contains(&top.as_str()) {
                if TOP.contains(&import.target.as_str()) {
                    problems.push(format!("{shown}: {top} may not import {}", import.target));
                }
                continue;
            }
            match rules.get(top.as_str()) {
                None => problems.push(format!(
                    "{shown}: {top} is a top-level module the layering test does not know: add it to tests/tidy.rs"
                )),
                Some(may) if !may.contains(&import.target.as_str()) => problems.push(format!(
                    "{shown}: {top} may not import crate::{} (it may import: {})",
                    import.target,
                    if may.is_empty() {
                        "nothing of the crate".to_owned()
                    } else {
                        may.join(", ")
                    }
                )),
                Some(_) => {}
            }
        }
    }
    for (from, targets) in &edges {
        for to in targets {
            if edges.get(to).is_some_and(|back| back.contains(from)) && from < to {
                problems.push(format!("{from} and {to} import each other"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "imports that break the layering:\n{}",
        problems.join("\n")
    );
}

#[test]
fn no_source_file_is_over_a_thousand_lines() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).expect("read").lines().count();
            (lines > 1000).then(|| format!("{}: {lines} lines", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "split these by what they do:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_layering_check_sees_a_forbidden_import() {
    // The test must be able to fail: a made-up agent file that reaches the
    // compiler is caught, with its line.
    let file = Path::new("src/agent/bad.rs");
    let found = imports(
        file,
        "//! doc\nuse crate::compile::kick;\n// crate::plan in a comment\n",
    );
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].line, found[0].target.as_str()), (2, "compile"));
    assert!(!allowed()["agent"].contains(&"compile"));
}
