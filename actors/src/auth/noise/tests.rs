//! The handshake and the encrypted stream, in process: sans-I/O pairs and a loopback TCP pair.

use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{FramedRead, FramedWrite, LinesCodec};

use super::*;

fn server_id() -> ServerIdentity {
    ServerIdentity {
        keys: vec![StaticKeypair::generate().unwrap()],
        network_key: NetworkKey::generate().unwrap(),
    }
}

fn agent_with_token(id: &ServerIdentity) -> ClientConfig {
    ClientConfig {
        keypair: StaticKeypair::generate().unwrap(),
        pins: vec![id.keys[0].public()],
        network_key: Some(id.network_key.clone()),
    }
}

/// Runs the whole handshake in memory; returns both sessions and the agent's raw messages.
fn pair(id: &ServerIdentity, cfg: &ClientConfig) -> AuthResult<(Session, Accepted, Vec<u8>)> {
    let (client, out1) = ClientHandshake::start(cfg)?;
    check_preamble(&out1[..PREAMBLE.len()])?;
    let (m1, _) = parse_frame(&out1[PREAMBLE.len()..], MAX_HANDSHAKE_MSG)?.unwrap();
    let (server, out2) = ServerHandshake::respond(id, m1)?;
    let (m2, _) = parse_frame(&out2, MAX_HANDSHAKE_MSG)?.unwrap();
    let (out3, client_session) = client.finish(cfg, m2)?;
    let (m3, _) = parse_frame(&out3, MAX_HANDSHAKE_MSG)?.unwrap();
    let accepted = server.finish(id, m3)?;
    let mut recorded = out1;
    recorded.extend_from_slice(&out3);
    Ok((client_session, accepted, recorded))
}

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let client = client.unwrap();
    let server = accepted.unwrap().0;
    client.set_nodelay(true).unwrap();
    server.set_nodelay(true).unwrap();
    (client, server)
}

/// An agent with the right pin and network key completes the handshake over real TCP: each
/// side authenticates the other's static key, the proof verifies, and newline-JSON lines go
/// both ways through the unchanged line codec — with no plaintext on the wire.
#[tokio::test]
async fn loopback_handshake_and_lines_both_ways() {
    let id = server_id();
    let cfg = agent_with_token(&id);
    let (mut c, mut s) = tcp_pair().await;
    let (client, server) = tokio::join!(
        client_handshake(&mut c, &cfg),
        server_handshake(&mut s, &id)
    );
    let (client, server) = (client.unwrap(), server.unwrap());
    assert_eq!(client.remote_static, id.keys[0].public());
    assert_eq!(server.session.remote_static, cfg.keypair.public());
    assert_eq!(server.proof, Proof::Valid);
    assert_eq!(server.server_key_index, 0);
    assert_eq!(client.handshake_hash, server.session.handshake_hash);

    // Tap the agent → server direction: a relay that records every byte.
    let (c_read, c_write) = c.into_split();
    let (s_read, s_write) = s.into_split();
    let (mut tap_in, tap_out) = tcp_pair().await;
    let relay = tokio::spawn(async move {
        let mut s_read = s_read;
        let mut seen = Vec::new();
        let (_r, mut w) = tap_out.into_split();
        let mut buf = [0u8; 4096];
        loop {
            let n = s_read.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            w.write_all(&buf[..n]).await.unwrap();
        }
        seen
    });
    let (tap_read, _tap_w) = tap_in.split();
    let (cr, cw) = client.split(c_read, c_write);
    let (sr, sw) = server.session.split(tap_read, s_write);
    let mut agent_out = FramedWrite::new(cw, LinesCodec::new());
    let mut server_in = FramedRead::new(sr, LinesCodec::new());
    let mut server_out = FramedWrite::new(sw, LinesCodec::new());
    let mut agent_in = FramedRead::new(cr, LinesCodec::new());

    let hello = r#"{"type":"hello","hostname":"secret-host-name","agent_id":"a1b2"}"#;
    agent_out.send(hello).await.unwrap();
    agent_out.send("second").await.unwrap();
    assert_eq!(server_in.next().await.unwrap().unwrap(), hello);
    assert_eq!(server_in.next().await.unwrap().unwrap(), "second");
    server_out.send(r#"{"type":"welcome"}"#).await.unwrap();
    assert_eq!(
        agent_in.next().await.unwrap().unwrap(),
        r#"{"type":"welcome"}"#
    );

    drop(agent_out); // closes the agent's write half: the relay sees EOF
    drop(agent_in);
    let seen = relay.await.unwrap();
    assert!(!seen.is_empty());
    let text = String::from_utf8_lossy(&seen);
    assert!(
        !text.contains("secret-host-name") && !text.contains("a1b2") && !text.contains("hello")
    );
}

/// With a wrong pin the agent aborts after message 2: the fake server received exactly the
/// preamble and message 1 (no message 3, no application byte), and the error names both keys.
#[tokio::test]
async fn wrong_pin_sends_nothing_beyond_message_1() {
    let real = server_id();
    let fake = server_id(); // another key, even with the real network key
    let fake = ServerIdentity {
        keys: fake.keys,
        network_key: real.network_key.clone(),
    };
    let cfg = agent_with_token(&real);
    let (mut c, s) = tcp_pair().await;
    let fake_server = tokio::spawn(async move {
        let mut s = s;
        let mut pre = [0u8; PREAMBLE.len()];
        s.read_exact(&mut pre).await.unwrap();
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await.unwrap();
        let mut m1 = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut m1).await.unwrap();
        let (_hs, out2) = ServerHandshake::respond(&fake, &m1).unwrap();
        s.write_all(&out2).await.unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        (m1.len(), rest)
    });
    let err = client_handshake(&mut c, &cfg).await.unwrap_err();
    drop(c);
    let (m1_len, rest) = fake_server.await.unwrap();
    assert!(matches!(err, AuthError::PinMismatch { .. }), "{err}");
    assert!(err.to_string().contains("SHA256:"), "{err}");
    assert_eq!(
        m1_len,
        DH_LEN + PIN_HINT_LEN,
        "message 1 is the ephemeral key and the pin hint"
    );
    assert!(rest.is_empty(), "the agent sent {} more bytes", rest.len());
}

