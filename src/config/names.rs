//! Rules for the names a user writes: DNS labels and domains, environment
//! variable names, git branch names, and "did you mean" suggestions.
//!
//! Each check returns `Err(reason)` with a short reason fit for a label
//! under a caret.

/// Checks a DNS label: 1 to `max` lowercase letters, digits and hyphens,
/// starting with a letter and not ending with a hyphen.
pub fn dns_label(name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err("a name cannot be empty".into());
    }
    if name.len() > max {
        return Err(format!("{} characters; at most {max}", name.len()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-'))
    {
        return Err(if c.is_ascii_uppercase() {
            "uppercase letters are not allowed".into()
        } else {
            format!("`{c}` is not allowed")
        });
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("must start with a letter".into());
    }
    if name.ends_with('-') {
        return Err("must not end with `-`".into());
    }
    Ok(())
}

/// Checks a domain name such as `acme.example.com`: two or more labels, each
/// a valid label (digits may lead), 253 characters at most.
pub fn domain(name: &str) -> Result<(), String> {
    if name.len() > 253 {
        return Err(format!("{} characters; at most 253", name.len()));
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return Err("needs at least two labels, like `acme.internal`".into());
    }
    for label in labels {
        // Domain labels may start with a digit (`1password.com`).
        let probe = format!("a{label}");
        if label.is_empty() {
            return Err("has an empty label (`..`, or a leading or trailing dot)".into());
        }
        dns_label(&probe, 64).map_err(|reason| format!("label `{label}`: {reason}"))?;
    }
    Ok(())
}

/// Checks a name relative to a zone: `@` for the apex, or one or more labels.
pub fn relative_name(name: &str) -> Result<(), String> {
    if name == "@" {
        return Ok(());
    }
    if name.ends_with('.') {
        return Err("a name relative to the zone has no trailing dot".into());
    }
    for label in name.split('.') {
        let probe = format!("a{label}");
        if label.is_empty() {
            return Err("has an empty label".into());
        }
        if label == "*" {
            return Err("wildcards are not supported".into());
        }
        dns_label(&probe, 64).map_err(|reason| format!("label `{label}`: {reason}"))?;
    }
    Ok(())
}

/// Checks an environment variable name: letters, digits and `_`, not
/// starting with a digit.
pub fn env_name(name: &str) -> Result<(), String> {
    crate::spec::envfile::check_name(name)
}

/// Checks a branch name by git's rules (`git check-ref-format --branch`).
pub fn branch(name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name.starts_with('-')
        || name.starts_with('/')
        || name.ends_with('/')
        || name.ends_with('.')
        || name.ends_with(".lock")
        || name.contains("..")
        || name.contains("@{")
        || name.contains("//")
        || name == "@"
        || name.split('/').any(|part| part.starts_with('.'))
        || name
            .chars()
            .any(|c| c.is_ascii_control() || " ~^:?*[\\".contains(c));
    if bad {
        Err("not a valid git branch name".into())
    } else {
        Ok(())
    }
}

/// The closest candidate to `given`, if one is close enough to be a typo.
pub fn did_you_mean<'a>(
    given: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(given, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Reads serde's unknown-field message: "unknown field `x`, expected one of
/// `a`, `b`" (or "expected `a`", or "there are no fields"), giving the field
/// and the expected ones. A unit test pins the format.
pub fn parse_unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    Some((field.to_owned(), expected))
}

/// Checks a container image reference: `[registry[:port]/]path[:tag][@digest]`.
pub fn image_reference(reference: &str) -> Result<(), String> {
    if reference.is_empty() {
        return Err("an image reference cannot be empty".into());
    }
    if reference.chars().any(char::is_whitespace) {
        return Err("an image reference has no spaces".into());
    }
    let (name, digest) = match reference.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        let valid = digest.split_once(':').is_some_and(|(algo, hex)| {
            !algo.is_empty() && hex.len() >= 32 && hex.chars().all(|c| c.is_ascii_hexdigit())
        });
        if !valid {
            return Err("a digest looks like `@sha256:<64 hex digits>`".into());
        }
    }
    let (path, tag) = match name.rsplit_once(':') {
        Some((path, tag)) if !tag.contains('/') => (path, Some(tag)),
        _ => (name, None),
    };
    if let Some(tag) = tag {
        let valid = tag.len() <= 128
            && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !valid {
            return Err(format!("`{tag}` is not a valid tag"));
        }
    }
    let mut components: Vec<&str> = path.split('/').collect();
    // A first component with a dot, a colon or named localhost is a registry
    // host, which may carry a port and capitals.
    if components.len() > 1 && (components[0].contains(['.', ':']) || components[0] == "localhost")
    {
        components.remove(0);
    }
    for component in components {
        let valid = !component.is_empty()
            && component.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && component
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
        if !valid {
            return Err(format!(
                "`{component}`: repository names use lowercase letters, digits, `.`, `_` and `-`"
            ));
        }
    }
    Ok(())
}

/// Checks an ACM certificate ARN
/// (`arn:<partition>:acm:<region>:<account>:certificate/<id>`); its region.
pub fn certificate_arn(arn: &str) -> Result<&str, String> {
    let shape =
        "an ACM certificate ARN looks like arn:aws:acm:us-west-2:123456789012:certificate/<id>";
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [scheme, partition, service, region, account, resource] = parts[..] else {
        return Err(shape.into());
    };
    let id = resource.strip_prefix("certificate/").unwrap_or_default();
    let valid = scheme == "arn"
        && partition.starts_with("aws")
        && service == "acm"
        && !region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if valid { Ok(region) } else { Err(shape.into()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn certificate_arns() {
        assert_eq!(
            certificate_arn(
                "arn:aws:acm:us-west-2:123456789012:certificate/0f1e2d3c-aaaa-bbbb-cccc-1234567890ab"
            ),
            Ok("us-west-2")
        );
        for bad in [
            "arn:aws:acm:us-west-2:12345:certificate/x",
            "arn:aws:iam::123456789012:server-certificate/x",
            "arn:aws:acm:us-west-2:123456789012:certificate/",
            "certificate/x",
        ] {
            assert!(certificate_arn(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels() {
        assert!(dns_label("acme", 28).is_ok());
        assert!(dns_label("a-1", 28).is_ok());
        assert_eq!(
            dns_label("Acme", 28).unwrap_err(),
            "uppercase letters are not allowed"
        );
        assert_eq!(
            dns_label("1acme", 28).unwrap_err(),
            "must start with a letter"
        );
        assert_eq!(dns_label("acme-", 28).unwrap_err(), "must not end with `-`");
        assert_eq!(dns_label("ac_me", 28).unwrap_err(), "`_` is not allowed");
        assert!(dns_label(&"a".repeat(29), 28).is_err());
        assert!(dns_label("", 28).is_err());
    }

    #[test]
    fn domains_and_relative_names() {
        assert!(domain("acme.example.com").is_ok());
        assert!(domain("1password.com").is_ok());
        assert!(domain("acme").is_err());
        assert!(domain("acme..com").is_err());
        assert!(relative_name("@").is_ok());
        assert!(relative_name("api.eu").is_ok());
        assert!(relative_name("*").is_err());
        assert!(relative_name("www.").is_err());
    }

    #[test]
    fn env_and_branch_names() {
        assert!(env_name("RUST_LOG").is_ok());
        assert!(env_name("1X").is_err());
        assert!(env_name("A-B").is_err());
        assert!(branch("main").is_ok());
        assert!(branch("release/1.2").is_ok());
        assert!(branch("a..b").is_err());
        assert!(branch("with space").is_err());
        assert!(branch("x.lock").is_err());
    }

    #[test]
    fn image_references() {
        for ok in [
            "redis:7.2",
            "ghcr.io/acme/api:1.4.2",
            "localhost:5000/x",
            "nginx",
            "registry.example.com:443/team/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(image_reference(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Redis:7", "redis:7 2", "redis:-x", "x@sha256:zz"] {
            assert!(image_reference(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn suggestions_catch_typos_only() {
        let keys = ["host-port", "port", "public"];
        assert_eq!(did_you_mean("hostport", keys), Some("host-port"));
        assert_eq!(did_you_mean("prot", keys), Some("port"));
        assert_eq!(did_you_mean("zzz", keys), None);
    }

    /// Pins serde's unknown-field wording that `parse_unknown_field` reads:
    /// if serde changes it, this fails rather than the hints going quiet.
    #[test]
    fn serde_unknown_field_format_is_understood() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Two {
            alpha: Option<i64>,
            beta: Option<i64>,
        }
        let err = toml::from_str::<Two>("gamma = 1").expect_err("unknown");
        let (field, expected) = parse_unknown_field(err.message()).expect("parsed");
        assert_eq!(field, "gamma");
        assert_eq!(expected, ["alpha", "beta"]);
    }
}
