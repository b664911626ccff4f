//! The v2 connection: a Noise `XX` handshake (X25519, ChaChaPoly, SHA-256, via `snow`), then
//! an encrypted, authenticated byte stream ([`NoiseReader`] / [`NoiseWriter`]) on which the
//! newline-JSON codec of [`crate::codec`] runs unchanged.
//!
//! # Wire form
//!
//! ```text
//! agent → server   PREAMBLE ("LMN2" 0x01) | frame(msg1: e, payload = [pin hint (8)]?)
//! server → agent   frame(msg2: e, ee, s, es, payload = empty)
//! agent → server   frame(msg3: s, se, payload = [join proof (32)]?)
//! both ways        frame(transport message) …      frame = u16 BE length | bytes (≤ 65535)
//! ```
//!
//! The preamble lets one port accept v1 (plaintext, first byte `{`) and v2 agents
//! ([`crate::auth::sniff`]); it is also mixed into the handshake as the Noise prologue, with
//! the protocol name, so a downgrade or a cross-protocol replay fails the handshake.
//!
//! # Why XX, and the join proof in message 3
//!
//! One pattern serves both kinds of agent. An agent with a join token has pinned the server's
//! static key: it checks the key in message 2 *before* it sends message 3, so a server that
//! cannot prove it holds the pinned key gets nothing but the agent's ephemeral key and an
//! 8-byte pin hint (public: a prefix of the fingerprint beacons carry). An agent without a
//! token trusts the key it sees (and shows its fingerprint) and is enrolled as *pending*.
//! `XXpsk3` would need the network key on both sides for every agent, so an agent without a
//! token would need a second pattern, and a wrong key would show up only as an opaque
//! decryption failure of message 3. Instead the agent proves it holds the network key with
//! `join proof = HMAC-SHA256(HMAC-SHA256(network key, "lanmon join proof v2"), h2 || s_agent)`,
//! where `h2` is the handshake hash after message 2 (it binds both ephemerals, the server's
//! static key and the prologue, so the proof is good for this session only) and `s_agent` the
//! agent's static key (so it is bound to the key the server will enroll). It travels
//! encrypted in message 3, to the authenticated server only. The server learns "proof valid,
//! invalid or absent" together with the agent's key when the handshake ends, before any
//! application byte; enrollment ([`crate::auth::enroll`]) decides from that.
//!
//! # Transport
//!
//! Each direction has its own key and nonce counter (snow's `StatelessTransportState`, shared
//! by the two halves, each half counting its own nonces), so the halves run on different
//! tasks without a lock. A plaintext chunk is at most [`MAX_PLAINTEXT`] bytes; each frame goes
//! out in a single `write` of length and ciphertext together (PITFALLS: a separate length
//! write cost 88 ms per round trip through Nagle and delayed ACKs; set `TCP_NODELAY` too).
//! A tampered, replayed, reordered or truncated frame fails decryption: the reader returns an
//! `InvalidData` error and stays failed, and the connection is closed by its owner.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use snow::{Builder, HandshakeState, StatelessTransportState};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::io::poll_read_buf;

use crate::auth::error::{AuthError, AuthResult};
use crate::auth::fingerprint::Fingerprint;
use crate::auth::keys::{NetworkKey, PublicKey, StaticKeypair};
use crate::auth::mac;

/// The Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_SHA256";
/// First bytes of every v2 connection: `LMN2` and the handshake revision.
pub const PREAMBLE: [u8; 5] = *b"LMN2\x01";
/// Mixed into the handshake hash (with [`PREAMBLE`]).
pub const PROLOGUE_LABEL: &[u8] = b"lanmon protocol 2\n";
/// Largest Noise message (the Noise limit; also what a u16 length can say).
pub const MAX_NOISE_MSG: usize = 65_535;
/// AEAD tag length.
pub const TAG_LEN: usize = 16;
/// Largest plaintext per transport frame.
pub const MAX_PLAINTEXT: usize = MAX_NOISE_MSG - TAG_LEN;
/// Largest handshake message either side accepts (they are < 200 bytes today).
pub const MAX_HANDSHAKE_MSG: usize = 1024;
/// The whole handshake must finish within this, or the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Length of the pin hint in message 1.
pub const PIN_HINT_LEN: usize = 8;
/// Length of the join proof in message 3.
pub const JOIN_PROOF_LEN: usize = 32;
/// Label of the key derived from the network key for join proofs.
pub const JOIN_PROOF_LABEL: &str = "lanmon join proof v2";

