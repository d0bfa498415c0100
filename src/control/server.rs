//! `huxley kick serve`: a kick server's life. It serves its listeners at
//! once (as a standby), campaigns for the lease, and when it wins rebuilds
//! the cluster's state from AWS and leads: checks health, writes DNS,
//! places replicas, publishes the description and points the kick names at
//! itself. When it loses the lease it stops all of that before the lease
//! can lapse and stands by again; on a clean stop it gives the lease up so
//! a standby takes over at once.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::aws::{Aws, AwsError, RecordChange};
use crate::control::api;
use crate::control::auth::Tokens;
use crate::control::dns::Settings;
use crate::control::front::{self, Front};
use crate::control::leader::{self, Leading};
use crate::control::lease::Lease;
use crate::control::listener::{self, Limits};
use crate::control::state::own;
use crate::control::state::{Kick, Zone, Zones};
use crate::spec::kick::KickConfig;
use crate::spec::names::ids;
use crate::tls::Identity;

/// Everything a kick server runs with.
#[derive(Debug)]
pub struct Options {
    pub config: KickConfig,
    pub tokens: Tokens,
    pub aws: Arc<Aws>,
    pub internal: SocketAddr,
    pub external: SocketAddr,
    pub identity: Identity,
    pub settings: Settings,
    /// This node's private address: the internal API standbys point at,
    /// and `kick.<private zone>` while this server leads.
    pub advertise: IpAddr,
    /// This node's public address, for the kick name in the public zone.
    pub public_address: Option<IpAddr>,
    /// The registry deployed images must come from [default: the stack's
    /// `ImageRegistry`].
    pub registry: Option<String>,
}

/// Where the cluster's state lives, found once at start.
#[derive(Debug)]
struct Found {
    zones: Zones,
    bucket: String,
    route_table: Option<String>,
    /// The account's image registry, from the stack.
    registry: Option<String>,
}

async fn find(aws: &Aws, config: &KickConfig) -> Result<Found, String> {
    let stack = &config.cluster.stack;
    // The private zone is the stack's own resource: found by id, not by a
    // name another zone could share.
    let private = aws
        .stack_resource(stack, ids::PRIVATE_ZONE)
        .await
        .map_err(|e| e.to_string())?
        .map(|id| id.trim_start_matches("/hostedzone/").to_owned())
        .ok_or_else(|| {
            AwsError::StackResourceMissing {
                stack: stack.clone(),
                resource: "private zone".into(),
            }
            .to_string()
        })?;
    let public = match &config.cluster.public_zone {
        Some(name) => Some(Zone {
            id: aws.public_zone_id(name).await.map_err(|e| e.to_string())?,
            name: name.clone(),
        }),
        None => None,
    };
    let described = aws.describe_stack(stack).await.map_err(|e| e.to_string())?;
    let bucket = described
        .as_ref()
        .and_then(|s| s.bucket(&config.cluster.name))
        .ok_or_else(|| format!("the stack {stack} does not exist: run `huxley apply` first"))?;
    let registry = described.as_ref().and_then(|s| s.registry());
    let route_table = aws
        .stack_resource(stack, ids::ROUTE_TABLE)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Found {
        zones: Zones {
            private: Zone {
                id: private,
                name: config.cluster.private_zone.clone(),
            },
            public,
        },
        bucket,
        route_table,
        registry,
    })
}

/// Runs the server until ctrl-c or SIGTERM. Errors are what prevents it
/// from starting at all.
pub async fn run(mut options: Options) -> Result<(), String> {
    let found = find(&options.aws, &options.config).await?;
    let address = format!(
        "http://{}",
        SocketAddr::new(options.advertise, options.internal.port())
    );
    let lease = Arc::new(Lease::new(
        Arc::clone(&options.aws),
        &options.config.cluster.lease_table,
        &address,
    ));
    // From here on, every AWS write this server sends is checked against
    // its lease right before each attempt goes out.
    options.aws = Arc::new(options.aws.fenced(lease.deadline()));
    let front = Front::new(
        Arc::clone(&lease),
        Arc::clone(&options.aws),
        options.tokens.clone(),
    );
    let internal = tokio::net::TcpListener::bind(options.internal)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", options.internal))?;
    let external = tokio::net::TcpListener::bind(options.external)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", options.external))?;
    let acceptor = crate::tls::acceptor(&options.identity)
        .map_err(|e| format!("cannot use the TLS certificate: {e}"))?;
    let shown =
        |a: std::io::Result<SocketAddr>| a.map_or_else(|_| "?".to_owned(), |a| a.to_string());
    eprintln!(
        "kick: cluster {}: internal API on http://{}, external API on https://{} (certificate sha256 {}); advertising {address}",
        options.config.cluster.name,
        shown(internal.local_addr()),
        shown(external.local_addr()),
        options.identity.fingerprint,
    );
    let serving = {
        let (a, b) = (
            front::router(Arc::clone(&front)),
            front::router(Arc::clone(&front)),
        );
        async move {
            tokio::select! {
                result = listener::serve(internal, None, a, Limits::default()) => result.map_err(|e| format!("the internal API stopped: {e}")),
                result = listener::serve(external, Some(acceptor), b, Limits::default()) => result.map_err(|e| format!("the external API stopped: {e}")),
            }
        }
    };
    tokio::select! {
        result = serving => result,
        () = lead_when_elected(&options, &found, &lease, &front) => Ok(()),
        () = crate::signal::stop_signal() => {
            lease.release().await;
            eprintln!("kick: stopping");
            Ok(())
        }
    }
}

