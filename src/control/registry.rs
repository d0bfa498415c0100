//! The kick server's registry: every app, service and instance, with each
//! instance's health as a state machine. Pure data and logic, driven by
//! the API (registrations, heartbeats) and the health checker (results),
//! with the clock passed in, so every rule is tested directly.
//!
//! Health: an instance starts `unknown`; `healthy` consecutive passes make
//! it healthy, `unhealthy` consecutive failures make it unhealthy. An
//! instance that flaps (changes state often within a window) must pass
//! three times as long before it carries traffic again (damping). One that
//! stays unhealthy past `deregister-after` is removed. DNS names carry only
//! healthy instances.
//!
//! Durable state lives in Route53, not in memory: each service's instances
//! are a TXT record set `_huxley-replicas.<service>.<app>.<private zone>`,
//! one string per instance (`node=… address=… port=… version=…`), written
//! before a registration is acknowledged; which of them are healthy is what
//! the service's DNS names carry. A restarted kick rebuilds the registry
//! from both ([`Registry::restore`]).

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use crate::spec::kick::{HealthCheck, KickConfig, ServiceSection};
use crate::spec::registry::Registration;
use crate::spec::registry::Status;
use crate::spec::registry::instance_id;

/// How long an instance may stay unhealthy before it is deregistered.
pub const DEREGISTER_AFTER: Duration = Duration::from_secs(600);
/// Transitions within this many check intervals that count as flapping.
const FLAP_WINDOW_CHECKS: u32 = 20;
const FLAP_TRANSITIONS: usize = 4;
const DAMPING_FACTOR: u32 = 3;

/// One instance's health.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub status: Status,
    passes: u32,
    failures: u32,
    pub last_output: String,
    pub last_check: Option<SystemTime>,
    pub unhealthy_since: Option<SystemTime>,
    transitions: VecDeque<SystemTime>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            status: Status::Unknown,
            passes: 0,
            failures: 0,
            last_output: String::new(),
            last_check: None,
            unhealthy_since: None,
            transitions: VecDeque::new(),
        }
    }
}

impl Health {
    /// Records one check's result; returns whether the status changed.
    pub fn record(
        &mut self,
        check: &HealthCheck,
        passed: bool,
        output: &str,
        now: SystemTime,
    ) -> bool {
        self.last_output = output.to_owned();
        self.last_check = Some(now);
        // Checked: an interval from a hand-edited kick.toml could overflow.
        let window = check
            .interval
            .checked_mul(FLAP_WINDOW_CHECKS)
            .unwrap_or(Duration::MAX);
        while self
            .transitions
            .front()
            .is_some_and(|t| now.duration_since(*t).unwrap_or_default() > window)
        {
            self.transitions.pop_front();
        }
        let next = if passed {
            self.passes += 1;
            self.failures = 0;
            let needed = if self.flapping() {
                check.healthy * DAMPING_FACTOR
            } else {
                check.healthy
            };
            (self.passes >= needed).then_some(Status::Healthy)
        } else {
            self.failures += 1;
            self.passes = 0;
            (self.failures >= check.unhealthy).then_some(Status::Unhealthy)
        };
        match next {
            Some(status) if status != self.status => {
                if self.status != Status::Unknown {
                    self.transitions.push_back(now);
                }
                self.status = status;
                self.unhealthy_since = (status == Status::Unhealthy).then_some(now);
                true
            }
            _ => false,
        }
    }

    /// Whether the instance changed state often lately.
    pub fn flapping(&self) -> bool {
        self.transitions.len() >= FLAP_TRANSITIONS
    }
}

/// A registered instance of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub id: String,
    pub node: String,
    pub address: IpAddr,
    pub port: u16,
    pub version: Option<String>,
    /// The replica number the node agent runs it as (`<unit>@<n>`).
    pub replica: Option<u32>,
    pub registered: SystemTime,
    pub last_heartbeat: SystemTime,
    pub health: Health,
    /// Leaving a rollout: out of DNS, kept running for its drain.
    pub draining: bool,
}

impl Instance {
    /// Whether it takes traffic: healthy, and not leaving a rollout.
    pub fn in_service(&self) -> bool {
        self.health.status == Status::Healthy && !self.draining
    }
}

/// A service's live state beside its configuration.
#[derive(Debug, Clone)]
pub struct ServiceState {
    pub config: ServiceSection,
    pub instances: BTreeMap<String, Instance>,
}