const DH_LEN: usize = 32;

fn prologue() -> Vec<u8> {
    [PROLOGUE_LABEL, &PREAMBLE[..]].concat()
}

fn builder<'a>(prologue: &'a [u8]) -> AuthResult<Builder<'a>> {
    let params = NOISE_PARAMS
        .parse()
        .map_err(|_| AuthError::Other(format!("snow does not support {NOISE_PARAMS}")))?;
    Ok(Builder::new(params).prologue(prologue)?)
}

/// `len (u16 BE) | body` in one buffer.
pub fn frame(body: &[u8]) -> AuthResult<Vec<u8>> {
    let len = u16::try_from(body.len()).map_err(|_| AuthError::FrameTooLong {
        len: body.len(),
        max: MAX_NOISE_MSG,
    })?;
    let mut out = Vec::with_capacity(2 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

/// Splits one frame off the front of `buf`: `Ok(None)` if more bytes are needed, else the
/// body and the bytes consumed. Frames over `max` are refused before they are buffered.
/// Pure and total (fuzz target).
pub fn parse_frame(buf: &[u8], max: usize) -> AuthResult<Option<(&[u8], usize)>> {
    let Some(head) = buf.get(..2) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([head[0], head[1]]));
    if len > max {
        return Err(AuthError::FrameTooLong { len, max });
    }
    Ok(buf.get(2..2 + len).map(|body| (body, 2 + len)))
}

/// The join proof for a session (see the module docs).
pub fn join_proof(network_key: &NetworkKey, h2: &[u8], agent_key: &PublicKey) -> [u8; 32] {
    let k = network_key.derive(JOIN_PROOF_LABEL);
    mac::hmac_sha256(&k, &[h2, agent_key.as_bytes()])
}

/// Message 1's payload: the pin hint, if the agent has pinned a key. Pure (fuzz target).
pub fn parse_msg1_payload(payload: &[u8]) -> AuthResult<Option<[u8; PIN_HINT_LEN]>> {
    match payload.len() {
        0 => Ok(None),
        PIN_HINT_LEN => Ok(payload.try_into().ok()),
        _ => Err(AuthError::BadHandshake(
            "message 1 payload of a wrong length",
        )),
    }
}

/// Message 3's payload: the join proof, if the agent holds a token. Pure (fuzz target).
pub fn parse_msg3_payload(payload: &[u8]) -> AuthResult<Option<[u8; JOIN_PROOF_LEN]>> {
    match payload.len() {
        0 => Ok(None),
        JOIN_PROOF_LEN => Ok(payload.try_into().ok()),
        _ => Err(AuthError::BadHandshake(
            "message 3 payload of a wrong length",
        )),
    }
}

/// An established session: the keys of both directions and who is on the other side.
/// Not `Clone`, and [`Session::split`] consumes it: two writers on one key would reuse nonces,
/// which breaks the cipher's confidentiality.
pub struct Session {
    transport: Arc<StatelessTransportState>,
    /// The peer's static key, authenticated by the handshake.
    pub remote_static: PublicKey,
    /// The final handshake hash: unique per session (channel binding).
    pub handshake_hash: [u8; 32],
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("remote_static", &self.remote_static)
            .finish_non_exhaustive()
    }
}

impl Session {
    fn from_handshake(hs: HandshakeState) -> AuthResult<Self> {
        let remote_static = hs
            .get_remote_static()
            .and_then(PublicKey::from_slice)
            .ok_or(AuthError::BadHandshake("no remote static key"))?;
        let mut handshake_hash = [0u8; 32];
        let h = hs.get_handshake_hash();
        if h.len() != 32 {
            return Err(AuthError::BadHandshake("unexpected handshake hash length"));
        }
        handshake_hash.copy_from_slice(h);
        Ok(Session {
            transport: Arc::new(hs.into_stateless_transport_mode()?),
            remote_static,
            handshake_hash,
        })
    }

