//! Container networking as a decision: every node gets a /24 of the
//! cluster's container range (the lowest free one), routed to it in the
//! VPC; a node that is gone gives its /24 back.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The `index`-th /24 of `range`, if it has one.
pub fn subnet(range: Ipv4Net, index: u32) -> Option<Ipv4Net> {
    if range.prefix_len() > 24 {
        return None;
    }
    let count = 1u64 << (24 - range.prefix_len());
    if u64::from(index) >= count {
        return None;
    }
    let base = u32::from(range.network()) + (index << 8);
    Ipv4Net::new(Ipv4Addr::from(base), 24).ok()
}

/// A node and its container subnet.
pub type NodeSubnet = (String, Ipv4Net);

/// Gives every node a subnet (the lowest free one) and takes back those of
/// nodes that are gone; returns the subnets added and removed.
pub fn allocate_subnets(
    range: Ipv4Net,
    nodes: &BTreeSet<String>,
    subnets: &mut BTreeMap<String, Ipv4Net>,
) -> (Vec<NodeSubnet>, Vec<NodeSubnet>) {
    let removed: Vec<NodeSubnet> = subnets
        .iter()
        .filter(|(node, _)| !nodes.contains(*node))
        .map(|(n, s)| (n.clone(), *s))
        .collect();
    for (node, _) in &removed {
        subnets.remove(node);
    }
    let mut used: BTreeSet<Ipv4Net> = subnets.values().copied().collect();
    let mut added = Vec::new();
    let mut next = 0u32;
    for node in nodes {
        if subnets.contains_key(node) {
            continue;
        }
        while let Some(candidate) = subnet(range, next) {
            next += 1;
            if used.insert(candidate) {
                subnets.insert(node.clone(), candidate);
                added.push((node.clone(), candidate));
                break;
            }
        }
    }
    (added, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_the_lowest_free_24s_and_come_back_when_a_node_goes() {
        let range: Ipv4Net = "100.64.0.0/22".parse().expect("range");
        let mut subnets = BTreeMap::new();
        let nodes: BTreeSet<String> = ["i-a", "i-b", "i-c"].map(String::from).into();
        let (added, removed) = allocate_subnets(range, &nodes, &mut subnets);
        assert_eq!(added.len(), 3);
        assert!(removed.is_empty());
        assert_eq!(subnets["i-b"].to_string(), "100.64.1.0/24");
        let nodes: BTreeSet<String> = ["i-a", "i-c", "i-d", "i-e"].map(String::from).into();
        let (added, removed) = allocate_subnets(range, &nodes, &mut subnets);
        assert_eq!(
            removed,
            [("i-b".to_owned(), "100.64.1.0/24".parse().expect("net"))]
        );
        // i-d takes i-b's old subnet, i-e the last one; a fifth node gets none.
        assert_eq!(subnets["i-d"].to_string(), "100.64.1.0/24");
        assert_eq!(subnets["i-e"].to_string(), "100.64.3.0/24");
        assert_eq!(added.len(), 2);
        let nodes: BTreeSet<String> = ["i-a", "i-c", "i-d", "i-e", "i-f"].map(String::from).into();
        allocate_subnets(range, &nodes, &mut subnets);
        assert!(!subnets.contains_key("i-f"));
    }
}
