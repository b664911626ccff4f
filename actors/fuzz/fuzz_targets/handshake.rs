//! Bytes from the network → the server's side of the Noise handshake (preamble, message 1 with
//! its pin hint, message 3 with its join proof), as the Listener runs it: never panics, never
//! hangs, whatever the input; frames over the handshake limit are refused before they are
//! buffered; an input accepted as a finished handshake names an agent key (it cannot be
//! produced without the agent's ephemeral and static private keys, so in practice only the
//! error paths are reached). The frame splitter and the payload parsers are exercised alone
//! too.
#![no_main]

use std::sync::LazyLock;

use lanmon::auth::keys::{NetworkKey, StaticKeypair};
use lanmon::auth::noise::{self, ServerIdentity};
use libfuzzer_sys::fuzz_target;

/// A fixed server (current and previous key, as during a rotation): reproducible runs.
static ID: LazyLock<ServerIdentity> = LazyLock::new(|| ServerIdentity {
    keys: vec![
        StaticKeypair::from_private([1; 32]),
        StaticKeypair::from_private([2; 32]),
    ],
    network_key: NetworkKey([3; 32]),
});

fuzz_target!(|data: &[u8]| {
    if let Ok(accepted) = noise::server_handshake_from_bytes(&ID, data) {
        assert!(accepted.server_key_index < ID.keys.len());
    }
    if let Ok(Some((body, used))) = noise::parse_frame(data, noise::MAX_HANDSHAKE_MSG) {
        assert!(body.len() <= noise::MAX_HANDSHAKE_MSG && used == body.len() + 2);
    }
    let _ = noise::parse_msg1_payload(data);
    let _ = noise::parse_msg3_payload(data);
    let _ = noise::check_preamble(data);
    let _ = lanmon::auth::sniff::sniff(data);
});