impl ServiceState {
    /// The addresses DNS should carry: the healthy instances', sorted and
    /// without repeats.
    pub fn healthy_addresses(&self) -> Vec<IpAddr> {
        let mut addresses: Vec<IpAddr> = self
            .instances
            .values()
            .filter(|i| i.in_service())
            .map(|i| i.address)
            .collect();
        addresses.sort();
        addresses.dedup();
        addresses
    }

    /// Marks the instances `which` picks as draining (out of DNS from
    /// the next sync, still running) or not; how many it changed.
    pub fn set_draining(&mut self, which: impl Fn(&Instance) -> bool, draining: bool) -> usize {
        let mut changed = 0;
        for instance in self.instances.values_mut() {
            if which(instance) && instance.draining != draining {
                instance.draining = draining;
                changed += 1;
            }
        }
        changed
    }

    /// The replicas record's values: one string per instance, sorted.
    pub fn replica_values(&self) -> Vec<String> {
        let mut values: Vec<String> = self.instances.values().map(replica_value).collect();
        values.sort();
        values
    }
}

/// Why a registry operation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryError {
    UnknownService {
        app: String,
        service: String,
    },
    UnknownInstance(String),
    /// A registration field kick cannot record.
    Invalid(String),
    /// The service's replicas record cannot hold another instance.
    Full {
        app: String,
        service: String,
    },
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownService { app, service } => {
                write!(f, "no service {app}.{service} in this cluster")
            }
            Self::UnknownInstance(id) => write!(f, "no instance {id}"),
            Self::Invalid(why) => f.write_str(why),
            Self::Full { app, service } => write!(
                f,
                "{app}.{service} has as many instances as its Route53 replicas record can hold ({REPLICAS_MAX_CHARS} characters, about 400 instances): deregister some first"
            ),
        }
    }
}

/// Every app's services and their instances.
#[derive(Debug, Clone)]
pub struct Registry {
    pub cluster: String,
    pub apps: BTreeMap<String, BTreeMap<String, ServiceState>>,
    /// Bumped on every change the description shows, so a description
    /// made at one generation stands until the next.
    pub generation: u64,
    /// Instance id → (app, service).
    index: std::collections::HashMap<String, (String, String)>,
}

/// The most characters a service's replicas record may hold: Route53
/// takes at most 32,000 characters of values in one request.
pub const REPLICAS_MAX_CHARS: usize = 30_000;

/// One instance as a TXT string (quoted, as Route53 wants it).
fn replica_value(instance: &Instance) -> String {
    let mut text = format!(
        "node={} address={} port={}",
        instance.node, instance.address, instance.port
    );
    if let Some(version) = &instance.version {
        text.push_str(&format!(" version={version}"));
    }
    if let Some(replica) = instance.replica {
        text.push_str(&format!(" replica={replica}"));
    }
    format!("\"{text}\"")
}

/// The prefix of the TXT record set holding a service's instances.
pub const REPLICAS_PREFIX: &str = "_huxley-replicas.";

/// The name of the TXT record set holding `app.service`'s instances.
pub fn replicas_name(app: &str, service: &str, private_zone: &str) -> String {
    format!("{REPLICAS_PREFIX}{service}.{app}.{private_zone}")
}

/// Reads one TXT string of a replicas record; `None` when it is not one.
pub fn parse_replica(app: &str, service: &str, value: &str) -> Option<Registration> {
    let text = value.trim().trim_matches('"');
    let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
    for pair in text.split_whitespace() {
        let (key, value) = pair.split_once('=')?;
        fields.insert(key, value);
    }
    Some(Registration {
        app: app.to_owned(),
        service: service.to_owned(),
        node: (*fields.get("node")?).to_owned(),
        address: fields.get("address")?.parse().ok()?,
        port: fields.get("port")?.parse().ok()?,
        version: fields.get("version").map(|v| (*v).to_owned()),
        replica: match fields.get("replica") {
            Some(n) => Some(n.parse().ok()?),
            None => None,
        },
    })
}

impl Registry {
    /// An empty registry for a cluster's configuration.
    pub fn new(config: &KickConfig) -> Self {
        let apps = config
            .apps
            .iter()
            .map(|(app, section)| {
                let services = section
                    .services
                    .iter()
                    .map(|(name, service)| {
                        (
                            name.clone(),
                            ServiceState {
                                config: service.clone(),
                                instances: BTreeMap::new(),
                            },
                        )
                    })
                    .collect();
                (app.clone(), services)
            })
            .collect();
        Self {
            cluster: config.cluster.name.clone(),
            apps,
            generation: 0,
            index: std::collections::HashMap::new(),
        }
    }

