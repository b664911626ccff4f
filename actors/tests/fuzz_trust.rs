//! Property-based fuzzing of the trust layer's parsers ([`lanmon::auth`]): the signed-beacon
//! parser and the agent's acceptance rule, the join-token decoder and its check digits, the
//! v1/v2 sniffing of a connection's first bytes, the server's side of the Noise handshake and
//! the encrypted stream's frame decoding. Each gets arbitrary input, valid input (which must
//! round-trip) and valid input mutated (which must never be accepted as valid).
//!
//! The coverage-guided targets of `make fuzz` (actors/fuzz/) hunt deeper but need nightly and
//! minutes; these run in CI on every change (`cargo test`), bounded like
//! `actors/tests/fuzz_frames.rs`: each property runs `LANMON_FUZZ_CASES` cases (default
//! [`DEFAULT_CASES`]; about 4 s for the whole file in a debug build on 2 cores, with
//! curve25519-dalek optimised even there, see the workspace Cargo.toml). A longer hunt:
//! `LANMON_FUZZ_CASES=20000 cargo test -p lanmon --release --test fuzz_trust`.
//!
//! "Never accepted" for a mutated MAC, AEAD tag or CRC-32 means: except with the forgery
//! probability of that check (2^-128 for the AEAD and the MAC, 2^-32 for the CRC, and 0 for
//! a one-symbol typo in a token, which the CRC always detects).
//!
//! Failures are not persisted (`failure_persistence: None`): proptest prints the shrunk input,
//! a run is replayed with `PROPTEST_RNG_SEED=<n>`, and a case worth keeping becomes a plain
//! `#[test]` at the bottom of this file.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Duration;

use lanmon::auth::base32::{self, ALPHABET};
use lanmon::auth::beacon_auth::{BeaconSigner, BeaconVerifier, Rejected, SignedBeacon};
use lanmon::auth::fingerprint::Fingerprint;
use lanmon::auth::keys::{NetworkKey, PublicKey, StaticKeypair};
use lanmon::auth::noise::{
    self, Accepted, ClientConfig, ClientHandshake, MAX_HANDSHAKE_MSG, MAX_NOISE_MSG, PREAMBLE,
    Proof, ServerHandshake, ServerIdentity, Session,
};
use lanmon::auth::sniff::{Sniffed, sniff};
use lanmon::auth::token::{JoinToken, MAX_TOKEN_SERVER_ID, TOKEN_PREFIX};
use lanmon::auth::{AuthError, AuthResult};
use lanmon::discovery::{Beacon, MAX_BEACON_LEN};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

/// Cases per property when `LANMON_FUZZ_CASES` is not set.
const DEFAULT_CASES: u32 = 256;

/// The listener peeks this many bytes at most before it must decide (listener.rs).
const PEEK_LEN: usize = 64;

/// A fixed "now" for beacons, ms since the epoch.
const NOW: u64 = 1_800_000_000_000;

fn cases() -> u32 {
    match std::env::var("LANMON_FUZZ_CASES") {
        Ok(v) => match v.trim().parse() {
            Ok(n) => n,
            Err(_) => panic!("LANMON_FUZZ_CASES must be a whole number, got {v:?}"),
        },
        Err(_) => DEFAULT_CASES,
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations
// ---------------------------------------------------------------------------------------------

/// A byte-level edit.
#[derive(Debug, Clone)]
enum Mutation {
    Xor(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), 1u8..=255).prop_map(|(i, x)| Mutation::Xor(i, x)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => any::<Index>().prop_map(Mutation::Delete),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    match *m {
        Mutation::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), b),
        _ if bytes.is_empty() => {}
        Mutation::Xor(i, x) => *i.get_mut(bytes) ^= x,
        Mutation::Delete(i) => {
            bytes.remove(i.index(bytes.len()));
        }
        Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len())),
    }
}

