//! A plan as GitHub-flavoured Markdown, for a pull-request comment (as
//! tfcmt and Atlantis post Terraform's): the summary, destroys and
//! replacements flagged first, resources and parameters as tables, each
//! changed artifact's diff in a collapsed block. Deterministic, and cut to
//! fit a comment: GitHub takes at most 65,536 characters.

use std::fmt::Write as _;

use super::render::{cut, rolls_nodes, summary, value};
use super::{Action, Plan, Replacement, ResourceChange, StackAction};

/// What the comment may hold, leaving room under GitHub's 65,536.
pub const LIMIT: usize = 60_000;

/// The plan as Markdown.
pub fn markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### Huxley plan for cluster {} ({})\n",
        code(&plan.cluster),
        code(&plan.region)
    );
    let _ = writeln!(out, "**{}**\n", summary(plan));
    let stack = match plan.stack_action {
        StackAction::Create => Some("does not exist yet: apply creates it"),
        StackAction::Recreate => Some("is **deleted and created again**"),
        StackAction::Update => Some("changes"),
        StackAction::None => None,
    };
    if let Some(what) = stack {
        let _ = writeln!(out, "The stack {} {what}.\n", code(&plan.stack));
    }
    if rolls_nodes(plan) {
        let _ = writeln!(
            out,
            "> [!WARNING]\n> Every node is replaced, one at a time (rolling update).\n"
        );
    }
    let (severe, rest): (Vec<&ResourceChange>, Vec<&ResourceChange>) = plan
        .resources
        .iter()
        .partition(|r| matches!(r.action, Action::Remove | Action::Replace));
    if !severe.is_empty() {
        let _ = writeln!(out, "> [!CAUTION]\n> Destroyed or replaced:");
        for change in &severe {
            let _ = writeln!(
                out,
                "> - {} {} ({}){}",
                verb(change.action),
                code(&change.logical_id),
                code(&change.resource_type),
                forced_by(change)
            );
        }
        out.push('\n');
    }
    if !rest.is_empty() {
        let _ = writeln!(out, "#### Resources\n");
        let _ = writeln!(out, "| | Resource | Type | Properties |\n|---|---|---|---|");
        for change in rest {
            let properties: Vec<String> = change
                .properties
                .iter()
                .map(|p| {
                    let flag = match p.replacement {
                        Replacement::Always => " (forces replacement)",
                        Replacement::Conditional => " (may force replacement)",
                        Replacement::Never => "",
                    };
                    format!("{}{flag}", code(&p.path))
                })
                .collect();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                verb(change.action),
                cell(&code(&change.logical_id)),
                cell(&code(&change.resource_type)),
                cell(&properties.join(", "))
            );
        }
        out.push('\n');
    }
    if !plan.parameters.is_empty() {
        let _ = writeln!(
            out,
            "#### Parameters\n\n| Parameter | Before | After |\n|---|---|---|"
        );
        for p in &plan.parameters {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                cell(&code(&p.name)),
                cell(
                    &p.before
                        .as_deref()
                        .map_or("(unset)".to_owned(), |b| code(&cut(b, VALUE_WIDTH)))
                ),
                cell(&code(&cut(&p.after, VALUE_WIDTH)))
            );
        }
        out.push('\n');
    }
    lists(plan, &mut out);
    artifacts(plan, &mut out);
    fit(out)
}

/// The comment cut at a line to [`LIMIT`] when even without diffs it is
/// longer (thousands of resources or records), saying so.
fn fit(mut out: String) -> String {
    const CUT: &str =
        "\n\n*The plan is cut here to fit a comment: `huxley plan` shows it whole.*\n";
    if out.len() <= LIMIT {
        return out;
    }
    let mut end = LIMIT - CUT.len();
    while !out.is_char_boundary(end) {
        end -= 1;
    }
    let end = out[..end].rfind('\n').unwrap_or(end);
    out.truncate(end);
    out.push_str(CUT);
    out
}

/// DNS records, tokens, drift and notes: short lists.
fn lists(plan: &Plan, out: &mut String) {
    if let Some(certificate) = &plan.certificate {
        let lines = certificate.lines();
        if !lines.is_empty() {
            let _ = writeln!(out, "#### Load balancer certificate\n");
            for line in lines {
                let _ = writeln!(out, "- {}", text(&line));
            }
            out.push('\n');
        }
    }
    if !plan.records.is_empty() {
        let _ = writeln!(out, "#### DNS ownership records (public zone)\n");
        for r in &plan.records {
            let _ = writeln!(
                out,
                "- {} {} TXT {}",
                verb(r.action),
                code(&r.name),
                code(&r.value)
            );
        }
        out.push('\n');
    }
    if !plan.tokens.is_empty() {
        let _ = writeln!(
            out,
            "#### Kick tokens\n\nSSM SecureString parameters; values are generated and never shown.\n"
        );
        for t in &plan.tokens {
            let _ = writeln!(out, "- {} {}", verb(t.action), code(&t.name));
        }
        out.push('\n');
    }
    if !plan.drift.is_empty() {
        let _ = writeln!(out, "#### Drift\n");
        for d in &plan.drift {
            let _ = writeln!(out, "- {}", text(d));
        }
        out.push('\n');
    }
    if !plan.notes.is_empty() {
        let _ = writeln!(out, "#### Notes\n");
        for n in &plan.notes {
            let _ = writeln!(out, "- {}", text(n));
        }
        out.push('\n');
    }
}

