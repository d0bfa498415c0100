//! A cluster's description as text for people: apps, services with their
//! replicas (desired / running / healthy) and names, instances with node,
//! address, health and last check, then each node's capacity.

use std::fmt::Write as _;

use crate::spec::assignment::ReplicaState;
use crate::spec::description::{ClusterDescription, ServiceDescription};
use crate::spec::quantity::{format_cpu, format_memory};
use crate::spec::registry::Status;
use crate::ui::style::Style;

/// Renders the description; `source` says where it came from and how old
/// it is.
pub fn render(description: &ClusterDescription, source: &str, style: Style) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}",
        style.bold(&format!("cluster {}", description.cluster)),
        style.dim(&format!("({source})"))
    );
    for (app, services) in &description.apps {
        let _ = writeln!(out, "\n{}", style.bold(app));
        if let Some(deploying) = &services.deploying {
            let _ = writeln!(out, "  {}", style.yellow(&format!("deploying {deploying}")));
        }
        for (name, service) in &services.services {
            render_service(&mut out, name, service, description.generated_at, style);
        }
    }
    render_nodes(&mut out, description, style);
    if let Some(held) = &description.nodes_held {
        let _ = writeln!(out, "\n{} {held}", style.yellow("nodes held:"));
    }
    render_decisions(&mut out, description, style);
    out
}

/// One service: its replicas, names, release, problems and instances.
fn render_service(
    out: &mut String,
    name: &str,
    service: &ServiceDescription,
    now: u64,
    style: Style,
) {
    let names: Vec<&str> = service
        .private_name
        .iter()
        .chain(&service.public_names)
        .map(String::as_str)
        .collect();
    let replicas = format!(
        "{} desired, {} running, {} healthy",
        service.desired, service.running, service.healthy
    );
    let replicas = if service.healthy < service.desired as usize {
        style.yellow(&replicas)
    } else {
        replicas
    };
    if service.awaiting_first_deploy && service.running == 0 {
        let _ = writeln!(
            out,
            "  {name:<16} {}",
            style.yellow("waiting for its first deploy: git push to the app's remote")
        );
        return;
    }
    let _ = writeln!(out, "  {name:<16} {replicas}");
    if !names.is_empty() {
        let _ = writeln!(out, "  {:<16} {}", "", style.dim(&names.join(", ")));
    }
    if let Some(release) = &service.release {
        let commit = release.commit.as_deref().map_or(String::new(), |c| {
            format!(" ({})", crate::spec::release::short(c))
        });
        let _ = writeln!(
            out,
            "  {:<16} release v{}{commit}: {}",
            "",
            release.id,
            crate::spec::release::short(&release.image)
        );
    }
    for run in &service.runs {
        let _ = writeln!(
            out,
            "    {} {} on {}, {} for {}",
            style.yellow(&format!("run {}", run.id)),
            crate::spec::assignment::printable(&run.command.join(" "), 80),
            run.node,
            run.state.as_str(),
            age(now.saturating_sub(run.created))
        );
    }
    for unplaced in &service.unplaced {
        let _ = writeln!(
            out,
            "    {} {}",
            style.red(&format!("replica {} not placed:", unplaced.replica)),
            unplaced.reason
        );
    }
    for placed in &service.placed {
        if placed.state == Some(ReplicaState::Failed) {
            let _ = writeln!(
                out,
                "    {} {}",
                style.red(&format!(
                    "replica {} failed on {}:",
                    placed.replica, placed.node
                )),
                placed.detail.as_deref().unwrap_or("no detail")
            );
            for line in &placed.output {
                let _ = writeln!(out, "      {}", style.dim(&format!("| {line}")));
            }
        }
    }
    for instance in &service.instances {
        let health = match instance.health {
            Status::Healthy => style.green("healthy"),
            Status::Unhealthy => style.red("unhealthy"),
            Status::Unknown => style.yellow("unknown"),
        };
        let address = match instance.address {
            std::net::IpAddr::V4(a) => format!("{a}:{}", instance.port),
            std::net::IpAddr::V6(a) => format!("[{a}]:{}", instance.port),
        };
        let _ = write!(
            out,
            "    {:<20} {:<22} {health:<9} {:<14} {}",
            instance.node,
            address,
            instance.last_check_output,
            instance
                .version
                .as_deref()
                .map_or("-", crate::spec::release::short)
        );
        match &instance.load_balancer {
            Some(target) if target == "healthy" => {
                let _ = writeln!(out, "  load balancer: {}", style.green(target));
            }
            Some(target) => {
                let _ = writeln!(out, "  load balancer: {}", style.yellow(target));
            }
            None => out.push('\n'),
        }
    }
}

