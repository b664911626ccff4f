//! One UDP datagram → the protocol-2 agent's beacon parser and its acceptance rule (MAC,
//! pinned fingerprint, freshness, replay): never panics; whatever parses encodes back to a
//! datagram that parses to the same beacon; a beacon the verifier accepts once is refused the
//! second time (replay).
#![no_main]

use lanmon::auth::beacon_auth::{BeaconVerifier, SignedBeacon};
use lanmon::auth::fingerprint::Fingerprint;
use lanmon::auth::keys::{NetworkKey, PublicKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(beacon) = SignedBeacon::parse(data) else {
        return;
    };
    let again = beacon.encode();
    assert_eq!(SignedBeacon::parse(&again).ok().as_ref(), Some(&beacon));
    let _ = beacon.fingerprint();
    let pin = Fingerprint::of(&PublicKey([1; 32]));
    let mut verifier = BeaconVerifier::new(&NetworkKey([9; 32]), vec![pin]);
    let now = beacon.ts_ms.unwrap_or(0);
    if verifier.check(&beacon, now).is_ok() {
        assert!(verifier.check(&beacon, now).is_err(), "a replay was accepted");
    }
});
