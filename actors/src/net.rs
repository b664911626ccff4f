//! This machine's IPv4 interfaces, for the server banner (and the discovery beacon).

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