    /// The two halves of the encrypted stream over `read` and `write` (once per session).
    pub fn split<R, W>(self, read: R, write: W) -> (NoiseReader<R>, NoiseWriter<W>) {
        (
            NoiseReader::new(read, self.transport.clone()),
            NoiseWriter::new(write, self.transport),
        )
    }

    /// A second handle on the same keys: tests only (e.g. to decrypt one capture twice).
    #[cfg(test)]
    pub(crate) fn duplicate(&self) -> Session {
        Session {
            transport: self.transport.clone(),
            remote_static: self.remote_static,
            handshake_hash: self.handshake_hash,
        }
    }
}

// ---- Agent side (initiator) --------------------------------------------------------------------

/// What an agent brings to a handshake.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub keypair: StaticKeypair,
    /// Server keys the agent accepts (from its token, or learned by a rotation notice).
    /// Empty: trust on first use — any server key is accepted and its fingerprint reported.
    pub pins: Vec<PublicKey>,
    /// From the join token: makes the agent send a join proof.
    pub network_key: Option<NetworkKey>,
}

/// The agent's handshake between message 1 and message 2 (sans I/O).
pub struct ClientHandshake {
    hs: HandshakeState,
}

impl ClientHandshake {
    /// Starts the handshake: returns the bytes to send (preamble and message 1, in one
    /// buffer so they leave in one write).
    pub fn start(cfg: &ClientConfig) -> AuthResult<(Self, Vec<u8>)> {
        let prologue = prologue();
        let mut hs = builder(&prologue)?
            .local_private_key(cfg.keypair.private_bytes())?
            .build_initiator()?;
        let hint = cfg.pins.first().map(|k| Fingerprint::of(k).hint());
        let payload: &[u8] = hint.as_ref().map_or(&[], |h| &h[..]);
        let mut msg = [0u8; MAX_HANDSHAKE_MSG];
        let n = hs.write_message(payload, &mut msg)?;
        let mut out = PREAMBLE.to_vec();
        out.extend_from_slice(&frame(&msg[..n])?);
        Ok((ClientHandshake { hs }, out))
    }

    /// Reads message 2 and checks the server's key against the pins; only if it passes,
    /// writes message 3. Returns message 3 (framed) and the session.
    pub fn finish(mut self, cfg: &ClientConfig, msg2: &[u8]) -> AuthResult<(Vec<u8>, Session)> {
        let mut payload = [0u8; MAX_HANDSHAKE_MSG];
        self.hs.read_message(msg2, &mut payload)?;
        let server_key = self
            .hs
            .get_remote_static()
            .and_then(PublicKey::from_slice)
            .ok_or(AuthError::BadHandshake("message 2 without a server key"))?;
        if !cfg.pins.is_empty() && !cfg.pins.contains(&server_key) {
            return Err(AuthError::PinMismatch {
                expected: cfg
                    .pins
                    .iter()
                    .map(|k| Fingerprint::of(k).to_string())
                    .collect::<Vec<_>>()
                    .join(" or "),
                got: Fingerprint::of(&server_key).to_string(),
            });
        }
        let proof = cfg
            .network_key
            .as_ref()
            .map(|nk| join_proof(nk, self.hs.get_handshake_hash(), &cfg.keypair.public()));
        let mut msg = [0u8; MAX_HANDSHAKE_MSG];
        let n = self
            .hs
            .write_message(proof.as_ref().map_or(&[], |p| &p[..]), &mut msg)?;
        let out = frame(&msg[..n])?;
        Ok((out, Session::from_handshake(self.hs)?))
    }
}

// ---- Server side (responder) -------------------------------------------------------------------

/// The server's keys: `keys[0]` is the current key; later ones are previous keys still in
/// their rotation grace period ([`crate::auth::rotation`]).
#[derive(Debug, Clone)]
pub struct ServerIdentity {
    pub keys: Vec<StaticKeypair>,
    pub network_key: NetworkKey,
}

