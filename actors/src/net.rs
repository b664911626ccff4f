//! Network helpers: this machine's IPv4 interfaces (for the server banner and the discovery
//! beacon) and TCP keepalive.

use std::net::Ipv4Addr;

/// One up IPv4 address of this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub ip: Ipv4Addr,
    /// The directed broadcast address of its subnet, if it has one.
    pub broadcast: Option<Ipv4Addr>,
    pub loopback: bool,
}

/// Lists the IPv4 addresses of every interface that is up. Errors yield an empty list: this is
/// used for hints and announcements, never for correctness.
pub fn ipv4_interfaces() -> Vec<Interface> {
    let Ok(all) = if_addrs::get_if_addrs() else {
        return Vec::new();
    };
    all.into_iter()
        .filter(|i| is_up(&i.name))
        .filter_map(|i| match i.addr {
            if_addrs::IfAddr::V4(v4) => Some(Interface {
                loopback: v4.ip.is_loopback(),
                broadcast: v4.broadcast,
                ip: v4.ip,
                name: i.name,
            }),
            if_addrs::IfAddr::V6(_) => None,
        })
        .collect()
}

/// Whether the interface is administratively up (IFF_UP). `if-addrs` lists addresses of
/// interfaces that are down too; on Linux the flags are read from sysfs, elsewhere every
/// listed interface counts as up.
fn is_up(name: &str) -> bool {
    #[cfg(target_os = "linux")]
    {
        // An alias such as `eth0:1` shares its device's flags.
        let device = name.split(':').next().unwrap_or(name);
        let path = format!("/sys/class/net/{device}/flags");
        match std::fs::read_to_string(path) {
            Ok(flags) => parse_flags(&flags).is_none_or(|f| f & IFF_UP != 0),
            Err(_) => true,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = name;
        true
    }
}

#[cfg(any(target_os = "linux", test))]
const IFF_UP: u32 = 0x1;

/// Parses sysfs' `0x1003`.
#[cfg(any(target_os = "linux", test))]
fn parse_flags(text: &str) -> Option<u32> {
    u32::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
}

/// Turns on TCP keepalive on a connected socket (errors are ignored: it is a second line of
/// defence).
pub fn set_keepalive(stream: &tokio::net::TcpStream) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(crate::config::KEEPALIVE_IDLE)
        .with_interval(crate::config::KEEPALIVE_INTERVAL);
    #[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
    let keepalive = keepalive.with_retries(crate::config::KEEPALIVE_RETRIES);
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_flags_say_up_or_down() {
        assert_eq!(parse_flags("0x1003\n").map(|f| f & IFF_UP), Some(1));
        assert_eq!(parse_flags("0x1002").map(|f| f & IFF_UP), Some(0));
        assert_eq!(parse_flags("garbage"), None);
    }
}