/// A recorded agent handshake replayed to a new server session fails at message 3 (the
/// server's new ephemeral key changes every derived key).
#[test]
fn replayed_client_handshake_fails() {
    let id = server_id();
    let cfg = agent_with_token(&id);
    let (_, _, recorded) = pair(&id, &cfg).unwrap();
    assert!(server_handshake_from_bytes(&id, &recorded).is_err());
    // The same bytes from a fresh handshake's own messages are accepted (the check can pass).
    let (client, out1) = ClientHandshake::start(&cfg).unwrap();
    let (m1, _) = parse_frame(&out1[PREAMBLE.len()..], MAX_HANDSHAKE_MSG)
        .unwrap()
        .unwrap();
    let (server, out2) = ServerHandshake::respond(&id, m1).unwrap();
    let (m2, _) = parse_frame(&out2, MAX_HANDSHAKE_MSG).unwrap().unwrap();
    let (out3, _) = client.finish(&cfg, m2).unwrap();
    let (m3, _) = parse_frame(&out3, MAX_HANDSHAKE_MSG).unwrap().unwrap();
    assert!(server.finish(&id, m3).is_ok());
}

/// Without a token the agent trusts the key it sees (proof absent); with another server's
/// network key its proof is invalid, not valid.
#[test]
fn proof_absent_and_invalid() {
    let id = server_id();
    let tofu = ClientConfig {
        keypair: StaticKeypair::generate().unwrap(),
        pins: vec![],
        network_key: None,
    };
    let (session, accepted, _) = pair(&id, &tofu).unwrap();
    assert_eq!(session.remote_static, id.keys[0].public());
    assert_eq!(accepted.proof, Proof::Absent);
    let mut other = agent_with_token(&id);
    other.network_key = Some(NetworkKey::generate().unwrap());
    assert_eq!(pair(&id, &other).unwrap().1.proof, Proof::Invalid);
}