fn mutated(bytes: &[u8], edits: &[Mutation]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for e in edits {
        mutate(&mut out, e);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Signed beacons
// ---------------------------------------------------------------------------------------------

static NETWORK_KEY: NetworkKey = NetworkKey([9; 32]);
static SERVER_FP: LazyLock<Fingerprint> = LazyLock::new(|| Fingerprint::of(&PublicKey([1; 32])));

fn verifier() -> BeaconVerifier {
    BeaconVerifier::new(&NETWORK_KEY, vec![*SERVER_FP])
}

/// A beacon as the server signs it, at `NOW` plus up to a minute.
fn signed_beacon() -> impl Strategy<Value = SignedBeacon> {
    (
        "[0-9a-f]{1,64}",
        "\\PC{0,300}",
        1u16..=u16::MAX,
        1u32..=2,
        0u64..60_000,
        1usize..4,
    )
        .prop_map(|(id, name, port, proto, dt, rounds)| {
            let mut beacon = Beacon::new(&id, &name, port);
            beacon.proto = proto;
            let mut signer = BeaconSigner::new(&NETWORK_KEY, *SERVER_FP);
            let mut b = signer.sign(beacon.clone(), NOW + dt);
            for _ in 1..rounds {
                b = signer.sign(beacon.clone(), NOW + dt);
            }
            b
        })
}

/// Datagrams: noise, JSON-looking noise, and signed beacons with byte edits (with the
/// beacon they were made from: a few edits give it back, e.g. a deleted and re-inserted byte).
fn datagram() -> impl Strategy<Value = (Vec<u8>, Option<SignedBeacon>)> {
    let json_piece = prop_oneof![
        vec(any::<u8>(), 0..16),
        proptest::sample::select(vec![
            &b"{"[..],
            b"}",
            b"\"service\":\"lanmon\"",
            b"\"proto\":2",
            b"\"proto\":0",
            b"\"port\":0",
            b"\"server_id\":\"\"",
            b"\"server_name\":\"\\u0007\"",
            b"\"fp\":\"SHA256:",
            b"\"mac\":\"",
            b"\"ts_ms\":1800000000000",
            b"\"seq\":18446744073709551615",
            b",",
            b":",
            b"null",
        ])
        .prop_map(<[u8]>::to_vec),
    ];
    prop_oneof![
        vec(any::<u8>(), 0..MAX_BEACON_LEN + 64).prop_map(|b| (b, None)),
        vec(json_piece, 0..40).prop_map(|p| (p.concat(), None)),
        (signed_beacon(), vec(mutation(), 0..4))
            .prop_map(|(b, e)| (mutated(&b.encode(), &e), Some(b))),
        (signed_beacon(), 0..64usize).prop_map(|(b, n)| {
            let mut wire = b.encode();
            wire.resize(MAX_BEACON_LEN + 1 + n, b' ');
            (wire, None)
        }),
    ]
}

/// A replacement value for one field of a beacon's JSON form.
fn forged_field() -> impl Strategy<Value = (&'static str, serde_json::Value)> {
    use serde_json::Value;
    let number = prop_oneof![any::<u64>(), 0u64..70_000, (NOW - 120_000)..(NOW + 120_000)]
        .prop_map(Value::from);
    let text = prop_oneof![
        "\\PC{0,40}",
        "[0-9A-Z]{0,60}",
        Just(Fingerprint::of(&PublicKey([2; 32])).to_string()),
    ]
    .prop_map(Value::from);
    prop_oneof![
        (
            proptest::sample::select(vec!["proto", "port", "ts_ms", "seq"]),
            number
        ),
        (
            proptest::sample::select(vec!["service", "server_id", "server_name", "fp", "mac"]),
            text
        ),
        proptest::sample::select(vec!["fp", "ts_ms", "seq", "mac"]).prop_map(|k| (k, Value::Null)),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Any datagram: the parser never panics, refuses anything over the 1 KiB limit, and what
    /// it accepts encodes back to the same beacon; the verifier never accepts one (it was not
    /// signed with the network key) nor panics on it.
    #[test]
    fn arbitrary_datagrams_never_verify((bytes, source) in datagram(), now in any::<u64>()) {
        let parsed = SignedBeacon::parse(&bytes);
        if bytes.len() > MAX_BEACON_LEN {
            prop_assert_eq!(parsed.clone(), Err("datagram too long"));
        }
        if let Ok(b) = parsed {
            let again = SignedBeacon::parse(&b.encode());
            prop_assert_eq!(again.as_ref(), Ok(&b));
            let _ = b.fingerprint();
            let verdict = verifier().check(&b, b.ts_ms.unwrap_or(now));
            if verdict.is_ok() {
                prop_assert_eq!(source.as_ref(), Some(&b), "accepted a beacon nobody signed");
            }
        }
    }

    /// A signed beacon fits the datagram limit, survives the wire (a server name over the
    /// agents' 256-byte limit is cut by the signer, not refused by every agent), verifies once
    /// and is refused as a replay the second time; under another network key it does not
    /// verify.
    #[test]
    fn signed_beacons_round_trip_and_verify_once(b in signed_beacon(), other in any::<[u8; 32]>()) {
        let wire = b.encode();
        prop_assert!(wire.len() <= MAX_BEACON_LEN, "{} bytes", wire.len());
        let parsed = SignedBeacon::parse(&wire);
        prop_assert_eq!(parsed.as_ref(), Ok(&b));
        let now = b.ts_ms.unwrap_or(0) + 1;
        let mut v = verifier();
        prop_assert_eq!(v.check(&b, now), Ok(*SERVER_FP));
        prop_assert_eq!(v.check(&b, now), Err(Rejected::Replay));
        prop_assume!(other != NETWORK_KEY.0);
        let mut outsider = BeaconVerifier::new(&NetworkKey(other), vec![*SERVER_FP]);
        prop_assert_eq!(outsider.check(&b, now), Err(Rejected::BadMac));
    }

    /// A signed datagram with byte edits either fails to parse, parses back to the original
    /// (then it is the original), or is refused by the verifier.
    #[test]
    fn mutated_datagrams_never_verify(b in signed_beacon(), edits in vec(mutation(), 1..4)) {
        let wire = mutated(&b.encode(), &edits);
        if let Ok(m) = SignedBeacon::parse(&wire) {
            let verdict = verifier().check(&m, b.ts_ms.unwrap_or(0));
            if m == b {
                prop_assert!(verdict.is_ok());
            } else {
                prop_assert!(verdict.is_err(), "accepted an edited beacon: {m:?}");
            }
        }
    }

    /// Any one field of a signed beacon replaced (or removed): never accepted unless the
    /// beacon is unchanged.
    #[test]
    fn forged_fields_never_verify(b in signed_beacon(), (field, value) in forged_field()) {
        let mut json = serde_json::to_value(&b).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if let Some(o) = json.as_object_mut() {
            o.insert(field.to_string(), value);
        }
        let wire = serde_json::to_vec(&json).unwrap_or_default();
        if let Ok(m) = SignedBeacon::parse(&wire) {
            let verdict = verifier().check(&m, b.ts_ms.unwrap_or(0));
            prop_assert_eq!(verdict.is_ok(), m == b, "{:?} for {:?}", verdict, m);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Join tokens
// ---------------------------------------------------------------------------------------------

fn join_token() -> impl Strategy<Value = JoinToken> {
    (any::<[u8; 32]>(), any::<[u8; 32]>(), "\\PC{1,16}").prop_map(|(s, n, id)| JoinToken {
        server_key: PublicKey(s),
        network_key: NetworkKey(n),
        server_id: id,
    })
}

/// Text that might be typed or pasted as a token.
fn token_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\PC{0,200}",
        "(lm|LM|lM)[0-9]{0,3}-?[0-9A-Za-z\\-]{0,200}",
        "\\s*lm2-[0-9A-HJKMNP-TV-Z]{0,160}\\s*",
        (join_token(), vec(mutation(), 0..3)).prop_map(|(t, e)| {
            String::from_utf8_lossy(&mutated(t.encode().as_bytes(), &e)).into_owned()
        }),
    ]
}

/// The canonical value of a body symbol (`None`: not a base32 symbol).
fn symbol_value(c: char) -> Option<u8> {
    let c = match c.to_ascii_uppercase() {
        'O' => '0',
        'I' | 'L' => '1',
        u => u,
    };
    ALPHABET
        .iter()
        .position(|&a| char::from(a) == c)
        .and_then(|p| u8::try_from(p).ok())
}

proptest! {
    #![proptest_config(config())]

    /// Any text: the decoder never panics, and what it accepts encodes back to a token that
    /// decodes to the same value.
    #[test]
    fn arbitrary_text_never_panics(text in token_text()) {
        if let Ok(t) = JoinToken::decode(&text) {
            let again = t.encode();
            prop_assert!(again.starts_with(TOKEN_PREFIX));
            prop_assert_eq!(JoinToken::decode(&again), Ok(t));
        }
    }

    /// A token round-trips as printed, lower-cased, grouped with hyphens at any width and
    /// padded with white space.
    #[test]
    fn tokens_round_trip(t in join_token(), group in 1usize..12, lower in any::<bool>()) {
        let text = t.encode();
        // The longest: prefix, then base32 of 1 + 32 + 32 + 1 + 64 + 4 bytes.
        prop_assert!(text.len() <= TOKEN_PREFIX.len() + 215, "{} chars", text.len());
        prop_assert_eq!(JoinToken::decode(&text), Ok(t.clone()));
        let body: String = text[TOKEN_PREFIX.len()..]
            .chars()
            .enumerate()
            .flat_map(|(i, c)| (i > 0 && i % group == 0).then_some('-').into_iter().chain([c]))
            .collect();
        let typed = format!(" \t{TOKEN_PREFIX}{body}\n");
        let typed = if lower { typed.to_lowercase() } else { typed };
        prop_assert_eq!(JoinToken::decode(&typed), Ok(t));
    }

    /// Up to three body symbols replaced by other symbols: refused (one always, by the CRC's
    /// guarantee; more, but for the CRC's 2^-32), and never as a valid token.
    #[test]
    fn mistyped_tokens_are_refused(
        t in join_token(),
        typos in vec((any::<Index>(), 1u8..32), 1..4),
    ) {
        let text = t.encode();
        let mut chars: Vec<char> = text.chars().collect();
        let body = TOKEN_PREFIX.len()..chars.len();
        for (at, delta) in &typos {
            let pos = body.start + at.index(body.len());
            let v = symbol_value(chars[pos]).unwrap_or(0);
            chars[pos] = char::from(ALPHABET[usize::from((v + delta) % 32)]);
        }
        let typo: String = chars.into_iter().collect();
        prop_assume!(typo != text);
        let r = JoinToken::decode(&typo);
        prop_assert!(r.is_err(), "typo accepted: {typo}");
    }

    /// Byte-level edits of a token's bytes (flips, insertions, deletions, truncation),
    /// re-encoded as a well-formed `lm2-` text: refused unless the bytes are unchanged.
    #[test]
    fn edited_token_bytes_are_refused(t in join_token(), edits in vec(mutation(), 1..4)) {
        let text = t.encode();
        let bytes = base32::decode(&text[TOKEN_PREFIX.len()..])
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let edited = mutated(&bytes, &edits);
        let r = JoinToken::decode(&format!("{TOKEN_PREFIX}{}", base32::encode(&edited)));
        if edited == bytes {
            prop_assert_eq!(r, Ok(t));
        } else {
            prop_assert!(r.is_err(), "edited token accepted: {:?}", r);
        }
    }

    /// A server id over the limit is cut at a char boundary, so encoding cannot fail and the
    /// token still decodes.
    #[test]
    fn long_server_ids_are_cut(t in join_token(), id in "\\PC{17,80}") {
        let t = JoinToken { server_id: id.clone(), ..t };
        let back = JoinToken::decode(&t.encode());
        prop_assert!(back.is_ok(), "{:?}", back);
        if let Ok(back) = back {
            prop_assert!(back.server_id.len() <= MAX_TOKEN_SERVER_ID);
            prop_assert!(id.starts_with(&back.server_id));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sniffing
// ---------------------------------------------------------------------------------------------

fn first_bytes() -> impl Strategy<Value = Vec<u8>> {
    let ws = vec(proptest::sample::select(b" \t\r\n".to_vec()), 0..80);
    prop_oneof![
        vec(any::<u8>(), 0..100),
        vec(any::<u8>(), 0..100).prop_map(|b| [&PREAMBLE[..], &b].concat()),
        (any::<u8>(), vec(any::<u8>(), 0..20)).prop_map(|(r, b)| [&b"LMN2"[..], &[r], &b].concat()),
        (0usize..5, vec(any::<u8>(), 0..20)).prop_map(|(n, b)| [&PREAMBLE[..n], &b].concat()),
        (ws.clone(), vec(any::<u8>(), 0..40)).prop_map(|(w, b)| [&w[..], b"{", &b].concat()),
        ws,
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Any first bytes: `sniff` never panics; within the listener's 64-byte peek a decision
    /// never changes as more bytes arrive, and 64 bytes always decide; `LMN2` and a revision
    /// byte is v2 with that revision, white space then `{` is v1, anything else is unknown.
    #[test]
    fn sniffing_is_total_stable_and_bounded(bytes in first_bytes()) {
        let peeked = &bytes[..bytes.len().min(PEEK_LEN)];
        let decision = sniff(peeked);
        if peeked.len() == PEEK_LEN {
            prop_assert_ne!(decision, Sniffed::NeedMore);
        }
        for cut in 0..=peeked.len() {
            let early = sniff(&peeked[..cut]);
            if early != Sniffed::NeedMore {
                prop_assert_eq!(early, decision, "at {} bytes", cut);
            }
        }
        let first = peeked.iter().find(|b| !b.is_ascii_whitespace());
        let expected = if peeked.len() >= 5 && peeked[..4] == PREAMBLE[..4] {
            Sniffed::V2 { revision: peeked[4] }
        } else if peeked.len() < 5 && peeked == &PREAMBLE[..peeked.len()] {
            Sniffed::NeedMore
        } else if first == Some(&b'{') {
            Sniffed::V1
        } else if first.is_none() && peeked.len() < PEEK_LEN {
            Sniffed::NeedMore
        } else {
            Sniffed::Unknown
        };
        prop_assert_eq!(decision, expected);
        prop_assert_eq!(noise::check_preamble(peeked).is_ok(), peeked.starts_with(&PREAMBLE));
    }
}

// ---------------------------------------------------------------------------------------------
// The Noise handshake, server side
// ---------------------------------------------------------------------------------------------

/// A fixed server, with a current and a previous key (as during a rotation).
static SERVER: LazyLock<ServerIdentity> = LazyLock::new(|| ServerIdentity {
    keys: vec![
        StaticKeypair::from_private([1; 32]),
        StaticKeypair::from_private([2; 32]),
    ],
    network_key: NetworkKey([3; 32]),
});

/// Which server key an agent pins.
#[derive(Debug, Clone, Copy)]
enum Pinned {
    None,
    Key(usize),
    Other,
}

/// Which network key an agent holds.
#[derive(Debug, Clone, Copy)]
enum Net {
    None,
    Right,
    Wrong,
}

#[derive(Debug, Clone)]
struct Agent {
    private: [u8; 32],
    pin: Pinned,
    net: Net,
}

impl Agent {
    fn config(&self) -> ClientConfig {
        ClientConfig {
            keypair: StaticKeypair::from_private(self.private),
            pins: match self.pin {
                Pinned::None => vec![],
                Pinned::Key(i) => vec![SERVER.keys[i].public()],
                Pinned::Other => vec![StaticKeypair::from_private([7; 32]).public()],
            },
            network_key: match self.net {
                Net::None => None,
                Net::Right => Some(SERVER.network_key.clone()),
                Net::Wrong => Some(NetworkKey([4; 32])),
            },
        }
    }
}

fn agent() -> impl Strategy<Value = Agent> {
    let pin = prop_oneof![
        Just(Pinned::None),
        Just(Pinned::Key(0)),
        Just(Pinned::Key(1)),
        Just(Pinned::Other)
    ];
    let net = prop_oneof![Just(Net::None), Just(Net::Right), Just(Net::Wrong)];
    (any::<[u8; 32]>(), pin, net).prop_map(|(private, pin, net)| Agent { private, pin, net })
}

/// An agent that completes the handshake (it pins a key the server has, or none).
fn good_agent() -> impl Strategy<Value = Agent> {
    agent().prop_filter("pins a foreign key", |a| !matches!(a.pin, Pinned::Other))
}

/// Which handshake message to edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    One,
    Two,
    Three,
}

/// How far a (possibly edited) handshake got.
enum Outcome {
    Done {
        client: Session,
        server: Accepted,
        sizes: [usize; 3],
    },
    Failed(&'static str, AuthError),
}

fn frame_body(framed: &[u8]) -> AuthResult<&[u8]> {
    match noise::parse_frame(framed, MAX_HANDSHAKE_MSG)? {
        Some((body, used)) if used == framed.len() => Ok(body),
        _ => Err(AuthError::BadHandshake("not exactly one frame")),
    }
}

/// Runs the handshake sans I/O, through the same framing the drivers use, applying `edits`
/// to the body of `msg` on its way; `changed` says whether they changed it (edits can cancel).
fn handshake(agent: &Agent, msg: Option<Msg>, edits: &[Mutation], changed: &Cell<bool>) -> Outcome {
    let cfg = agent.config();
    let edit = |m: Msg, body: &[u8]| {
        if msg == Some(m) {
            let out = mutated(body, edits);
            changed.set(out != body);
            out
        } else {
            body.to_vec()
        }
    };
    let (client, out1) = match ClientHandshake::start(&cfg) {
        Ok(x) => x,
        Err(e) => return Outcome::Failed("start", e),
    };
    if let Err(e) = noise::check_preamble(&out1[..PREAMBLE.len().min(out1.len())]) {
        return Outcome::Failed("preamble", e);
    }
    let m1 = match frame_body(&out1[PREAMBLE.len()..]) {
        Ok(b) => edit(Msg::One, b),
        Err(e) => return Outcome::Failed("frame 1", e),
    };
    let (server, out2) = match ServerHandshake::respond(&SERVER, &m1) {
        Ok(x) => x,
        Err(e) => return Outcome::Failed("respond", e),
    };
    let m2 = match frame_body(&out2) {
        Ok(b) => edit(Msg::Two, b),
        Err(e) => return Outcome::Failed("frame 2", e),
    };
    let (out3, client) = match client.finish(&cfg, &m2) {
        Ok(x) => x,
        Err(e) => return Outcome::Failed("client finish", e),
    };
    let m3 = match frame_body(&out3) {
        Ok(b) => edit(Msg::Three, b),
        Err(e) => return Outcome::Failed("frame 3", e),
    };
    match server.finish(&SERVER, &m3) {
        Ok(server) => Outcome::Done {
            client,
            server,
            sizes: [m1.len(), m2.len(), m3.len()],
        },
        Err(e) => Outcome::Failed("server finish", e),
    }
}

/// What an agent's first bytes might be: noise, a preamble and arbitrary frames, a real
/// message 1 and an arbitrary message 3, oversized length headers.
fn handshake_input() -> impl Strategy<Value = Vec<u8>> {
    let frame =
        |max: usize| vec(any::<u8>(), 0..max).prop_map(|b| noise::frame(&b).unwrap_or_default());
    prop_oneof![
        vec(any::<u8>(), 0..2 * MAX_HANDSHAKE_MSG),
        (frame(200), frame(200)).prop_map(|(a, b)| [&PREAMBLE[..], &a, &b].concat()),
        (agent(), frame(200), vec(any::<u8>(), 0..8)).prop_map(|(agent, m3, tail)| {
            let start = ClientHandshake::start(&agent.config());
            let out1 = start.map(|(_, out)| out).unwrap_or_default();
            [&out1[..], &m3, &tail].concat()
        }),
        (
            (MAX_HANDSHAKE_MSG + 1) as u16..=u16::MAX,
            vec(any::<u8>(), 0..64)
        )
            .prop_map(|(len, b)| [&PREAMBLE[..], &len.to_be_bytes(), &b].concat()),
        (vec(mutation(), 1..3), frame(100))
            .prop_map(|(e, m)| { [&mutated(&PREAMBLE, &e)[..], &m].concat() }),
    ]
}

/// A reader that hands out `data` in reads of `sizes` (cycled), then end of stream.
struct Chunked<'a> {
    data: &'a [u8],
    sizes: &'a [usize],
    next: usize,
}

impl<'a> Chunked<'a> {
    fn new(data: &'a [u8], sizes: &'a [usize]) -> Self {
        Self {
            data,
            sizes,
            next: 0,
        }
    }
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let size = match this.sizes.len() {
            0 => usize::MAX,
            n => this.sizes[this.next % n].max(1),
        };
        this.next += 1;
        let n = size.min(this.data.len()).min(buf.remaining());
        let (now, rest) = this.data.split_at(n);
        buf.put_slice(now);
        this.data = rest;
        Poll::Ready(Ok(()))
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, TestCaseError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| TestCaseError::fail(e.to_string()))
}

fn read_sizes() -> impl Strategy<Value = Vec<usize>> {
    vec(prop_oneof![1usize..8, 8usize..600, Just(65_600)], 1..6)
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes as an agent's opening: the server's handshake parser never panics and never
    /// finishes a handshake (that needs the agent's private keys); the frame splitter refuses
    /// a length over its limit before the body arrives and never returns more than it.
    #[test]
    fn arbitrary_openings_never_complete(input in handshake_input(), max in 0usize..=MAX_NOISE_MSG) {
        prop_assert!(noise::server_handshake_from_bytes(&SERVER, &input).is_err());
        let _ = noise::parse_msg1_payload(&input);
        let _ = noise::parse_msg3_payload(&input);
        let len = input.get(..2).map(|h| usize::from(u16::from_be_bytes([h[0], h[1]])));
        match noise::parse_frame(&input, max) {
            Err(AuthError::FrameTooLong { len: l, max: m }) => {
                prop_assert_eq!((Some(l), m), (len, max));
                prop_assert!(l > m);
            }
            Err(e) => prop_assert!(false, "unexpected {e}"),
            Ok(None) => prop_assert!(len.is_none_or(|l| l <= max && input.len() < 2 + l)),
            Ok(Some((body, used))) => {
                prop_assert!(body.len() <= max);
                prop_assert_eq!(used, 2 + body.len());
                prop_assert_eq!(body, &input[2..used]);
            }
        }
    }

    /// The same bytes through the socket driver, in reads of any size: never panics, never
    /// hangs (it ends at the end of the input), never finishes a handshake.
    #[test]
    fn arbitrary_openings_through_the_driver(input in handshake_input(), sizes in read_sizes()) {
        let rt = runtime()?;
        let mut stream = tokio::io::join(Chunked::new(&input, &sizes), tokio::io::sink());
        let r = rt.block_on(noise::server_handshake_within(&mut stream, &SERVER, Duration::from_secs(5)));
        prop_assert!(
            !matches!(r, Ok(_) | Err(AuthError::HandshakeTimeout(_))),
            "{:?}",
            r.map(|a| a.proof)
        );
    }
}

proptest! {
    #![proptest_config(config())]

    /// A well-behaved agent completes the handshake: each side learns the other's static key,
    /// both hold the same handshake hash, the server shows the key the agent pinned (current
    /// otherwise), the join proof is valid exactly with the right network key; an agent that
    /// pins a foreign key stops after message 2.
    #[test]
    fn valid_handshakes_complete(agent in agent()) {
        match (handshake(&agent, None, &[], &Cell::new(false)), agent.pin) {
            (Outcome::Failed(at, e), Pinned::Other) => {
                prop_assert_eq!(at, "client finish");
                prop_assert!(matches!(e, AuthError::PinMismatch { .. }), "{e}");
            }
            (Outcome::Done { .. }, Pinned::Other) => prop_assert!(false, "a foreign pin completed"),
            (Outcome::Failed(at, e), _) => prop_assert!(false, "failed at {at}: {e}"),
            (Outcome::Done { client, server, sizes }, pin) => {
                let index = match pin { Pinned::Key(i) => i, _ => 0 };
                prop_assert_eq!(server.server_key_index, index);
                prop_assert_eq!(client.remote_static, SERVER.keys[index].public());
                prop_assert_eq!(server.session.remote_static, agent.config().keypair.public());
                prop_assert_eq!(client.handshake_hash, server.session.handshake_hash);
                let proof = match agent.net { Net::None => Proof::Absent, Net::Right => Proof::Valid, Net::Wrong => Proof::Invalid };
                prop_assert_eq!(server.proof, proof);
                prop_assert!(sizes.iter().all(|&n| n <= MAX_HANDSHAKE_MSG), "{sizes:?}");
            }
        }
    }

    /// Any edit of any one handshake message (flips, insertions, deletions, truncation) makes
    /// the handshake fail: no session on either side.
    #[test]
    fn mutated_handshake_messages_never_complete(
        agent in good_agent(),
        msg in prop_oneof![Just(Msg::One), Just(Msg::Two), Just(Msg::Three)],
        edits in vec(mutation(), 1..4),
    ) {
        let changed = Cell::new(false);
        let outcome = handshake(&agent, Some(msg), &edits, &changed);
        // Edits that cancel out (insert, then delete the same byte) are no edit: skip them.
        prop_assume!(changed.get());
        match outcome {
            Outcome::Done { sizes, .. } => prop_assert!(false, "an edited message {msg:?} completed ({sizes:?})"),
            Outcome::Failed(at, _) => {
                let possible: &[&str] = match msg {
                    Msg::One => &["respond", "client finish"],
                    Msg::Two => &["client finish"],
                    Msg::Three => &["server finish"],
                };
                prop_assert!(possible.contains(&at), "{msg:?} edited, failed at {at}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The encrypted stream
// ---------------------------------------------------------------------------------------------

/// A frame-level edit of the agent → server ciphertext.
#[derive(Debug, Clone)]
enum FrameEdit {
    Duplicate(Index),
    Drop(Index),
    Swap(Index, Index),
}

fn frame_edit() -> impl Strategy<Value = FrameEdit> {
    prop_oneof![
        any::<Index>().prop_map(FrameEdit::Duplicate),
        any::<Index>().prop_map(FrameEdit::Drop),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| FrameEdit::Swap(a, b)),
    ]
}

/// A finished handshake (no pins, no token: the cheapest that completes).
fn session_pair(private: [u8; 32]) -> Result<(Session, Session), TestCaseError> {
    let agent = Agent {
        private,
        pin: Pinned::None,
        net: Net::None,
    };
    match handshake(&agent, None, &[], &Cell::new(false)) {
        Outcome::Done { client, server, .. } => Ok((client, server.session)),
        Outcome::Failed(at, e) => Err(TestCaseError::fail(format!("handshake: {at}: {e}"))),
    }
}

/// Encrypts `chunks` with the agent's writer, one frame each; returns the frames.
fn encrypt(
    rt: &tokio::runtime::Runtime,
    client: Session,
    chunks: &[Vec<u8>],
) -> Result<Vec<Vec<u8>>, TestCaseError> {
    let mut frames = Vec::new();
    let mut wire = Vec::new();
    let (_, mut writer) = client.split(tokio::io::empty(), &mut wire);
    let mut ends = Vec::new();
    rt.block_on(async {
        for c in chunks {
            writer.write_all(c).await?;
            writer.flush().await?;
            ends.push(writer.frames());
        }
        io::Result::Ok(())
    })
    .map_err(|e| TestCaseError::fail(e.to_string()))?;
    drop(writer);
    prop_assert_eq!(ends.last().copied(), Some(chunks.len() as u64));
    let mut rest = &wire[..];
    while let Ok(Some((_, used))) = noise::parse_frame(rest, MAX_NOISE_MSG) {
        frames.push(rest[..used].to_vec());
        rest = &rest[used..];
    }
    prop_assert!(rest.is_empty() && frames.len() == chunks.len());
    Ok(frames)
}

/// Reads `wire` through the server's reader in reads of `sizes`: the plaintext it yielded,
/// how the stream ended, and whether a read after a failure failed again.
fn decrypt(
    rt: &tokio::runtime::Runtime,
    server: Session,
    wire: &[u8],
    sizes: &[usize],
) -> (Vec<u8>, io::Result<()>, bool) {
    let (mut reader, _) = server.split(Chunked::new(wire, sizes), tokio::io::sink());
    rt.block_on(async {
        let mut out = Vec::new();
        let mut buf = [0u8; 700];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) => return (out, Ok(()), true),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => {
                    let again = reader.read(&mut buf).await.is_err();
                    return (out, Err(e), again);
                }
            }
        }
    })
}

proptest! {
    #![proptest_config(config())]

    /// Frames from the agent's writer decrypt on the server to exactly what was written, in
    /// reads of any size; with frame edits (replayed, dropped, reordered) or byte edits (flips,
    /// insertions, deletions, truncation) the server only ever yields a prefix of what was
    /// written, ends cleanly only if what it got is the original cut at a frame boundary, and
    /// otherwise fails and stays failed.
    #[test]
    fn encrypted_frames_round_trip_and_refuse_tampering(
        private in any::<[u8; 32]>(),
        chunks in vec(vec(any::<u8>(), 1..400), 1..6),
        frame_edits in vec(frame_edit(), 0..2),
        edits in vec(mutation(), 0..3),
        sizes in read_sizes(),
    ) {
        let rt = runtime()?;
        let (client, server) = session_pair(private)?;
        let frames = encrypt(&rt, client, &chunks)?;
        let original = frames.concat();
        let plain = chunks.concat();
        let mut edited = frames.clone();
        for e in &frame_edits {
            match e {
                FrameEdit::Duplicate(i) if !edited.is_empty() => {
                    let f = i.get(&edited).clone();
                    edited.insert(i.index(edited.len()), f);
                }
                FrameEdit::Drop(i) if !edited.is_empty() => {
                    edited.remove(i.index(edited.len()));
                }
                FrameEdit::Swap(a, b) if !edited.is_empty() => {
                    let (a, b) = (a.index(edited.len()), b.index(edited.len()));
                    edited.swap(a, b);
                }
                _ => {}
            }
        }
        let wire = mutated(&edited.concat(), &edits);
        let (out, end, again) = decrypt(&rt, server, &wire, &sizes);
        prop_assert!(plain.starts_with(&out), "yielded {} bytes not written", out.len());
        let boundaries: Vec<usize> = (0..=frames.len()).map(|n| frames[..n].concat().len()).collect();
        let clean_cut = original.starts_with(&wire) && boundaries.contains(&wire.len());
        if clean_cut {
            prop_assert!(end.is_ok(), "{:?}", end);
            let n = boundaries.iter().position(|&b| b == wire.len()).unwrap_or(0);
            prop_assert_eq!(out, chunks[..n].concat());
        } else {
            prop_assert!(end.is_err(), "an edited stream ended cleanly");
            prop_assert!(again, "a failed stream read again");
        }
    }

    /// Arbitrary bytes as the agent's ciphertext: never a byte of plaintext, and a failure
    /// unless the stream is empty.
    #[test]
    fn arbitrary_ciphertext_yields_nothing(
        private in any::<[u8; 32]>(),
        wire in prop_oneof![
            vec(any::<u8>(), 0..2_000),
            vec(vec(any::<u8>(), 0..300).prop_map(|b| noise::frame(&b).unwrap_or_default()), 0..5)
                .prop_map(|f| f.concat()),
        ],
        sizes in read_sizes(),
    ) {
        let rt = runtime()?;
        let (_, server) = session_pair(private)?;
        let (out, end, again) = decrypt(&rt, server, &wire, &sizes);
        prop_assert!(out.is_empty(), "{} bytes of plaintext from noise", out.len());
        prop_assert_eq!(end.is_ok(), wire.is_empty());
        prop_assert!(again);
    }
}