/// What the join proof in message 3 said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// No proof: an agent without a token.
    Absent,
    /// The agent holds this server's network key.
    Valid,
    /// A proof that does not verify: a token of another server, or an old network key.
    Invalid,
}

/// A finished server-side handshake.
#[derive(Debug)]
pub struct Accepted {
    /// `session.remote_static` is the agent's key.
    pub session: Session,
    pub proof: Proof,
    /// Which of [`ServerIdentity::keys`] the agent was shown (0: the current key).
    pub server_key_index: usize,
}

/// The server's handshake between message 2 and message 3 (sans I/O).
pub struct ServerHandshake {
    hs: HandshakeState,
    h2: Vec<u8>,
    key_index: usize,
}

/// Checks the preamble (exactly [`PREAMBLE`]'s length of bytes).
pub fn check_preamble(bytes: &[u8]) -> AuthResult<()> {
    if bytes.get(..4) != Some(&PREAMBLE[..4]) {
        return Err(AuthError::BadPreamble("no LMN2 magic"));
    }
    if bytes.get(4) != Some(&PREAMBLE[4]) {
        return Err(AuthError::BadPreamble("unsupported handshake revision"));
    }
    Ok(())
}

impl ServerHandshake {
    /// Reads message 1 and writes message 2 (framed), presenting the key the agent's pin hint
    /// names (during a rotation), else the current key.
    pub fn respond(id: &ServerIdentity, msg1: &[u8]) -> AuthResult<(Self, Vec<u8>)> {
        // In XX, message 1 is `e` and a cleartext payload: the hint can be read before the
        // responder (which needs its static key) exists.
        let payload = msg1
            .get(DH_LEN..)
            .ok_or(AuthError::BadHandshake("message 1 too short"))?;
        let hint = parse_msg1_payload(payload)?;
        let key_index = hint
            .and_then(|h| {
                id.keys
                    .iter()
                    .position(|k| Fingerprint::of(&k.public()).hint() == h)
            })
            .unwrap_or(0);
        let key = id
            .keys
            .get(key_index)
            .ok_or_else(|| AuthError::Other("server identity without a key".into()))?;
        let prologue = prologue();
        let mut hs = builder(&prologue)?
            .local_private_key(key.private_bytes())?
            .build_responder()?;
        let mut scratch = [0u8; MAX_HANDSHAKE_MSG];
        hs.read_message(msg1, &mut scratch)?;
        let mut msg = [0u8; MAX_HANDSHAKE_MSG];
        let n = hs.write_message(&[], &mut msg)?;
        let h2 = hs.get_handshake_hash().to_vec();
        Ok((ServerHandshake { hs, h2, key_index }, frame(&msg[..n])?))
    }

    /// Reads message 3: the agent's static key and its join proof, if any.
    pub fn finish(mut self, id: &ServerIdentity, msg3: &[u8]) -> AuthResult<Accepted> {
        let mut payload = [0u8; MAX_HANDSHAKE_MSG];
        let n = self.hs.read_message(msg3, &mut payload)?;
        let proof = parse_msg3_payload(&payload[..n])?;
        let session = Session::from_handshake(self.hs)?;
        let proof = match proof {
            None => Proof::Absent,
            Some(p) => {
                let want = join_proof(&id.network_key, &self.h2, &session.remote_static);
                if mac::ct_eq(&p, &want) {
                    Proof::Valid
                } else {
                    Proof::Invalid
                }
            }
        };
        Ok(Accepted {
            session,
            proof,
            server_key_index: self.key_index,
        })
    }
}

/// Runs the server's side of the handshake over `input` as if it were the bytes an agent
/// sent (preamble, message 1, message 3), with no socket. Never panics, whatever the input;
/// the fuzz target of the handshake parser.
pub fn server_handshake_from_bytes(id: &ServerIdentity, input: &[u8]) -> AuthResult<Accepted> {
    let pre = input
        .get(..PREAMBLE.len())
        .ok_or(AuthError::BadPreamble("too short"))?;
    check_preamble(pre)?;
    let rest = &input[PREAMBLE.len()..];
    let (m1, used) =
        parse_frame(rest, MAX_HANDSHAKE_MSG)?.ok_or(AuthError::BadHandshake("truncated"))?;
    let (hs, _msg2) = ServerHandshake::respond(id, m1)?;
    let (m3, _) = parse_frame(&rest[used..], MAX_HANDSHAKE_MSG)?
        .ok_or(AuthError::BadHandshake("truncated"))?;
    hs.finish(id, m3)
}

