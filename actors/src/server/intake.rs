//! What the server admits from one agent: how fast its samples may come ([`Allowances`]: a
//! token bucket per agent id and address, shared by its connections and kept across
//! reconnects), and where their timestamps may lie ([`ClockWindow`]).
//!
//! **Rate.** An agent samples once per interval (its `hello.interval_ms`) and, after a
//! reconnect, replays what it kept (up to its `--buffer`, 720 by default, at most 32
//! unacknowledged at a time). So each agent id, from each address (a client elsewhere that
//! claims the id cannot spend the real agent's bucket), has a bucket of [`RateLimit::burst`]
//! samples (`--sample-burst`, 1,440 by default: a full default buffer, twice), refilled at
//! [`RateLimit::per_interval`] samples per announced interval (`--max-samples-per-interval`,
//! 2 by default: twice what an agent sends; 0 turns the limit off). A sample that finds the
//! bucket empty is refused: the Session closes the connection with `limit` and acknowledges
//! nothing more, so the agent keeps that sample and what follows, and sends them after its
//! reconnect backoff, as the bucket refills. The bucket outlives the connection: reconnecting
//! does not refill it faster. An honest agent never meets the limit: between reconnects its
//! bucket refills faster than its buffer grows.
//!
//! **Clock.** A sample is stored at its own `ts_ms` when that lies within
//! [`ClockWindow::behind`] before the server's clock and [`ClockWindow::ahead`] after it
//! (when the sample arrives); otherwise at the time it arrives, and counted as `retimed` for
//! its agent. A clock far ahead (or a timestamp of 2⁶⁴−1) would put rows where retention
//! never reaches them; one far behind (a machine without a battery-backed clock, started in
//! 1970) would have its rows deleted as they arrive. Re-timing keeps the data, at the time
//! the server saw it; the agent's clock offset itself is for the snapshot to show.
//!
//! No actor and no I/O: Sessions share one [`Allowances`] (in their settings), the Registry
//! owns a [`ClockWindow`].

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::Limits;

/// Most buckets kept for agents that are not connected (each is a few dozen bytes); beyond
/// it the unused ones are dropped (those agents then start with a full bucket).
pub const MAX_IDLE_BUCKETS: usize = 100_000;

/// How fast one agent id's samples may come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Samples per announced interval, sustained; 0: no limit.
    pub per_interval: u32,
    /// Samples beyond that at once (the replay after a reconnect).
    pub burst: u32,
}

impl RateLimit {
    /// The limit `limits` set (`--max-samples-per-interval`, `--sample-burst`), with a burst
    /// of at least [`Limits::MIN_SAMPLE_BURST`].
    pub fn of(limits: &Limits) -> Self {
        Self {
            per_interval: limits.samples_per_interval,
            burst: limits.sample_burst.max(Limits::MIN_SAMPLE_BURST),
        }
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::of(&Limits::default())
    }
}

/// A token bucket: `tokens` of `capacity`, refilled at `per_ms` tokens a millisecond.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    capacity: f64,
    per_ms: f64,
    at: Instant,
}

