//! The load balancer's targets: each public HTTP service's healthy
//! replicas, registered in its target group by the leader.
//!
//! A service's targets follow its health as its DNS names do: whenever
//! [`super::health::sync_dns`] rewrites the names it also brings the
//! group in line (registers the healthy replicas, deregisters the others),
//! one sync per service at a time, each computed from the registry as it
//! is when the sync starts. A replica leaving a rollout is deregistered
//! only once the group reports its replacements healthy (make before
//! break), and stops only after the group's deregistration delay (the
//! service's drain). Every register and deregister is a write through the
//! leader's fenced clients: a leader whose lease lapsed sends none.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::aws::Aws;
use crate::aws::elb::Target;
use crate::control::registry::Instance;
use crate::control::state::Kick;
pub use crate::control::state::targets::{Balancer, Targets};
use crate::spec::kick::{KickConfig, ServiceKey};

/// How often the leader looks the load balancer up and brings every
/// group in line.
const WATCH_EVERY: Duration = Duration::from_secs(30);

/// The load balancer of the cluster's stack, with the groups of the
/// services behind it that the stack has (it may be behind the config: a
/// service's group comes with the next apply's stack update); `None` when
/// no service is behind one. Their physical ids are the ARNs.
pub async fn find(aws: &Aws, config: &KickConfig) -> Result<Option<Balancer>, String> {
    let wanted: Vec<(ServiceKey, &String)> = config
        .services()
        .filter_map(|(key, s)| Some((key, s.target_group.as_ref()?)))
        .collect();
    if wanted.is_empty() {
        return Ok(None);
    }
    let stack = &config.cluster.stack;
    let resources = aws
        .stack_resources(stack)
        .await
        .map_err(|e| e.to_string())?;
    let arn = resources
        .get(crate::spec::names::ids::LOAD_BALANCER)
        .ok_or_else(|| format!("the stack {stack} has no load balancer yet"))?;
    let alias = aws
        .load_balancer_alias(arn)
        .await
        .map_err(|e| e.to_string())?;
    let groups = wanted
        .into_iter()
        .filter_map(|(key, id)| Some((key, resources.get(id)?.clone())))
        .collect();
    Ok(Some(Balancer { alias, groups }))
}

/// Looks the load balancer up again: a stack update may have added it,
/// or replaced a group (a new port). An error keeps what was known.
pub async fn refresh(kick: &Kick) {
    match find(&kick.aws, &kick.config).await {
        Ok(found) => {
            if found != kick.targets.balancer() {
                let services = found.as_ref().map_or(0, |b| b.groups.len());
                eprintln!("kick: the load balancer serves {services} services' target groups");
            }
            kick.targets.set_balancer(found);
        }
        Err(err) => eprintln!(
            "kick: cannot look the load balancer up ({err}); its targets wait, and are tried again in {WATCH_EVERY:?}"
        ),
    }
}

/// The targets a service should have: its healthy replicas that are not
/// leaving, each at the service's own port and inside its node's
/// container subnet. A registration a service token made for another
/// container (another app's port) is never put on the internet.
fn wanted(kick: &Kick, key: &ServiceKey) -> BTreeSet<(IpAddr, u16)> {
    let (port, replicas): (Option<u16>, Vec<(String, IpAddr, u16)>) = kick
        .registry
        .lock()
        .expect("registry")
        .service(&key.0, &key.1)
        .map(|s| {
            (
                s.config.port,
                s.instances
                    .values()
                    .filter(|i| i.in_service())
                    .map(|i| (i.node.clone(), i.address, i.port))
                    .collect(),
            )
        })
        .unwrap_or_default();
    let subnets = kick
        .assignments
        .lock()
        .expect("assignments")
        .subnets
        .clone();
    eligible(port, &replicas, &subnets)
}

/// Of the (node, address, port) replicas, the targets a load balancer may
/// be given: the service's port, an address in the node's subnet.
fn eligible(
    port: Option<u16>,
    replicas: &[(String, IpAddr, u16)],
    subnets: &std::collections::BTreeMap<String, ipnet::Ipv4Net>,
) -> BTreeSet<(IpAddr, u16)> {
    replicas
        .iter()
        .filter(|(_, _, p)| Some(*p) == port)
        .filter(|(node, address, _)| match (subnets.get(node), address) {
            (Some(subnet), IpAddr::V4(v4)) => subnet.contains(v4),
            _ => false,
        })
        .map(|(_, address, port)| (*address, *port))
        .collect()
}

/// Brings a service's target group in line with its healthy replicas;
/// nothing for a service not behind the load balancer (or whose group is
/// not known yet). Deregisters even when a registration failed.
pub async fn sync(kick: &Kick, app: &str, service: &str) -> Result<(), String> {
    let key = (app.to_owned(), service.to_owned());
    let Some(group) = kick.targets.group(&key) else {
        return Ok(());
    };
    let lock = kick.targets.lock(&key);
    let _one_at_a_time = lock.lock().await;
    let want = wanted(kick, &key);
    let present = kick.aws.targets(&group).await.map_err(|e| e.to_string())?;
    let (register, deregister) = difference(&want, &present);
    // A leader that stepped down (its handlers may still run) changes
    // nothing more.
    if kick.stopped.load(std::sync::atomic::Ordering::SeqCst) {
        return Err("this kick server no longer leads".into());
    }
    let registered = kick
        .aws
        .change_targets(&group, &register, true)
        .await
        .map_err(|e| format!("registering targets of {app}.{service}: {e}"));
    kick.aws
        .change_targets(&group, &deregister, false)
        .await
        .map_err(|e| format!("deregistering targets of {app}.{service}: {e}"))?;
    registered?;
    if !register.is_empty() || !deregister.is_empty() {
        eprintln!(
            "kick: {app}.{service}: registered {} and deregistered {} load balancer targets",
            register.len(),
            deregister.len()
        );
    }
    let seen = if register.is_empty() && deregister.is_empty() {
        present
    } else {
        kick.aws.targets(&group).await.map_err(|e| e.to_string())?
    };
    kick.targets.seen.lock().expect("seen").insert(key, seen);
    Ok(())
}

