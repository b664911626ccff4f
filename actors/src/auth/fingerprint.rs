//! The short human form of a static public key: `SHA256:` and the first 160 bits of
//! SHA-256(key) in Crockford base32, in groups of four (`SHA256:7K2M-Q9XD-…`, 8 groups).
//!
//! Shown in the server's banner, by `agent --discover` before approval, in `server agents
//! list`, and carried by beacons (`fp`). 160 bits is far beyond what a second-preimage search
//! can reach, and short enough to read aloud. Parsing accepts any case and with or without the
//! hyphens and the `SHA256:` prefix, so an operator may paste it in any of those forms.

use std::fmt;

use crate::auth::base32;
use crate::auth::keys::PublicKey;

/// Bytes of the hash kept.
pub const FINGERPRINT_BYTES: usize = 20;
/// Prefix of the text form.
pub const FINGERPRINT_PREFIX: &str = "SHA256:";

/// A key's fingerprint (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; FINGERPRINT_BYTES]);

impl Fingerprint {
    pub fn of(key: &PublicKey) -> Self {
        let h = key.sha256();
        let mut fp = [0u8; FINGERPRINT_BYTES];
        fp.copy_from_slice(&h[..FINGERPRINT_BYTES]);
        Fingerprint(fp)
    }

    /// Parses the text form (see the module docs); `None` if it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim();
        let body = t
            .get(..FINGERPRINT_PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(FINGERPRINT_PREFIX))
            .map_or(t, |_| &t[FINGERPRINT_PREFIX.len()..]);
        let bytes = base32::decode(body).ok()?;
        bytes.try_into().ok().map(Fingerprint)
    }

    /// The first 8 bytes: the "which key do you expect" hint an agent sends in the first
    /// handshake message ([`crate::auth::noise`]), so a server in a rotation presents the key
    /// the agent has pinned.
    pub fn hint(&self) -> [u8; 8] {
        let mut h = [0u8; 8];
        h.copy_from_slice(&self.0[..8]);
        h
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b32 = base32::encode(&self.0);
        f.write_str(FINGERPRINT_PREFIX)?;
        for (i, chunk) in b32.as_bytes().chunks(4).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            f.write_str(std::str::from_utf8(chunk).unwrap_or_default())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text form is fixed (prefix, 8 groups of 4) and parses back in every accepted form.
    #[test]
    fn format_and_parse_back() {
        let key = PublicKey([7; 32]);
        let fp = Fingerprint::of(&key);
        let text = fp.to_string();
        assert!(text.starts_with("SHA256:"), "{text}");
        assert_eq!(text.len(), 7 + 32 + 7, "{text}");
        assert_eq!(text.matches('-').count(), 7);
        assert_eq!(Fingerprint::parse(&text), Some(fp));
        assert_eq!(Fingerprint::parse(&text.to_lowercase()), Some(fp));
        assert_eq!(Fingerprint::parse(&text[7..].replace('-', "")), Some(fp));
        assert_eq!(Fingerprint::parse("SHA256:ABCD"), None);
        assert_eq!(Fingerprint::parse(""), None);
        assert_ne!(Fingerprint::of(&PublicKey([8; 32])), fp);
    }
}
