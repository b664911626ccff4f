//! Network: cumulative counters per interface from `/proc/net/dev` (Linux; the agent's
//! network namespace).
//!
//! By default loopback and virtual interfaces ([`VIRTUAL_NET_PREFIXES`]: bridges, veth pairs,
//! container and VM taps, tunnels' fallback devices) are left out: their traffic is either
//! local or also crosses a physical interface. `--net-interfaces` chooses by name instead.

use crate::protocol::{MAX_INTERFACES, NetInterface};

use super::config::Select;
use super::text::{clean_text, fields, parse_u64};

/// Interfaces left out by default, by name prefix (`lo` exactly).
pub const VIRTUAL_NET_PREFIXES: &[&str] = &[
    "veth", "docker", "br-", "virbr", "vnet", "cni", "flannel", "cali", "cilium", "vxlan", "kube-",
    "lxc", "tap", "ifb", "dummy", "podman", "weave", "tunl0", "sit0", "ip6tnl0", "gre0", "gretap0",
    "erspan0", "ip_vti0", "ip6_vti0", "ip6gre0",
];

/// Whether an interface is reported when `--net-interfaces` is not given.
pub fn default_interface(name: &str) -> bool {
    name != "lo" && !VIRTUAL_NET_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The chosen interfaces of `/proc/net/dev` text, at most [`MAX_INTERFACES`].
///
/// After two header lines, one line per interface: `eth0: 207348847 7709 0 0 0 0 0 0 407709
/// 5275 0 0 0 0 0 0`, i.e. received bytes, packets, errs, drop, fifo, frame, compressed,
/// multicast, then sent bytes, packets, errs, drop, fifo, colls, carrier, compressed. (With
/// big counters there may be no space after the colon.)
pub fn parse_net_dev(text: &[u8], select: &Select) -> Vec<NetInterface> {
    let mut out = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue; // the header lines have `|`, not `:`
        };
        let (name, rest) = line.split_at(colon);
        let Ok(name) = std::str::from_utf8(name.trim_ascii()) else {
            continue;
        };
        if name.is_empty() || !select.chooses(name, default_interface) {
            continue;
        }
        let mut c = [0u64; 16];
        let mut f = fields(rest.get(1..).unwrap_or_default());
        if !c
            .iter_mut()
            .all(|slot| f.next().and_then(parse_u64).map(|v| *slot = v).is_some())
        {
            continue;
        }
        out.push(NetInterface {
            interface: clean_text(name.as_bytes()),
            rx_bytes: c[0],
            rx_packets: c[1],
            rx_errs: c[2],
            rx_drops: c[3],
            tx_bytes: c[8],
            tx_packets: c[9],
            tx_errs: c[10],
            tx_drops: c[11],
        });
        if out.len() == MAX_INTERFACES {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real `/proc/net/dev` of a docker host with Wi-Fi, plus this VM's ifb devices.
    const NET_DEV: &[u8] = b"Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:   20987     165    0    0    0     0          0         0    20987     165    0    0    0     0       0          0
  eth0: 207348847    7709    0    0    0     0          0         0   407709    5275    0    0    0     0       0          0
wlp2s0:12345678901 9876543    3   17    0     0          0     12345 987654321  123456    1    2    0     0       0          0
docker0:    1000      10    0    0    0     0          0         0     2000      20    0    0    0     0       0          0
veth1a2b3c:  500       5    0    0    0     0          0         0      600       6    0    0    0     0       0          0
  ifb0:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
  bad0: 1 2 3
";

    fn names(n: &[NetInterface]) -> Vec<&str> {
        n.iter().map(|i| i.interface.as_str()).collect()
    }

    #[test]
    fn default_is_physical_interfaces_with_every_counter() {
        let ifs = parse_net_dev(NET_DEV, &Select::Default);
        assert_eq!(names(&ifs), ["eth0", "wlp2s0"]);
        assert_eq!(
            ifs[1],
            NetInterface {
                interface: "wlp2s0".into(),
                rx_bytes: 12_345_678_901,
                tx_bytes: 987_654_321,
                rx_packets: 9_876_543,
                tx_packets: 123_456,
                rx_errs: 3,
                tx_errs: 1,
                rx_drops: 17,
                tx_drops: 2,
            }
        );
    }

    #[test]
    fn interfaces_chosen_by_name() {
        let chosen: Select = "lo,veth*".parse().unwrap();
        assert_eq!(
            names(&parse_net_dev(NET_DEV, &chosen)),
            ["lo", "veth1a2b3c"]
        );
        // `all`: every well-formed line (not the short `bad0`).
        assert_eq!(parse_net_dev(NET_DEV, &Select::All).len(), 6);
    }
}
