//! The hook server's SSH host key: one ed25519 key for the cluster, made
//! by `huxley apply` and kept as a SecureString that every node's hook
//! server installs, so the git remote (`kick.<domain>:2222`, which follows
//! the leader) shows pushers the same host key after every failover.
//!
//! Written in OpenSSH's own private key format (`openssh-key-v1`,
//! unencrypted: SSM encrypts it at rest), from a key made by aws-lc (through
//! rcgen, already here for the kick server's certificate).

/// A new host key: the private key file's text, and its public line.
pub fn generate(comment: &str) -> Result<(String, String), String> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .map_err(|e| format!("cannot make an ed25519 key: {e}"))?;
    let public: [u8; 32] = key
        .public_key_raw()
        .try_into()
        .map_err(|_| "an ed25519 public key is 32 bytes".to_owned())?;
    let seed = seed_of(&key.serialize_der())?;
    let mut check = [0u8; 4];
    crate::tls::ensure_provider();
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut check)
        .map_err(|_| "the system's random source failed".to_owned())?;
    Ok(openssh(&seed, &public, u32::from_be_bytes(check), comment))
}

/// The 32-byte seed of an ed25519 PKCS#8 key (its `CurvePrivateKey`, an
/// OCTET STRING inside the privateKey OCTET STRING: `04 22 04 20 …`).
fn seed_of(pkcs8: &[u8]) -> Result<[u8; 32], String> {
    pkcs8
        .windows(4)
        .position(|w| w == [0x04, 0x22, 0x04, 0x20])
        .and_then(|at| pkcs8.get(at + 4..at + 36))
        .and_then(|seed| seed.try_into().ok())
        .ok_or_else(|| "the key's PKCS#8 holds no ed25519 seed".to_owned())
}

fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The key in `openssh-key-v1` form (PROTOCOL.key), and its public line.
fn openssh(seed: &[u8; 32], public: &[u8; 32], check: u32, comment: &str) -> (String, String) {
    use aws_smithy_types::base64;
    let mut blob = Vec::new();
    string(&mut blob, b"ssh-ed25519");
    string(&mut blob, public);
    let mut private = Vec::new();
    private.extend_from_slice(&check.to_be_bytes());
    private.extend_from_slice(&check.to_be_bytes());
    string(&mut private, b"ssh-ed25519");
    string(&mut private, public);
    let mut pair = seed.to_vec();
    pair.extend_from_slice(public);
    string(&mut private, &pair);
    string(&mut private, comment.as_bytes());
    let mut pad = 1u8;
    while private.len() % 8 != 0 {
        private.push(pad);
        pad += 1;
    }
    let mut body = b"openssh-key-v1\0".to_vec();
    string(&mut body, b"none");
    string(&mut body, b"none");
    string(&mut body, b"");
    body.extend_from_slice(&1u32.to_be_bytes());
    string(&mut body, &blob);
    string(&mut body, &private);
    let encoded = base64::encode(&body);
    let mut text = String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n");
    for line in encoded.as_bytes().chunks(70) {
        text.push_str(std::str::from_utf8(line).unwrap_or_default());
        text.push('\n');
    }
    text.push_str("-----END OPENSSH PRIVATE KEY-----\n");
    let line = format!("ssh-ed25519 {} {comment}", base64::encode(&blob));
    (text, line)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OpenSSH itself reads the key back: `ssh-keygen -y` prints the same
    /// public key (skipped where ssh-keygen is missing is not allowed:
    /// scripts/setup.sh installs OpenSSH).
    #[test]
    fn ssh_keygen_reads_the_key_and_derives_its_public_line() {
        use std::os::unix::fs::PermissionsExt as _;
        let (private, public) = generate("huxley-hook").expect("a key");
        assert!(
            public.starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5")
                && public.ends_with(" huxley-hook")
        );
        let path = std::env::temp_dir().join(format!("huxley-host-key-{}", std::process::id()));
        std::fs::write(&path, &private).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("mode");
        let out = std::process::Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(&path)
            .output()
            .expect("ssh-keygen runs");
        let _ = std::fs::remove_file(&path);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let derived = String::from_utf8_lossy(&out.stdout);
        let key_of = |line: &str| {
            line.split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(key_of(&derived), key_of(&public));
        // Two keys are two keys.
        assert_ne!(
            generate("x").expect("a key").1,
            generate("x").expect("a key").1
        );
    }

    #[test]
    fn the_seed_is_found_in_either_pkcs8_version() {
        let v1 = [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ]
        .iter()
        .copied()
        .chain(1..=32)
        .collect::<Vec<u8>>();
        let seed = seed_of(&v1).expect("a seed");
        assert_eq!(seed[0], 1);
        assert_eq!(seed[31], 32);
        assert!(seed_of(&[0x30, 0x00]).is_err());
    }
}
