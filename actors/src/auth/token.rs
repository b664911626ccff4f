//! The join token, `lm2-…`: everything an agent needs to authenticate *and pin* its server and
//! to be enrolled without an operator (`agent --join TOKEN`, or `LANMON_JOIN`).
//!
//! Layout before encoding (all fixed-size except the server id):
//!
//! ```text
//! version (1 byte, = 2) | server static public key (32) | network key (32)
//! | server id length (1) | server id (UTF-8, 1..=64) | CRC-32 of all the preceding (4, BE)
//! ```
//!
//! Text form: `lm2-` then Crockford base32 of those bytes, no padding (about 140 symbols).
//! Decoding ignores case, hyphens and surrounding white space. The CRC-32 (IEEE) detects every
//! error burst of up to 32 bits, so every one-symbol typo (5 bits) is caught, as is any
//! truncation, with a message that says which. The token is a secret: it carries the network
//! key. Holding it makes a machine an *insider*: it can enroll an agent of its own and verify
//! beacons, but it cannot impersonate the server or another agent (those are pinned keys).

use crate::auth::base32::{self, Base32Error};
use crate::auth::keys::{KEY_LEN, NetworkKey, PublicKey};

/// The text prefix; its digit is the token format (and wire protocol) version.
pub const TOKEN_PREFIX: &str = "lm2-";
/// Format version in the first byte.
pub const TOKEN_VERSION: u8 = 2;
/// Longest server id a token carries, in bytes.
pub const MAX_TOKEN_SERVER_ID: usize = 64;
const FIXED: usize = 1 + KEY_LEN + KEY_LEN + 1;
const CRC_LEN: usize = 4;

/// Why a text is not a usable join token; each message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a lanmon join token: it should start with `{TOKEN_PREFIX}`")]
    NotAToken,
    #[error(
        "join token of format version {0}: this agent reads version {TOKEN_VERSION} \
         (`{TOKEN_PREFIX}…`); use an agent as new as the server"
    )]
    UnsupportedVersion(u32),
    #[error("join token mistyped: {0}")]
    BadChar(Base32Error),
    #[error(
        "join token is {got} bytes long where {want} were expected: it is truncated or mistyped; \
         copy the whole token again"
    )]
    Length { got: usize, want: usize },
    #[error("join token has a typo: its check digits do not match; copy it again")]
    Checksum,
    #[error("join token carries an invalid server id")]
    BadServerId,
}

/// A decoded join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The server's static key: the agent pins it.
    pub server_key: PublicKey,
    /// The network key: proves the agent was given the token (auto-approval), checks beacons.
    pub network_key: NetworkKey,
    /// The server's id (as in beacons and `welcome`).
    pub server_id: String,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("server_key", &self.server_key)
            .field("server_id", &self.server_id)
            .finish_non_exhaustive()
    }
}

impl JoinToken {
    /// The text form. The server id is cut to [`MAX_TOKEN_SERVER_ID`] bytes (at a char
    /// boundary) so that encoding cannot fail.
    pub fn encode(&self) -> String {
        let mut id = self.server_id.as_str();
        while id.len() > MAX_TOKEN_SERVER_ID {
            let mut end = MAX_TOKEN_SERVER_ID;
            while !id.is_char_boundary(end) {
                end -= 1;
            }
            id = &id[..end];
        }
        let mut bytes = Vec::with_capacity(FIXED + id.len() + CRC_LEN);
        bytes.push(TOKEN_VERSION);
        bytes.extend_from_slice(self.server_key.as_bytes());
        bytes.extend_from_slice(&self.network_key.0);
        bytes.push(id.len() as u8); // ≤ 64, checked above
        bytes.extend_from_slice(id.as_bytes());
        let crc = crc32(&bytes);
        bytes.extend_from_slice(&crc.to_be_bytes());
        format!("{TOKEN_PREFIX}{}", base32::encode(&bytes))
    }

