//! Health checks and the DNS answers that follow them.
//!
//! One loop per service runs its check (HTTP GET with a 2xx answer, or a
//! TCP connect; for a service without a port, a recent heartbeat) against
//! every instance at the service's interval, with its timeout. When a
//! service's set of healthy instances changes, its private name (and its
//! public names) are rewritten to carry exactly the healthy addresses,
//! through the batching writer.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::aws::{Alias, RecordChange};
use crate::control::registry::DEREGISTER_AFTER;
use crate::control::registry::replicas_name;
use crate::control::state::{Kick, REAP_EVERY, own};
use crate::spec::kick::HealthKind;

/// Starts the check loops of every service and the reaper; their handles.
pub fn spawn(kick: Arc<Kick>) -> Vec<tokio::task::AbortHandle> {
    let services: Vec<(String, String)> = kick.config.services().map(|(key, _)| key).collect();
    crate::tls::ensure_provider();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client");
    let mut tasks = Vec::new();
    for (app, service) in services {
        let kick = Arc::clone(&kick);
        let client = client.clone();
        tasks.push(
            tokio::spawn(async move { check_loop(kick, client, app, service).await })
                .abort_handle(),
        );
    }
    let reaper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(REAP_EVERY);
        loop {
            tick.tick().await;
            let touched = kick
                .registry
                .lock()
                .expect("registry")
                .reap(SystemTime::now(), DEREGISTER_AFTER);
            for (app, service) in touched {
                let _ = sync_dns(&kick, &app, &service).await;
                // On failure the record keeps the reaped instance until the
                // service's next change rewrites it.
                let _ = sync_replicas(&kick, &app, &service).await;
            }
        }
    });
    tasks.push(reaper.abort_handle());
    tasks
}