    pub fn service(&self, app: &str, service: &str) -> Option<&ServiceState> {
        self.apps.get(app)?.get(service)
    }

    pub fn service_mut(
        &mut self,
        app: &str,
        service: &str,
    ) -> Result<&mut ServiceState, RegistryError> {
        self.apps
            .get_mut(app)
            .and_then(|s| s.get_mut(service))
            .ok_or_else(|| RegistryError::UnknownService {
                app: app.to_owned(),
                service: service.to_owned(),
            })
    }

    /// Registers (or re-registers) an instance; its id is derived from what
    /// it is, so a replica that registers twice is one instance.
    pub fn register(
        &mut self,
        registration: &Registration,
        now: SystemTime,
    ) -> Result<String, RegistryError> {
        registration.check().map_err(RegistryError::Invalid)?;
        let id = instance_id(registration);
        let state = self.service_mut(&registration.app, &registration.service)?;
        let is_new = !state.instances.contains_key(&id);
        if is_new {
            let used: usize = state
                .instances
                .values()
                .map(|i| replica_value(i).len())
                .sum();
            if used + 240 > REPLICAS_MAX_CHARS {
                return Err(RegistryError::Full {
                    app: registration.app.clone(),
                    service: registration.service.clone(),
                });
            }
        }
        let entry = state
            .instances
            .entry(id.clone())
            .or_insert_with(|| Instance {
                id: id.clone(),
                node: registration.node.clone(),
                address: registration.address,
                port: registration.port,
                version: registration.version.clone(),
                replica: registration.replica,
                registered: now,
                last_heartbeat: now,
                health: Health::default(),
                draining: false,
            });
        let visible = is_new
            || entry.version != registration.version
            || entry.replica != registration.replica;
        entry.version = registration.version.clone();
        entry.replica = registration.replica;
        entry.last_heartbeat = now;
        if visible {
            self.generation += 1;
        }
        self.index.insert(
            id.clone(),
            (registration.app.clone(), registration.service.clone()),
        );
        Ok(id)
    }

    /// Puts back an instance read from its replicas record after a
    /// restart: healthy when the service's DNS answer carries its address
    /// (DNS carries exactly the healthy instances), otherwise unknown until
    /// checked. Its grace period and heartbeat start now.
    pub fn restore(
        &mut self,
        registration: &Registration,
        healthy: bool,
        now: SystemTime,
    ) -> Result<String, RegistryError> {
        let id = self.register(registration, now)?;
        if healthy {
            let state = self.service_mut(&registration.app, &registration.service)?;
            if let Some(instance) = state.instances.get_mut(&id) {
                instance.health.status = Status::Healthy;
                self.generation += 1;
            }
        }
        Ok(id)
    }

    /// Finds an instance by id: (app, service).
    pub fn locate(&self, id: &str) -> Option<(&str, &str)> {
        self.index
            .get(id)
            .map(|(app, service)| (app.as_str(), service.as_str()))
    }

    pub fn heartbeat(&mut self, id: &str, now: SystemTime) -> Result<(), RegistryError> {
        let (app, service) = self
            .locate(id)
            .map(|(a, s)| (a.to_owned(), s.to_owned()))
            .ok_or_else(|| RegistryError::UnknownInstance(id.to_owned()))?;
        let state = self.service_mut(&app, &service)?;
        if let Some(instance) = state.instances.get_mut(id) {
            instance.last_heartbeat = now;
        }
        Ok(())
    }

    pub fn deregister(&mut self, id: &str) -> Result<(String, String), RegistryError> {
        let (app, service) = self
            .locate(id)
            .map(|(a, s)| (a.to_owned(), s.to_owned()))
            .ok_or_else(|| RegistryError::UnknownInstance(id.to_owned()))?;
        self.service_mut(&app, &service)?.instances.remove(id);
        self.index.remove(id);
        self.generation += 1;
        Ok((app, service))
    }

