//! Connection limits: the open connections, counted in total and per IP
//! ([`Limits::max_connections`], [`Limits::max_connections_per_ip`]).
//!
//! The Listener counts a connection when it accepts it ([`Connections::try_acquire`]); the
//! [`ConnGuard`] it gets back is owned by that connection's Session and frees the slot when
//! the Session is dropped, on whatever thread it ran. No actor: a shared, locked count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::{Limits, PRESSURE_PERCENT};

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Open connections, in total and per IP. Cheap to clone (shared; a connection is counted on
/// the Listener's thread and freed on its session's).
#[derive(Debug, Clone, Default)]
pub struct Connections(Arc<Mutex<Counts>>);

impl Connections {
    fn counts(&self) -> MutexGuard<'_, Counts> {
        // The counts stay consistent even if a holder panicked: every update is one step.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a new connection from `ip`, or says which limit it would break.
    pub fn try_acquire(&self, ip: IpAddr, limits: &Limits) -> Result<ConnGuard, String> {
        let mut counts = self.counts();
        if counts.total >= limits.max_connections {
            return Err(format!(
                "too many connections ({} in total)",
                limits.max_connections
            ));
        }
        let from_ip = counts.per_ip.entry(ip).or_insert(0);
        if *from_ip >= limits.max_connections_per_ip {
            return Err(format!(
                "too many connections from {ip} ({})",
                limits.max_connections_per_ip
            ));
        }
        *from_ip += 1;
        counts.total += 1;
        Ok(ConnGuard {
            conns: self.clone(),
            ip,
        })
    }

    /// Open connections in total.
    pub fn total(&self) -> usize {
        self.counts().total
    }
}

/// One counted connection; dropping it (with its Session) frees the slot.
#[derive(Debug)]
pub struct ConnGuard {
    conns: Connections,
    ip: IpAddr,
}

impl ConnGuard {
    /// Whether the server holds at least [`PRESSURE_PERCENT`] of its connection slots: then
    /// silent connections make room ([`Limits::pressure_idle_timeout`]).
    pub fn near_limit(&self, limits: &Limits) -> bool {
        self.conns.counts().total.saturating_mul(100)
            >= limits.max_connections.saturating_mul(PRESSURE_PERCENT)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut counts = self.conns.counts();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_limits_in_total_and_per_ip() {
        let limits = Limits {
            max_connections: 3,
            max_connections_per_ip: 2,
            ..Limits::default()
        };
        let conns = Connections::default();
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let a1 = conns.try_acquire(a, &limits);
        let a2 = conns.try_acquire(a, &limits);
        assert!(a1.is_ok() && a2.is_ok());
        assert!(conns.try_acquire(a, &limits).is_err(), "third from one IP");
        let b1 = conns.try_acquire(b, &limits);
        assert!(b1.is_ok());
        assert!(conns.try_acquire(b, &limits).is_err(), "fourth in total");
        assert!(
            b1.as_ref().is_ok_and(|g| g.near_limit(&limits)),
            "3 of 3 is near"
        );
        drop(a1);
        assert!(
            b1.as_ref().is_ok_and(|g| !g.near_limit(&limits)),
            "2 of 3 is not"
        );
        assert_eq!(conns.total(), 2);
        assert!(
            conns.try_acquire(b, &limits).is_ok(),
            "a freed slot is reusable"
        );
    }
}
