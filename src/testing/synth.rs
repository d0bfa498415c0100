//! Synthetic configs of any size, for benchmarks and scale tests.
//!
//! Not part of the user-facing API.

use std::fmt::Write as _;

/// The shape of a synthetic config.
#[derive(Debug, Clone, Copy)]
pub struct Synth {
    pub apps: usize,
    pub services_per_app: usize,
    /// Gap between consecutive public host-ports: 1 makes them contiguous.
    pub host_port_step: u16,
    /// Every service its own secret parameter, instead of one per app.
    pub secret_per_service: bool,
}

/// A valid `huxley.toml` with `apps` apps of `services_per_app` services
/// each, as a real platform looks: built and prebuilt images, every fifth
/// service public on the next host-port, some autoscaled, one database
/// secret per app, each service depending on the one before.
pub fn config(apps: usize, services_per_app: usize) -> String {
    Synth {
        apps,
        services_per_app,
        host_port_step: 1,
        secret_per_service: false,
    }
    .render()
}

impl Synth {
    pub fn render(&self) -> String {
        let total = self.apps * self.services_per_app;
        // Enough room for the minimum replicas: 250m and 256Mi per service
        // on m6i.4xlarge nodes (15.8 vCPU, 63.5 GiB allocatable).
        let nodes = (total / 40).max(2) + 2;
        let mut s = String::new();
        let _ = write!(
            s,
            r#"[cluster]
name = "synth"
region = "us-west-2"
availability-zones = ["us-west-2a", "us-west-2b", "us-west-2c"]
vpc-cidr = "10.40.0.0/16"
public-domain = "synth.example.com"
ingress = "dns"
admin-cidrs = ["203.0.113.0/24"]

[cluster.nodes]
instance-type = "m6i.4xlarge"
min = 2
max = {nodes}
"#
        );
        let mut host_port = 10_000;
        for a in 0..self.apps {
            let _ = write!(s, "\n[apps.app{a}]\nbranch = \"main\"\n");
            for i in 0..self.services_per_app {
                let _ = write!(s, "\n[apps.app{a}.services.svc{i}]\n");
                if i % 2 == 0 {
                    let _ = writeln!(s, "build = \"services/svc{i}\"");
                } else {
                    let _ = writeln!(s, "image = \"ghcr.io/synth/svc{i}:1.{a}.{i}\"");
                }
                let _ = writeln!(s, "port = 8080\ncpu = \"250m\"\nmemory = \"256Mi\"");
                if i % 5 == 0 {
                    host_port += self.host_port_step;
                    let _ = writeln!(s, "host-port = {host_port}\npublic = [\"svc{i}-app{a}\"]");
                }
                if i % 3 == 0 {
                    let _ = writeln!(
                        s,
                        "replicas = {{ min = 1, max = 4 }}\nscale = {{ target-cpu = 60 }}"
                    );
                }
                let secret = if self.secret_per_service {
                    format!("/synth/app{a}/svc{i}/database-url")
                } else {
                    format!("/synth/app{a}/database-url")
                };
                let _ = writeln!(
                    s,
                    "health = {{ http = \"/healthz\", interval = \"10s\", timeout = \"2s\" }}\nenv = {{ RUST_LOG = \"info\", INDEX = {i} }}\nsecrets = {{ DATABASE_URL = \"ssm:{secret}\" }}"
                );
                if i > 0 {
                    let _ = writeln!(s, "depends-on = [\"svc{}\"]", i - 1);
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn synthetic_configs_are_valid_at_every_size() {
        for (apps, services) in [(1, 1), (10, 20), (50, 20)] {
            let checked = crate::config::check(&super::config(apps, services));
            assert!(checked.diagnostics.is_empty(), "{:?}", checked.diagnostics);
            let config = checked.config.expect("valid");
            assert_eq!(config.services().count(), apps * services);
        }
    }
}
