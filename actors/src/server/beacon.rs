//! Beacon actor: announces the server on UDP so that `agent --discover` finds it.
//!
//! Owns one UDP socket (SO_BROADCAST) and the list of targets. Sends a [`Beacon`] at once and
//! then every interval to each target. With the trust layer each round is signed
//! ([`BeaconSigner`]: the server's fingerprint, its clock, a sequence number and a MAC under a
//! key derived from the network key), so an agent with a join token can tell the server's
//! beacons from forged and replayed ones ([`crate::auth::beacon_auth`]). With [`BeaconTargets::Auto`] the targets are the
//! loopback broadcast plus the broadcast address of every up IPv4 interface that has one,
//! re-read every [`REREAD_INTERFACES_EVERY`] so interfaces that come and go are followed;
//! `--beacon-to` gives an explicit list instead. Receives [`Stop`] from the shutdown path.
//! Sends nothing to other actors.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use actix::prelude::*;
use socket2::{Domain, Protocol, Socket, Type};

use crate::auth::beacon_auth::BeaconSigner;
use crate::config::ConfigError;
use crate::discovery::{Beacon, LOOPBACK_BROADCAST};
use crate::net::Interface;

/// How often the interface list is read again in [`BeaconTargets::Auto`] mode.
pub const REREAD_INTERFACES_EVERY: Duration = Duration::from_secs(10);

/// Where beacons go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeaconTargets {
    /// Loopback broadcast plus every interface's broadcast address, on this port.
    Auto { port: u16 },
    /// Exactly these addresses.
    Explicit(Vec<SocketAddr>),
}

impl BeaconTargets {
    /// The targets `--beacon-to` names: none means [`BeaconTargets::Auto`] on `port`; each
    /// entry is `IP:PORT`, or an IP that gets `port` (surrounding spaces are ignored).
    pub fn parse<S: AsRef<str>>(list: &[S], port: u16) -> Result<Self, ConfigError> {
        if list.is_empty() {
            return Ok(Self::Auto { port });
        }
        let parse = |s: &S| {
            let s = s.as_ref().trim();
            s.parse::<SocketAddr>()
                .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, port)))
                .map_err(|_| ConfigError::BeaconTarget(s.to_string()))
        };
        list.iter()
            .map(parse)
            .collect::<Result<_, _>>()
            .map(Self::Explicit)
    }
}

/// The beacon's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeaconConfig {
    pub targets: BeaconTargets,
    /// Time between beacons (at least [`BeaconConfig::MIN_INTERVAL`]).
    pub interval: Duration,
}

impl BeaconConfig {
    /// Time between beacons by default.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
    /// Shortest time between beacons: a shorter interval is raised to this.
    pub const MIN_INTERVAL: Duration = Duration::from_millis(50);

    /// Applies the policy: an interval under [`BeaconConfig::MIN_INTERVAL`] is raised to it.
    pub fn validate(self) -> Self {
        Self {
            interval: self.interval.max(Self::MIN_INTERVAL),
            ..self
        }
    }
}

/// Stop announcing.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// The automatic targets for a list of interfaces: loopback broadcast first, then each
/// non-loopback interface's broadcast address, without repeats.
pub fn auto_targets(interfaces: &[Interface], port: u16) -> Vec<SocketAddr> {
    let mut seen = HashSet::new();
    std::iter::once(LOOPBACK_BROADCAST)
        .chain(
            interfaces
                .iter()
                .filter(|i| !i.loopback)
                .filter_map(|i| i.broadcast)
                .filter(|b| !b.is_unspecified() && *b != Ipv4Addr::BROADCAST),
        )
        .filter(|b| seen.insert(*b))
        .map(|b| SocketAddr::V4(SocketAddrV4::new(b, port)))
        .collect()
}

/// Opens the sending socket: unbound port, broadcast allowed.
fn sender() -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_broadcast(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0).into())?;
    Ok(socket.into())
}

/// See the module documentation.
pub struct BeaconActor {
    config: BeaconConfig,
    beacon: Beacon,
    /// Signs each round (trust layer); `None`: the same unsigned datagram every time.
    signer: Option<BeaconSigner>,
    payload: Vec<u8>,
    socket: UdpSocket,
    targets: Vec<SocketAddr>,
    targets_read_at: Option<Instant>,
    /// Targets whose last send failed (warned once until they work again).
    failing: HashSet<SocketAddr>,
}

impl BeaconActor {
    pub fn new(
        config: BeaconConfig,
        beacon: Beacon,
        signer: Option<BeaconSigner>,
    ) -> std::io::Result<Self> {
        Ok(Self {
            config,
            payload: beacon.encode(),
            beacon,
            signer,
            socket: sender()?,
            targets: Vec::new(),
            targets_read_at: None,
            failing: HashSet::new(),
        })
    }

