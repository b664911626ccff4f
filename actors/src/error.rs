//! The library's error type.

use std::net::SocketAddr;

/// Everything that can go wrong in the library, by cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Codec(#[from] crate::codec::CodecError),
    #[error("actor mailbox closed: {0}")]
    Mailbox(#[from] actix::MailboxError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The durable history (`server::store`).
    #[error(transparent)]
    Store(#[from] crate::server::store::StoreError),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