    /// Parses a token as typed or pasted (see the module docs).
    pub fn decode(text: &str) -> Result<JoinToken, TokenError> {
        let t = text.trim();
        let body = strip_prefix(t)?;
        let offset = t.len() - body.len();
        let bytes = base32::decode(body).map_err(|e| {
            TokenError::BadChar(match e {
                Base32Error::BadChar { ch, pos } => Base32Error::BadChar {
                    ch,
                    pos: pos + offset,
                },
                other => other,
            })
        })?;
        if bytes.len() < FIXED + 1 + CRC_LEN {
            return Err(TokenError::Length {
                got: bytes.len(),
                want: FIXED + 16 + CRC_LEN,
            });
        }
        let id_len = usize::from(bytes[FIXED - 1]);
        let want = FIXED + id_len + CRC_LEN;
        if bytes.len() != want {
            return Err(TokenError::Length {
                got: bytes.len(),
                want,
            });
        }
        let (data, crc) = bytes.split_at(want - CRC_LEN);
        if crc32(data).to_be_bytes() != crc {
            return Err(TokenError::Checksum);
        }
        if data[0] != TOKEN_VERSION {
            return Err(TokenError::UnsupportedVersion(u32::from(data[0])));
        }
        let mut server_key = [0u8; KEY_LEN];
        server_key.copy_from_slice(&data[1..1 + KEY_LEN]);
        let mut network_key = [0u8; KEY_LEN];
        network_key.copy_from_slice(&data[1 + KEY_LEN..1 + 2 * KEY_LEN]);
        let server_id = std::str::from_utf8(&data[FIXED..])
            .ok()
            .filter(|s| !s.is_empty() && s.len() <= MAX_TOKEN_SERVER_ID)
            .filter(|s| !s.chars().any(char::is_control))
            .ok_or(TokenError::BadServerId)?;
        Ok(JoinToken {
            server_key: PublicKey(server_key),
            network_key: NetworkKey(network_key),
            server_id: server_id.to_owned(),
        })
    }
}

/// `lm<N>-` → the rest, if N is our version; otherwise which error.
fn strip_prefix(t: &str) -> Result<&str, TokenError> {
    if let Some(rest) = t
        .get(..TOKEN_PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(TOKEN_PREFIX))
        .map(|_| &t[TOKEN_PREFIX.len()..])
    {
        return Ok(rest);
    }
    let lower = t.to_ascii_lowercase();
    if let Some(after) = lower.strip_prefix("lm") {
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        if !digits.is_empty() && after[digits.len()..].starts_with('-') {
            let v = digits.parse().unwrap_or(u32::MAX);
            return Err(TokenError::UnsupportedVersion(v));
        }
    }
    Err(TokenError::NotAToken)
}

