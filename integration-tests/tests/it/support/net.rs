//! Sockets of the tests' own: port reservations, and a raw client that speaks the wire
//! protocol by hand.
//!
//! A port reservation replaces "bind port 0, read the port, release it, hope nobody takes it
//! before the program under test binds it": the reservation keeps its socket bound for as long
//! as it lives, so the kernel hands the port to nobody else, yet the server or agent under test
//! can still bind it. It works because the kernel picks the port for a socket *without* any
//! reuse option (so the port is unused by anyone at that moment), and the options are set on
//! the bound socket afterwards; a program that binds with the same options then shares the
//! port (Linux: SO_REUSEADDR lets a TCP socket bind beside one that is bound but not listening;
//! SO_REUSEADDR + SO_REUSEPORT lets UDP sockets share, and each gets every broadcast).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream, UdpSocket};

use serde_json::Value;
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use super::{DEADLINE, LOOPBACK};

/// A TCP port on 127.0.0.1 that nothing listens on (a connection is refused) and nobody else
/// gets, until the server under test binds it (the server sets SO_REUSEADDR, see
/// `lanmon::server`'s `listen`): for a test that must start an agent before its server. Drop
/// it once the server is up.
pub struct TcpPortReservation {
    _socket: Socket,
    port: u16,
}

impl TcpPortReservation {
    #[track_caller]
    pub fn new() -> TcpPortReservation {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
            .unwrap_or_else(|e| panic!("cannot create a TCP socket: {e}"));
        socket
            .bind(&std::net::SocketAddr::from((LOOPBACK, 0)).into())
            .unwrap_or_else(|e| panic!("cannot bind {LOOPBACK}:0: {e}"));
        // After the bind: the kernel chose a port nobody uses; now the server may share it.
        socket
            .set_reuse_address(true)
            .unwrap_or_else(|e| panic!("cannot set SO_REUSEADDR: {e}"));
        let port = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.port())
            .unwrap_or_else(|| panic!("reserved TCP socket has no local port"));
        TcpPortReservation {
            _socket: socket,
            port,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

/// A UDP port on `0.0.0.0` held for a test's discovery traffic: agents listening for beacons
/// (`--discovery-port`, SO_REUSEADDR + SO_REUSEPORT) bind it beside this socket, and servers
/// beacon to it. This socket also receives every broadcast to the port and never reads it
/// (the kernel drops what overflows its buffer). Keep it for the whole test.
pub struct UdpPortReservation {
    _socket: UdpSocket,
    port: u16,
}

impl UdpPortReservation {
    #[track_caller]
    pub fn new() -> UdpPortReservation {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
            .unwrap_or_else(|e| panic!("cannot bind a UDP socket: {e}"));
        // After the bind, as above; the same options as `lanmon::discovery::listen_socket`.
        let shared = SockRef::from(&socket);
        shared
            .set_reuse_address(true)
            .and_then(|()| shared.set_reuse_port(true))
            .unwrap_or_else(|e| panic!("cannot set SO_REUSEADDR / SO_REUSEPORT: {e}"));
        let port = socket
            .local_addr()
            .unwrap_or_else(|e| panic!("no local address: {e}"))
            .port();
        UdpPortReservation {
            _socket: socket,
            port,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port as a command-line argument.
    pub fn arg(&self) -> String {
        self.port.to_string()
    }
}

// ---- Raw TCP ----------------------------------------------------------------------------------

/// How the server answered a raw client.
#[derive(Debug)]
pub struct RawAnswer {
    /// The first line the server sent back, parsed.
    pub frame: Value,
    /// The server closed the connection right after that line.
    pub closed: bool,
}

/// Connects to the server like an agent would, sends `line` (a newline is added) and reads
/// the answer: one JSON line, then whether the server closed the connection.
#[track_caller]
pub fn raw_exchange(port: u16, line: &str) -> RawAnswer {
    let mut stream = TcpStream::connect((LOOPBACK, port))
        .unwrap_or_else(|e| panic!("cannot connect to {LOOPBACK}:{port}: {e}"));
    stream
        .set_read_timeout(Some(DEADLINE))
        .unwrap_or_else(|e| panic!("cannot set a read timeout: {e}"));
    stream
        .write_all(format!("{line}\n").as_bytes())
        .unwrap_or_else(|e| panic!("cannot send {line:?}: {e}"));
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader
        .read_line(&mut answer)
        .unwrap_or_else(|e| panic!("no answer to {line:?} within {DEADLINE:?}: {e}"));
    let frame = serde_json::from_str(&answer)
        .unwrap_or_else(|e| panic!("answer to {line:?} is not one JSON line: {answer:?} ({e})"));
    let mut rest = Vec::new();
    let closed = match reader.read_to_end(&mut rest) {
        Ok(_) => rest.is_empty(),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    RawAnswer { frame, closed }
}
