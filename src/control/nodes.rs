//! The cluster's nodes, as EC2 knows them: the instances tagged
//! `huxley:cluster=<name>`. Read at start and again when a registration
//! names a node kick has not seen (at most every two seconds), so a node
//! the autoscaler just launched is found without polling EC2 on every call.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::aws::Node;

/// How often a miss may send kick back to EC2.
pub const REFRESH_AT_MOST_EVERY: Duration = Duration::from_secs(2);

/// The nodes kick knows, and when it last asked EC2.
#[derive(Debug, Default)]
pub struct Nodes {
    pub known: BTreeMap<String, Node>,
    pub refreshed: Option<Instant>,
    /// Bumped when the list changes (the description shows it).
    pub generation: u64,
    /// Known nodes the last read did not list: one more read without
    /// them, and they leave.
    missing_once: BTreeSet<String>,
    /// Why the last read was not taken as it was, if it was not.
    pub held: Option<String>,
}

impl Nodes {
    /// Nodes as just read from EC2.
    pub fn from_list(list: Vec<Node>) -> Self {
        let mut nodes = Self::default();
        nodes.replace(list);
        nodes
    }

    /// Takes a fresh list from EC2, carefully: one read never empties the
    /// cluster (a `DescribeInstances` that answers no node, or a removed
    /// tag, would have every replica stopped). A node leaves only after two
    /// reads in a row without it, at most a third of the nodes (one at
    /// least) a read, and a read that lists no node while some are known
    /// changes nothing. `held` says why a read was not taken whole.
    pub fn replace(&mut self, list: Vec<Node>) {
        self.replace_checked(list, None);
    }