/// CRC-32 (IEEE 802.3, reflected, as in zlib), bitwise: a check against typos, not a MAC.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xedb8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::base32::ALPHABET;

    fn sample() -> JoinToken {
        JoinToken {
            server_key: PublicKey(std::array::from_fn(|i| i as u8)),
            network_key: NetworkKey(std::array::from_fn(|i| 200 - i as u8)),
            server_id: "5f3a9c0e12b47d68".into(),
        }
    }

    /// The CRC matches zlib's for the standard check input.
    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    /// Encode → decode gives the same token, also lower-cased, grouped and padded with spaces.
    #[test]
    fn round_trip() {
        let t = sample();
        let text = t.encode();
        assert!(text.starts_with("lm2-"));
        assert!(text.len() < 150, "{} chars", text.len());
        assert_eq!(JoinToken::decode(&text), Ok(t.clone()));
        assert_eq!(
            JoinToken::decode(&format!("  {}\n", text.to_lowercase())),
            Ok(t.clone())
        );
        let grouped: String = text[4..]
            .chars()
            .enumerate()
            .flat_map(|(i, c)| (i > 0 && i % 5 == 0).then_some('-').into_iter().chain([c]))
            .collect();
        assert_eq!(JoinToken::decode(&format!("lm2-{grouped}")), Ok(t));
    }

    /// Every single-symbol substitution, at every position, is refused.
    #[test]
    fn every_single_substitution_is_detected() {
        let text = sample().encode();
        let chars: Vec<char> = text.chars().collect();
        let mut tried = 0;
        for pos in 0..chars.len() {
            let symbols = ALPHABET
                .iter()
                .map(|&b| char::from(b))
                .chain(['-', 'U', '#', 'l', 'o']);
            for sub in symbols {
                // Crockford reads `l` as `1` and `o` as `0`: in the body those are the same symbol.
                let canon = |c: char| match c.to_ascii_uppercase() {
                    'O' => '0',
                    'I' | 'L' => '1',
                    u => u,
                };
                let same = if pos >= TOKEN_PREFIX.len() {
                    canon(sub) == canon(chars[pos])
                } else {
                    sub.eq_ignore_ascii_case(&chars[pos])
                };
                if same {
                    continue;
                }
                let mut typo = chars.clone();
                typo[pos] = sub;
                let typo: String = typo.into_iter().collect();
                tried += 1;
                let r = JoinToken::decode(&typo);
                // A hyphen inside the body is a separator, not a typo: it removes a symbol,
                // which is a length or checksum error. Everything must fail.
                assert!(r.is_err(), "typo at {pos} ({sub}) accepted: {typo}");
            }
        }
        assert!(tried > 4000, "{tried}");
    }

    /// A one-symbol typo in the body says "typo", not something vague.
    #[test]
    fn typo_message_is_clear() {
        let text = sample().encode();
        let mut chars: Vec<char> = text.chars().collect();
        chars[40] = if chars[40] == 'A' { 'B' } else { 'A' };
        let typo: String = chars.into_iter().collect();
        let err = JoinToken::decode(&typo).unwrap_err();
        assert_eq!(err, TokenError::Checksum);
        assert!(err.to_string().contains("typo"));
        let err = JoinToken::decode("lm2-ABCU").unwrap_err();
        assert!(err.to_string().contains("position 7"), "{err}");
    }

    /// Other versions, foreign text and every truncation are refused with their own error.
    #[test]
    fn wrong_version_foreign_and_truncated() {
        let text = sample().encode();
        assert_eq!(
            JoinToken::decode(&text.replacen("lm2-", "lm3-", 1)),
            Err(TokenError::UnsupportedVersion(3))
        );
        assert_eq!(
            JoinToken::decode("ssh-ed25519 AAAA"),
            Err(TokenError::NotAToken)
        );
        assert_eq!(JoinToken::decode(""), Err(TokenError::NotAToken));
        for cut in 4..text.len() {
            assert!(JoinToken::decode(&text[..cut]).is_err(), "cut at {cut}");
        }
        assert!(matches!(
            JoinToken::decode(&text[..text.len() - 10]),
            Err(TokenError::Length { .. } | TokenError::BadChar(_))
        ));
        // A valid checksum over another version byte: refused as that version.
        let mut bytes = base32::decode(&text[4..]).unwrap();
        bytes[0] = 9;
        let n = bytes.len() - 4;
        let crc = crc32(&bytes[..n]);
        bytes[n..].copy_from_slice(&crc.to_be_bytes());
        let other = format!("lm2-{}", base32::encode(&bytes));
        assert_eq!(
            JoinToken::decode(&other),
            Err(TokenError::UnsupportedVersion(9))
        );
    }

    /// A long server id is cut at a char boundary and the token still decodes.
    #[test]
    fn long_server_id_is_cut() {
        let mut t = sample();
        t.server_id = "é".repeat(40);
        let back = JoinToken::decode(&t.encode()).unwrap();
        assert!(back.server_id.len() <= MAX_TOKEN_SERVER_ID);
        assert!(t.server_id.starts_with(&back.server_id));
    }
}
