//! Telling v1 (plaintext JSON) from v2 (Noise) connections by their first bytes, so one port
//! can serve both in the optional compatibility mode.
//!
//! A v2 agent opens with [`PREAMBLE`] (`LMN2` and a revision byte); a v1 agent's first byte
//! is `{` (its `hello`, possibly after white space, which the v1 codec tolerates). The
//! listener peeks (`TcpStream::peek`, nothing consumed) until [`sniff`] decides, with a
//! deadline; in required mode a v1 connection gets the v1 `error` frame
//! `{"type":"error","code":"unsupported_version",…}` so an old agent logs a clear reason.

use crate::auth::noise::PREAMBLE;

/// Bytes [`sniff`] may need at most.
pub const SNIFF_LEN: usize = PREAMBLE.len();

/// What the first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// Not enough bytes yet to tell.
    NeedMore,
    /// A plaintext v1 agent.
    V1,
    /// A v2 agent; the byte is its handshake revision (supported or not: the handshake says).
    V2 { revision: u8 },
    /// Neither: close the connection.
    Unknown,
}

/// Classifies the first bytes of a connection (pure, total).
pub fn sniff(first: &[u8]) -> Sniffed {
    let magic = &PREAMBLE[..4];
    let n = first.len().min(magic.len());
    if first[..n] == magic[..n] {
        return match first.get(4) {
            Some(&revision) => Sniffed::V2 { revision },
            None => Sniffed::NeedMore,
        };
    }
    match first.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Sniffed::V1,
        Some(_) => Sniffed::Unknown,
        None if first.len() >= 64 => Sniffed::Unknown, // only white space: not worth waiting
        None => Sniffed::NeedMore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind of opening is recognised, and a prefix of the magic waits for more.
    #[test]
    fn classifies_openings() {
        assert_eq!(sniff(b""), Sniffed::NeedMore);
        assert_eq!(sniff(b"LM"), Sniffed::NeedMore);
        assert_eq!(sniff(b"LMN2"), Sniffed::NeedMore);
        assert_eq!(sniff(b"LMN2\x01\x00\x30"), Sniffed::V2 { revision: 1 });
        assert_eq!(sniff(b"LMN2\x07"), Sniffed::V2 { revision: 7 });
        assert_eq!(sniff(br#"{"type":"hello"}"#), Sniffed::V1);
        assert_eq!(sniff(b"\r\n {"), Sniffed::V1);
        assert_eq!(sniff(b"   "), Sniffed::NeedMore);
        assert_eq!(sniff(&[b' '; 64]), Sniffed::Unknown);
        assert_eq!(sniff(b"GET / HTTP/1.1"), Sniffed::Unknown);
        assert_eq!(sniff(b"LMX"), Sniffed::Unknown);
        assert_eq!(sniff(b"\x16\x03\x01"), Sniffed::Unknown); // a TLS ClientHello
    }
}
