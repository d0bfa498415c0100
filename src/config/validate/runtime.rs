//! What a service's replicas run with: health checks, environment, secrets, volumes.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Checker, SECRET_WORDS};
use crate::config::names;
use crate::config::raw::{RawEnvValue, RawHealth, RawService};
use crate::config::spanned::Spanned;
use crate::diagnostic::Diagnostic;
use crate::model::{Health, HealthCheck, SecretRef};
use crate::spec::quantity;

impl Checker<'_> {
    pub(super) fn health(&mut self, raw: &RawService, port: Option<u16>) -> Option<Health> {
        let Some(spanned) = &raw.health else {
            return Some(Health {
                check: default_check(port),
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(2),
                healthy_threshold: 2,
                unhealthy_threshold: 3,
                grace: Duration::ZERO,
            });
        };
        let before = self.diagnostics.len();
        let h: &RawHealth = &spanned.value;
        let check = self.health_check(h, raw, port);
        let (interval, timeout, grace) = self.health_timing(h, &spanned.span);
        let threshold =
            |this: &mut Self, v: &Option<Spanned<i64>>, default: u32, what: &str| match v {
                None => Some(default),
                Some(v) => this.int_in::<u32>(v, 1..=10, what),
            };
        let healthy = threshold(self, &h.healthy, 2, "health.healthy");
        let unhealthy = threshold(self, &h.unhealthy, 3, "health.unhealthy");
        if self.diagnostics.len() != before {
            return None;
        }
        Some(Health {
            check: check?,
            interval: interval?,
            timeout: timeout?,
            healthy_threshold: healthy?,
            unhealthy_threshold: unhealthy?,
            grace: grace?,
        })
    }

    /// The check itself: HTTP on the service's port, TCP on it, or that
    /// the container runs.
    fn health_check(
        &mut self,
        h: &RawHealth,
        raw: &RawService,
        port: Option<u16>,
    ) -> Option<HealthCheck> {
        match (&h.http, &h.tcp) {
            (Some(http), Some(tcp)) => {
                self.push(
                    Diagnostic::error("a health check is `http` or `tcp`, not both")
                        .at(http.span.clone(), "HTTP check")
                        .also(tcp.span.clone(), "TCP check"),
                );
                None
            }
            (Some(http), None) => {
                if !http.value.starts_with('/') {
                    self.push(
                        Diagnostic::error("an HTTP health check path starts with `/`")
                            .at(http.span.clone(), "not a path")
                            .help(format!(
                                "did you mean \"/{}\"?",
                                http.value.trim_start_matches('/')
                            )),
                    );
                }
                if port.is_none() && raw.port.is_none() {
                    self.push(
                        Diagnostic::error("an HTTP health check needs the service's `port`")
                            .at(http.span.clone(), "checked on which port?")
                            .help("add `port = <the port the container listens on>`"),
                    );
                }
                Some(HealthCheck::Http {
                    path: http.value.clone(),
                })
            }
            (None, Some(tcp)) => {
                let tcp_port = self.int_in::<u16>(tcp, 1..=65535, "health.tcp");
                if let (Some(tcp_port), Some(port)) = (tcp_port, port)
                    && tcp_port != port
                {
                    self.push(
                        Diagnostic::error("the TCP health check must use the service's `port`")
                            .at(tcp.span.clone(), format!("{tcp_port} is not the service's port {port}"))
                            .note("the kick server reaches replicas only through the port they expose")
                            .help(format!("write `tcp = {port}`")),
                    );
                }
                if raw.port.is_none() {
                    self.push(
                        Diagnostic::error("a TCP health check needs the service's `port`")
                            .at(tcp.span.clone(), "the service exposes no port")
                            .help("add `port = <the port the container listens on>`"),
                    );
                }
                tcp_port.map(|port| HealthCheck::Tcp { port })
            }
            (None, None) => Some(default_check(port)),
        }
    }

    /// The check's interval, timeout and grace, each within its bounds.
    fn health_timing(
        &mut self,
        h: &RawHealth,
        whole: &std::ops::Range<usize>,
    ) -> (Option<Duration>, Option<Duration>, Option<Duration>) {
        let duration =
            |this: &mut Self, v: &Option<Spanned<String>>, default: Duration, what: &str| match v {
                None => Some(default),
                Some(v) => this.check(quantity::duration(&v.value), &v.span, || {
                    format!("invalid duration for `{what}`")
                }),
            };
        let interval = duration(self, &h.interval, Duration::from_secs(10), "interval");
        let timeout = duration(self, &h.timeout, Duration::from_secs(2), "timeout");
        let grace = duration(self, &h.grace, Duration::ZERO, "grace");
        if let (Some(interval), Some(raw_interval)) = (interval, &h.interval)
            && interval < Duration::from_secs(1)
        {
            self.push(
                Diagnostic::error("health checks run at most once a second")
                    .at(raw_interval.span.clone(), "too often"),
            );
        }
        // A check an hour apart notices nothing; and kick multiplies these
        // durations (flap windows), which must stay far from overflow.
        for (value, raw, what) in [
            (interval, &h.interval, "interval"),
            (grace, &h.grace, "grace"),
        ] {
            if let (Some(value), Some(raw)) = (value, raw)
                && value > Duration::from_secs(3600)
            {
                self.push(
                    Diagnostic::error(format!("the health check {what} is longer than an hour"))
                        .at(
                            raw.span.clone(),
                            format!("{} is too long", quantity::format_duration(value)),
                        )
                        .help(format!("give `{what}` at most \"1h\"")),
                );
            }
        }
        if let (Some(interval), Some(timeout)) = (interval, timeout)
            && timeout >= interval
        {
            let span = h
                .timeout
                .as_ref()
                .or(h.interval.as_ref())
                .map_or(whole.clone(), |s| s.span.clone());
            self.push(
                Diagnostic::error("the health check timeout must be shorter than its interval").at(
                    span,
                    format!(
                        "timeout {} ≥ interval {}",
                        quantity::format_duration(timeout),
                        quantity::format_duration(interval)
                    ),
                ),
            );
        }
        (interval, timeout, grace)
    }

    pub(super) fn env(
        &mut self,
        raw: &RawService,
        parameters: &str,
    ) -> Option<BTreeMap<String, String>> {
        let before = self.diagnostics.len();
        let mut out = BTreeMap::new();
        for (key, value) in raw.env.iter().flatten() {
            self.check(names::env_name(&key.value), &key.span, || {
                format!("`{}` is not an environment variable name", key.value)
            });
            let text = match &value.value {
                RawEnvValue::Text(s) => s.clone(),
                RawEnvValue::Integer(i) => i.to_string(),
                RawEnvValue::Float(f) => f.to_string(),
                RawEnvValue::Bool(b) => b.to_string(),
            };
            let upper = key.value.to_ascii_uppercase();
            if text.starts_with("ssm:") {
                self.push(
                    Diagnostic::error(format!("`{}` holds a secret reference in `env`", key.value))
                        .at(value.span.clone(), "`env` values are passed as they are")
                        .help("move it to `secrets`, which resolves references at start"),
                );
            } else if !text.is_empty() && SECRET_WORDS.iter().any(|w| upper.contains(w)) {
                self.redact.push(value.span.clone());
                self.push(
                    Diagnostic::warning(format!("`{}` looks like a secret written in plain text", key.value))
                        .at(value.span.clone(), "this value would be written into the generated unit files")
                        .help(format!(
                            "store it in SSM Parameter Store and reference it: `secrets = {{ {} = \"ssm:{parameters}/{}\" }}`",
                            key.value,
                            crate::spec::names::secret_leaf(&key.value)
                        )),
                );
            }
            if raw
                .secrets
                .as_ref()
                .is_some_and(|s| s.contains_key(key.value.as_str()))
            {
                let other = raw
                    .secrets
                    .as_ref()
                    .and_then(|s| s.keys().find(|k| k.value == key.value))
                    .map_or(0..0, |k| k.span.clone());
                self.push(
                    Diagnostic::error(format!(
                        "`{}` is set in both `env` and `secrets`",
                        key.value
                    ))
                    .at(key.span.clone(), "in env")
                    .also(other, "in secrets")
                    .help("keep one"),
                );
            }
            if let Err(why) =
                crate::spec::envfile::check_value(&text, crate::spec::envfile::Readers::Docker)
            {
                self.push(
                    Diagnostic::error(format!("`{}` cannot be written to an env file", key.value))
                        .at(value.span.clone(), format!("it {why}"))
                        .help("encode it (for example as base64) or use a file in the image"),
                );
            }
            out.insert(key.value.clone(), text);
        }
        (self.diagnostics.len() == before).then_some(out)
    }

    pub(super) fn secrets(
        &mut self,
        raw: &RawService,
        parameters: &str,
    ) -> Option<BTreeMap<String, SecretRef>> {
        let before = self.diagnostics.len();
        let mut out = BTreeMap::new();
        for (key, value) in raw.secrets.iter().flatten() {
            self.check(names::env_name(&key.value), &key.span, || {
                format!("`{}` is not an environment variable name", key.value)
            });
            let Some(parameter) = value.value.strip_prefix("ssm:") else {
                // The value may be the secret itself: never echo it.
                self.redact.push(value.span.clone());
                self.push(
                    Diagnostic::error(format!("secret `{}` is not a reference", key.value))
                        .at(value.span.clone(), "expected `ssm:/path/to/parameter`")
                        .note("secret values must never be written in huxley.toml: they would end up in generated files")
                        .help(format!(
                            "store it with `aws ssm put-parameter --type SecureString --name {parameters}/{0}` and write `{1} = \"ssm:{parameters}/{0}\"`",
                            crate::spec::names::secret_leaf(&key.value),
                            key.value
                        )),
                );
                continue;
            };
            let valid = parameter.starts_with('/')
                && parameter.len() > 1
                && parameter.len() <= 2048
                && !parameter.ends_with('/')
                && parameter
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c))
                && !parameter.to_ascii_lowercase().starts_with("/aws")
                && !parameter.to_ascii_lowercase().starts_with("/ssm");
            if !valid {
                self.push(
                    Diagnostic::error(format!("`{parameter}` is not an SSM parameter name"))
                        .at(value.span.clone(), "expected a path such as `/acme/blog/database-url`")
                        .note("parameter names start with `/`, use letters, digits and `_.-/`, and cannot start with /aws or /ssm"),
                );
                continue;
            }
            out.insert(
                key.value.clone(),
                SecretRef::Ssm {
                    parameter: parameter.to_owned(),
                },
            );
        }
        (self.diagnostics.len() == before).then_some(out)
    }

    pub(super) fn volumes(
        &mut self,
        raw: &RawService,
        stateful: bool,
    ) -> Option<BTreeMap<String, String>> {
        let before = self.diagnostics.len();
        let mut out = BTreeMap::new();
        let mut first = None;
        for (name, path) in raw.volumes.iter().flatten() {
            first.get_or_insert(name.span.clone());
            let name_ok = name.value.starts_with(|c: char| c.is_ascii_alphanumeric())
                && name
                    .value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !name_ok {
                self.push(
                    Diagnostic::error(format!("`{}` is not a volume name", name.value)).at(
                        name.span.clone(),
                        "letters, digits, `_`, `.` and `-`, starting with a letter or digit",
                    ),
                );
            }
            if !path.value.starts_with('/') || path.value.split('/').any(|p| p == "..") {
                self.push(
                    Diagnostic::error(format!("`{}` is not a container path", path.value)).at(
                        path.span.clone(),
                        "expected an absolute path such as \"/data\"",
                    ),
                );
            }
            out.insert(name.value.clone(), path.value.clone());
        }
        if let Some(span) = first
            && !stateful
        {
            self.push(
                Diagnostic::warning("volumes on a service that is not `stateful`")
                    .at(span, "this data stays on the node")
                    .note("consolidation may move the service to another node, away from its data")
                    .help("add `stateful = true`"),
            );
        }
        (self.diagnostics[before..].iter().all(|d| !d.is_error())).then_some(out)
    }
}

/// The check a service gets when it names none: a TCP connect to its
/// port, or that its container runs.
fn default_check(port: Option<u16>) -> HealthCheck {
    match port {
        Some(port) => HealthCheck::Tcp { port },
        None => HealthCheck::Running,
    }
}