/// Targets as (address, port).
type Pairs = Vec<(String, u16)>;

/// The targets to register and to deregister, as (address, port), given
/// the ones wanted and the group's (a target already draining is left to
/// finish).
fn difference(want: &BTreeSet<(IpAddr, u16)>, present: &[Target]) -> (Pairs, Pairs) {
    let registered: BTreeSet<(String, u16)> = present
        .iter()
        .filter(|t| t.state != "draining")
        .map(|t| (t.address.clone(), t.port))
        .collect();
    let wanted: BTreeSet<(String, u16)> = want
        .iter()
        .map(|(address, port)| (address.to_string(), *port))
        .collect();
    (
        wanted.difference(&registered).cloned().collect(),
        registered.difference(&wanted).cloned().collect(),
    )
}

/// Make before break: waits until every healthy replica of a service that
/// `leaving` does not pick is registered and healthy in its group, at most
/// `limit`; whether they all were (nothing to wait for when the service is
/// not behind the load balancer, or no healthy replica is leaving).
pub async fn wait_for_replacements(
    kick: &Kick,
    key: &ServiceKey,
    leaving: &impl Fn(&Instance) -> bool,
    limit: Duration,
) -> bool {
    let Some(group) = kick.targets.group(key) else {
        return true;
    };
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let (staying, going): (BTreeSet<(String, u16)>, usize) = kick
            .registry
            .lock()
            .expect("registry")
            .service(&key.0, &key.1)
            .map(|s| {
                (
                    s.instances
                        .values()
                        .filter(|i| i.in_service() && !leaving(i))
                        .map(|i| (i.address.to_string(), i.port))
                        .collect(),
                    s.instances
                        .values()
                        .filter(|i| i.in_service() && leaving(i))
                        .count(),
                )
            })
            .unwrap_or_default();
        if going == 0 {
            return true;
        }
        // Registers what is not yet (a failed sync is tried again here).
        let _ = sync(kick, &key.0, &key.1).await;
        if let Ok(present) = kick.aws.targets(&group).await {
            let healthy: BTreeSet<(String, u16)> = present
                .iter()
                .filter(|t| t.state == "healthy")
                .map(|t| (t.address.clone(), t.port))
                .collect();
            if staying.is_subset(&healthy) {
                return true;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Finds the load balancer, then every [`WATCH_EVERY`] looks it up again
/// and brings every group in line (so targets an old leader left, or a
/// sync that failed, are put right without waiting for a health change),
/// which also refreshes what describe shows.
pub fn spawn(kick: Arc<Kick>) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        if kick
            .config
            .services()
            .all(|(_, s)| s.target_group.is_none())
        {
            return;
        }
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            refresh(&kick).await;
            let groups: Vec<ServiceKey> = kick
                .targets
                .balancer()
                .map(|b| b.groups.into_keys().collect())
                .unwrap_or_default();
            for (app, service) in groups {
                // A failure is said where it matters: the next round tries again.
                if let Err(err) =
                    crate::control::controllers::health::sync_dns(&kick, &app, &service).await
                {
                    eprintln!("kick: {app}.{service}: names or targets behind: {err}");
                }
            }
        }
    })
    .abort_handle()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(address: &str, port: u16, state: &str) -> Target {
        Target {
            address: address.into(),
            port,
            state: state.into(),
            reason: None,
        }
    }

    #[test]
    fn only_a_services_own_port_in_its_nodes_subnet_is_a_target() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("address");
        let subnets = std::collections::BTreeMap::from([(
            "i-1".to_owned(),
            "100.64.1.0/24".parse().expect("subnet"),
        )]);
        let replicas = [
            ("i-1".to_owned(), ip("100.64.1.2"), 8080),
            // Another container's port, registered with a service token.
            ("i-1".to_owned(), ip("100.64.1.3"), 9000),
            // Outside the node's subnet.
            ("i-1".to_owned(), ip("100.64.7.5"), 8080),
            // A node without a subnet yet.
            ("i-2".to_owned(), ip("100.64.2.2"), 8080),
        ];
        assert_eq!(
            eligible(Some(8080), &replicas, &subnets),
            [(ip("100.64.1.2"), 8080)].into()
        );
    }

    #[test]
    fn the_group_follows_the_healthy_replicas_and_leaves_draining_targets_alone() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("address");
        let want: BTreeSet<(IpAddr, u16)> =
            [(ip("100.64.1.2"), 8080), (ip("100.64.2.2"), 8080)].into();
        let present = [
            target("100.64.1.2", 8080, "healthy"),
            target("100.64.3.2", 8080, "unhealthy"),
            target("100.64.4.2", 8080, "draining"),
        ];
        let (register, deregister) = difference(&want, &present);
        assert_eq!(register, [("100.64.2.2".to_owned(), 8080)]);
        assert_eq!(deregister, [("100.64.3.2".to_owned(), 8080)]);
        // A replica moved to another port on the same address is a new target.
        let moved: BTreeSet<(IpAddr, u16)> = [(ip("100.64.1.2"), 9090)].into();
        let (register, deregister) = difference(&moved, &present[..1]);
        assert_eq!(register, [("100.64.1.2".to_owned(), 9090)]);
        assert_eq!(deregister, [("100.64.1.2".to_owned(), 8080)]);
    }
}
