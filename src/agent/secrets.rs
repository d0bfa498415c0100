//! `huxley node secrets`: a replica's secrets, fetched when it starts.
//!
//! A node has no right to read secrets itself: it asks kick's leader, as
//! itself ([`crate::aws::identity`]), for the secrets of a service it runs
//! a replica of; kick reads the SSM parameters with the control plane's
//! role and answers the env file's text, which is written here with mode
//! 0600, whole or not at all. When a parameter is missing nothing is
//! written and the error names it, so the unit fails to start with a
//! reason instead of running without its secret. When kick cannot answer
//! (a failover), the file the replica had is kept: a restart while the
//! control plane is away still starts (`huxley node secrets` says so).

use std::path::Path;
use std::time::Duration;

use crate::agent::node::{CallError, KickClient};
use crate::spec::kick::KickConfig;
use crate::spec::secrets::{SecretsError, references};

/// Asks kick for the secrets of the service that runs as `unit` on `node`,
/// and writes them to `out`; how many.
pub async fn write(
    kick: &mut KickClient,
    node: &str,
    config: &KickConfig,
    unit: &str,
    out: &Path,
) -> Result<usize, SecretsError> {
    let count = references(config, unit)?.len();
    let (app, service) = config
        .services()
        .find(|(_, s)| s.unit == unit)
        .map(|(names, _)| names)
        .ok_or_else(|| SecretsError::UnknownUnit(unit.to_owned()))?;
    let path = format!("/v1/nodes/{node}/secrets/{app}/{service}");
    let text = kick
        .expect(reqwest::Method::GET, &path, None, Duration::from_secs(15))
        .await
        .map_err(|e| match e {
            CallError::Unreachable(_) | CallError::Refused(503, _) => {
                SecretsError::Unreachable(e.to_string())
            }
            CallError::Refused(..) => SecretsError::Other(e.to_string()),
        })?;
    crate::files::write_atomically(out, text.as_bytes(), 0o600).map_err(SecretsError::Other)?;
    Ok(count)
}
