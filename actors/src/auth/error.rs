//! The trust layer's error type: one enum, by cause, each message written for the operator who
//! reads it in a log line (what failed, on which file or peer, what to do).

use std::path::PathBuf;

use crate::auth::token::TokenError;

/// Everything that can go wrong in [`crate::auth`].
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A secret file that others can read is not used (it may have been copied already).
    #[error(
        "{path} is readable by group or others (mode {mode:04o}); it holds a secret: \
         run `chmod 600 {path}` (and consider the secret leaked if others had access)"
    )]
    KeyFilePermissions { path: PathBuf, mode: u32 },
    #[error("{path} is not a valid lanmon {kind} file: {why}")]
    BadKeyFile {
        path: PathBuf,
        kind: &'static str,
        why: String,
    },
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The cryptographic library refused (bad message, failed decryption, bad key).
    #[error("noise: {0}")]
    Noise(#[from] snow::Error),
    /// The server presented a static key the agent has not pinned: nothing more is sent.
    #[error(
        "the server's key {got} is not the pinned {expected}: refusing to talk to it \
         (if the server's key was replaced on purpose, join again with its new token)"
    )]
    PinMismatch { expected: String, got: String },
    #[error("not a lanmon v2 connection: {0}")]
    BadPreamble(&'static str),
    #[error("malformed handshake: {0}")]
    BadHandshake(&'static str),
    #[error("encrypted frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLong { len: usize, max: usize },
    #[error("handshake not finished within {0:?}")]
    HandshakeTimeout(std::time::Duration),
    #[error("connection closed during the handshake")]
    Closed,
    #[error("{0}")]
    Other(String),
}

impl AuthError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        AuthError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type AuthResult<T> = std::result::Result<T, AuthError>;