async fn check_loop(kick: Arc<Kick>, client: reqwest::Client, app: String, service: String) {
    let Some(check) = kick
        .config
        .apps
        .get(&app)
        .and_then(|a| a.services.get(&service))
        .map(|s| s.health.clone())
    else {
        return;
    };
    let mut tick = tokio::time::interval(check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let targets: Vec<(String, IpAddr, u16, SystemTime, SystemTime)> = {
            let registry = kick.registry.lock().expect("registry");
            registry
                .service(&app, &service)
                .map(|s| {
                    s.instances
                        .values()
                        .map(|i| {
                            (
                                i.id.clone(),
                                i.address,
                                i.port,
                                i.registered,
                                i.last_heartbeat,
                            )
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let now = SystemTime::now();
        let checks = targets.into_iter().filter(|(_, _, _, registered, _)| {
            // Within the grace period failures do not count: skip the check.
            now.duration_since(*registered).unwrap_or_default() >= check.grace
        });
        let results = futures_join(checks.map(|(id, address, port, _, heartbeat)| {
            let client = client.clone();
            let check = check.clone();
            async move {
                let (passed, output) = match check.kind {
                    HealthKind::Http => {
                        http(
                            &client,
                            address,
                            port,
                            check.path.as_deref().unwrap_or("/"),
                            check.timeout,
                        )
                        .await
                    }
                    HealthKind::Tcp => tcp(address, port, check.timeout).await,
                    HealthKind::Running => {
                        let age = SystemTime::now()
                            .duration_since(heartbeat)
                            .unwrap_or_default();
                        (
                            age <= check.interval * 3,
                            format!("last heartbeat {}s ago", age.as_secs()),
                        )
                    }
                };
                (id, passed, output)
            }
        }))
        .await;
        let changed = {
            let mut registry = kick.registry.lock().expect("registry");
            let now = SystemTime::now();
            results
                .into_iter()
                .filter_map(|(id, passed, output)| registry.record(&id, passed, &output, now))
                .count()
                > 0
        };
        let behind = kick
            .dns_behind
            .lock()
            .expect("dns_behind")
            .contains_key(&(app.clone(), service.clone()));
        if changed || behind {
            let _ = sync_dns(&kick, &app, &service).await;
        }
    }
}

/// Runs futures concurrently and collects their outputs in order.
pub async fn futures_join<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        if let Ok(value) = handle.await {
            out.push(value);
        }
    }
    out
}

async fn http(
    client: &reqwest::Client,
    address: IpAddr,
    port: u16,
    path: &str,
    timeout: Duration,
) -> (bool, String) {
    let host = match address {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    match client
        .get(format!("http://{host}:{port}{path}"))
        .timeout(timeout)
        .send()
        .await
    {
        Ok(response) => {
            let status = response.status();
            (status.is_success(), format!("HTTP {}", status.as_u16()))
        }
        Err(err) if err.is_timeout() => {
            (false, format!("timed out after {}ms", timeout.as_millis()))
        }
        Err(err) => (false, format!("{err}")),
    }
}

async fn tcp(address: IpAddr, port: u16, timeout: Duration) -> (bool, String) {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((address, port))).await {
        Ok(Ok(_)) => (true, "connected".into()),
        Ok(Err(err)) => (false, err.to_string()),
        Err(_) => (false, format!("timed out after {}ms", timeout.as_millis())),
    }
}

/// The change that makes record set (name, kind) hold `values` (none:
/// absent), given what it holds now; `None` when it already does.
fn change_towards(
    current: Option<RecordChange>,
    name: &str,
    kind: &str,
    ttl: i64,
    values: Vec<String>,
) -> Option<RecordChange> {
    match (current, values.is_empty()) {
        (Some(old), _) if old.values == values && old.alias.is_none() => None,
        (None, true) => None,
        // Route53 deletes only the exact record set: send the last one.
        (Some(old), true) => Some(RecordChange {
            upsert: false,
            ..old
        }),
        (_, false) => Some(RecordChange {
            upsert: true,
            name: name.to_owned(),
            kind: kind.to_owned(),
            ttl,
            values,
            alias: None,
        }),
    }
}

/// Makes each name an alias of the load balancer (and drops an AAAA left
/// from DNS mode), collecting the changes sent and what failed.
async fn write_aliases(
    kick: &Kick,
    aliased: Vec<(String, Alias)>,
    ttl: i64,
    ticket: u64,
    sent: &mut Vec<String>,
    failed: &mut Vec<String>,
) {
    for (name, alias) in aliased {
        let Some(zone) = kick.zones.of(&name).map(|z| z.id.clone()) else {
            continue;
        };
        if kick.foreign.lock().expect("foreign").contains(&name) {
            continue;
        }
        let changes = [
            alias_towards(kick.writer.published(&name, "A"), &name, &alias),
            // No AAAA: the load balancer answers on IPv4.
            change_towards(
                kick.writer.published(&name, "AAAA"),
                &name,
                "AAAA",
                ttl,
                Vec::new(),
            ),
        ];
        for change in changes.into_iter().flatten() {
            let kind = change.kind.clone();
            submit_owned(kick, &zone, change, ticket, sent, failed, &kind).await;
        }
    }
}

/// Owns the change's name and submits it, noting the Route53 change that
/// carried it or what failed.
async fn submit_owned(
    kick: &Kick,
    zone: &str,
    change: RecordChange,
    ticket: u64,
    sent: &mut Vec<String>,
    failed: &mut Vec<String>,
    kind: &str,
) {
    let name = change.name.clone();
    if let Err(err) = own(kick, zone, &name).await {
        failed.push(format!("{name}: {err}"));
        return;
    }
    match kick.writer.submit_tracked(zone, change, ticket).await {
        Ok(Some(id)) => sent.push(id),
        Ok(None) => {}
        Err(err) => failed.push(format!("{name} {kind}: {err}")),
    }
}

/// The change that makes `name`'s A record an alias of `alias`; `None`
/// when it is already.
fn alias_towards(current: Option<RecordChange>, name: &str, alias: &Alias) -> Option<RecordChange> {
    // Route53 may give the name back in another case.
    if current
        .as_ref()
        .and_then(|c| c.alias.as_ref())
        .is_some_and(|a| {
            a.zone_id == alias.zone_id && a.dns_name.eq_ignore_ascii_case(&alias.dns_name)
        })
    {
        return None;
    }
    Some(RecordChange {
        upsert: true,
        name: name.to_owned(),
        kind: "A".to_owned(),
        ttl: 60,
        values: Vec::new(),
        alias: Some(alias.clone()),
    })
}

/// Rewrites a service's replicas record (its instances, in the private
/// zone) to match the registry; returns once Route53 has it.
pub async fn sync_replicas(kick: &Kick, app: &str, service: &str) -> Result<(), String> {
    let (values, ticket) = {
        let registry = kick.registry.lock().expect("registry");
        let Some(state) = registry.service(app, service) else {
            return Ok(());
        };
        (state.replica_values(), kick.writer.ticket())
    };
    let name = replicas_name(app, service, &kick.zones.private.name);
    let current = kick.writer.published(&name, "TXT");
    match change_towards(current, &name, "TXT", 60, values) {
        Some(change) => {
            kick.writer
                .submit_ticketed(&kick.zones.private.id, change, ticket)
                .await
        }
        None => Ok(()),
    }
}

/// How long a drain waits for Route53 to be INSYNC before it drains
/// anyway.
const INSYNC_AT_MOST: Duration = Duration::from_secs(120);

/// Drains the instances of service `key` that `leaving` picks: out of DNS
/// at once; then, once Route53 has the change everywhere (INSYNC), still
/// running for `drain` (the records' TTL, so a client holding the old
/// answer still reaches them). Returns when they may stop: at once when
/// none was in DNS to leave it.
pub async fn drain_out_of_dns(
    kick: &Kick,
    key: &crate::spec::kick::ServiceKey,
    leaving: impl Fn(&crate::control::registry::Instance) -> bool,
    drain: Duration,
) {
    // Make before break at the load balancer: the replacements take
    // requests before the leaving replicas stop taking them.
    let timeout = kick
        .config
        .apps
        .get(&key.0)
        .and_then(|a| a.services.get(&key.1))
        .map_or(crate::spec::kick::DEFAULT_DEPLOY_TIMEOUT, |s| {
            s.deploy.timeout
        });
    if !crate::control::controllers::targets::wait_for_replacements(kick, key, &leaving, timeout)
        .await
    {
        eprintln!(
            "kick: {}.{}: the load balancer does not report every replacement healthy after {timeout:?}; the leaving replicas leave anyway",
            key.0, key.1
        );
    }
    let marked = kick
        .registry
        .lock()
        .expect("registry")
        .service_mut(&key.0, &key.1)
        .map_or(0, |s| s.set_draining(&leaving, true));
    if marked == 0 {
        return;
    }
    // A replica leaves only once DNS no longer names it: a failed write is
    // tried again (backing off to 10 s) for as long as it takes, and the
    // replica keeps running meanwhile. A leader that loses its lease has
    // this task stopped with the others.
    let mut wait = Duration::from_millis(500);
    let changes = loop {
        match sync_dns(kick, &key.0, &key.1).await {
            Ok(changes) => break changes,
            Err(err) => {
                eprintln!(
                    "kick: {}.{}: cannot take leaving replicas out of DNS yet ({err}); they keep running, trying again in {wait:?}",
                    key.0, key.1
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    };
    for change in &changes {
        if !kick.aws.wait_insync(change, INSYNC_AT_MOST).await {
            eprintln!(
                "kick: Route53 change {change} not INSYNC after {INSYNC_AT_MOST:?}; draining anyway"
            );
        }
    }
    tokio::time::sleep(drain).await;
}

/// Rewrites a service's names to carry exactly where it is served: its
/// private name the healthy replicas' addresses (reached inside the VPC
/// through the container routes), its public names the public addresses
/// of the nodes that run a healthy replica on the host port (the internet
/// cannot reach a container address).
/// The ids of the Route53 changes that carried it (to wait for INSYNC),
/// or what could not be written: the service is then marked behind
/// ([`Kick::dns_behind`]) and its check loop writes it again at its next
/// check, whatever its health does. The records' TTL is the service's
/// drain.
pub async fn sync_dns(kick: &Kick, app: &str, service: &str) -> Result<Vec<String>, String> {
    let (ticket, written) = write_dns(kick, app, service).await;
    // The load balancer's targets follow the same health (a failure is
    // tried again with the names, at the service's next check).
    let synced = match crate::control::controllers::targets::sync(kick, app, service).await {
        Ok(()) => written,
        Err(err) => Err(written
            .err()
            .map_or(err.clone(), |dns| format!("{dns}; {err}"))),
    };
    let key = (app.to_owned(), service.to_owned());
    let mut behind = kick.dns_behind.lock().expect("dns_behind");
    if synced.is_ok() {
        // Only a write computed after the one that failed catches up.
        if behind.get(&key).is_some_and(|failed| *failed <= ticket) {
            behind.remove(&key);
        }
    } else {
        let failed = behind.entry(key).or_insert(ticket);
        *failed = (*failed).max(ticket);
    }
    synced
}

/// Writes a service's names; the ticket its state was read under (in
/// the registry's lock, so tickets order states), and what it sent or why
/// not.
async fn write_dns(kick: &Kick, app: &str, service: &str) -> (u64, Result<Vec<String>, String>) {
    let (private, public, healthy_nodes, ttl, ticket, behind_load_balancer) = {
        let registry = kick.registry.lock().expect("registry");
        let Some(state) = registry.service(app, service) else {
            return (kick.writer.ticket(), Ok(Vec::new()));
        };
        let healthy_nodes: std::collections::BTreeSet<String> = state
            .instances
            .values()
            .filter(|i| i.in_service())
            .map(|i| i.node.clone())
            .collect();
        (
            state
                .config
                .private_name
                .clone()
                .map(|name| (name, state.healthy_addresses())),
            state.config.public_names.clone(),
            healthy_nodes,
            i64::try_from(state.config.deploy.drain.as_secs()).unwrap_or(3600),
            kick.writer.ticket(),
            state.config.target_group.is_some(),
        )
    };
    let public_addresses: Vec<std::net::IpAddr> = {
        let nodes = kick.nodes.lock().expect("nodes");
        let mut addresses: Vec<std::net::IpAddr> = healthy_nodes
            .iter()
            .filter_map(|node| nodes.known.get(node)?.public_address)
            .collect();
        addresses.sort();
        addresses.dedup();
        addresses
    };
    // Behind the load balancer the public names are aliases of it; until
    // kick has found it (the stack may still be on its way), they are left
    // as they are, never pointed at nodes that do not publish the service.
    let (aliased, public) = if behind_load_balancer {
        let key = (app.to_owned(), service.to_owned());
        match kick
            .targets
            .balancer()
            .filter(|b| b.groups.contains_key(&key))
        {
            Some(b) => (
                public.into_iter().map(|n| (n, b.alias.clone())).collect(),
                Vec::new(),
            ),
            None => (Vec::new(), Vec::new()),
        }
    } else {
        (Vec::new(), public)
    };
    let names = private.into_iter().chain(
        public
            .into_iter()
            .map(|name| (name, public_addresses.clone())),
    );
    let mut sent = Vec::new();
    let mut failed = Vec::new();
    write_aliases(kick, aliased, ttl, ticket, &mut sent, &mut failed).await;
    for (name, addresses) in names {
        let Some(zone) = kick.zones.of(&name).map(|z| z.id.clone()) else {
            continue;
        };
        if kick.foreign.lock().expect("foreign").contains(&name) {
            continue;
        }
        for (kind, v6) in [("A", false), ("AAAA", true)] {
            let values: Vec<String> = addresses
                .iter()
                .filter(|a| a.is_ipv6() == v6)
                .map(ToString::to_string)
                .collect();
            let current = kick.writer.published(&name, kind);
            let Some(change) = change_towards(current, &name, kind, ttl, values) else {
                continue;
            };
            submit_owned(kick, &zone, change, ticket, &mut sent, &mut failed, kind).await;
        }
    }
    if failed.is_empty() {
        (ticket, Ok(sent))
    } else {
        (ticket, Err(failed.join("; ")))
    }
}
