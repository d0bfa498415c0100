//! A plan as text for people: the summary line first, then destroys and
//! replacements, then the rest, then artifacts, records, drift and notes.
//! Colour only when asked (a terminal); plain text otherwise.

use std::fmt::Write as _;

use serde_json::Value;

use super::{Action, Plan, Replacement, ResourceChange, StackAction};
use crate::ui::style::Style;

/// The one-line summary: "Plan: 3 to add, 1 to change, 1 to replace, 0 to
/// destroy." or "No changes."
pub fn summary(plan: &Plan) -> String {
    if !plan.has_changes() {
        return "No changes. The live cluster matches huxley.toml.".to_owned();
    }
    let s = plan.summary;
    let mut line = format!(
        "Plan: {} to add, {} to change, {} to replace, {} to destroy.",
        s.add, s.change, s.replace, s.destroy
    );
    let extra: Vec<String> = [
        (plan.artifacts.len(), "artifact"),
        (plan.records.len(), "DNS record"),
        (plan.tokens.len(), "kick token"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| crate::diagnostic::plural(*n, what))
    .collect();
    if !extra.is_empty() {
        let listed = match extra.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
            _ => extra.join(""),
        };
        let _ = write!(line, " Also {listed} to update.");
    }
    if rolls_nodes(plan) {
        line.push_str(" Every node is replaced, one at a time.");
    }
    line
}

/// The whole plan as text.
pub fn render(plan: &Plan, style: Style) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", style.bold(&summary(plan)));
    let _ = writeln!(
        out,
        "{}",
        style.dim(&format!(
            "cluster {} in {}, stack {}",
            plan.cluster, plan.region, plan.stack
        ))
    );
    match plan.stack_action {
        StackAction::Create => {
            let _ = writeln!(out, "The stack does not exist yet: apply creates it.");
        }
        StackAction::Recreate => {
            let _ = writeln!(
                out,
                "{}",
                style.red("The stack is deleted and created again.")
            );
        }
        StackAction::Update | StackAction::None => {}
    }

    let rolling = plan.stack_action == StackAction::Update;
    let (severe, rest): (Vec<&ResourceChange>, Vec<&ResourceChange>) = plan
        .resources
        .iter()
        .partition(|r| matches!(r.action, Action::Remove | Action::Replace));
    if !severe.is_empty() {
        let _ = writeln!(out, "\n{}", style.bold("Destroyed or replaced:"));
        for change in severe {
            resource(&mut out, change, style, rolling);
        }
    }
    if !rest.is_empty() {
        let _ = writeln!(out, "\n{}", style.bold("Resources:"));
        for change in rest {
            resource(&mut out, change, style, rolling);
        }
    }
    if !plan.parameters.is_empty() {
        let _ = writeln!(out, "\n{}", style.bold("Parameters:"));
        for p in &plan.parameters {
            let before = p.before.as_deref().unwrap_or("(unset)");
            let _ = writeln!(
                out,
                "  {} {}: {before} → {}",
                style.yellow("~"),
                p.name,
                p.after
            );
        }
    }
    if let Some(certificate) = &plan.certificate {
        let lines = certificate.lines();
        if !lines.is_empty() {
            let _ = writeln!(out, "\n{}", style.bold("Load balancer certificate:"));
            for line in lines {
                let _ = writeln!(out, "  {line}");
            }
        }
    }
    if !plan.artifacts.is_empty() {
        let _ = writeln!(out, "\n{}", style.bold("Artifacts:"));
        for artifact in &plan.artifacts {
            let _ = writeln!(out, "  {} {}", mark(artifact.action, style), artifact.path);
            // New files are listed, not printed whole.
            if artifact.action == Action::Modify {
                for line in artifact.diff.lines().skip(2) {
                    let painted = match line.chars().next() {
                        Some('+') => style.green(line),
                        Some('-') => style.red(line),
                        Some('@') => style.dim(line),
                        _ => line.to_owned(),
                    };
                    let _ = writeln!(out, "      {painted}");
                }
            }
        }
    }
    if !plan.records.is_empty() {
        let _ = writeln!(
            out,
            "\n{}",
            style.bold("DNS ownership records (public zone):")
        );
        for record in &plan.records {
            let _ = writeln!(
                out,
                "  {} {} TXT {}",
                mark(record.action, style),
                record.name,
                record.value
            );
        }
    }
    if !plan.tokens.is_empty() {
        let _ = writeln!(
            out,
            "\n{}",
            style.bold(
                "Kick tokens (SSM SecureString parameters; values are generated and never shown):"
            )
        );
        for token in &plan.tokens {
            let _ = writeln!(out, "  {} {}", mark(token.action, style), token.name);
        }
    }
    if !plan.drift.is_empty() {
        let _ = writeln!(out, "\n{}", style.yellow("Drift:"));
        for d in &plan.drift {
            let _ = writeln!(out, "  ! {d}");
        }
    }
    if !plan.notes.is_empty() {
        let _ = writeln!(out, "\n{}", style.bold("Notes:"));
        for n in &plan.notes {
            let _ = writeln!(out, "  - {n}");
        }
    }
    out
}

/// Whether the plan changes the nodes' launch template on a live stack,
/// which rolls every node.
pub fn rolls_nodes(plan: &Plan) -> bool {
    plan.stack_action == StackAction::Update
        && plan
            .resources
            .iter()
            .any(|r| r.logical_id == "NodeLaunchTemplate" && r.action == Action::Modify)
}

fn mark(action: Action, style: Style) -> String {
    match action {
        Action::Add => style.green("+"),
        Action::Modify => style.yellow("~"),
        Action::Replace => style.red("-/+"),
        Action::Remove => style.red("-"),
    }
}

fn resource(out: &mut String, change: &ResourceChange, style: Style, rolling: bool) {
    let verb = match (change.action, change.replacement) {
        (Action::Replace, _) => " must be replaced".to_owned(),
        (Action::Remove, _) => " is destroyed".to_owned(),
        (Action::Modify, Replacement::Conditional) => " may be replaced".to_owned(),
        (Action::Modify, _) if rolling && change.logical_id == "NodeLaunchTemplate" => {
            style.red(" → replaces every node, one at a time (rolling update)")
        }
        (Action::Modify, _) if rolling && change.logical_id == "ControlLaunchTemplate" => {
            style.red(" → replaces every control machine, one at a time (rolling update)")
        }
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "  {} {} ({}){verb}",
        mark(change.action, style),
        change.logical_id,
        style.dim(&change.resource_type)
    );
    for p in &change.properties {
        let why = match p.replacement {
            Replacement::Always => style.red(" (forces replacement)"),
            Replacement::Conditional => style.yellow(" (may force replacement)"),
            Replacement::Never => String::new(),
        };
        let _ = writeln!(
            out,
            "      {}: {} → {}{why}",
            p.path,
            value(p.before.as_ref(), VALUE_WIDTH),
            value(p.after.as_ref(), VALUE_WIDTH)
        );
    }
}

/// How long a property's value may be in the text plan, in characters.
const VALUE_WIDTH: usize = 100;

/// A value on one line, cut at `width` characters when long (the JSON
/// plan has it whole).
pub(super) fn value(v: Option<&Value>, width: usize) -> String {
    v.map_or_else(|| "(none)".to_owned(), |v| cut(&v.to_string(), width))
}

/// Text of at most `width` characters, ending in `...` when cut.
pub(super) fn cut(text: &str, width: usize) -> String {
    if text.chars().count() > width {
        let kept: String = text.chars().take(width.saturating_sub(3)).collect();
        format!("{kept}...")
    } else {
        text.to_owned()
    }
}
