//! Zero-config discovery: the beacon datagram, and the agent's side of listening for it.
//!
//! The server's Beacon actor ([`crate::server::beacon`]) sends a small JSON [`Beacon`] over
//! UDP every second to the broadcast address of each LAN (and to loopback). An agent started
//! with `--discover` listens on the discovery port ([`DEFAULT_DISCOVERY_PORT`]) with
//! SO_REUSEADDR + SO_REUSEPORT so several agents on one host all hear every beacon, takes the
//! first valid beacon (or the one whose name it was told), and connects to the beacon's
//! **source address** at the advertised TCP port. Anything that is not a valid beacon is
//! ignored.
//!
//! Authentication (protocol 2): a server with the trust layer signs its beacons (fingerprint,
//! time, sequence, MAC: [`crate::auth::beacon_auth`]); version-1 agents ignore those fields.
//! The listener applies a [`Gate`]: an agent with a join token accepts only beacons that
//! verify, from its pinned server, fresh and not replayed; an agent that pinned its server by
//! trust on first use accepts only beacons that name the pinned fingerprint; an agent with
//! nothing pinned takes any beacon as a hint. Whatever a beacon says, it is only a hint: the
//! handshake decides.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::auth::beacon_auth::{BeaconVerifier, SignedBeacon};
use crate::auth::fingerprint::Fingerprint;
use crate::protocol::{MAX_TEXT_LEN, PROTOCOL_V1};

/// UDP port beacons are sent to. The same number as the TCP port: one number to remember and
/// to open in a firewall (8080/tcp for samples, 8080/udp for discovery).
pub const DEFAULT_DISCOVERY_PORT: u16 = 8080;
/// How long `agent discover` (and `agent --discover --list`) listens for beacons by default.
pub const DEFAULT_SURVEY: Duration = Duration::from_secs(3);
/// Loopback broadcast: reaches agents on this machine only.
pub const LOOPBACK_BROADCAST: Ipv4Addr = Ipv4Addr::new(127, 255, 255, 255);
/// The `service` tag every beacon carries; anything else is foreign traffic.
pub const BEACON_SERVICE: &str = "lanmon";
/// Largest datagram accepted as a beacon.
pub const MAX_BEACON_LEN: usize = 1024;
/// A server not heard for this long is no longer listed as heard.
pub const HEARD_RECENTLY: Duration = Duration::from_secs(5);
/// Most distinct servers remembered at once.
pub const MAX_HEARD: usize = 256;
/// While an agent waits for a beacon, it says what it waits for this often.
pub const WAITING_HINT_EVERY: Duration = Duration::from_secs(10);
/// At most one "ignored a datagram" warning per this period.
pub const INVALID_WARNING_EVERY: Duration = Duration::from_secs(30);

/// The announcement. Small on purpose; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beacon {
    /// Always [`BEACON_SERVICE`].
    pub service: String,
    /// The lowest wire protocol version the server accepts: 1 (also plaintext agents), or 2
    /// (authenticated agents only: version-1 agents ignore such a beacon).
    pub proto: u32,
    pub server_id: String,
    pub server_name: String,
    /// TCP port agents connect to (at the beacon's source address).
    pub port: u16,
    /// Reserved for authenticated discovery (a signature over the other fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

impl Beacon {
    /// A version-1 beacon (`proto` 1), its server name made one agents accept
    /// ([`acceptable_name`]).
    pub fn new(server_id: &str, server_name: &str, port: u16) -> Self {
        Self {
            service: BEACON_SERVICE.into(),
            proto: PROTOCOL_V1,
            server_id: server_id.into(),
            server_name: acceptable_name(server_name),
            port,
            sig: None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses and checks a datagram as a version-1 agent does (`proto` 1 only); `Err` says
    /// why it is not a beacon it can use. This build's agents read beacons with
    /// [`SignedBeacon::parse`] instead.
    pub fn decode(datagram: &[u8]) -> Result<Beacon, &'static str> {
        if datagram.len() > MAX_BEACON_LEN {
            return Err("datagram too long");
        }
        let b: Beacon = serde_json::from_slice(datagram).map_err(|_| "not a lanmon beacon")?;
        if b.service != BEACON_SERVICE {
            return Err("not a lanmon beacon");
        }
        if b.proto != PROTOCOL_V1 {
            return Err("beacon of an unsupported protocol version");
        }
        if b.port == 0
            || b.server_id.is_empty()
            || b.server_id.len() > MAX_TEXT_LEN
            || b.server_name.len() > MAX_TEXT_LEN
            || b.server_name.chars().any(char::is_control)
        {
            return Err("beacon with invalid fields");
        }
        Ok(b)
    }
}

/// `name` as agents accept it in a beacon (see [`Beacon::decode`] and
/// [`SignedBeacon::parse`]): control characters become `?` and it is cut to [`MAX_TEXT_LEN`]
/// bytes at a char boundary; otherwise every agent would ignore the beacon.
pub fn acceptable_name(name: &str) -> String {
    let mut name: String = name
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    while name.len() > MAX_TEXT_LEN {
        name.pop();
    }
    name
}

/// A server heard on the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub beacon: Beacon,
    /// Where to connect: the beacon's source IP and its advertised port.
    pub addr: SocketAddr,
    /// The key fingerprint the beacon carries (verified only under [`Gate::Verified`]).
    pub fp: Option<Fingerprint>,
}