impl Bucket {
    fn full(capacity: f64, per_ms: f64, now: Instant) -> Self {
        Self {
            tokens: capacity,
            capacity,
            per_ms,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let ms = now.saturating_duration_since(self.at).as_secs_f64() * 1000.0;
        self.tokens = (self.tokens + ms * self.per_ms).min(self.capacity);
        self.at = now.max(self.at);
    }

    fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether it would be full at `now` (then forgetting it changes nothing).
    fn full_at(&self, now: Instant) -> bool {
        let mut b = *self;
        b.refill(now);
        b.tokens >= b.capacity
    }
}

/// One agent id's bucket, held by each of its connections.
#[derive(Debug, Clone)]
pub struct Budget {
    bucket: Arc<Mutex<Bucket>>,
}

impl Budget {
    /// Takes one sample's worth; false when the agent is over its limit.
    pub fn take(&self, now: Instant) -> bool {
        self.bucket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(now)
    }
}

/// The buckets of every agent id (and address) seen recently (see the module documentation).
#[derive(Debug)]
pub struct Allowances {
    limit: RateLimit,
    state: Mutex<Buckets>,
}

#[derive(Debug, Default)]
struct Buckets {
    /// By a keyed hash of the agent id and address (a random key per server: ids cannot be
    /// chosen to collide; a collision would only make two ids share a bucket).
    by_id: HashMap<u64, Arc<Mutex<Bucket>>>,
    hasher: RandomState,
    /// Size at which full, unused buckets are dropped next (amortised: it doubles).
    prune_at: usize,
}

impl Allowances {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit: RateLimit {
                burst: limit.burst.max(Limits::MIN_SAMPLE_BURST),
                ..limit
            },
            state: Mutex::new(Buckets {
                prune_at: 1024,
                ..Buckets::default()
            }),
        }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// The budget of agent `agent_id` connecting from `ip`, announcing `interval`; `None`
    /// without a limit. The same bucket as its other connections' from there, refilled from
    /// now on at the rate of `interval`.
    pub fn budget(
        &self,
        agent_id: &str,
        ip: IpAddr,
        interval: Duration,
        now: Instant,
    ) -> Option<Budget> {
        if self.limit.per_interval == 0 {
            return None;
        }
        let interval_ms = interval.as_secs_f64().max(0.001) * 1000.0;
        let per_ms = f64::from(self.limit.per_interval) / interval_ms;
        let capacity = f64::from(self.limit.burst);
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let key = s.hasher.hash_one((agent_id, ip));
        if !s.by_id.contains_key(&key) && s.by_id.len() >= s.prune_at {
            s.prune(now);
        }
        let bucket = s
            .by_id
            .entry(key)
            .or_insert_with(|| Arc::new(Mutex::new(Bucket::full(capacity, per_ms, now))))
            .clone();
        drop(s);
        {
            let mut b = bucket.lock().unwrap_or_else(PoisonError::into_inner);
            b.refill(now);
            b.per_ms = per_ms;
        }
        Some(Budget { bucket })
    }

    /// Buckets kept (connected agents' and recently disconnected ones').
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_id
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Buckets {
    /// Drops the buckets no connection holds that are full by now; beyond
    /// [`MAX_IDLE_BUCKETS`] every bucket no connection holds.
    fn prune(&mut self, now: Instant) {
        let unused = |b: &Arc<Mutex<Bucket>>| Arc::strong_count(b) == 1;
        self.by_id.retain(|_, b| {
            !unused(b)
                || !b
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .full_at(now)
        });
        let held = self.by_id.values().filter(|b| !unused(b)).count();
        if self.by_id.len() - held > MAX_IDLE_BUCKETS {
            self.by_id.retain(|_, b| !unused(b));
        }
        self.prune_at = (self.by_id.len() * 2).max(1024);
    }
}

/// Where a sample's timestamp may lie, around the server's clock when it arrives (see the
/// module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockWindow {
    /// Furthest a timestamp may be ahead of the server's clock.
    pub ahead: Duration,
    /// Furthest it may be behind (the raw tier's retention: older rows would be deleted as
    /// they arrive).
    pub behind: Duration,
}

impl ClockWindow {
    /// Furthest ahead by default: clocks drift, and NTP may not have run yet at boot.
    pub const DEFAULT_AHEAD: Duration = Duration::from_secs(5 * 60);

    /// [`ClockWindow::DEFAULT_AHEAD`], and `behind`.
    pub fn new(behind: Duration) -> Self {
        Self {
            ahead: Self::DEFAULT_AHEAD,
            behind,
        }
    }

