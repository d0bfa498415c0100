//! Bearer tokens and what each may do.
//!
//! Tokens are read once at start, compared in constant time, and never
//! logged or echoed. The admin token reads everything; the hook's deploys;
//! a service token acts only on its own service's instances and names.
//! A node has no token: it proves which instance it is through STS
//! ([`crate::control::identity`]) and acts only for itself: its own
//! assignment and report, and replicas on its own addresses.

use std::path::Path;

use subtle::ConstantTimeEq;

use crate::spec::kick::KickConfig;

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Admin,
    Hook,
    /// One node, by its EC2 instance id, as STS proved it: it runs
    /// replicas of any service, but only on itself.
    Node(String),
    Service {
        app: String,
        service: String,
    },
}

impl Scope {
    /// Whether this scope may act on `app.service`.
    pub fn covers(&self, app: &str, service: &str) -> bool {
        match self {
            Scope::Admin => true,
            Scope::Hook | Scope::Node(_) => false,
            Scope::Service { app: a, service: s } => a == app && s == service,
        }
    }

    /// Whether this scope may register, heartbeat and deregister instances
    /// of `app.service`: its own service's, or any for a node (on itself
    /// only: see [`Scope::node`]).
    pub fn runs(&self, app: &str, service: &str) -> bool {
        matches!(self, Scope::Node(_)) || self.covers(app, service)
    }

    /// The node this scope is, when it is one.
    pub fn node(&self) -> Option<&str> {
        match self {
            Scope::Node(id) => Some(id),
            _ => None,
        }
    }

    /// Whether this scope may read the assignment of, and report for,
    /// `node`: the admin any, a node only itself.
    pub fn manages_node(&self, node: &str) -> bool {
        match self {
            Scope::Admin => true,
            Scope::Node(id) => id == node,
            _ => false,
        }
    }
}

/// The tokens kick accepts. The admin token is kept as its SHA-256 only:
/// kick checks it, never needs it, and the nodes may not read it.
#[derive(Clone)]
pub struct Tokens {
    entries: Vec<(Vec<u8>, Scope)>,
}

/// What a presented token is compared with: the admin's as a hash.
fn comparable(scope: &Scope, presented: &[u8]) -> Vec<u8> {
    match scope {
        Scope::Admin => crate::digest::sha256(presented).into_bytes(),
        _ => presented.to_vec(),
    }
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a token.
        f.debug_struct("Tokens")
            .field("count", &self.entries.len())
            .finish()
    }
}

