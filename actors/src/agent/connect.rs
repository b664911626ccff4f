//! Reaching the server: resolving and connecting with a deadline ([`connect`]), the errors
//! an operator can act on ([`ConnectError`]), and the next discovery beacon.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpStream;

use crate::config::CONNECT_TIMEOUT;
use crate::discovery::{self, Found};

/// Why a connection attempt failed, with the likely fix (see the README's troubleshooting).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "cannot resolve host name `{host}` ({source}): check the spelling, or use the server's IP address"
    )]
    Resolve { host: String, source: io::Error },
    #[error(
        "connection refused: no server is listening at that address; start it with `make run-server` (or `server`) on that machine, and check --port"
    )]
    Refused,
    #[error(
        "no answer within {CONNECT_TIMEOUT:?}: wrong IP, the machine is down, or a firewall drops TCP port {port}; use an address from the server's startup banner and allow the port"
    )]
    Timeout { port: u16 },
    #[error(
        "no route to host: the address is not on a network this machine reaches; check the IP (the server's banner lists its addresses)"
    )]
    Unreachable,
    #[error("{0}")]
    Other(io::Error),
}

impl ConnectError {
    /// A few words for repeated failures.
    pub(super) fn short(&self) -> &'static str {
        match self {
            ConnectError::Resolve { .. } => "cannot resolve host",
            ConnectError::Refused => "refused",
            ConnectError::Timeout { .. } => "timed out",
            ConnectError::Unreachable => "unreachable",
            ConnectError::Other(_) => "error",
        }
    }

    fn from_io(e: io::Error, port: u16) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => ConnectError::Refused,
            io::ErrorKind::TimedOut => ConnectError::Timeout { port },
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                ConnectError::Unreachable
            }
            _ => ConnectError::Other(e),
        }
    }
}

/// The next beacon, or never (not in discover mode).
pub(super) async fn next_beacon(
    listener: Option<&mut discovery::BeaconListener>,
) -> std::io::Result<(Found, bool)> {
    match listener {
        Some(l) => l.next().await,
        None => std::future::pending().await,
    }
}

/// What to check when no beacon arrives (see the README's troubleshooting).
pub(super) fn discovery_hint(port: u16) -> String {
    format!(
        "is the server running (with its beacon on)? is UDP port {port} blocked by a firewall? is the server on another subnet (then use --host)?"
    )
}

/// Resolves `host` and connects to the first address that answers.
pub(super) async fn connect(
    host: String,
    port: u16,
) -> Result<(TcpStream, SocketAddr), ConnectError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|source| ConnectError::Resolve {
            host: host.clone(),
            source,
        })?
        .collect();
    let mut last = ConnectError::Resolve {
        host,
        source: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
    };
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok((stream, addr)),
            Ok(Err(e)) => last = ConnectError::from_io(e, port),
            Err(_) => last = ConnectError::Timeout { port },
        }
    }
    Err(last)
}
