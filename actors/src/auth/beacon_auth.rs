//! Authenticated beacons (v2): what lets an agent with a join token tell its server's beacons
//! from forged and replayed ones. Discovery stays a hint: even an accepted beacon only says
//! where to try, and the Noise handshake ([`crate::auth::noise`]) decides.
//!
//! A v2 beacon is the v1 beacon ([`crate::discovery::Beacon`]) plus four fields, so v1 agents
//! (which ignore unknown fields) still read it:
//!
//! - `fp`: the server's key fingerprint ([`crate::auth::fingerprint`]), shown by `--discover`;
//! - `ts_ms`: the server's clock at sending, ms since the Unix epoch;
//! - `seq`: +1 per beacon in this server run (all copies of one round, one per interface,
//!   share it);
//! - `mac`: HMAC-SHA256 under `HMAC-SHA256(network key, "lanmon beacon v2")` of the
//!   [`canonical`] encoding of every other field, in Crockford base32.
//!
//! `proto` says the lowest protocol version the server accepts: 1 in the compatibility mode
//! (so v1 agents still use the beacon), 2 when v2 is required (v1 agents then ignore it, and
//! would be refused anyway).
//!
//! # The agent's rule ([`BeaconVerifier::check`])
//!
//! An agent **with** a token accepts a beacon only if, in this order: it carries the four
//! fields; its MAC verifies under the network key (else *forged*); its `fp` is one the agent
//! has pinned (else *another server*: e.g. an insider with the network key but its own
//! server key); `|ts_ms − agent clock| ≤ 60 s` (else *stale*); and `(ts_ms, seq)` is greater,
//! lexicographically, than the last beacon accepted with that `fp` (else *replay*). The last
//! accepted pair is kept per pinned fingerprint (so the memory is bounded by the pins) and
//! lost at an agent restart, when the 60 s window alone bounds a replay — which at worst
//! points the agent at the real server's recorded address, where the handshake decides.
//! A server restart needs no state: its new beacons carry later times. A server clock more
//! than 60 s off makes its beacons ignored (logged with the offset); the agent then needs
//! `--server`.
//!
//! An agent **without** a token cannot verify anything: it treats any beacon as a hint and
//! shows its `fp` so the operator can compare it with the server's banner.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::auth::base32;
use crate::auth::fingerprint::Fingerprint;
use crate::auth::keys::NetworkKey;
use crate::auth::mac;
use crate::discovery::{BEACON_SERVICE, Beacon, MAX_BEACON_LEN, acceptable_name};
use crate::protocol::MAX_TEXT_LEN;

/// Largest accepted difference between a beacon's `ts_ms` and the agent's clock.
pub const MAX_BEACON_SKEW_MS: u64 = 60_000;
/// Label of the beacon key derived from the network key.
pub const BEACON_KEY_LABEL: &str = "lanmon beacon v2";
/// Domain separation prefix of the canonical encoding.
const CANONICAL_PREFIX: &[u8] = b"lanmon beacon v2\0";
/// Highest protocol version a beacon may announce to this build.
const MAX_PROTO: u32 = 2;

/// A beacon as a v2 agent reads it: the v1 fields, and the v2 fields if present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedBeacon {
    #[serde(flatten)]
    pub beacon: Beacon,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// The bytes the MAC covers: a fixed prefix, then every field in a fixed order, strings with