    fn refresh_targets(&mut self) {
        let targets = match &self.config.targets {
            BeaconTargets::Explicit(list) => list.clone(),
            BeaconTargets::Auto { port } => {
                let due = self
                    .targets_read_at
                    .is_none_or(|t| t.elapsed() >= REREAD_INTERFACES_EVERY);
                if !due {
                    return;
                }
                self.targets_read_at = Some(Instant::now());
                auto_targets(&crate::net::ipv4_interfaces(), *port)
            }
        };
        if targets != self.targets {
            let list: Vec<String> = targets.iter().map(ToString::to_string).collect();
            tracing::info!(
                "beacon: announcing every {:?} to {}",
                self.config.interval,
                list.join(", ")
            );
            self.targets = targets;
        }
    }

    fn announce(&mut self) {
        self.refresh_targets();
        if let Some(signer) = &mut self.signer {
            // One signature per round: every target gets the same (ts, seq).
            self.payload = signer
                .sign(self.beacon.clone(), crate::util::now_ms())
                .encode();
        }
        for target in &self.targets {
            match self.socket.send_to(&self.payload, target) {
                Ok(_) => {
                    self.failing.remove(target);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    if self.failing.insert(*target) {
                        tracing::warn!("beacon: cannot send to {target}: {e}");
                    }
                }
            }
        }
    }
}

impl Actor for BeaconActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval_at(
            actix::clock::Instant::now(),
            self.config.interval,
            |this, _| this.announce(),
        );
    }
}

impl Handler<Stop> for BeaconActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, ip: [u8; 4], broadcast: Option<[u8; 4]>, loopback: bool) -> Interface {
        Interface {
            name: name.into(),
            ip: ip.into(),
            broadcast: broadcast.map(Into::into),
            loopback,
        }
    }

    #[test]
    fn auto_targets_are_loopback_plus_each_lan_broadcast() {
        let interfaces = [
            iface("lo", [127, 0, 0, 1], None, true),
            iface("eth0", [10, 1, 0, 5], Some([10, 1, 0, 255]), false),
            iface("eth0", [10, 1, 0, 6], Some([10, 1, 0, 255]), false),
            iface("wlan0", [192, 0, 2, 9], Some([192, 0, 2, 255]), false),
            iface("tun0", [10, 9, 0, 1], None, false),
            iface("odd", [10, 8, 0, 1], Some([255, 255, 255, 255]), false),
        ];
        let got: Vec<String> = auto_targets(&interfaces, 8080)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            [
                "127.255.255.255:8080",
                "10.1.0.255:8080",
                "192.0.2.255:8080"
            ]
        );
    }

    /// `--beacon-to`: no entries is the automatic list on the discovery port; an IP gets the
    /// discovery port, IP:PORT (v4 or v6) keeps its own, spaces around an entry are ignored.
    #[test]
    fn beacon_to_entries_are_ips_or_ip_ports() -> Result<(), ConfigError> {
        let none: [&str; 0] = [];
        assert_eq!(
            BeaconTargets::parse(&none, 7)?,
            BeaconTargets::Auto { port: 7 }
        );
        let got =
            BeaconTargets::parse(&[" 127.255.255.255", "10.0.0.255:9 ", "[::1]:5", "::1"], 7)?;
        let v6 = IpAddr::from(std::net::Ipv6Addr::LOCALHOST);
        let want = vec![
            SocketAddr::from(([127, 255, 255, 255], 7)),
            SocketAddr::from(([10, 0, 0, 255], 9)),
            SocketAddr::new(v6, 5),
            SocketAddr::new(v6, 7),
        ];
        assert_eq!(got, BeaconTargets::Explicit(want));
        Ok(())
    }

    /// An entry that is not an address refuses the list, naming the entry and the flag.
    #[test]
    fn a_bad_beacon_to_entry_is_refused() {
        let err = BeaconTargets::parse(&["127.0.0.1", " nope "], 7);
        assert_eq!(err, Err(ConfigError::BeaconTarget("nope".into())));
        assert_eq!(
            ConfigError::BeaconTarget("nope".into()).to_string(),
            "--beacon-to `nope`: expected an IP address or IP:PORT"
        );
        assert!(BeaconTargets::parse(&["10.0.0.1:99999"], 7).is_err());
    }

    /// The beacon interval defaults to 1 s; under 50 ms it is raised to 50 ms.
    #[test]
    fn beacon_interval_has_a_floor() {
        assert_eq!(BeaconConfig::DEFAULT_INTERVAL, Duration::from_secs(1));
        let with = |ms| {
            BeaconConfig {
                targets: BeaconTargets::Auto { port: 7 },
                interval: Duration::from_millis(ms),
            }
            .validate()
            .interval
        };
        assert_eq!(with(0), Duration::from_millis(50));
        assert_eq!(with(49), Duration::from_millis(50));
        assert_eq!(with(50), Duration::from_millis(50));
        assert_eq!(with(51), Duration::from_millis(51));
    }

    #[test]
    fn no_interfaces_still_announce_on_loopback() {
        let got = auto_targets(&[], 9);
        assert_eq!(got, [SocketAddr::from(([127, 255, 255, 255], 9))]);
    }
}
