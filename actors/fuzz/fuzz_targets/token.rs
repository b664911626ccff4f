//! Text typed or pasted as `agent --join TOKEN` → the join token decoder: never panics;
//! whatever decodes encodes back to a token that decodes to the same value (case, hyphens and
//! white space aside).
#![no_main]

use lanmon::auth::token::JoinToken;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(token) = JoinToken::decode(&text) {
        let again = token.encode();
        assert_eq!(JoinToken::decode(&again).as_ref(), Ok(&token));
        assert!(again.starts_with(lanmon::auth::token::TOKEN_PREFIX));
    }
    let _ = lanmon::auth::fingerprint::Fingerprint::parse(&text);
});
