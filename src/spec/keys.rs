//! Every key of the artifact bucket, in one place: who writes each and who
//! reads it is the contract between `huxley apply`, the control plane, the
//! node agents, the hook server and the CLI.

/// What was applied: every artifact with its hash and text
/// (`huxley apply` writes it; plans, node agents and the hook server read it).
pub const MANIFEST: &str = "huxley/manifest.json";

/// The prefix of the artifacts' content-addressed blobs.
pub const BLOBS: &str = "huxley/blobs/";

/// The prefix of the templates `huxley apply` hands CloudFormation by URL.
pub const TEMPLATES: &str = "huxley/templates/";

/// What the leader publishes (the description, its TLS fingerprint): the
/// control role may write only under it, the deploys and the repositories.
pub const PUBLISHED: &str = "huxley/published/";

/// The prefix of the apps' deploy histories.
pub const DEPLOYS: &str = "huxley/deploys/";

/// The prefix of the apps' git repositories, one bundle each.
pub const REPOS: &str = "huxley/repos/";

/// The leader's published copy of the cluster's description, for
/// `huxley cluster describe` when the kick server cannot be reached.
pub const DESCRIPTION: &str = "huxley/published/cluster.json";

/// The SHA-256 fingerprint of the kick server's TLS certificate, which the
/// CLI pins.
pub const TLS_FINGERPRINT: &str = "huxley/published/kick-tls.sha256";

/// The blob holding an artifact whose content hashes to `sha256`.
pub fn blob(sha256: &str) -> String {
    format!("{BLOBS}{sha256}")
}

/// The template whose body hashes to `sha256`.
pub fn template(sha256: &str) -> String {
    format!("{TEMPLATES}{sha256}.json")
}

/// `app`'s deploy history.
pub fn history(app: &str) -> String {
    format!("{DEPLOYS}{app}.json")
}

/// `app`'s git repository, as a bundle.
pub fn bundle(app: &str) -> String {
    format!("{REPOS}{app}.bundle")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_keys_lie_under_the_published_prefix() {
        // The roles' S3 grants are by prefix: a key outside it would
        // be refused on a real cluster.
        for key in [DESCRIPTION, TLS_FINGERPRINT] {
            assert!(key.starts_with(PUBLISHED), "{key}");
        }
        assert!(history("blog").starts_with(DEPLOYS));
        assert!(bundle("blog").starts_with(REPOS));
        assert!(blob("ab").starts_with(BLOBS));
        assert!(template("ab").starts_with(TEMPLATES));
    }
}