/// a u32 length prefix, integers big-endian. Unambiguous, and independent of JSON formatting.
pub fn canonical(b: &Beacon, fp: &str, ts_ms: u64, seq: u64) -> Vec<u8> {
    let mut out = CANONICAL_PREFIX.to_vec();
    let text = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    text(&mut out, &b.service);
    out.extend_from_slice(&b.proto.to_be_bytes());
    text(&mut out, &b.server_id);
    text(&mut out, &b.server_name);
    out.extend_from_slice(&b.port.to_be_bytes());
    text(&mut out, fp);
    out.extend_from_slice(&ts_ms.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out
}

impl SignedBeacon {
    /// The datagram; at most [`MAX_BEACON_LEN`] bytes (see [`BeaconSigner::sign`]).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a datagram and checks the v1 fields (any `proto` this build knows). Pure and
    /// total: the fuzz target of the beacon parser.
    pub fn parse(datagram: &[u8]) -> Result<SignedBeacon, &'static str> {
        if datagram.len() > MAX_BEACON_LEN {
            return Err("datagram too long");
        }
        let b: SignedBeacon =
            serde_json::from_slice(datagram).map_err(|_| "not a lanmon beacon")?;
        let v1 = &b.beacon;
        if v1.service != BEACON_SERVICE {
            return Err("not a lanmon beacon");
        }
        if v1.proto == 0 || v1.proto > MAX_PROTO {
            return Err("beacon of an unsupported protocol version");
        }
        if v1.port == 0
            || v1.server_id.is_empty()
            || v1.server_id.len() > MAX_TEXT_LEN
            || v1.server_name.len() > MAX_TEXT_LEN
            || v1.server_name.chars().any(char::is_control)
            || b.fp.as_ref().is_some_and(|f| f.len() > 64)
            || b.mac.as_ref().is_some_and(|m| m.len() > 64)
        {
            return Err("beacon with invalid fields");
        }
        Ok(b)
    }

    /// The fingerprint, if the beacon carries a well-formed one (shown without a token).
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.fp.as_deref().and_then(Fingerprint::parse)
    }
}

/// The server's side: signs each beacon round with the next `seq`.
#[derive(Debug)]
pub struct BeaconSigner {
    key: [u8; 32],
    fp: String,
    seq: u64,
}

impl BeaconSigner {
    pub fn new(network_key: &NetworkKey, server_fp: Fingerprint) -> Self {
        Self {
            key: network_key.derive(BEACON_KEY_LABEL),
            fp: server_fp.to_string(),
            seq: 0,
        }
    }

    /// Signs `beacon` as the next round. A server name agents would refuse
    /// ([`acceptable_name`]) or too long to fit the datagram limit is mended first (cut at a
    /// char boundary): otherwise every agent would ignore the beacon.
    pub fn sign(&mut self, mut beacon: Beacon, now_ms: u64) -> SignedBeacon {
        self.seq += 1;
        beacon.server_name = acceptable_name(&beacon.server_name);
        loop {
            let signed = self.sign_as_is(&beacon, now_ms);
            if signed.encode().len() <= MAX_BEACON_LEN || beacon.server_name.is_empty() {
                return signed;
            }
            beacon.server_name.pop();
        }
    }

    fn sign_as_is(&self, beacon: &Beacon, now_ms: u64) -> SignedBeacon {
        let tag = mac::hmac_sha256(&self.key, &[&canonical(beacon, &self.fp, now_ms, self.seq)]);
        SignedBeacon {
            beacon: beacon.clone(),
            fp: Some(self.fp.clone()),
            ts_ms: Some(now_ms),
            seq: Some(self.seq),
            mac: Some(base32::encode(&tag)),
        }
    }
}

/// Why an agent with a token ignored a beacon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("unsigned beacon (a v1 server, or a forgery)")]
    Unsigned,
    #[error("beacon MAC does not verify (forged, or another network's)")]
    BadMac,
    #[error("beacon from another server key than the pinned one")]
    OtherServer,
    #[error("beacon time is {skew_ms} ms off this machine's clock (limit 60 s)")]
    Stale { skew_ms: u64 },
    #[error("replayed beacon (not newer than the last accepted)")]
    Replay,
}

/// The agent's side: the rule in the module docs.
#[derive(Debug)]
pub struct BeaconVerifier {
    key: [u8; 32],
    pins: Vec<Fingerprint>,
    last: HashMap<Fingerprint, (u64, u64)>,
}

impl BeaconVerifier {
    pub fn new(network_key: &NetworkKey, pins: Vec<Fingerprint>) -> Self {
        Self {
            key: network_key.derive(BEACON_KEY_LABEL),
            pins,
            last: HashMap::new(),
        }
    }

    /// Replaces the pinned fingerprints (after a rotation notice); what was accepted from a
    /// key still pinned is kept.
    pub fn set_pins(&mut self, pins: Vec<Fingerprint>) {
        self.last.retain(|fp, _| pins.contains(fp));
        self.pins = pins;
    }