    /// [`Nodes::replace`], cross-checked with the Auto Scaling group's
    /// instances (`in_group`, when it could be read): a node EC2's read
    /// missed but the group still has in service is not missing (its tag
    /// was removed, or the read was partial), and stays.
    pub fn replace_checked(&mut self, list: Vec<Node>, in_group: Option<&BTreeSet<String>>) {
        let read: BTreeMap<String, Node> = list.into_iter().map(|n| (n.id.clone(), n)).collect();
        let first = self.refreshed.is_none();
        self.refreshed = Some(Instant::now());
        self.held = None;
        if !first && read.is_empty() && !self.known.is_empty() {
            self.held = Some(format!(
                "EC2 listed none of the cluster's {} nodes; kick keeps them until a read lists some",
                self.known.len()
            ));
            return;
        }
        let unlisted: BTreeSet<String> = self
            .known
            .keys()
            .filter(|id| !read.contains_key(*id))
            .cloned()
            .collect();
        let (in_service, missing): (BTreeSet<String>, BTreeSet<String>) = unlisted
            .into_iter()
            .partition(|id| in_group.is_some_and(|group| group.contains(id)));
        let limit = (self.known.len() / 3).max(1);
        let leaving: Vec<String> = if first {
            Vec::new()
        } else {
            missing
                .iter()
                .filter(|id| self.missing_once.contains(*id))
                .take(limit)
                .cloned()
                .collect()
        };
        let waiting = missing.len() - leaving.len();
        if waiting > 0 && !first {
            self.held = Some(format!(
                "{} of the cluster's nodes missing from EC2's answer stay until a second read without them (at most {limit} leave a read)",
                waiting
            ));
        }
        if !in_service.is_empty() {
            let said = format!(
                "{} of the cluster's nodes EC2 did not list are in service in the Auto Scaling group, and stay",
                in_service.len()
            );
            self.held = Some(match self.held.take() {
                Some(held) => format!("{held}; {said}"),
                None => said,
            });
        }
        let mut known = read;
        for id in missing.iter().chain(&in_service) {
            if !leaving.contains(id)
                && let Some(node) = self.known.get(id)
            {
                known.insert(id.clone(), node.clone());
            }
        }
        self.missing_once = missing
            .into_iter()
            .filter(|id| !leaving.contains(id))
            .collect();
        if known != self.known {
            self.generation += 1;
        }
        self.known = known;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> Node {
        Node {
            id: id.to_owned(),
            address: None,
            public_address: None,
            instance_type: "m6i.large".into(),
            zone: "us-west-2a".into(),
            do_not_disrupt: false,
        }
    }

    fn ids(nodes: &Nodes) -> Vec<&str> {
        nodes.known.keys().map(String::as_str).collect()
    }

    /// Regression: one DescribeInstances that listed no node dropped every
    /// node, and a waiting long poll then handed the agents an empty
    /// assignment: they stopped everything.
    #[test]
    fn one_read_never_empties_the_cluster() {
        let mut nodes = Nodes::from_list(vec![node("a"), node("b"), node("c")]);
        nodes.replace(Vec::new());
        assert_eq!(ids(&nodes), ["a", "b", "c"]);
        assert!(
            nodes
                .held
                .as_deref()
                .is_some_and(|h| h.contains("listed none"))
        );
        nodes.replace(Vec::new());
        assert_eq!(ids(&nodes), ["a", "b", "c"], "nor two");
        // A node missing once stays; missing twice, it leaves.
        nodes.replace(vec![node("a"), node("b")]);
        assert_eq!(ids(&nodes), ["a", "b", "c"]);
        assert!(nodes.held.is_some());
        let before = nodes.generation;
        nodes.replace(vec![node("a"), node("b")]);
        assert_eq!(ids(&nodes), ["a", "b"]);
        assert!(nodes.generation > before);
        // Back after one miss: it never left.
        nodes.replace(vec![node("a"), node("b"), node("d")]);
        nodes.replace(vec![node("b"), node("d")]);
        nodes.replace(vec![node("a"), node("b"), node("d")]);
        nodes.replace(vec![node("a"), node("b"), node("d")]);
        assert_eq!(ids(&nodes), ["a", "b", "d"]);
    }

    /// Issue 19: membership from EC2 is cross-checked with the group: a
    /// node whose tag went (or that a partial read missed) but that the
    /// group has in service never leaves.
    #[test]
    fn a_node_the_group_still_has_in_service_stays() {
        let mut nodes = Nodes::from_list(vec![node("a"), node("b"), node("c")]);
        let group: BTreeSet<String> = ["a", "b", "c"].map(str::to_owned).into();
        for _ in 0..3 {
            nodes.replace_checked(vec![node("a"), node("b")], Some(&group));
            assert_eq!(ids(&nodes), ["a", "b", "c"]);
            assert!(
                nodes
                    .held
                    .as_deref()
                    .is_some_and(|h| h.contains("Auto Scaling group"))
            );
        }
        // Out of the group too: it leaves as any missing node does.
        let two: BTreeSet<String> = ["a", "b"].map(str::to_owned).into();
        nodes.replace_checked(vec![node("a"), node("b")], Some(&two));
        nodes.replace_checked(vec![node("a"), node("b")], Some(&two));
        assert_eq!(ids(&nodes), ["a", "b"]);
    }

    #[test]
    fn at_most_a_third_of_the_nodes_leave_a_read() {
        let six: Vec<Node> = ["a", "b", "c", "d", "e", "f"].map(node).to_vec();
        let mut nodes = Nodes::from_list(six);
        let two = vec![node("a"), node("b")];
        nodes.replace(two.clone());
        assert_eq!(nodes.known.len(), 6, "first miss: nobody leaves");
        nodes.replace(two.clone());
        assert_eq!(nodes.known.len(), 4, "two of six leave");
        nodes.replace(two.clone());
        assert_eq!(nodes.known.len(), 3, "then one of four");
        nodes.replace(two.clone());
        nodes.replace(two);
        assert_eq!(ids(&nodes), ["a", "b"]);
        assert!(nodes.held.is_none());
    }
}