impl Tokens {
    /// Reads the tokens from a directory holding `admin`, `hook` and `<app>/<service>` files. A missing service file means that
    /// service has no token yet.
    pub fn from_dir(dir: &Path, config: &KickConfig) -> std::io::Result<Self> {
        Self::collect(
            config,
            |scope| {
                if *scope == Scope::Admin {
                    // Kept as its hash, as from SSM.
                    return match std::fs::read_to_string(dir.join("admin")) {
                        Ok(text) => Ok(Some(crate::digest::sha256(text.trim()))),
                        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
                        Err(err) => Err(err),
                    };
                }
                let path = match scope {
                    Scope::Admin => dir.join("admin"),
                    Scope::Hook => dir.join("hook"),
                    // A node proves who it is; it has no token.
                    Scope::Node(_) => return Ok(None),
                    Scope::Service { app, service } => dir.join(app).join(service),
                };
                match std::fs::read_to_string(path) {
                    Ok(text) => Ok(Some(text)),
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(err) => Err(err),
                }
            },
            || {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no admin token in {}", dir.display()),
                )
            },
        )
    }

    /// The tokens from the SSM parameters the config names, as
    /// `huxley apply` created them: `values` maps parameter names to their
    /// decrypted values. The admin token must be there; a service without
    /// its parameter has no token yet.
    pub fn from_parameters(
        values: &std::collections::BTreeMap<String, String>,
        config: &KickConfig,
    ) -> Result<Self, String> {
        Self::collect(
            config,
            |scope| {
                let name = match scope {
                    Scope::Admin => Some(&config.tokens.admin_sha256),
                    Scope::Hook => Some(&config.tokens.hook),
                    Scope::Node(_) => None,
                    Scope::Service { app, service } => config
                        .apps
                        .get(app)
                        .and_then(|a| a.services.get(service))
                        .map(|s| &s.token),
                };
                Ok(name.and_then(|n| values.get(n)).cloned())
            },
            || {
                format!(
                    "no admin token hash in SSM parameter {}: `huxley apply` creates it",
                    config.tokens.admin_sha256
                )
            },
        )
    }

    /// The tokens `read` finds for the admin, the hook and each service of
    /// the config (blank ones count as absent); the admin's is required.
    fn collect<E>(
        config: &KickConfig,
        mut read: impl FnMut(&Scope) -> Result<Option<String>, E>,
        no_admin: impl FnOnce() -> E,
    ) -> Result<Self, E> {
        let scopes = [Scope::Admin, Scope::Hook].into_iter().chain(
            config
                .services()
                .map(|((app, service), _)| Scope::Service { app, service }),
        );
        let mut entries = Vec::new();
        for scope in scopes {
            let token = read(&scope)?
                .map(|text| text.trim().as_bytes().to_vec())
                .filter(|token| !token.is_empty());
            match token {
                Some(token) => entries.push((token, scope)),
                None if scope == Scope::Admin => return Err(no_admin()),
                None => {}
            }
        }
        Ok(Self { entries })
    }

    /// The scope of a presented token, comparing against every known token
    /// in constant time.
    pub fn scope(&self, presented: &str) -> Option<Scope> {
        let presented = presented.as_bytes();
        let mut found = None;
        for (token, scope) in &self.entries {
            let compared = comparable(scope, presented);
            if bool::from(token.as_slice().ct_eq(&compared)) && found.is_none() {
                found = Some(scope.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_map_to_scopes_and_never_print() {
        let checked = crate::config::check(&crate::testing::synth::config(1, 2));
        let config = crate::compile::kick::kick_config(&checked.config.expect("valid"));
        let dir = std::env::temp_dir().join(format!("huxley-tokens-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("app0")).expect("dir");
        std::fs::write(dir.join("admin"), "admin-secret\n").expect("write");
        std::fs::write(dir.join("app0/svc1"), "svc1-secret").expect("write");
        let tokens = Tokens::from_dir(&dir, &config).expect("tokens");
        assert_eq!(tokens.scope("admin-secret"), Some(Scope::Admin));
        assert_eq!(
            tokens.scope("svc1-secret"),
            Some(Scope::Service {
                app: "app0".into(),
                service: "svc1".into()
            })
        );
        assert_eq!(tokens.scope("admin-secre"), None);
        let node = Scope::Node("i-1".into());
        assert!(node.runs("app0", "svc1") && !node.covers("app0", "svc1"));
        assert!(node.manages_node("i-1") && !node.manages_node("i-2"));
        assert!(Scope::Admin.manages_node("i-2") && !Scope::Hook.manages_node("i-2"));
        assert!(!Scope::Hook.runs("app0", "svc1"));
        assert_eq!(tokens.scope(""), None);
        assert!(!format!("{tokens:?}").contains("secret"));
        assert!(
            Scope::Service {
                app: "app0".into(),
                service: "svc1".into()
            }
            .covers("app0", "svc1")
        );
        assert!(
            !Scope::Service {
                app: "app0".into(),
                service: "svc1".into()
            }
            .covers("app0", "svc0")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn kick_holds_the_admin_token_as_its_hash_only() {
        let checked = crate::config::check(&crate::testing::synth::config(1, 1));
        let config = crate::compile::kick::kick_config(&checked.config.expect("valid"));
        let hash = crate::digest::sha256("the-admin-token");
        let values =
            std::collections::BTreeMap::from([(config.tokens.admin_sha256.clone(), hash.clone())]);
        let tokens = Tokens::from_parameters(&values, &config).expect("tokens");
        assert_eq!(tokens.scope("the-admin-token"), Some(Scope::Admin));
        // The hash itself is no token.
        assert_eq!(tokens.scope(&hash), None);
        // Kick never asks SSM for the admin token itself.
        assert!(!config.token_parameters().contains(&config.tokens.admin));
        assert!(
            config
                .token_parameters()
                .contains(&config.tokens.admin_sha256)
        );
    }
}