/// Each changed artifact, its diff collapsed; diffs that do not fit the
/// comment are left out, and it says so.
fn artifacts(plan: &Plan, out: &mut String) {
    if plan.artifacts.is_empty() {
        return;
    }
    let _ = writeln!(out, "#### Artifacts\n");
    let mut cut = 0;
    for artifact in &plan.artifacts {
        let (added, removed) = counts(&artifact.diff);
        let head = format!(
            "{} {} (+{added} −{removed})",
            verb(artifact.action),
            code(&artifact.path)
        );
        if artifact.action == Action::Remove || artifact.diff.is_empty() {
            let _ = writeln!(out, "- {head}");
            continue;
        }
        let body: String = artifact
            .diff
            .lines()
            .skip(2)
            .fold(String::new(), |mut s, l| {
                s.push_str(l);
                s.push('\n');
                s
            });
        let fence = "`".repeat(longest_run(&body, '`').max(2) + 1);
        let block = format!(
            "<details><summary>{}</summary>\n\n{fence}diff\n{body}{fence}\n\n</details>\n\n",
            html(&head)
        );
        if out.len() + block.len() > LIMIT {
            let _ = writeln!(out, "- {head}");
            cut += 1;
        } else {
            out.push_str(&block);
        }
    }
    if cut > 0 {
        let _ = writeln!(
            out,
            "\n{} left out to fit the comment: `huxley plan` shows them.",
            crate::diagnostic::plural(cut, "diff")
        );
    }
}

fn verb(action: Action) -> &'static str {
    match action {
        Action::Add => "➕ add",
        Action::Modify => "✏️ change",
        Action::Replace => "♻️ **replace**",
        Action::Remove => "🗑️ **destroy**",
    }
}

/// Why a resource is replaced: the properties that force it.
fn forced_by(change: &ResourceChange) -> String {
    let forcing: Vec<String> = change
        .properties
        .iter()
        .filter(|p| p.replacement != Replacement::Never)
        .map(|p| {
            format!(
                "{}: {} → {}",
                code(&p.path),
                code(&value(p.before.as_ref(), VALUE_WIDTH)),
                code(&value(p.after.as_ref(), VALUE_WIDTH))
            )
        })
        .collect();
    if forcing.is_empty() {
        String::new()
    } else {
        format!(", forced by {}", forcing.join("; "))
    }
}

/// How long a value in the comment may be, in characters.
const VALUE_WIDTH: usize = 80;

/// Lines added and removed in a unified diff.
fn counts(diff: &str) -> (usize, usize) {
    diff.lines()
        .skip(2)
        .fold((0, 0), |(a, r), line| match line.chars().next() {
            Some('+') => (a + 1, r),
            Some('-') => (a, r + 1),
            _ => (a, r),
        })
}

