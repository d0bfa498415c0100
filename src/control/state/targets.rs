//! What the leader knows of the load balancer: the groups of the
//! services behind it, what they said last (for describe), and the locks
//! that keep one target sync per service at a time (see
//! [`crate::control::controllers::targets`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::aws::Alias;
use crate::aws::elb::Target;
use crate::control::state::Kick;
use crate::spec::kick::ServiceKey;

/// The load balancer as kick knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balancer {
    /// Where the public names point.
    pub alias: Alias,
    /// Each service's target group ARN.
    pub groups: BTreeMap<ServiceKey, String>,
}

/// What the target syncs share.
#[derive(Debug, Default)]
pub struct Targets {
    /// The load balancer as last found in the stack; `None` until it is
    /// (the stack may be behind the config), and groups only for the
    /// services whose group exists.
    balancer: Mutex<Option<Balancer>>,
    locks: Mutex<BTreeMap<ServiceKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Each group's targets as last read, for describe.
    pub seen: Mutex<BTreeMap<ServiceKey, Vec<Target>>>,
}

impl Targets {
    /// The load balancer as last found.
    pub fn balancer(&self) -> Option<Balancer> {
        self.balancer.lock().expect("balancer").clone()
    }

    pub fn set_balancer(&self, balancer: Option<Balancer>) {
        *self.balancer.lock().expect("balancer") = balancer;
    }

    /// A service's target group, when the load balancer and it are known.
    pub fn group(&self, key: &ServiceKey) -> Option<String> {
        self.balancer
            .lock()
            .expect("balancer")
            .as_ref()?
            .groups
            .get(key)
            .cloned()
    }

    /// The lock one service's target syncs take in turn.
    pub fn lock(&self, key: &ServiceKey) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(
            self.locks
                .lock()
                .expect("target locks")
                .entry(key.clone())
                .or_default(),
        )
    }
}

/// What the load balancer says of a replica at `address`:`port`, for
/// describe: `None` when the service is not behind it.
pub fn health_of(kick: &Kick, key: &ServiceKey, address: IpAddr, port: u16) -> Option<String> {
    kick.targets.group(key)?;
    let seen = kick.targets.seen.lock().expect("seen");
    let address = address.to_string();
    let shown = seen
        .get(key)
        .and_then(|targets| {
            targets
                .iter()
                .find(|t| t.address == address && t.port == port)
        })
        .map_or_else(
            || "not registered".to_owned(),
            |t| match &t.reason {
                Some(reason) if t.state != "healthy" => format!("{} ({reason})", t.state),
                _ => t.state.clone(),
            },
        );
    Some(shown)
}