    /// The time to store a sample stamped `ts_ms` that arrives at `now_ms`: its own when
    /// within the window, else `now_ms`; and whether it was re-timed.
    pub fn admit(&self, ts_ms: u64, now_ms: u64) -> (u64, bool) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let earliest = now_ms.saturating_sub(ms(self.behind));
        let latest = now_ms.saturating_add(ms(self.ahead));
        if (earliest..=latest).contains(&ts_ms) {
            (ts_ms, false)
        } else {
            (now_ms, true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const H: u64 = 3_600_000;
    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn limit(per_interval: u32, burst: u32) -> Allowances {
        Allowances::new(RateLimit {
            per_interval,
            burst,
        })
    }

    /// A fresh agent may send its burst at once, then as many samples per interval as the
    /// limit says, not more.
    #[test]
    fn a_burst_then_the_sustained_rate() {
        let a = limit(2, 40);
        let t0 = Instant::now();
        let b = a
            .budget("x", IP, 100 * MS, t0)
            .unwrap_or_else(|| panic!("limited"));
        assert_eq!((0..100).filter(|_| b.take(t0)).count(), 40, "the burst");
        // 10 intervals later: 20 more.
        let t1 = t0 + 1000 * MS;
        assert_eq!((0..100).filter(|_| b.take(t1)).count(), 20);
        // One sample per interval for an hour never runs dry.
        let mut t = t1;
        for _ in 0..36_000 {
            t += 100 * MS;
            assert!(b.take(t));
        }
    }

    /// The bucket belongs to the agent id (and address), not the connection: a reconnect (or
    /// a second connection) gets what is left, and only the time away refills it; the same id
    /// from another address spends a bucket of its own.
    #[test]
    fn reconnecting_does_not_refill_the_bucket() {
        let a = limit(2, 40);
        let t0 = Instant::now();
        let first = a
            .budget("x", IP, 100 * MS, t0)
            .unwrap_or_else(|| panic!("limited"));
        while first.take(t0) {}
        drop(first);
        let again = a
            .budget("x", IP, 100 * MS, t0)
            .unwrap_or_else(|| panic!("limited"));
        assert!(!again.take(t0), "still empty");
        let other = a
            .budget("y", IP, 100 * MS, t0)
            .unwrap_or_else(|| panic!("limited"));
        assert!(other.take(t0), "another id has its own");
        let elsewhere = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 9));
        let claimed = a
            .budget("x", elsewhere, 100 * MS, t0)
            .unwrap_or_else(|| panic!("limited"));
        assert!(
            claimed.take(t0),
            "the same id from elsewhere spends a bucket of its own"
        );
        assert!(again.take(t0 + 50 * MS), "one back after half an interval");
    }

    /// An honest agent's replay after an hour away (720 samples at 5 s) fits, and so does
    /// the replay of a full default buffer right after a short cut.
    #[test]
    fn an_honest_replay_fits() {
        let a = Allowances::new(RateLimit::default());
        let t0 = Instant::now();
        let b = a
            .budget("x", IP, Duration::from_secs(5), t0)
            .unwrap_or_else(|| panic!("limited"));
        for i in 0..100 {
            assert!(b.take(t0 + Duration::from_secs(5 * i)));
        }
        drop(b);
        let back = t0 + Duration::from_secs(3600 + 500);
        let b = a
            .budget("x", IP, Duration::from_secs(5), back)
            .unwrap_or_else(|| panic!("limited"));
        assert!((0..720).all(|_| b.take(back)), "a full buffer at once");
    }

    /// `per_interval` 0 turns the limit off; a burst under the minimum is raised.
    #[test]
    fn zero_turns_the_limit_off() {
        assert!(limit(0, 10).budget("x", IP, MS, Instant::now()).is_none());
        assert_eq!(limit(1, 0).limit().burst, Limits::MIN_SAMPLE_BURST);
    }

    /// Buckets of agents that are gone and whose bucket is full again are dropped (amortised,
    /// as the map grows); held or not yet full ones stay.
    #[test]
    fn full_unused_buckets_are_dropped() {
        let a = limit(2, 40);
        let t0 = Instant::now();
        let held = a.budget("held", IP, 100 * MS, t0);
        let drained = a
            .budget("drained", IP, 100 * MS, t0)
            .unwrap_or_else(|| panic!("limited"));
        while drained.take(t0) {}
        drop(drained);
        for i in 0..1100 {
            a.budget(&format!("gone-{i}"), IP, 100 * MS, t0);
        }
        assert!(a.len() <= 1102);
        // Much later every unused bucket is full: the next growth drops them.
        let later = t0 + Duration::from_secs(3600);
        for i in 0..2000 {
            a.budget(&format!("new-{i}"), IP, 100 * MS, later);
        }
        assert!(a.len() < 2100, "{}", a.len());
        assert!(held.is_some());
    }

    /// Timestamps within 5 minutes ahead and the raw retention behind are kept; others (a
    /// clock ten years ahead, 2^64-1, 1970) become the arrival time.
    #[test]
    fn samples_far_from_the_servers_clock_are_retimed() {
        let w = ClockWindow::new(Duration::from_secs(24 * 3600));
        let now = 1_800_000_000_000;
        assert_eq!(w.admit(now, now), (now, false));
        assert_eq!(w.admit(now + 5 * 60_000, now), (now + 5 * 60_000, false));
        assert_eq!(w.admit(now - 24 * H, now), (now - 24 * H, false));
        for far in [
            now + 5 * 60_000 + 1,
            now + 10 * 365 * 24 * H,
            u64::MAX,
            0,
            now - 25 * H,
        ] {
            assert_eq!(w.admit(far, now), (now, true), "{far}");
        }
    }
}
