//! The kick server's configuration, `kick/kick.toml`, from the model.

use std::collections::BTreeMap;

use crate::model::{self, Config, Source, naming};
use crate::spec::kick::{
    AppSection, ClusterSection, HealthCheck, HealthKind, KickConfig, Listen, NetworkSection,
    NodesSection, ReplicaBounds, ScalePolicy, ServiceSection, Tokens, VERSION,
};

/// The name, under the tokens' path, of the hook server's host key.
pub const HOOK_HOST_KEY: &str = "hook-host-key";

/// The name, under the tokens' path, of the admin token's hash.
pub const ADMIN_SHA256: &str = "admin-sha256";

/// Builds the kick configuration.
pub fn kick_config(config: &Config) -> KickConfig {
    let cluster = &config.cluster;
    let apps = config
        .apps
        .values()
        .map(|app| {
            let services = app
                .services
                .values()
                .map(|service| (service.name.clone(), service_section(config, app, service)))
                .collect();
            (
                app.name.clone(),
                AppSection {
                    branch: app.branch.clone(),
                    services,
                },
            )
        })
        .collect::<BTreeMap<_, _>>();
    KickConfig {
        version: VERSION,
        cluster: ClusterSection {
            name: cluster.name.clone(),
            region: cluster.region.clone(),
            stack: naming::stack(config),
            private_zone: cluster.private_domain.clone(),
            public_zone: cluster.public_domain.clone(),
            kick_name: naming::kick_name(config),
            lease_table: naming::lease_table(config),
        },
        listen: Listen {
            internal: format!("0.0.0.0:{}", model::KICK_INTERNAL_PORT),
            external: format!("0.0.0.0:{}", model::KICK_EXTERNAL_PORT),
        },
        tokens: Tokens {
            admin: naming::token_parameter(config, "admin"),
            admin_sha256: naming::token_parameter(config, ADMIN_SHA256),
            hook: naming::token_parameter(config, "hook"),
            hook_host_key: naming::token_parameter(config, HOOK_HOST_KEY),
        },
        nodes: NodesSection {
            instance_type: cluster.nodes.instance_type.name.to_owned(),
            group: naming::node_group(config),
            min: cluster.nodes.min,
            max: cluster.nodes.max,
            hourly_cost: cluster.nodes.hourly_cost,
            consolidation: cluster.nodes.consolidation.as_ref().map(|c| {
                crate::spec::kick::Consolidation {
                    budget: c.budget,
                    min_monthly_savings: c.min_monthly_savings,
                    after: c.after,
                }
            }),
            allocatable_cpu_millis: cluster.nodes.allocatable_cpu_millis(),
            allocatable_memory_mib: cluster.nodes.allocatable_memory_mib(),
        },
        network: NetworkSection {
            container_range: model::CONTAINER_RANGE.to_owned(),
            vpc_cidr: cluster.vpc_cidr.to_string(),
        },
        apps,
        deployers: cluster
            .deployers
            .iter()
            .map(|d| crate::spec::kick::DeployerEntry {
                key: d.key.clone(),
                apps: d.apps.clone(),
            })
            .collect(),
    }
}

/// What kick knows of one service.
fn service_section(config: &Config, app: &model::App, service: &model::Service) -> ServiceSection {
    ServiceSection {
        unit: naming::unit(app, service),
        image: match &service.source {
            Source::Image { reference } => Some(reference.clone()),
            Source::Build { .. } => None,
        },
        build: match &service.source {
            Source::Build { context } => Some(context.clone()),
            Source::Image { .. } => None,
        },
        token: naming::service_token_parameter(config, app, service),
        port: service.port,
        host_port: service.host_port,
        private_name: service.port.map(|_| config.private_name(app, service)),
        public_names: config.public_names(service),
        target_group: config
            .behind_load_balancer(service)
            .then(|| crate::compile::alb::target_group_id(&app.name, &service.name)),
        cpu_millis: service.cpu_millis,
        memory_mib: service.memory_mib,
        replicas: ReplicaBounds {
            min: service.replicas.min,
            max: service.replicas.max,
        },
        scale: service.scale.map(|s| ScalePolicy {
            target_cpu_percent: s.target_cpu_percent,
            target_memory_percent: s.target_memory_percent,
            scale_in_after: s.scale_in_after,
        }),
        health: health_check(service),
        stateful: service.stateful,
        deploy: service.deploy,
        depends_on: service.depends_on.clone(),
        release: service.release.clone(),
        secrets: service
            .secrets
            .iter()
            .map(|(name, reference)| match reference {
                model::SecretRef::Ssm { parameter } => (name.clone(), parameter.clone()),
            })
            .collect(),
    }
}

/// A service's health check, as kick runs it.
fn health_check(service: &model::Service) -> HealthCheck {
    let health = &service.health;
    let (kind, path, port) = match &health.check {
        model::HealthCheck::Http { path } => (HealthKind::Http, Some(path.clone()), service.port),
        model::HealthCheck::Tcp { port } => (HealthKind::Tcp, None, Some(*port)),
        model::HealthCheck::Running => (HealthKind::Running, None, None),
    };
    HealthCheck {
        kind,
        path,
        port,
        interval: health.interval,
        timeout: health.timeout,
        healthy: health.healthy_threshold,
        unhealthy: health.unhealthy_threshold,
        grace: health.grace,
    }
}

/// `kick.toml` as text, with a header.
pub fn kick_toml(config: &Config) -> String {
    let body = toml::to_string(&kick_config(config)).expect("the kick config always serializes");
    format!(
        "# kick.toml: read by `huxley kick serve`. Generated by huxley build; do not edit.\n# Token entries are SSM parameter names, never values.\n\n{body}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kick_toml_round_trips_through_its_own_type() {
        let checked = crate::config::check(&crate::testing::synth::config(3, 4));
        let config = checked.config.expect("valid");
        let text = kick_toml(&config);
        let parsed: KickConfig = toml::from_str(&text).expect("kick parses what build writes");
        assert_eq!(parsed, kick_config(&config));
    }
}