    /// Records a check result; returns the (app, service) whose DNS answer
    /// changed, if it did.
    pub fn record(
        &mut self,
        id: &str,
        passed: bool,
        output: &str,
        now: SystemTime,
    ) -> Option<(String, String)> {
        let (app, service) = self.locate(id).map(|(a, s)| (a.to_owned(), s.to_owned()))?;
        let state = self.service_mut(&app, &service).ok()?;
        let check = state.config.health.clone();
        let instance = state.instances.get_mut(id)?;
        let output_changed = instance.health.last_output != output;
        let changed = instance.health.record(&check, passed, output, now);
        if changed || output_changed {
            self.generation += 1;
        }
        changed.then_some((app, service))
    }

    /// Removes the instances of nodes that are gone (EC2 no longer lists
    /// them); returns the services that lost any.
    pub fn drop_gone_nodes(
        &mut self,
        nodes: &std::collections::BTreeSet<String>,
    ) -> Vec<(String, String)> {
        self.remove_where(|i| !nodes.contains(&i.node))
    }

    /// Removes the instances `gone` says are gone; returns the services
    /// that lost any.
    fn remove_where(&mut self, gone: impl Fn(&Instance) -> bool) -> Vec<(String, String)> {
        let mut touched = Vec::new();
        for (app, services) in &mut self.apps {
            for (name, state) in services {
                let before = state.instances.len();
                let index = &mut self.index;
                state.instances.retain(|id, i| {
                    let keep = !gone(i);
                    if !keep {
                        index.remove(id);
                    }
                    keep
                });
                if state.instances.len() != before {
                    touched.push((app.clone(), name.clone()));
                }
            }
        }
        if !touched.is_empty() {
            self.generation += 1;
        }
        touched
    }

