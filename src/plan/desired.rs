//! What the account should hold besides the stack and its artifacts, from
//! the model alone: the ownership records in the user's zone and the kick
//! tokens' parameters. Pure, so the planner owns it; apply only reads the
//! live state and acts.

use std::collections::BTreeMap;

use crate::compile;
use crate::model::{Config, naming};
use crate::spec::registry::OWNER_PREFIX;

/// The ownership records a cluster keeps in its public zone: one per public
/// name of a service, and one for the kick server's name.
pub fn ownership_records(config: &Config) -> BTreeMap<String, String> {
    let mut records = BTreeMap::new();
    let cluster = &config.cluster.name;
    if config.cluster.public_domain.is_none() {
        return records;
    }
    for (app, service) in config.services() {
        for name in config.public_names(service) {
            records.insert(
                format!("{OWNER_PREFIX}{name}"),
                format!(
                    "\"heritage=huxley,cluster={cluster},app={},service={}\"",
                    app.name, service.name
                ),
            );
        }
    }
    records.insert(
        format!("{OWNER_PREFIX}{}", naming::kick_name(config)),
        format!("\"heritage=huxley,cluster={cluster},app=huxley,service=kick\""),
    );
    records
}

/// The token parameters: the admin token (for the CLI), and what kick
/// reads: the admin token's hash, the hook's, the node agents', each
/// service's.
pub fn token_parameters(config: &Config) -> Vec<String> {
    let kick = compile::kick::kick_config(config);
    let mut names = kick.token_parameters();
    names.push(kick.tokens.admin);
    names.push(kick.tokens.hook_host_key);
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_public_name_and_the_kick_name_has_an_ownership_record() {
        let source = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/blog/huxley.toml"
        ))
        .expect("example");
        let config = crate::config::check(&source).config.expect("valid");
        let records = ownership_records(&config);
        let names: Vec<&str> = records.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "_huxley-owner.acme.example.com",
                "_huxley-owner.kick-acme.acme.example.com",
                "_huxley-owner.www.acme.example.com",
            ]
        );
        assert_eq!(
            records["_huxley-owner.www.acme.example.com"],
            "\"heritage=huxley,cluster=acme,app=blog,service=web\""
        );
        let tokens = token_parameters(&config);
        assert!(tokens.contains(&"/huxley/acme/tokens/admin".to_owned()));
        assert!(tokens.contains(&"/huxley/acme/tokens/admin-sha256".to_owned()));
        assert!(tokens.contains(&"/huxley/acme/tokens/blog/web".to_owned()));
    }
}