/// Campaigns, leads while the lease holds, stands by again; forever.
async fn lead_when_elected(options: &Options, found: &Found, lease: &Arc<Lease>, front: &Front) {
    loop {
        let fence = lease.campaign().await;
        eprintln!("kick: took the lease (fence {fence}); rebuilding the cluster's state from AWS");
        // The lease is renewed from now on, also while the state is rebuilt
        // (a large cluster may take longer than one lease).
        let holding = lease.hold();
        tokio::pin!(holding);
        let built = std::sync::Mutex::new(None);
        let started = tokio::select! {
            lost = &mut holding => Err(format!("lost the lease while rebuilding: {lost}")),
            started = start(options, found, lease, &built) => started,
        };
        let kick = match started {
            Ok(kick) => kick,
            Err(err) => {
                // Whatever was started stops with the attempt.
                if let Some(kick) = built
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take()
                {
                    kick.stop();
                }
                eprintln!("kick: cannot lead: {err}; giving the lease up");
                lease.release().await;
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        front.activate(api::router(Arc::clone(&kick)));
        eprintln!("kick: leading (fence {fence})");
        let reason = tokio::select! {
            lost = &mut holding => lost.to_string(),
            problem = watchdog(&kick) => {
                // A broken leader gives way: a standby, or this server
                // afresh, rebuilds from AWS.
                lease.release().await;
                problem
            }
        };
        front.deactivate();
        kick.stop();
        eprintln!("kick: stepped down: {reason}");
    }
}

/// Waits until the leader cannot serve (a poisoned or stuck lock); why.
async fn watchdog(kick: &Kick) -> String {
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        if let Some(problem) = kick.health_problem().await {
            return problem;
        }
    }
}

/// Becomes the leader: the state from AWS, the fingerprint and the kick
/// names pointing here, the publisher.
async fn start(
    options: &Options,
    found: &Found,
    lease: &Arc<Lease>,
    built: &std::sync::Mutex<Option<Arc<Kick>>>,
) -> Result<Arc<Kick>, String> {
    let kick = leader::start_leading(
        options.config.clone(),
        options.tokens.clone(),
        Arc::clone(&options.aws),
        found.zones.clone(),
        options.settings,
        Leading {
            lease: Some(Arc::clone(lease)),
            route_table: found.route_table.clone(),
            bucket: Some(found.bucket.clone()),
            registry: options.registry.clone().or_else(|| found.registry.clone()),
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    // Kept where the caller can stop it, should the rest fail or the lease
    // be lost first.
    *built
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::clone(&kick));
    options
        .aws
        .put_object(
            &found.bucket,
            crate::spec::keys::TLS_FINGERPRINT,
            format!("{}\n", options.identity.fingerprint).into_bytes(),
            "text/plain",
        )
        .await
        .map_err(|e| format!("cannot publish the certificate's fingerprint: {e}"))?;
    point_names_here(&kick, options).await?;
    let publisher = crate::control::controllers::publish::spawn(
        Arc::clone(&kick),
        Arc::clone(&options.aws),
        found.bucket.clone(),
        Duration::from_secs(1),
    );
    kick.keep([publisher]);
    Ok(kick)
}

/// Points `kick.<private zone>` at this node's private address and the
/// public kick name at its public one.
async fn point_names_here(kick: &Kick, options: &Options) -> Result<(), String> {
    let mut names = vec![(
        kick.zones.private.clone(),
        internal_name(&kick.config),
        options.advertise,
    )];
    if let (Some(zone), Some(address)) = (
        &kick.zones.public,
        options.public_address.or(Some(options.advertise)),
    ) {
        names.push((zone.clone(), kick.config.cluster.kick_name.clone(), address));
    }
    for (zone, name, address) in names {
        own(kick, &zone.id, &name).await?;
        let change = RecordChange {
            upsert: true,
            name: name.clone(),
            kind: if address.is_ipv6() { "AAAA" } else { "A" }.to_owned(),
            ttl: 30,
            values: vec![address.to_string()],
            alias: None,
        };
        kick.writer
            .submit(&zone.id, change)
            .await
            .map_err(|e| format!("cannot point {name} at this server: {e}"))?;
    }
    Ok(())
}

/// The name node agents reach the leader's internal API by.
pub fn internal_name(config: &KickConfig) -> String {
    format!("kick.{}", config.cluster.private_zone)
}
