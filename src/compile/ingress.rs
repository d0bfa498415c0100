//! The nodes' ingress: which ports the security group opens, to whom,
//! merged into ranges.

use std::collections::BTreeSet;

use super::cloudformation::short_hash;
use crate::model::{self, Config};

/// One `AWS::EC2::SecurityGroupIngress` rule beyond node-to-node traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressRule {
    pub id: String,
    pub from_port: u16,
    pub to_port: u16,
    pub cidr: String,
    pub description: String,
    /// Open to the internet for a service's public names.
    pub public: bool,
}

/// The ingress rules: public host-ports from anywhere, SSH, git and the
/// kick API only from `admin-cidrs`. Contiguous public host-ports share one
/// range rule (every port in the range is a public service's, so nothing
/// more is opened). Ids are derived from what a rule allows, so adding a
/// CIDR does not rename the other rules' resources.
pub fn ingress_rules(config: &Config) -> Vec<IngressRule> {
    let mut rules = Vec::new();
    let public_ports: BTreeSet<u16> = config
        .services()
        .filter(|(_, s)| !s.public.is_empty())
        .filter_map(|(_, s)| s.host_port)
        .collect();
    for (from, to) in runs(&public_ports) {
        let (id, description) = if from == to {
            (
                format!("IngressPublicTcp{from}"),
                format!("Public services on host port {from}"),
            )
        } else {
            (
                format!("IngressPublicTcp{from}To{to}"),
                format!("Public services on host ports {from}-{to}"),
            )
        };
        rules.push(IngressRule {
            id,
            from_port: from,
            to_port: to,
            cidr: "0.0.0.0/0".to_owned(),
            description,
            public: true,
        });
    }
    for cidr in &config.cluster.admin_cidrs {
        let cidr = cidr.to_string();
        for (name, port, what) in [
            ("Ssh", model::SSH_PORT, "SSH"),
            ("Git", model::HOOK_SSH_PORT, "git push to the hook server"),
            (
                "Kick",
                model::KICK_EXTERNAL_PORT,
                "the kick server's external API",
            ),
        ] {
            rules.push(IngressRule {
                id: format!("IngressAdmin{name}{}", short_hash(&cidr)),
                from_port: port,
                to_port: port,
                cidr: cidr.clone(),
                description: format!("{what} from admin range {cidr}"),
                public: false,
            });
        }
    }
    rules
}

/// Maximal runs of consecutive ports, as (first, last).
pub fn runs(ports: &BTreeSet<u16>) -> Vec<(u16, u16)> {
    let mut runs: Vec<(u16, u16)> = Vec::new();
    for &port in ports {
        match runs.last_mut() {
            Some((_, last)) if last.checked_add(1) == Some(port) => *last = port,
            _ => runs.push((port, port)),
        }
    }
    runs
}