/// During a rotation's grace period an agent pinned to the old key is shown the old key and
/// one pinned to the new key the new one; after the grace the old pin is refused.
#[test]
fn rotation_grace_then_old_pin_refused() {
    let old = server_id();
    let new_key = StaticKeypair::generate().unwrap();
    let during = ServerIdentity {
        keys: vec![new_key.clone(), old.keys[0].clone()],
        network_key: old.network_key.clone(),
    };
    let pinned_old = agent_with_token(&old);
    let (s, a, _) = pair(&during, &pinned_old).unwrap();
    assert_eq!(
        (s.remote_static, a.server_key_index),
        (old.keys[0].public(), 1)
    );
    let mut pinned_new = agent_with_token(&old);
    pinned_new.pins = vec![new_key.public()];
    let (s, a, _) = pair(&during, &pinned_new).unwrap();
    assert_eq!((s.remote_static, a.server_key_index), (new_key.public(), 0));
    let after = ServerIdentity {
        keys: vec![new_key],
        network_key: old.network_key.clone(),
    };
    assert!(matches!(
        pair(&after, &pinned_old),
        Err(AuthError::PinMismatch { .. })
    ));
}

/// Writes `chunks` through a writer into memory and returns the wire bytes.
async fn encrypt(session: &Session, chunks: &[&[u8]]) -> Vec<u8> {
    let (_r, mut w) = session.duplicate().split(tokio::io::empty(), Vec::new());
    for c in chunks {
        w.write_all(c).await.unwrap();
    }
    w.flush().await.unwrap();
    w.inner
}

async fn decrypt(session: &Session, wire: Vec<u8>) -> std::io::Result<Vec<u8>> {
    let (mut r, _w) = session
        .duplicate()
        .split(std::io::Cursor::new(wire), tokio::io::sink());
    let mut out = Vec::new();
    r.read_to_end(&mut out).await?;
    Ok(out)
}

/// Large writes are cut into frames of at most MAX_PLAINTEXT and arrive intact.
#[tokio::test]
async fn large_payload_is_chunked_and_intact() {
    let id = server_id();
    let (client, server, _) = pair(&id, &agent_with_token(&id)).unwrap();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let wire = encrypt(&client, &[&big]).await;
    let frames = big.len().div_ceil(MAX_PLAINTEXT);
    assert_eq!(wire.len(), big.len() + frames * (2 + TAG_LEN));
    assert_eq!(decrypt(&server.session, wire).await.unwrap(), big);
}

/// A flipped bit, a replayed frame, a reordered pair and a truncated frame all fail.
#[tokio::test]
async fn tampered_replayed_reordered_truncated_fail() {
    let id = server_id();
    let (client, server, _) = pair(&id, &agent_with_token(&id)).unwrap();
    let wire = encrypt(&client, &[b"first line\n", b"second line\n"]).await;
    let first_len = 2 + b"first line\n".len() + TAG_LEN;
    assert_eq!(
        decrypt(&server.session, wire.clone()).await.unwrap(),
        b"first line\nsecond line\n"
    );
    for i in [0usize, 1, 2, 10, first_len - 1] {
        let mut bad = wire.clone();
        bad[i] ^= 0x04;
        assert!(decrypt(&server.session, bad).await.is_err(), "flip at {i}");
    }
    let (one, two) = wire.split_at(first_len);
    let replayed = [one, one].concat();
    assert!(decrypt(&server.session, replayed).await.is_err());
    let reordered = [two, one].concat();
    assert!(decrypt(&server.session, reordered).await.is_err());
    let truncated = wire[..wire.len() - 1].to_vec();
    let err = decrypt(&server.session, truncated).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    // The agent's own frames cannot be reflected back to it as the server's.
    assert!(decrypt(&client, wire).await.is_err());
}

