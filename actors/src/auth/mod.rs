//! The trust layer (protocol version 2): who may talk to whom, and how.
//!
//! Self-contained building blocks, each unit-tested without the actors. The server wires them
//! in [`crate::server::trust`] (identity, enrollment, revocation; used by the Listener's
//! handshake, the Session's admission, HTTP and the beacon), the agent in
//! [`crate::agent::identity`]; the README's "Security and trust" and
//! `bins/docs/SECURITY-DESIGN.md` describe the whole.
//!
//! - [`keys`]: identities and secrets on disk (server key, network key, agent key), 0600,
//!   atomic creation; the agent's state directory.
//! - [`fingerprint`]: the human form of a static key (`SHA256:XXXX-…`).
//! - [`token`]: the join token `lm2-…` (server key to pin, network key, server id, CRC).
//! - [`beacon_auth`]: authenticated beacons (fingerprint, time, sequence, HMAC) and the
//!   agent's acceptance rule against forgery and replay.
//! - [`noise`]: the Noise XX handshake with pinning and the join proof; the encrypted stream
//!   halves (tokio `AsyncRead`/`AsyncWrite`) the line codec runs on.
//! - [`sniff`]: v1 or v2, from a connection's first bytes.
//! - [`enroll`]: the server's enrollment registry (pending / approved / revoked), persisted in
//!   `agents.json`.
//! - [`rotation`]: server key rotation with a grace period, and the `server_key` notice.
//! - [`http_auth`]: login token, session cookie, `/metrics` bearer token, CSRF check, as an
//!   actix-web middleware.
//! - [`mac`], [`base32`]: HMAC-SHA256 and constant-time comparison; Crockford base32.
//! - [`error`], the error type ([`AuthError`]).

pub mod base32;
pub mod beacon_auth;
pub mod enroll;
pub mod error;
pub mod fingerprint;
pub mod http_auth;
pub mod keys;
pub mod mac;
pub mod noise;
pub mod rotation;
pub mod sniff;
pub mod token;

pub use error::{AuthError, AuthResult};

#[cfg(test)]
mod tests;