/// Which beacons the listener takes (see the module docs).
#[derive(Debug)]
pub enum Gate {
    /// Any valid beacon: nothing pinned, nothing to check against.
    Open,
    /// Only beacons that name one of these fingerprints (pinned by trust on first use,
    /// without the network key: the claim cannot be verified, it only filters).
    Pinned(Vec<Fingerprint>),
    /// Only beacons that verify under the network key, from a pinned key, fresh, not replayed.
    Verified(BeaconVerifier),
}

impl Gate {
    fn check(&mut self, b: &SignedBeacon) -> Result<Option<Fingerprint>, String> {
        match self {
            Gate::Open => Ok(b.fingerprint()),
            Gate::Pinned(pins) => match b.fingerprint() {
                Some(fp) if pins.contains(&fp) => Ok(Some(fp)),
                Some(fp) => Err(format!(
                    "beacon of another server key ({fp}), not the pinned one"
                )),
                None => Err("unsigned beacon (this agent has pinned a server key)".into()),
            },
            Gate::Verified(v) => v
                .check(b, crate::util::now_ms())
                .map(Some)
                .map_err(|e| e.to_string()),
        }
    }
}

/// Opens the agent's discovery socket on `0.0.0.0:port`, shareable by several agents on one
/// host (SO_REUSEADDR, plus SO_REUSEPORT on Unix: then every listener gets every broadcast).
pub fn listen_socket(port: u16) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into())?;
    UdpSocket::from_std(socket.into())
}

/// Listens for beacons and remembers which servers were heard; rate-limits its warnings.
#[derive(Debug)]
pub struct BeaconListener {
    socket: UdpSocket,
    port: u16,
    /// Only accept the server with this name.
    want: Option<String>,
    /// Servers heard, by id, with when they were last heard.
    heard: HashMap<String, (Found, Instant)>,
    last_invalid_warning: Option<Instant>,
    ignored: u64,
    gate: Gate,
}

impl BeaconListener {
    /// A listener that takes every valid beacon ([`Gate::Open`]).
    pub fn bind(port: u16, want: Option<String>) -> io::Result<Self> {
        Ok(Self {
            socket: listen_socket(port)?,
            port,
            want,
            heard: HashMap::new(),
            last_invalid_warning: None,
            ignored: 0,
            gate: Gate::Open,
        })
    }

