//! One UDP datagram → the agent's beacon parser: never panics; whatever it accepts encodes
//! back to a datagram that parses to the same beacon (and stays under the size limit).
#![no_main]

use lanmon::discovery::Beacon;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(beacon) = Beacon::decode(data) {
        let again = beacon.encode();
        assert_eq!(Beacon::decode(&again).ok(), Some(beacon));
    }
});
