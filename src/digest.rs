//! The one digest helper: hex SHA-256, used by the compiler (stable ids),
//! the planner and apply (content addresses), and the kick server
//! (certificate fingerprints, instance ids, the admin token's hash).

use sha2::{Digest, Sha256};

/// Hex SHA-256 of bytes (text, a certificate, a token).
pub fn sha256(data: impl AsRef<[u8]>) -> String {
    hex(&Sha256::digest(data.as_ref()))
}

/// Bytes in lower hex (a digest computed a piece at a time).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn it_is_sha256_in_lower_hex() {
        assert_eq!(
            super::sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