    /// Replaces which beacons are taken (after joining, pinning or a key rotation).
    pub fn set_gate(&mut self, gate: Gate) {
        self.gate = gate;
        self.heard.clear();
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Servers heard within the last [`HEARD_RECENTLY`] (a stopped server drops out).
    pub fn heard(&self) -> impl Iterator<Item = &Found> {
        self.heard
            .values()
            .filter(|(_, at)| at.elapsed() <= HEARD_RECENTLY)
            .map(|(found, _)| found)
    }

    /// Forgets a server (e.g. one that just said bye), so it is not named as "also heard".
    pub fn forget(&mut self, server_id: &str) {
        self.heard.remove(server_id);
    }

    /// Datagrams ignored so far (not a valid beacon).
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    /// Drops datagrams already queued (beacons heard before now may be stale).
    pub fn drain(&mut self) {
        let mut buf = [0u8; MAX_BEACON_LEN + 1];
        while self.socket.try_recv_from(&mut buf).is_ok() {}
    }

    /// Waits for the next valid beacon (any server). The returned bool is true the first time
    /// a server is heard.
    pub async fn next(&mut self) -> io::Result<(Found, bool)> {
        let mut buf = [0u8; MAX_BEACON_LEN + 1];
        loop {
            let (n, from) = self.socket.recv_from(&mut buf).await?;
            let checked = SignedBeacon::parse(&buf[..n])
                .map_err(String::from)
                .and_then(|b| self.gate.check(&b).map(|fp| (b.beacon, fp)));
            match checked {
                Ok((beacon, fp)) => {
                    let found = Found {
                        addr: SocketAddr::new(from.ip(), beacon.port),
                        beacon,
                        fp,
                    };
                    let now = Instant::now();
                    self.heard
                        .retain(|_, (_, at)| now.duration_since(*at) <= HEARD_RECENTLY);
                    if self.heard.len() >= MAX_HEARD {
                        self.heard.clear(); // a flood of fake servers must not grow memory
                    }
                    let new = self
                        .heard
                        .insert(found.beacon.server_id.clone(), (found.clone(), now))
                        .is_none_or(|(old, _)| old.addr != found.addr);
                    return Ok((found, new));
                }
                Err(why) => {
                    self.ignored += 1;
                    let now = Instant::now();
                    if self
                        .last_invalid_warning
                        .is_none_or(|t| now.duration_since(t) >= INVALID_WARNING_EVERY)
                    {
                        self.last_invalid_warning = Some(now);
                        tracing::warn!(
                            "ignored a datagram from {from} on UDP port {}: {why} ({} ignored so far)",
                            self.port,
                            self.ignored
                        );
                    }
                }
            }
        }
    }

    /// Waits for a beacon from the wanted server (or any, if none was named).
    pub async fn wanted(&mut self) -> io::Result<Found> {
        loop {
            let (found, _) = self.next().await?;
            if self
                .want
                .as_ref()
                .is_none_or(|w| *w == found.beacon.server_name)
            {
                return Ok(found);
            }
        }
    }

    /// Listens for `period` and returns every server heard, sorted by name.
    pub async fn survey(&mut self, period: Duration) -> Vec<Found> {
        let _ = tokio::time::timeout(period, async {
            loop {
                if self.next().await.is_err() {
                    return;
                }
            }
        })
        .await;
        let mut all: Vec<Found> = self.heard().cloned().collect();
        all.sort_by(|a, b| (&a.beacon.server_name, a.addr).cmp(&(&b.beacon.server_name, b.addr)));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beacon_round_trip_and_golden_form() {
        let b = Beacon::new("abc", "lab", 8080);
        let bytes = b.encode();
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            r#"{"service":"lanmon","proto":1,"server_id":"abc","server_name":"lab","port":8080}"#
        );
        assert_eq!(Beacon::decode(&bytes), Ok(b));
    }

    #[test]
    fn foreign_and_malformed_datagrams_are_refused() {
        let cases: [&[u8]; 6] = [
            b"",
            b"\xff\x00garbage",
            br#"{"service":"other","proto":1,"server_id":"a","server_name":"b","port":1}"#,
            br#"{"service":"lanmon","proto":2,"server_id":"a","server_name":"b","port":1}"#,
            br#"{"service":"lanmon","proto":1,"server_id":"a","server_name":"b","port":0}"#,
            br#"{"service":"lanmon","proto":1,"server_id":"","server_name":"b","port":1}"#,
        ];
        for case in cases {
            assert!(Beacon::decode(case).is_err(), "{case:?}");
        }
        let long = vec![b' '; MAX_BEACON_LEN + 1];
        assert_eq!(Beacon::decode(&long), Err("datagram too long"));
    }

    /// A server name agents would refuse (too long, control characters) is made one they
    /// accept, so that `--auth off` agents still hear the server.
    #[test]
    fn any_server_name_gives_a_beacon_agents_accept() {
        for name in ["é".repeat(MAX_TEXT_LEN), "\"".repeat(MAX_TEXT_LEN + 7)] {
            let b = Beacon::new("abc", &name, 8080);
            assert!(b.server_name.len() <= MAX_TEXT_LEN && name.starts_with(&b.server_name));
            assert!(
                b.server_name.len() > MAX_TEXT_LEN - 4,
                "cut more than one char"
            );
            let wire = b.encode();
            assert!(wire.len() <= MAX_BEACON_LEN, "{} bytes", wire.len());
            assert_eq!(Beacon::decode(&wire), Ok(b), "{name:?}");
        }
        assert_eq!(
            Beacon::new("abc", "lab\u{1b}[2J\n", 1).server_name,
            "lab?[2J?"
        );
    }

    #[test]
    fn unknown_fields_and_a_signature_are_accepted() {
        let b = br#"{"service":"lanmon","proto":1,"server_id":"a","server_name":"b","port":9,"sig":"x","extra":1}"#;
        let parsed = Beacon::decode(b).map(|b| (b.port, b.sig));
        assert_eq!(parsed, Ok((9, Some("x".into()))));
    }
}
