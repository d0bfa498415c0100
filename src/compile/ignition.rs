//! The Ignition configs (spec 3.4) a fresh Flatcar machine boots with: one
//! for the nodes, one for the control plane.
//!
//! They stay small and stable: the `core` user's SSH keys, the cluster's
//! identity in `/etc/huxley/cluster.env`, Docker's settings, the `huxley`
//! binary fetched from the artifact bucket, and the agents' units,
//! enabled. A node runs the node agent only; a control machine runs the
//! kick and hook servers, and the node agent in its control role (it keeps
//! kick.toml and the binary's artifacts current, and runs no replica); the
//! push user exists there only. Service units are *not* here: the node
//! agent fetches them, so changing a service never changes the user data
//! and never rolls the machines. The bucket's name is left as
//! `${ArtifactBucket}` for the template's `Fn::Sub`; every other `${` is
//! escaped for it.

use serde_json::{Value, json};

use super::templates::Templates;
use super::units;
use crate::model::{Config, naming};

/// Which group a machine belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Runs replicas: the node agent only.
    Node,
    /// Runs the kick and hook servers (and the builds), with the control
    /// role.
    Control,
}

impl Role {
    /// Its name in `HUXLEY_ROLE` and the `huxley:role` tag.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Control => "control",
        }
    }
}

/// The config of `role`'s machines as a JSON value.
pub fn ignition(config: &Config, templates: &Templates, role: Role) -> Value {
    // The bucket's name is the stack's to fill in: it stays `${ArtifactBucket}`
    // between the percent-encoded parts.
    let cluster_env = format!(
        "{}${{ArtifactBucket}}{}",
        data_url(&format!(
            "HUXLEY_CLUSTER={}\nHUXLEY_REGION={}\nHUXLEY_STACK={}\nHUXLEY_ROLE={}\nHUXLEY_KICK_URL=http://kick.{}:{}\nHUXLEY_BUCKET=",
            config.cluster.name,
            config.cluster.region,
            naming::stack(config),
            role.as_str(),
            config.cluster.private_domain,
            crate::model::KICK_INTERNAL_PORT,
        )),
        &data_url("\n")["data:,".len()..]
    );
    let daemon = json!({
        "log-driver": "journald",
        "live-restore": true,
    });
    let wanted: &[&str] = match role {
        Role::Node => &["huxley-node.service"],
        Role::Control => &[
            "huxley-hook.service",
            "huxley-kick.service",
            "huxley-node.service",
        ],
    };
    let units: Vec<Value> = units::agent_units(config, templates)
        .into_iter()
        .filter(|(name, _)| wanted.contains(&name.as_str()))
        .map(|(name, contents)| json!({ "name": name, "enabled": true, "contents": contents }))
        .collect();
    // `core` logs in with the cluster's ssh-keys (and is root through
    // sudo). On the control plane, pushes log in to the hook's own sshd as
    // an unprivileged system user with no keys of its own and no group,
    // whose every session runs the hook's forced command (sshd runs it
    // through the user's shell, so it has one).
    let mut users = vec![json!({ "name": "core", "sshAuthorizedKeys": config.cluster.ssh_keys })];
    if role == Role::Control {
        users.push(json!({
            "name": crate::spec::names::GIT_USER,
            "system": true,
            "homeDir": "/var/lib/huxley/git",
            "shell": "/bin/sh",
        }));
    }
    json!({
        "ignition": { "version": "3.4.0" },
        "passwd": { "users": users },
        "storage": {
            "directories": [
                { "path": "/etc/huxley", "mode": 0o755 },
                { "path": "/etc/huxley/releases", "mode": 0o755 },
                { "path": "/etc/huxley/units", "mode": 0o755 },
            ],
            "files": [
                {
                    "path": "/opt/bin/huxley",
                    "mode": 0o755,
                    "contents": { "source": format!("s3://${{ArtifactBucket}}/{}", naming::binary_key()) },
                },
                {
                    "path": "/etc/huxley/cluster.env",
                    "mode": 0o644,
                    "contents": { "source": cluster_env },
                },
                {
                    "path": "/etc/docker/daemon.json",
                    "mode": 0o644,
                    "contents": { "source": data_url(&format!("{daemon}\n")) },
                },
            ],
        },
        "systemd": { "units": units },
    })
}

/// The config as the text the nodes receive: pretty JSON, newline-ended.
pub fn to_text(ignition: &Value) -> String {
    let mut text = serde_json::to_string_pretty(ignition).expect("Ignition always serializes");
    text.push('\n');
    text
}

/// The config prepared for `Fn::Sub`: `${ArtifactBucket}` stays a
/// substitution, any other `${` becomes the literal `${!`.
pub fn for_fn_sub(text: &str) -> String {
    const KEEP: &str = "${ArtifactBucket}";
    text.split(KEEP)
        .map(|part| part.replace("${", "${!"))
        .collect::<Vec<_>>()
        .join(KEEP)
}

