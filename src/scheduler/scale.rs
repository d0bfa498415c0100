//! Scaling recommendations: how many replicas a service's use asks for
//! (Kubernetes' horizontal autoscaler's rule), and how many nodes to add so
//! that every replica places. Pure; the control plane's scale controller
//! acts on them.

use std::collections::BTreeMap;

use super::placement::{self, NodeSpec, Replica, ServiceSpec};
use crate::spec::kick::{ReplicaBounds, ScalePolicy};

/// Within this of the target, nothing changes (Kubernetes' tolerance).
pub const TOLERANCE: f64 = 0.1;

/// What a service's replicas use, summed over those that report it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Replicas reporting.
    pub replicas: u32,
    pub cpu_millis: u64,
    pub memory_mib: u64,
}

/// The replica count `policy` asks for at `usage`, with the reason; `None`
/// when no replica reports.
pub fn recommend(
    policy: &ScalePolicy,
    bounds: ReplicaBounds,
    requests: (u32, u64),
    current: u32,
    usage: &Usage,
) -> Option<(u32, String)> {
    if usage.replicas == 0 {
        return None;
    }
    let per_replica = |used: u64| used as f64 / f64::from(usage.replicas);
    let mut best: Option<(u32, String)> = None;
    let metrics = [
        (
            "cpu",
            policy.target_cpu_percent,
            per_replica(usage.cpu_millis),
            f64::from(requests.0),
        ),
        (
            "memory",
            policy.target_memory_percent,
            per_replica(usage.memory_mib),
            requests.1 as f64,
        ),
    ];
    for (name, target, used, request) in metrics {
        let Some(target) = target else { continue };
        if request <= 0.0 {
            continue;
        }
        let percent = used / request * 100.0;
        let ratio = percent / f64::from(target);
        let count = if (ratio - 1.0).abs() <= TOLERANCE {
            current
        } else {
            let wanted = (f64::from(current) * ratio).ceil();
            if wanted >= f64::from(u32::MAX) {
                u32::MAX
            } else {
                wanted.max(0.0) as u32
            }
        };
        let count = count.clamp(bounds.min, bounds.max.max(bounds.min));
        let reason = format!("{name} at {percent:.0}% of the request against a {target}% target");
        if best.as_ref().is_none_or(|(b, _)| count > *b) {
            best = Some((count, reason));
        }
    }
    best
}

/// The fewest nodes to add (at most `room`) so that everything places,
/// with whether that is enough: each new node like `template`, in the
/// zone with the fewest nodes.
pub fn nodes_to_add(
    nodes: &[NodeSpec],
    services: &[ServiceSpec],
    current: &BTreeMap<Replica, String>,
    template: &NodeSpec,
    zones: &[String],
    room: u32,
) -> (u32, bool) {
    let mut more: Vec<NodeSpec> = nodes.to_vec();
    for k in 1..=room {
        let mut count: BTreeMap<&str, usize> = zones.iter().map(|z| (z.as_str(), 0)).collect();
        for node in &more {
            *count.entry(node.zone.as_str()).or_default() += 1;
        }
        let zone = count
            .iter()
            .min_by_key(|(z, n)| (**n, **z))
            .map_or_else(|| template.zone.clone(), |(z, _)| (*z).to_owned());
        more.push(NodeSpec {
            id: format!("~new-{k}"),
            zone,
            ..template.clone()
        });
        if placement::place(&more, services, current)
            .unplaced
            .is_empty()
        {
            return (k, true);
        }
    }
    (room, false)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::*;

    fn policy(cpu: Option<u8>, memory: Option<u8>) -> ScalePolicy {
        ScalePolicy {
            target_cpu_percent: cpu,
            target_memory_percent: memory,
            scale_in_after: Duration::from_secs(300),
        }
    }

    const BOUNDS: ReplicaBounds = ReplicaBounds { min: 2, max: 10 };

    fn usage(replicas: u32, cpu_millis: u64, memory_mib: u64) -> Usage {
        Usage {
            replicas,
            cpu_millis,
            memory_mib,
        }
    }

    #[test]
    fn replicas_follow_use_against_the_target_within_bounds() {
        let p = policy(Some(50), None);
        // 2 replicas of 200m using 180m each: 90% against 50% → ceil(3.6).
        let (count, reason) =
            recommend(&p, BOUNDS, (200, 256), 2, &usage(2, 360, 100)).expect("a count");
        assert_eq!(count, 4);
        assert_eq!(reason, "cpu at 90% of the request against a 50% target");
        // Within 10% of the target: unchanged.
        assert_eq!(
            recommend(&p, BOUNDS, (200, 256), 3, &usage(3, 318, 0)).map(|r| r.0),
            Some(3)
        );
        // Idle: down to the minimum, never below.
        assert_eq!(
            recommend(&p, BOUNDS, (200, 256), 6, &usage(6, 0, 0)).map(|r| r.0),
            Some(2)
        );
        // Far over: up to the maximum, never above.
        assert_eq!(
            recommend(&p, BOUNDS, (200, 256), 6, &usage(6, 12_000, 0)).map(|r| r.0),
            Some(10)
        );
        // Nothing reports: no recommendation.
        assert_eq!(recommend(&p, BOUNDS, (200, 256), 2, &usage(0, 0, 0)), None);
    }

    #[test]
    fn the_metric_asking_for_more_replicas_wins() {
        let p = policy(Some(50), Some(50));
        // CPU says 2, memory (150% of 50%) says 6.
        let (count, reason) =
            recommend(&p, BOUNDS, (200, 100), 2, &usage(2, 200, 300)).expect("a count");
        assert_eq!(count, 6);
        assert!(reason.starts_with("memory at 150%"), "{reason}");
    }

    fn node(id: &str, zone: &str) -> NodeSpec {
        NodeSpec {
            id: id.into(),
            zone: zone.into(),
            cpu_millis: 1000,
            memory_mib: 1024,
            ports_in_use: BTreeSet::new(),
        }
    }

    fn service(replicas: u32, cpu_millis: u32) -> ServiceSpec {
        ServiceSpec {
            first: 1,
            app: "shop".into(),
            service: "api".into(),
            replicas,
            cpu_millis,
            memory_mib: 64,
            host_port: None,
            stateful: false,
        }
    }

    #[test]
    fn scale_out_asks_for_the_fewest_nodes_that_hold_everything() {
        let nodes = [node("i-a", "z1")];
        let zones = ["z1".to_owned(), "z2".to_owned()];
        let template = node("", "z1");
        // 5 replicas of 400m: 2 per node → 3 nodes, so 2 more.
        let specs = [service(5, 400)];
        assert_eq!(
            nodes_to_add(&nodes, &specs, &BTreeMap::new(), &template, &zones, 10),
            (2, true)
        );
        // With room for one only: that one, and not enough.
        assert_eq!(
            nodes_to_add(&nodes, &specs, &BTreeMap::new(), &template, &zones, 1),
            (1, false)
        );
        // A replica larger than any node: no count of nodes helps.
        let huge = [service(1, 5000)];
        assert_eq!(
            nodes_to_add(&nodes, &huge, &BTreeMap::new(), &template, &zones, 3),
            (3, false)
        );
    }

    #[test]
    fn budgets_allow_at_least_one_node() {
        use crate::spec::kick::Budget;
        assert_eq!(Budget::Percent(10).of(3), 1);
        assert_eq!(Budget::Percent(10).of(25), 3);
        assert_eq!(Budget::Percent(50).of(0), 1);
        assert_eq!(Budget::Nodes(2).of(30), 2);
    }
}
