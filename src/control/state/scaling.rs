//! The scaler's memory between steps: recommendations within each
//! service's scale-in window, nodes asked of the group, and the decisions
//! the description shows.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use tokio::time::Instant;

use crate::spec::description::Decision;
use crate::spec::kick::ServiceKey;

/// Decisions kept for the description.
pub const DECISIONS_KEPT: usize = 50;

/// What the scaler remembers between steps (the leader's only; a new
/// leader starts afresh from what runs).
#[derive(Debug, Default)]
pub struct Scaling {
    /// Each service's recommendations within its scale-in window.
    pub history: BTreeMap<ServiceKey, VecDeque<(Instant, u32)>>,
    /// Since when each service's recommendation has been below its count.
    pub low_since: BTreeMap<ServiceKey, Instant>,
    /// When each service's count last changed.
    pub changed: BTreeMap<ServiceKey, Instant>,
    /// Since when nothing has moved (for consolidation's `after`).
    pub steady_since: Option<Instant>,
    /// The nodes of the last step, to notice one joining or leaving.
    pub last_nodes: BTreeSet<String>,
    /// The desired capacity last asked for, and when.
    pub asked: Option<(u32, Instant)>,
    /// Drained nodes whose termination was asked for.
    pub terminating: BTreeSet<String>,
    pub decisions: VecDeque<Decision>,
}

impl Scaling {
    /// Records a decision (an identical one in a row only once) and logs it.
    pub fn decide(&mut self, text: String) {
        if self.decisions.back().is_some_and(|d| d.decision == text) {
            return;
        }
        eprintln!("kick: {text}");
        let at = crate::clock::unix_seconds();
        self.decisions.push_back(Decision { at, decision: text });
        while self.decisions.len() > DECISIONS_KEPT {
            self.decisions.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_are_kept_once_each_and_bounded() {
        let mut scaling = Scaling::default();
        scaling.decide("a".into());
        scaling.decide("a".into());
        assert_eq!(scaling.decisions.len(), 1);
        for i in 0..(DECISIONS_KEPT + 5) {
            scaling.decide(i.to_string());
        }
        assert_eq!(scaling.decisions.len(), DECISIONS_KEPT);
        assert_eq!(
            scaling.decisions.back().map(|d| d.decision.as_str()),
            Some((DECISIONS_KEPT + 4).to_string().as_str())
        );
    }
}