/// A `data:` URL with percent-encoding, as Ignition reads inline contents.
fn data_url(text: &str) -> String {
    let mut url = String::from("data:,");
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            url.push(byte as char);
        } else {
            url.push_str(&format!("%{byte:02X}"));
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blog example, checked.
    fn blog() -> Config {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/blog/huxley.toml"),
        )
        .expect("the blog example");
        crate::config::check(&text).config.expect("valid")
    }

    /// The contents of the unit `name` in an Ignition config.
    fn unit<'a>(ignition: &'a serde_json::Value, name: &str) -> &'a str {
        ignition["systemd"]["units"]
            .as_array()
            .and_then(|u| u.iter().find(|u| u["name"] == name))
            .and_then(|u| u["contents"].as_str())
            .unwrap_or_else(|| panic!("the unit {name}"))
    }

    #[test]
    fn only_the_bucket_is_substituted() {
        assert_eq!(
            for_fn_sub("s3://${ArtifactBucket}/x ${HOME} ${ArtifactBucket}"),
            "s3://${ArtifactBucket}/x ${!HOME} ${ArtifactBucket}"
        );
    }

    #[test]
    fn data_urls_are_percent_encoded() {
        assert_eq!(data_url("A=b c\n"), "data:,A%3Db%20c%0A");
    }

    /// The text a `data:` URL holds (the inverse of [`data_url`]).
    fn decoded(url: &str) -> String {
        let text = url.strip_prefix("data:,").expect("a data URL");
        let mut bytes = Vec::new();
        let mut rest = text.as_bytes();
        while let Some((&first, tail)) = rest.split_first() {
            if first == b'%' && tail.len() >= 2 {
                let hex = std::str::from_utf8(&tail[..2]).expect("hex");
                bytes.push(u8::from_str_radix(hex, 16).expect("a percent escape"));
                rest = &tail[2..];
            } else {
                bytes.push(first);
                rest = tail;
            }
        }
        String::from_utf8(bytes).expect("utf-8")
    }

    /// Regression: `EnvironmentFile=` overrides `Environment=` (systemd.exec),
    /// so the hook unit's `HUXLEY_KICK_URL=http://127.0.0.1:…` lost to
    /// cluster.env's kick name, and every node's hook server asked the
    /// leader whether it led, heard yes, and served git.
    #[test]
    fn no_agent_unit_sets_what_cluster_env_overrides() {
        let config = blog();
        let ignition = ignition(&config, &Templates::new(), Role::Control);
        let files = ignition["storage"]["files"].as_array().expect("files");
        let env = files
            .iter()
            .find(|f| f["path"] == "/etc/huxley/cluster.env")
            .and_then(|f| f["contents"]["source"].as_str())
            .expect("cluster.env");
        let env = decoded(&env.replace("${ArtifactBucket}", ""));
        let from_file: Vec<&str> = env
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .collect();
        assert!(from_file.contains(&"HUXLEY_KICK_URL"), "{env}");
        for unit in ignition["systemd"]["units"].as_array().expect("units") {
            let contents = unit["contents"].as_str().expect("contents");
            assert!(contents.contains("EnvironmentFile=/etc/huxley/cluster.env"));
            for line in contents.lines() {
                if let Some((key, _)) = line
                    .strip_prefix("Environment=")
                    .and_then(|v| v.split_once('='))
                {
                    assert!(
                        !from_file.contains(&key),
                        "{} sets {key} with Environment=, which cluster.env overrides",
                        unit["name"]
                    );
                }
            }
        }
        let hook = unit(&ignition, "huxley-hook.service");
        assert!(
            hook.contains(&format!(
                "--kick-url http://127.0.0.1:{}",
                crate::model::KICK_INTERNAL_PORT
            )),
            "the hook server must ask its own node's kick server:\n{hook}"
        );
    }

    /// Regression: pushes logged in as `core` with the nodes' login keys,
    /// so whoever could push was root on every node. The push user is
    /// unprivileged, has no keys of its own (port 22 takes none of the
    /// deploy keys), and the hook unit names neither a keys file nor
    /// `core`: its keys are kick.toml's deployers.
    #[test]
    fn pushers_are_an_unprivileged_user_with_the_deploy_keys_only() {
        let config = blog();
        assert!(
            !config.cluster.deployers.is_empty(),
            "the example has a deployer"
        );
        let ignition = ignition(&config, &Templates::new(), Role::Control);
        let users = ignition["passwd"]["users"].as_array().expect("users");
        let git = users
            .iter()
            .find(|u| u["name"] == crate::spec::names::GIT_USER)
            .expect("the push user");
        assert!(git.get("sshAuthorizedKeys").is_none(), "{git}");
        assert!(git.get("groups").is_none(), "{git}");
        assert_eq!(git["system"], true);
        let text = ignition.to_string();
        for deployer in &config.cluster.deployers {
            let body = deployer.key.split_whitespace().nth(1).expect("key body");
            assert!(
                !text.contains(body),
                "a deploy key reached the nodes' login keys"
            );
        }
        let hook = unit(&ignition, "huxley-hook.service");
        assert!(
            !hook.contains("--keys") && !hook.contains("--user"),
            "{hook}"
        );
        // A node takes no push: no push user, no hook or kick server.
        let node = super::ignition(&config, &Templates::new(), Role::Node);
        assert!(!node.to_string().contains(crate::spec::names::GIT_USER));
        let units: Vec<&str> = node["systemd"]["units"]
            .as_array()
            .expect("units")
            .iter()
            .filter_map(|u| u["name"].as_str())
            .collect();
        assert_eq!(units, ["huxley-node.service"]);
    }

    /// Regression: the hook unit named `/run/huxley/tokens/hook`, which
    /// nothing on a node writes, so `hook serve` restarted every 5 s and
    /// no push deployed. Every daemon reads its token from SSM with the
    /// control role: no unit names a token file.
    #[test]
    fn no_daemon_unit_names_a_token_file() {
        let config = blog();
        let ignition = ignition(&config, &Templates::new(), Role::Control);
        let units = ignition["systemd"]["units"].as_array().expect("units");
        assert!(units.len() >= 3, "{units:?}");
        for unit in units {
            let contents = unit["contents"].as_str().expect("contents");
            for needle in ["TOKEN_FILE", "--token-file", "/tokens/"] {
                assert!(
                    !contents.contains(needle),
                    "{} names a token file ({needle}), which nothing writes",
                    unit["name"]
                );
            }
        }
    }
}
