//! The cluster's nodes, as EC2 knows them: the instances tagged
//! `huxley:cluster=<name>`. Read at start and again when a registration
//! names a node kick has not seen (at most every two seconds), so a node
//! the autoscaler just launched is found without polling EC2 on every call.

use std::collections::BTreeMap;
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
}

impl Nodes {
    /// Nodes as just read from EC2.
    pub fn from_list(list: Vec<Node>) -> Self {
        let mut nodes = Self::default();
        nodes.replace(list);
        nodes
    }

    /// Takes a fresh list from EC2.
    pub fn replace(&mut self, list: Vec<Node>) {
        let known: BTreeMap<String, Node> = list.into_iter().map(|n| (n.id.clone(), n)).collect();
        if known != self.known {
            self.generation += 1;
        }
        self.known = known;
        self.refreshed = Some(Instant::now());
    }
}
