//! A replica's secrets as a Docker env file: which SSM parameters a
//! service's secrets name, and the file's text from their values, whole or
//! not at all (a missing parameter or an unwritable value is named, never
//! shown). Kick makes the text; the node writes it.

use std::collections::BTreeMap;

use crate::spec::envfile::{Readers, check_value};
use crate::spec::kick::KickConfig;

/// Why the secrets could not be written.
#[derive(Debug, PartialEq, Eq)]
pub enum SecretsError {
    UnknownUnit(String),
    /// Kick could not answer (unreachable, or no leader yet).
    Unreachable(String),
    /// The asking node runs no replica of the service.
    NotPlaced(String),
    /// Parameters SSM does not have: (variable, parameter).
    Missing(Vec<(String, String)>),
    /// A value Docker's env file cannot carry: the variable, and why.
    Unwritable(String, String),
    Other(String),
}

impl std::fmt::Display for SecretsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownUnit(unit) => write!(f, "no service runs as unit {unit} in kick.toml"),
            Self::Unreachable(why) => f.write_str(why),
            Self::NotPlaced(unit) => write!(
                f,
                "no replica of {unit} is placed on this node: its secrets are not this node's to read"
            ),
            Self::Missing(missing) => {
                let names: Vec<String> = missing
                    .iter()
                    .map(|(variable, parameter)| format!("{parameter} (for {variable})"))
                    .collect();
                write!(
                    f,
                    "SSM has no parameter {}; nothing was written\nhelp: create it with `aws ssm put-parameter --type SecureString --name NAME --value ...`",
                    names.join(", ")
                )
            }
            Self::Unwritable(variable, why) => write!(
                f,
                "the value of {variable} {why}; nothing was written\nhelp: store the value on one line (base64 it if it must hold line breaks)"
            ),
            Self::Other(why) => f.write_str(why),
        }
    }
}

/// The variables and parameters of the service that runs as `unit`.
pub fn references<'a>(
    config: &'a KickConfig,
    unit: &str,
) -> Result<&'a BTreeMap<String, String>, SecretsError> {
    config
        .apps
        .values()
        .flat_map(|a| a.services.values())
        .find(|s| s.unit == unit)
        .map(|s| &s.secrets)
        .ok_or_else(|| SecretsError::UnknownUnit(unit.to_owned()))
}

/// The env file's text from the references and the values SSM returned.
pub fn env_file(
    references: &BTreeMap<String, String>,
    values: &BTreeMap<String, String>,
) -> Result<String, SecretsError> {
    let missing: Vec<(String, String)> = references
        .iter()
        .filter(|(_, parameter)| !values.contains_key(*parameter))
        .map(|(v, p)| (v.clone(), p.clone()))
        .collect();
    if !missing.is_empty() {
        return Err(SecretsError::Missing(missing));
    }
    let mut text = String::new();
    for (variable, parameter) in references {
        let value = &values[parameter];
        check_value(value, Readers::Docker)
            .map_err(|why| SecretsError::Unwritable(variable.clone(), why))?;
        text.push_str(&format!("{variable}={value}\n"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_parameter_is_named_and_nothing_is_written() {
        let references = BTreeMap::from([
            ("DATABASE_URL".to_owned(), "/acme/db".to_owned()),
            ("API_KEY".to_owned(), "/acme/key".to_owned()),
        ]);
        let values = BTreeMap::from([("/acme/db".to_owned(), "postgres://x".to_owned())]);
        let error = env_file(&references, &values).expect_err("one is missing");
        assert_eq!(
            error,
            SecretsError::Missing(vec![("API_KEY".into(), "/acme/key".into())])
        );
        assert!(error.to_string().contains("/acme/key (for API_KEY)"));
        let values = BTreeMap::from([
            ("/acme/db".to_owned(), "postgres://x".to_owned()),
            ("/acme/key".to_owned(), "k=1".to_owned()),
        ]);
        assert_eq!(
            env_file(&references, &values).expect("complete"),
            "API_KEY=k=1\nDATABASE_URL=postgres://x\n"
        );
    }

    /// Regression: only `\n` was refused, so a `\r` (or any other control
    /// character) reached the env file. The error names the variable and
    /// never the value.
    #[test]
    fn a_value_with_a_control_character_is_refused_without_showing_it() {
        let references = BTreeMap::from([("TOKEN".to_owned(), "/acme/token".to_owned())]);
        for value in ["s3cret\rDOCKER_HOST=tcp://x", "s3cret\nA=b", "s3cret\u{0}"] {
            let values = BTreeMap::from([("/acme/token".to_owned(), value.to_owned())]);
            let error = env_file(&references, &values).expect_err("refused");
            let said = error.to_string();
            assert!(said.contains("the value of TOKEN"), "{said}");
            assert!(!said.contains("s3cret"), "{said}");
        }
    }
}