    /// Removes instances unhealthy for longer than `after`; returns the
    /// services whose DNS answer may have changed.
    pub fn reap(&mut self, now: SystemTime, after: Duration) -> Vec<(String, String)> {
        self.remove_where(|i| {
            i.health
                .unhealthy_since
                .is_some_and(|since| now.duration_since(since).unwrap_or_default() > after)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::kick::HealthKind;

    fn check() -> HealthCheck {
        HealthCheck {
            kind: HealthKind::Http,
            path: Some("/healthz".into()),
            port: Some(8080),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            healthy: 2,
            unhealthy: 3,
            grace: Duration::ZERO,
        }
    }

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn a_huge_interval_does_not_overflow_the_flap_window() {
        // Regression: `interval * 20` panicked (under the registry lock).
        let c = HealthCheck {
            interval: Duration::MAX / 2,
            ..check()
        };
        let mut h = Health::default();
        assert!(!h.record(&c, true, "200", at(0)));
        assert!(h.record(&c, true, "200", at(1)));
    }

    #[test]
    fn thresholds_decide_transitions() {
        let (c, mut h) = (check(), Health::default());
        assert!(!h.record(&c, true, "200", at(0)));
        assert_eq!(h.status, Status::Unknown);
        assert!(h.record(&c, true, "200", at(10)));
        assert_eq!(h.status, Status::Healthy);
        assert!(!h.record(&c, false, "503", at(20)));
        assert!(!h.record(&c, false, "503", at(30)));
        assert!(h.record(&c, false, "503", at(40)));
        assert_eq!(
            (h.status, h.unhealthy_since),
            (Status::Unhealthy, Some(at(40)))
        );
        assert_eq!(h.last_output, "503");
    }

    #[test]
    fn a_flapping_instance_must_pass_longer() {
        let (c, mut h) = (check(), Health::default());
        let mut t = 0;
        let mut tick = |h: &mut Health, pass: bool| {
            t += 10;
            h.record(&c, pass, "", at(t))
        };
        // Flap: healthy, unhealthy, healthy, unhealthy, healthy...
        for _ in 0..2 {
            tick(&mut h, true);
            tick(&mut h, true);
            for _ in 0..3 {
                tick(&mut h, false);
            }
        }
        tick(&mut h, true);
        tick(&mut h, true);
        for _ in 0..3 {
            tick(&mut h, false);
        }
        assert!(h.flapping());
        // Two passes are no longer enough: six are needed.
        for _ in 0..5 {
            tick(&mut h, true);
        }
        assert_eq!(h.status, Status::Unhealthy);
        tick(&mut h, true);
        assert_eq!(h.status, Status::Healthy);
    }

    fn config() -> KickConfig {
        let checked = crate::config::check(&crate::testing::synth::config(1, 2));
        crate::compile::kick::kick_config(&checked.config.expect("valid"))
    }

    fn registration(ip: &str) -> Registration {
        Registration {
            app: "app0".into(),
            service: "svc0".into(),
            node: "i-1".into(),
            address: ip.parse().expect("ip"),
            port: 8080,
            version: Some("abc".into()),
            replica: Some(2),
        }
    }

    #[test]
    fn registering_twice_is_one_instance_and_unknown_services_are_refused() {
        let mut r = Registry::new(&config());
        let a = r
            .register(&registration("10.0.0.1"), at(0))
            .expect("registered");
        let b = r
            .register(&registration("10.0.0.1"), at(5))
            .expect("registered");
        assert_eq!(a, b);
        assert_eq!(
            r.service("app0", "svc0").expect("service").instances.len(),
            1
        );
        let mut stray = registration("10.0.0.1");
        stray.service = "nope".into();
        assert!(matches!(
            r.register(&stray, at(0)),
            Err(RegistryError::UnknownService { .. })
        ));
        let mut spaced = registration("10.0.0.1");
        spaced.version = Some("v1 node=i-evil".into());
        assert!(matches!(
            r.register(&spaced, at(0)),
            Err(RegistryError::Invalid(_))
        ));
    }

    #[test]
    fn the_replicas_record_reads_back_as_the_instances_it_was_written_from() {
        let mut r = Registry::new(&config());
        let mut v6 = registration("fd00::1");
        v6.version = None;
        v6.replica = None;
        r.register(&registration("10.0.0.1"), at(0)).expect("a");
        r.register(&v6, at(0)).expect("b");
        let values = r.service("app0", "svc0").expect("service").replica_values();
        assert_eq!(
            values,
            [
                "\"node=i-1 address=10.0.0.1 port=8080 version=abc replica=2\"",
                "\"node=i-1 address=fd00::1 port=8080\"",
            ]
        );
        let mut rebuilt = Registry::new(&config());
        for value in &values {
            let registration = parse_replica("app0", "svc0", value).expect("parses");
            rebuilt
                .restore(&registration, value.contains("10.0.0.1"), at(50))
                .expect("restored");
        }
        let service = rebuilt.service("app0", "svc0").expect("service");
        assert_eq!(service.replica_values(), values);
        assert_eq!(
            service.healthy_addresses(),
            ["10.0.0.1".parse::<IpAddr>().expect("ip")]
        );
        assert_eq!(parse_replica("app0", "svc0", "\"heritage=huxley\""), None);
    }

    #[test]
    fn instances_of_a_node_that_is_gone_are_dropped() {
        let mut r = Registry::new(&config());
        r.register(&registration("10.0.0.1"), at(0)).expect("a");
        let mut other = registration("10.0.0.2");
        other.node = "i-2".into();
        let id = r.register(&other, at(0)).expect("b");
        let nodes = std::collections::BTreeSet::from(["i-2".to_owned()]);
        assert_eq!(
            r.drop_gone_nodes(&nodes),
            [("app0".to_owned(), "svc0".to_owned())]
        );
        let left: Vec<&String> = r
            .service("app0", "svc0")
            .expect("service")
            .instances
            .keys()
            .collect();
        assert_eq!(left, [&id]);
        assert!(r.drop_gone_nodes(&nodes).is_empty());
    }

    #[test]
    fn only_healthy_instances_are_in_dns_and_critical_ones_are_reaped() {
        let mut r = Registry::new(&config());
        let a = r.register(&registration("10.0.0.1"), at(0)).expect("a");
        let b = r.register(&registration("10.0.0.2"), at(0)).expect("b");
        for t in [10, 20] {
            r.record(&a, true, "200", at(t));
            r.record(&b, true, "200", at(t));
        }
        let service = r.service("app0", "svc0").expect("service");
        assert_eq!(service.healthy_addresses().len(), 2);
        let mut changed = None;
        for t in [30, 40, 50] {
            changed = changed.or(r.record(&b, false, "refused", at(t)));
        }
        assert_eq!(changed, Some(("app0".into(), "svc0".into())));
        let service = r.service("app0", "svc0").expect("service");
        assert_eq!(
            service.healthy_addresses(),
            ["10.0.0.1".parse::<IpAddr>().expect("ip")]
        );
        assert!(r.reap(at(100), DEREGISTER_AFTER).is_empty());
        assert_eq!(r.reap(at(50 + 601), DEREGISTER_AFTER).len(), 1);
        assert!(r.locate(&b).is_none());
        assert!(r.locate(&a).is_some());
    }
}
