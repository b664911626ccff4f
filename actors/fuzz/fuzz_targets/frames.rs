//! Bytes from the network → the server's frame decoder → the validator, as a Session runs
//! them: the first input byte picks the read size (so frames are split and coalesced at every
//! offset) and a small frame limit (so oversize lines are common). Properties beyond "never
//! panics, never hangs": the decode buffer never holds more than the limit plus one read, and a
//! hello that validates makes every later metrics frame validate or fail with an `Invalid`.
#![no_main]

use bytes::BytesMut;
use lanmon::codec::ServerCodec;
use lanmon::protocol::AgentFrame;
use lanmon::validate;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

/// Frame limit used here: small, so that the oversize paths are explored.
const MAX_LEN: usize = 512;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let read = usize::from(first % 64) + 1;
    let mut codec = ServerCodec::with_max_len(MAX_LEN);
    let mut buf = BytesMut::new();
    let mut hello = None;
    for chunk in rest.chunks(read) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(AgentFrame::Hello(h))) => {
                    if validate::hello(&h).is_ok() {
                        hello = Some(h);
                    }
                }
                Ok(Some(AgentFrame::Metrics(m))) => {
                    if let Some(h) = &hello {
                        let _ = validate::metrics(&m, h);
                    }
                }
                Ok(Some(AgentFrame::Bye(_))) => {}
                Ok(None) => break,
                // A Session ends the connection on any error.
                Err(_) => return,
            }
        }
        assert!(buf.len() <= MAX_LEN + 1 + read, "decode buffer grew to {}", buf.len());
    }
    let _ = codec.decode_eof(&mut buf);
});