    /// Accepts `b` (and remembers its time and sequence) or says why not.
    pub fn check(&mut self, b: &SignedBeacon, now_ms: u64) -> Result<Fingerprint, Rejected> {
        let (Some(fp), Some(ts), Some(seq), Some(tag)) = (&b.fp, b.ts_ms, b.seq, &b.mac) else {
            return Err(Rejected::Unsigned);
        };
        let tag = base32::decode(tag).map_err(|_| Rejected::BadMac)?;
        if !mac::verify_hmac_sha256(&self.key, &[&canonical(&b.beacon, fp, ts, seq)], &tag) {
            return Err(Rejected::BadMac);
        }
        let fp = Fingerprint::parse(fp)
            .filter(|f| self.pins.contains(f))
            .ok_or(Rejected::OtherServer)?;
        let skew_ms = ts.abs_diff(now_ms);
        if skew_ms > MAX_BEACON_SKEW_MS {
            return Err(Rejected::Stale { skew_ms });
        }
        if self.last.get(&fp).is_some_and(|&last| (ts, seq) <= last) {
            return Err(Rejected::Replay);
        }
        self.last.insert(fp, (ts, seq));
        Ok(fp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::PublicKey;

    const NOW: u64 = 1_800_000_000_000;

    fn setup() -> (NetworkKey, Fingerprint, BeaconSigner, BeaconVerifier) {
        let nk = NetworkKey([9; 32]);
        let fp = Fingerprint::of(&PublicKey([1; 32]));
        let signer = BeaconSigner::new(&nk, fp);
        let verifier = BeaconVerifier::new(&nk, vec![fp]);
        (nk, fp, signer, verifier)
    }

    fn roundtrip(b: &SignedBeacon) -> SignedBeacon {
        SignedBeacon::parse(&b.encode()).unwrap()
    }

    /// A signed beacon survives the wire, verifies, and a v1 agent still reads it.
    #[test]
    fn signed_beacon_verifies_and_v1_still_reads_it() {
        let (_, fp, mut signer, mut verifier) = setup();
        let b = signer.sign(Beacon::new("srv", "lab", 8080), NOW);
        let wire = b.encode();
        assert!(wire.len() < 300, "{}", wire.len());
        assert_eq!(verifier.check(&roundtrip(&b), NOW + 500), Ok(fp));
        assert_eq!(roundtrip(&b).fingerprint(), Some(fp));
        // The v1 decoder ignores the new fields.
        assert_eq!(Beacon::decode(&wire), Ok(Beacon::new("srv", "lab", 8080)));
    }

    /// Changing any field, or signing with another network key, breaks the MAC.
    #[test]
    fn forged_beacons_are_refused() {
        let (_, fp, mut signer, mut verifier) = setup();
        let good = signer.sign(Beacon::new("srv", "lab", 8080), NOW);
        let mut forged = vec![good.clone(); 6];
        forged[0].beacon.port = 9999;
        forged[1].beacon.server_name = "evil".into();
        forged[2].ts_ms = Some(NOW + 1);
        forged[3].seq = Some(99);
        forged[4].beacon.server_id = "other".into();
        forged[5].mac = Some("not base32!".into());
        for f in &forged {
            assert_eq!(
                verifier.check(&roundtrip(f), NOW),
                Err(Rejected::BadMac),
                "{f:?}"
            );
        }
        let mut outsider = BeaconSigner::new(&NetworkKey([8; 32]), fp);
        let o = outsider.sign(Beacon::new("srv", "lab", 8080), NOW);
        assert_eq!(verifier.check(&o, NOW), Err(Rejected::BadMac));
        let mut unsigned = good.clone();
        unsigned.mac = None;
        assert_eq!(verifier.check(&unsigned, NOW), Err(Rejected::Unsigned));
        let plain = SignedBeacon::parse(&Beacon::new("srv", "lab", 8080).encode()).unwrap();
        assert_eq!(verifier.check(&plain, NOW), Err(Rejected::Unsigned));
        assert_eq!(
            verifier.check(&good, NOW),
            Ok(fp),
            "the original still verifies"
        );
    }

    /// An insider with the network key but its own server key signs a valid MAC, and is
    /// still refused: its fingerprint is not the pinned one.
    #[test]
    fn insider_with_another_key_is_refused() {
        let (nk, _, _, mut verifier) = setup();
        let mut insider = BeaconSigner::new(&nk, Fingerprint::of(&PublicKey([2; 32])));
        let b = insider.sign(Beacon::new("srv", "lab", 8080), NOW);
        assert_eq!(verifier.check(&b, NOW), Err(Rejected::OtherServer));
    }

    /// A beacon accepted once is refused the second time, as is an older one and one outside
    /// the 60 s window; the next round and a restarted server (later clock, seq from 1) pass.
    #[test]
    fn replays_and_stale_beacons_are_refused() {
        let (nk, fp, mut signer, mut verifier) = setup();
        let first = signer.sign(Beacon::new("srv", "lab", 8080), NOW);
        let second = signer.sign(Beacon::new("srv", "lab", 8080), NOW + 1000);
        assert_eq!(verifier.check(&second, NOW + 1000), Ok(fp));
        assert_eq!(verifier.check(&second, NOW + 1500), Err(Rejected::Replay));
        assert_eq!(verifier.check(&first, NOW + 1500), Err(Rejected::Replay));
        let third = signer.sign(Beacon::new("srv", "lab", 8080), NOW + 1000);
        assert_eq!(
            verifier.check(&third, NOW + 1000),
            Ok(fp),
            "same ms, next seq"
        );
        let mut restarted = BeaconSigner::new(&nk, fp);
        let r = restarted.sign(Beacon::new("srv2", "lab", 8080), NOW + 2000);
        assert_eq!(verifier.check(&r, NOW + 2000), Ok(fp));
        // A fresh verifier (agent restart) still refuses anything older than 60 s.
        let mut fresh = BeaconVerifier::new(&nk, vec![fp]);
        assert_eq!(
            fresh.check(&first, NOW + 61_000),
            Err(Rejected::Stale { skew_ms: 61_000 })
        );
        let future = signer.sign(Beacon::new("srv", "lab", 8080), NOW + 120_000);
        assert!(matches!(
            fresh.check(&future, NOW),
            Err(Rejected::Stale { .. })
        ));
    }

    /// A beacon whose name agents would refuse (set after `Beacon::new`: control characters,
    /// too long) is mended before it is signed, so that it still verifies.
    #[test]
    fn a_name_agents_would_refuse_is_mended_before_signing() {
        let (_, fp, mut signer, mut verifier) = setup();
        let mut b = Beacon::new("srv", "lab", 8080);
        b.server_name = format!("lab\u{1b}[2J{}", "x".repeat(MAX_TEXT_LEN));
        let signed = signer.sign(b, NOW);
        assert!(signed.beacon.server_name.starts_with("lab?[2J"));
        assert_eq!(signed.beacon.server_name.len(), MAX_TEXT_LEN);
        assert_eq!(verifier.check(&roundtrip(&signed), NOW), Ok(fp));
    }

    /// Even with the longest names and quote-heavy text the datagram stays within 1 KiB, and
    /// oversize or junk datagrams are refused without a panic.
    #[test]
    fn size_limit_oversize_and_junk() {
        let (_, fp, mut signer, mut verifier) = setup();
        let worst = Beacon::new(&"i".repeat(MAX_TEXT_LEN), &"\"".repeat(MAX_TEXT_LEN), 65535);
        let b = signer.sign(worst, NOW);
        let wire = b.encode();
        assert!(wire.len() <= MAX_BEACON_LEN, "{}", wire.len());
        assert_eq!(verifier.check(&roundtrip(&b), NOW), Ok(fp));
        assert_eq!(
            SignedBeacon::parse(&vec![b' '; MAX_BEACON_LEN + 1]),
            Err("datagram too long")
        );
        let junk: [&[u8]; 7] = [
            b"",
            b"\xff\xfe",
            b"[]",
            br#"{"service":"lanmon"}"#,
            br#"{"service":"lanmon","proto":3,"server_id":"a","server_name":"b","port":1}"#,
            br#"{"service":"lanmon","proto":2,"server_id":"a","server_name":"b","port":1,"seq":-1}"#,
            br#"{"service":"lanmon","proto":2,"server_id":"a","server_name":"b","port":1,"mac":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#,
        ];
        for j in junk {
            assert!(
                SignedBeacon::parse(j).is_err(),
                "{}",
                String::from_utf8_lossy(j)
            );
        }
        for cut in 0..wire.len() {
            let _ = SignedBeacon::parse(&wire[..cut]);
        }
    }
}