// ---- Async drivers ---------------------------------------------------------------------------

async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S, max: usize) -> AuthResult<Vec<u8>> {
    let mut len = [0u8; 2];
    read_exact(stream, &mut len).await?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > max {
        return Err(AuthError::FrameTooLong { len, max });
    }
    let mut body = vec![0u8; len];
    read_exact(stream, &mut body).await?;
    Ok(body)
}

async fn read_exact<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut [u8]) -> AuthResult<()> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(AuthError::Closed),
        Err(e) => Err(AuthError::Io {
            path: "connection".into(),
            source: e,
        }),
    }
}

async fn write_all<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> AuthResult<()> {
    let r = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    r.await.map_err(|e| AuthError::Io {
        path: "connection".into(),
        source: e,
    })
}

/// The agent's handshake on `stream`, within [`HANDSHAKE_TIMEOUT`]. On a pin mismatch it
/// returns [`AuthError::PinMismatch`] having sent only the preamble and message 1.
pub async fn client_handshake<S>(stream: &mut S, cfg: &ClientConfig) -> AuthResult<Session>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    client_handshake_within(stream, cfg, HANDSHAKE_TIMEOUT).await
}

/// [`client_handshake`] with another deadline.
pub async fn client_handshake_within<S>(
    stream: &mut S,
    cfg: &ClientConfig,
    limit: Duration,
) -> AuthResult<Session>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::time::timeout(limit, async {
        let (hs, out1) = ClientHandshake::start(cfg)?;
        write_all(stream, &out1).await?;
        let msg2 = read_frame(stream, MAX_HANDSHAKE_MSG).await?;
        let (out3, session) = hs.finish(cfg, &msg2)?;
        write_all(stream, &out3).await?;
        Ok(session)
    })
    .await
    .map_err(|_| AuthError::HandshakeTimeout(limit))?
}

/// The server's handshake on `stream` (from the preamble on), within [`HANDSHAKE_TIMEOUT`].
pub async fn server_handshake<S>(stream: &mut S, id: &ServerIdentity) -> AuthResult<Accepted>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    server_handshake_within(stream, id, HANDSHAKE_TIMEOUT).await
}

/// [`server_handshake`] with another deadline.
pub async fn server_handshake_within<S>(
    stream: &mut S,
    id: &ServerIdentity,
    limit: Duration,
) -> AuthResult<Accepted>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::time::timeout(limit, async {
        let mut pre = [0u8; PREAMBLE.len()];
        read_exact(stream, &mut pre).await?;
        check_preamble(&pre)?;
        let msg1 = read_frame(stream, MAX_HANDSHAKE_MSG).await?;
        let (hs, out2) = ServerHandshake::respond(id, &msg1)?;
        write_all(stream, &out2).await?;
        let msg3 = read_frame(stream, MAX_HANDSHAKE_MSG).await?;
        hs.finish(id, &msg3)
    })
    .await
    .map_err(|_| AuthError::HandshakeTimeout(limit))?
}

// ---- The encrypted stream ----------------------------------------------------------------------

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The reading half: decrypts frames from `R` and serves the plaintext as a byte stream.
/// Buffers grow to the largest frame seen (small for sample lines), not to the 64 KiB limit.
pub struct NoiseReader<R> {
    inner: R,
    transport: Arc<StatelessTransportState>,
    nonce: u64,
    /// Received bytes not yet forming a whole frame.
    inbuf: BytesMut,
    /// Decrypted bytes not yet read, from `plain_pos`.
    plain: Vec<u8>,
    plain_pos: usize,
    failed: bool,
}

impl<R> NoiseReader<R> {
    fn new(inner: R, transport: Arc<StatelessTransportState>) -> Self {
        Self {
            inner,
            transport,
            nonce: 0,
            inbuf: BytesMut::new(),
            plain: Vec::new(),
            plain_pos: 0,
            failed: false,
        }
    }

