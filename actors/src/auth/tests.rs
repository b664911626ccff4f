//! The pieces together, without sockets: handshakes feeding enrollment decisions, and bounded
//! property tests that no parser of network or user input panics.

use proptest::prelude::*;

use crate::auth::beacon_auth::SignedBeacon;
use crate::auth::enroll::{Claim, Decision, Enrollment, Policy};
use crate::auth::keys::{NetworkKey, StaticKeypair};
use crate::auth::noise::{
    self, Accepted, ClientConfig, ClientHandshake, MAX_HANDSHAKE_MSG, PREAMBLE, ServerHandshake,
    ServerIdentity,
};
use crate::auth::sniff::sniff;
use crate::auth::token::JoinToken;

/// One in-memory handshake; the server's view.
fn handshake(id: &ServerIdentity, cfg: &ClientConfig) -> Accepted {
    let (client, out1) = ClientHandshake::start(cfg).unwrap();
    let (m1, _) = noise::parse_frame(&out1[PREAMBLE.len()..], MAX_HANDSHAKE_MSG)
        .unwrap()
        .unwrap();
    let (server, out2) = ServerHandshake::respond(id, m1).unwrap();
    let (m2, _) = noise::parse_frame(&out2, MAX_HANDSHAKE_MSG)
        .unwrap()
        .unwrap();
    let (out3, _) = client.finish(cfg, m2).unwrap();
    let (m3, _) = noise::parse_frame(&out3, MAX_HANDSHAKE_MSG)
        .unwrap()
        .unwrap();
    server.finish(id, m3).unwrap()
}

fn admit(reg: &mut Enrollment, a: &Accepted, agent_id: &str) -> Decision {
    reg.admit(
        Claim {
            key: &a.session.remote_static,
            proof: a.proof,
            agent_id,
            name: agent_id,
            hostname: "h",
            ip: "127.0.0.1",
        },
        1,
    )
}

/// Token → enrolled at once; no token → pending, then approved by the operator; an insider
/// with the token but its own key cannot take an enrolled id; a revoked agent is refused even
/// though its handshake and proof are valid.
#[test]
fn handshakes_feed_enrollment() {
    let id = ServerIdentity {
        keys: vec![StaticKeypair::generate().unwrap()],
        network_key: NetworkKey::generate().unwrap(),
    };
    let token = JoinToken::decode(
        &JoinToken {
            server_key: id.keys[0].public(),
            network_key: id.network_key.clone(),
            server_id: "srv".into(),
        }
        .encode(),
    )
    .unwrap();
    let with_token = |kp: StaticKeypair| ClientConfig {
        keypair: kp,
        pins: vec![token.server_key],
        network_key: Some(token.network_key.clone()),
    };
    let mut reg = Enrollment::new(Policy::Manual);

    let web1 = with_token(StaticKeypair::generate().unwrap());
    assert_eq!(
        admit(&mut reg, &handshake(&id, &web1), "web-1"),
        Decision::Accept
    );

    let tofu = ClientConfig {
        keypair: StaticKeypair::generate().unwrap(),
        pins: vec![],
        network_key: None,
    };
    assert_eq!(
        admit(&mut reg, &handshake(&id, &tofu), "db-1"),
        Decision::Pending
    );
    reg.approve("db-1", 2).unwrap();
    assert_eq!(
        admit(&mut reg, &handshake(&id, &tofu), "db-1"),
        Decision::Accept
    );

    let insider = with_token(StaticKeypair::generate().unwrap());
    let d = admit(&mut reg, &handshake(&id, &insider), "web-1");
    assert!(matches!(d, Decision::IdentityMismatch(_)), "{d:?}");

    reg.revoke("web-1", 3).unwrap();
    assert_eq!(
        admit(&mut reg, &handshake(&id, &web1), "web-1"),
        Decision::Revoked
    );
}

/// One server identity for all property cases (a key pair costs a scalar multiplication).
fn fixed_identity() -> &'static ServerIdentity {
    static ID: std::sync::OnceLock<ServerIdentity> = std::sync::OnceLock::new();
    ID.get_or_init(|| ServerIdentity {
        keys: vec![StaticKeypair::from_private([3; 32])],
        network_key: NetworkKey([4; 32]),
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic the beacon, token, frame and sniffing parsers.
    #[test]
    fn parsers_are_total(bytes in proptest::collection::vec(any::<u8>(), 0..1100)) {
        let _ = SignedBeacon::parse(&bytes);
        let _ = noise::parse_frame(&bytes, MAX_HANDSHAKE_MSG);
        let _ = noise::parse_msg1_payload(&bytes);
        let _ = noise::parse_msg3_payload(&bytes);
        let _ = sniff(&bytes);
        let _ = JoinToken::decode(&String::from_utf8_lossy(&bytes));
    }

    /// Token-shaped text (the prefix and base32-ish symbols) never panics nor decodes to a
    /// token unless its checksum holds.
    #[test]
    fn token_like_text_is_refused(body in "[0-9A-Za-z\\-]{0,160}") {
        let text = format!("lm2-{body}");
        if let Ok(t) = JoinToken::decode(&text) {
            prop_assert_eq!(JoinToken::decode(&t.encode()), Ok(t));
        }
    }

    /// Handshake input behind a valid preamble and frame lengths (so it reaches Noise) is
    /// refused without a panic.
    #[test]
    fn handshake_input_is_total(
        m1 in proptest::collection::vec(any::<u8>(), 0..80),
        m3 in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        let id = fixed_identity();
        let mut input = PREAMBLE.to_vec();
        for m in [&m1, &m3] {
            input.extend_from_slice(&(m.len() as u16).to_be_bytes());
            input.extend_from_slice(m);
        }
        prop_assert!(noise::server_handshake_from_bytes(id, &input).is_err());
    }
}