fn longest_run(text: &str, c: char) -> usize {
    let (mut longest, mut run) = (0, 0);
    for ch in text.chars() {
        run = if ch == c { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    longest
}

/// Text as a code span, whatever backticks it holds, on one line.
fn code(text: &str) -> String {
    let text = text.replace(['\n', '\r'], " ");
    let ticks = "`".repeat(longest_run(&text, '`') + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{ticks}{pad}{text}{pad}{ticks}")
}

/// Text inside a table cell: a pipe would end the cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// Plain text that Markdown or HTML must not read as markup, nor GitHub
/// as a mention or a reference (`@` as an entity).
fn text(s: &str) -> String {
    let mut out = String::new();
    for ch in s.replace(['\n', '\r'], " ").chars() {
        if ch == '@' {
            out.push_str("&#64;");
            continue;
        }
        if "\\`*_{}[]<>#|~&".contains(ch) {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// Markdown inside an HTML element (a `<summary>`): `<` and `&` escaped.
fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{ArtifactChange, PropertyChange, Summary};
    use serde_json::Value;

    fn plan() -> Plan {
        Plan {
            format_version: crate::plan::FORMAT_VERSION,
            huxley_version: "0".into(),
            cluster: "acme".into(),
            region: "us-west-2".into(),
            stack: "huxley-acme".into(),
            stack_action: StackAction::Update,
            summary: Summary {
                add: 1,
                change: 1,
                replace: 1,
                destroy: 0,
            },
            resources: vec![
                ResourceChange {
                    logical_id: "Table".into(),
                    resource_type: "AWS::DynamoDB::Table".into(),
                    action: Action::Replace,
                    replacement: Replacement::Always,
                    properties: vec![PropertyChange {
                        path: "TableName".into(),
                        before: Some(Value::from("a")),
                        after: Some(Value::from("b|c")),
                        replacement: Replacement::Always,
                    }],
                },
                ResourceChange {
                    logical_id: "NodeLaunchTemplate".into(),
                    resource_type: "AWS::EC2::LaunchTemplate".into(),
                    action: Action::Modify,
                    replacement: Replacement::Never,
                    properties: vec![PropertyChange {
                        path: "LaunchTemplateData.InstanceType".into(),
                        before: Some(Value::from("t3.small")),
                        after: Some(Value::from("t3.medium")),
                        replacement: Replacement::Never,
                    }],
                },
            ],
            parameters: Vec::new(),
            artifacts: vec![ArtifactChange {
                path: "kick/kick.toml".into(),
                action: Action::Modify,
                diff: "--- a\n+++ b\n@@ -1 +1 @@\n-x = 1\n+x = \"```\"\n".into(),
            }],
            records: Vec::new(),
            tokens: Vec::new(),
            certificate: None,
            drift: vec!["the record <www> was | edited".into()],
            notes: Vec::new(),
            base: crate::plan::Base::default(),
            desired: crate::plan::Desired::default(),
        }
    }

    #[test]
    fn a_plan_comment_flags_replacements_and_collapses_diffs() {
        let text = markdown(&plan());
        let expected = "### Huxley plan for cluster `acme` (`us-west-2`)

**Plan: 1 to add, 1 to change, 1 to replace, 0 to destroy. Also 1 artifact to update. Every node is replaced, one at a time.**

The stack `huxley-acme` changes.

> [!WARNING]
> Every node is replaced, one at a time (rolling update).

> [!CAUTION]
> Destroyed or replaced:
> - ♻️ **replace** `Table` (`AWS::DynamoDB::Table`), forced by `TableName`: `\"a\"` → `\"b|c\"`

#### Resources

| | Resource | Type | Properties |
|---|---|---|---|
| ✏️ change | `NodeLaunchTemplate` | `AWS::EC2::LaunchTemplate` | `LaunchTemplateData.InstanceType` |

#### Drift

- the record \\<www\\> was \\| edited

#### Artifacts

<details><summary>✏️ change `kick/kick.toml` (+1 −1)</summary>

````diff
@@ -1 +1 @@
-x = 1
+x = \"```\"
````

</details>

";
        assert_eq!(text, expected, "{text}");
        assert_eq!(markdown(&plan()), text, "deterministic");
    }

    #[test]
    fn diffs_that_do_not_fit_a_comment_are_listed_not_shown() {
        let mut big = plan();
        let lines: String = (0..40_000).map(|i| format!("+line {i}\n")).collect();
        big.artifacts = vec![
            ArtifactChange {
                path: "a.toml".into(),
                action: Action::Modify,
                diff: format!("--- a\n+++ b\n{lines}"),
            },
            ArtifactChange {
                path: "b.toml".into(),
                action: Action::Modify,
                diff: "--- a\n+++ b\n+small\n".into(),
            },
        ];
        let text = markdown(&big);
        assert!(text.len() <= LIMIT, "{}", text.len());
        assert!(
            text.contains("- ✏️ change `a.toml` (+40000 −0)\n"),
            "{text}"
        );
        assert!(text.contains("+small\n"), "{text}");
        assert!(
            text.contains("1 diff left out to fit the comment"),
            "{text}"
        );
    }

    #[test]
    fn a_plan_too_long_even_without_diffs_is_cut_at_a_line_and_says_so() {
        let mut long = plan();
        long.artifacts.clear();
        long.notes = (0..5_000)
            .map(|i| format!("note {i} about @someone's change"))
            .collect();
        let text = markdown(&long);
        assert!(text.len() <= LIMIT, "{}", text.len());
        assert!(
            text.ends_with(
                "\n\n*The plan is cut here to fit a comment: `huxley plan` shows it whole.*\n"
            ),
            "{}",
            &text[text.len() - 200..]
        );
        assert!(
            text.contains("- note 0 about &#64;someone's change\n"),
            "no mention"
        );
        assert!(!text.contains('@'));
    }

    #[test]
    fn code_spans_hold_backticks_and_cells_hold_pipes() {
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`x"), "`` `x ``");
        assert_eq!(cell(&code("a|b")), "`a\\|b`");
    }
}