/// Each node's capacity, and why it drains.
fn render_nodes(out: &mut String, description: &ClusterDescription, style: Style) {
    if !description.nodes.is_empty() {
        let _ = writeln!(out, "\n{}", style.bold("nodes"));
        for (node, capacity) in &description.nodes {
            let replicas = match capacity.instances {
                1 => "1 replica".to_owned(),
                n => format!("{n} replicas"),
            };
            let address = capacity
                .address
                .map_or_else(|| "-".to_owned(), |a| a.to_string());
            let _ = writeln!(
                out,
                "  {node:<20} {:<11} {address:<15} {replicas:>12}  cpu {} of {}  memory {} of {}",
                if capacity.instance_type.is_empty() {
                    "-"
                } else {
                    &capacity.instance_type
                },
                cpu(capacity.cpu_requested_millis),
                cpu(u64::from(capacity.cpu_allocatable_millis)),
                memory(capacity.memory_requested_mib),
                memory(capacity.memory_allocatable_mib)
            );
            if let Some(reason) = &capacity.draining {
                let _ = writeln!(out, "  {:<20} {}", "", style.yellow(reason));
            }
        }
    }
}

/// The scaler's latest decisions.
fn render_decisions(out: &mut String, description: &ClusterDescription, style: Style) {
    if !description.decisions.is_empty() {
        let _ = writeln!(out, "\n{}", style.bold("scaling decisions"));
        // The latest few, oldest first; `--json` has them all.
        let skip = description.decisions.len().saturating_sub(DECISIONS_SHOWN);
        for decision in &description.decisions[skip..] {
            let ago = age(description.generated_at.saturating_sub(decision.at));
            let _ = writeln!(
                out,
                "  {} {}",
                style.dim(&format!("{ago:>4} ago")),
                decision.decision
            );
        }
    }
}

/// Scaling decisions the text shows.
const DECISIONS_SHOWN: usize = 10;

/// A CPU quantity as huxley.toml writes it; nothing is "0".
fn cpu(millis: u64) -> String {
    match u32::try_from(millis) {
        Ok(0) => "0".into(),
        Ok(m) => format_cpu(m),
        Err(_) => format!("{millis}m"),
    }
}

/// A memory quantity as huxley.toml writes it; nothing is "0".
fn memory(mib: u64) -> String {
    if mib == 0 {
        "0".into()
    } else {
        format_memory(mib)
    }
}

/// "12s", "4m", "3h", "2d".
pub fn age(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::spec::description::Decision;
    use crate::spec::description::NodeDescription;

    #[test]
    fn draining_nodes_and_the_latest_decisions_are_shown() {
        let node = |draining: Option<&str>| NodeDescription {
            instance_type: "m6i.large".into(),
            address: None,
            instances: 0,
            cpu_requested_millis: 0,
            cpu_allocatable_millis: 1800,
            memory_requested_mib: 0,
            memory_allocatable_mib: 7680,
            draining: draining.map(str::to_owned),
        };
        let decisions = (0..12)
            .map(|i| Decision {
                at: 1_000 + i,
                decision: format!("decision {i}"),
            })
            .collect();
        let description = ClusterDescription {
            cluster: "acme".into(),
            generated_at: 1_100,
            apps: BTreeMap::new(),
            nodes: BTreeMap::from([
                ("i-a".to_owned(), node(None)),
                (
                    "i-b".to_owned(),
                    node(Some("draining i-b: it runs nothing; saves $70/month")),
                ),
            ]),
            decisions,
            nodes_held: Some("EC2 listed no node; keeping the 2 known".into()),
        };
        let text = render(&description, "live", Style::new(false));
        assert!(
            text.contains("i-b ")
                && text.contains("  draining i-b: it runs nothing; saves $70/month\n"),
            "{text}"
        );
        assert!(text.contains("scaling decisions\n"), "{text}");
        assert!(
            text.contains("nodes held: EC2 listed no node; keeping the 2 known\n"),
            "{text}"
        );
        // The last ten, with their age; the two oldest left to --json.
        assert!(!text.contains("decision 1\n"), "{text}");
        assert!(text.contains(" 89s ago decision 11\n"), "{text}");
        assert!(text.contains(" 98s ago decision 2\n"), "{text}");
    }
}