    /// Frames decrypted so far.
    pub fn frames(&self) -> u64 {
        self.nonce
    }

    /// Decrypts one whole frame from `inbuf`, if there is one.
    fn decrypt_buffered(&mut self) -> io::Result<bool> {
        let Some((body, used)) = parse_frame(&self.inbuf, MAX_NOISE_MSG).ok().flatten() else {
            return Ok(false);
        };
        if body.len() < TAG_LEN {
            return Err(invalid("encrypted frame shorter than its tag"));
        }
        self.plain.clear();
        self.plain.resize(body.len() - TAG_LEN, 0);
        let n = self
            .transport
            .read_message(self.nonce, body, &mut self.plain)
            .map_err(|_| invalid("frame failed authentication: tampered, replayed or reordered"))?;
        self.nonce += 1;
        self.plain.truncate(n);
        self.plain_pos = 0;
        // `advance`, not `split_to`: no new handle per frame, and the space is reused.
        self.inbuf.advance(used);
        Ok(true)
    }

    /// Bytes still missing for the frame at the front of `inbuf` (at least a little).
    fn wanted(&self) -> usize {
        match self.inbuf.get(..2) {
            Some(h) => (2 + usize::from(u16::from_be_bytes([h[0], h[1]])))
                .saturating_sub(self.inbuf.len())
                .max(1),
            None => 2 - self.inbuf.len(),
        }
        .max(READ_CHUNK)
    }
}

/// Smallest read from the socket: a sample frame is ~270 bytes encrypted, so this holds a few
/// and keeps the buffer of each of 10,000 connections small.
const READ_CHUNK: usize = 1024;

impl<R: AsyncRead + Unpin> AsyncRead for NoiseReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.failed {
                return Poll::Ready(Err(invalid("encrypted stream failed earlier")));
            }
            if this.plain_pos < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.plain_pos);
                buf.put_slice(&this.plain[this.plain_pos..this.plain_pos + n]);
                this.plain_pos += n;
                return Poll::Ready(Ok(()));
            }
            match this.decrypt_buffered() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    this.failed = true;
                    return Poll::Ready(Err(e));
                }
            }
            let want = this.wanted();
            this.inbuf.reserve(want);
            let n = ready!(poll_read_buf(
                Pin::new(&mut this.inner),
                cx,
                &mut this.inbuf
            ))?;
            if n == 0 {
                return Poll::Ready(if this.inbuf.is_empty() {
                    Ok(()) // clean end of stream, at a frame boundary
                } else {
                    this.failed = true;
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed inside an encrypted frame",
                    ))
                });
            }
        }
    }
}

/// The writing half: encrypts what is written into frames of at most [`MAX_PLAINTEXT`]
/// plaintext bytes, each sent in one write.
pub struct NoiseWriter<W> {
    inner: W,
    transport: Arc<StatelessTransportState>,
    nonce: u64,
    /// The frame being sent, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
}

impl<W> NoiseWriter<W> {
    fn new(inner: W, transport: Arc<StatelessTransportState>) -> Self {
        Self {
            inner,
            transport,
            nonce: 0,
            out: Vec::new(),
            out_pos: 0,
        }
    }

    /// Frames encrypted so far.
    pub fn frames(&self) -> u64 {
        self.nonce
    }
}

impl<W: AsyncWrite + Unpin> NoiseWriter<W> {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.out.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for NoiseWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(MAX_PLAINTEXT);
        this.out.resize(2 + n + TAG_LEN, 0);
        let len = this
            .transport
            .write_message(this.nonce, &buf[..n], &mut this.out[2..])
            .map_err(|e| io::Error::other(format!("encryption failed: {e}")))?;
        this.nonce += 1;
        let len16 = u16::try_from(len).map_err(|_| invalid("frame too long"))?;
        this.out[..2].copy_from_slice(&len16.to_be_bytes());
        this.out.truncate(2 + len);
        // The frame is ours now; start sending it (the rest goes out on the next call).
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