/// Arbitrary and mutated handshake input is refused without panicking.
#[test]
fn handshake_parser_survives_junk() {
    let id = server_id();
    let cfg = agent_with_token(&id);
    let (_, _, recorded) = pair(&id, &cfg).unwrap();
    let mut inputs: Vec<Vec<u8>> = vec![
        vec![],
        b"LMN2".to_vec(),
        b"LMN2\x02".to_vec(),
        b"{\"type\":\"hello\"}\n".to_vec(),
        [&PREAMBLE[..], &[0xff, 0xff]].concat(),
        [&PREAMBLE[..], &[0, 0, 0, 0]].concat(),
    ];
    // Every cut and flip in the framing bytes; a sample inside the keys and ciphertexts (each
    // one costs a handshake, slow in debug builds).
    let sample =
        |i: usize| i < PREAMBLE.len() + 3 || i.is_multiple_of(5) || i + 1 == recorded.len();
    for cut in (0..recorded.len()).filter(|&i| sample(i)) {
        inputs.push(recorded[..cut].to_vec());
    }
    for i in (0..recorded.len()).filter(|&i| sample(i)) {
        let mut m = recorded.clone();
        m[i] ^= 0x80;
        inputs.push(m);
    }
    for input in inputs {
        assert!(server_handshake_from_bytes(&id, &input).is_err());
    }
    assert!(matches!(
        parse_frame(&[0xff, 0xff], 1024),
        Err(AuthError::FrameTooLong { len: 65535, .. })
    ));
    assert!(parse_msg1_payload(&[1, 2, 3]).is_err());
    assert!(parse_msg3_payload(&[0; 31]).is_err());
}

/// A peer that opens a connection and says nothing is dropped at the deadline (server side),
/// and a server that never answers message 1 times the agent out.
#[tokio::test]
async fn silent_peers_time_out() {
    let id = server_id();
    let limit = std::time::Duration::from_millis(200);
    let (c, mut s) = tcp_pair().await;
    let err = server_handshake_within(&mut s, &id, limit)
        .await
        .unwrap_err();
    assert!(
        matches!(err, AuthError::HandshakeTimeout(d) if d == limit),
        "{err}"
    );
    drop(c);
    let (mut c, _s) = tcp_pair().await;
    let err = client_handshake_within(&mut c, &agent_with_token(&id), limit)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::HandshakeTimeout(_)), "{err}");
}

/// Counts the writes that reach the socket.
struct CountingWriter {
    writes: Vec<usize>,
}

impl tokio::io::AsyncWrite for CountingWriter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.writes.push(buf.len());
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Each frame (length and ciphertext together) reaches the socket in exactly one write —
/// the Nagle pitfall — and the handshake's first flight is one buffer too.
#[tokio::test]
async fn one_write_per_frame() {
    let id = server_id();
    let cfg = agent_with_token(&id);
    let (client, _, _) = pair(&id, &cfg).unwrap();
    let (_r, mut w) = client.split(tokio::io::empty(), CountingWriter { writes: vec![] });
    w.write_all(b"{\"type\":\"metrics\"}\n").await.unwrap();
    w.write_all(&vec![b'x'; MAX_PLAINTEXT + 10]).await.unwrap();
    w.flush().await.unwrap();
    assert_eq!(
        w.inner.writes,
        vec![
            2 + 19 + TAG_LEN,
            2 + MAX_PLAINTEXT + TAG_LEN,
            2 + 10 + TAG_LEN
        ]
    );
    let (_, out1) = ClientHandshake::start(&cfg).unwrap();
    assert_eq!(out1.len(), PREAMBLE.len() + 2 + DH_LEN + PIN_HINT_LEN);
}

/// Handshake CPU per connection, both sides, printed (`cargo test -p lanmon --release --lib
/// handshake_cpu -- --ignored --nocapture`).
#[test]
#[ignore = "benchmark: prints a figure"]
fn handshake_cpu() {
    let id = server_id();
    let cfg = agent_with_token(&id);
    for _ in 0..20 {
        pair(&id, &cfg).unwrap();
    }
    let n = 500;
    let cpu_before = thread_cpu_ns();
    let start = Instant::now();
    for _ in 0..n {
        pair(&id, &cfg).unwrap();
    }
    let wall = start.elapsed() / n;
    let cpu = cpu_before
        .zip(thread_cpu_ns())
        .map(|(a, b)| std::time::Duration::from_nanos((b - a) / u64::from(n)));
    println!(
        "handshake (agent + server, {NOISE_PARAMS}): CPU {cpu:?}, wall {wall:?} per connection"
    );
}

/// This thread's CPU time in ns (Linux: `/proc/thread-self/schedstat`, first field).
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
