//! The fill history behind `filesystem_fill`: per agent and mount point, a small ring of
//! `(received at, available bytes)` points over the last fit window, and the time until the
//! least-squares line through them reaches zero ([`seconds_until_zero`], like Prometheus'
//! `predict_linear`). No actor: the Engine's `Evaluator` owns one [`FillRings`] and feeds it
//! every live agent's filesystems at each evaluation.
//!
//! **Why a ring here and not the store's history.** It works with `--no-store` (the rule
//! must not depend on a disk); it costs no SQLite read on the alerts thread per evaluation;
//! its resolution follows the fit window (64 points whatever the window: seconds in a test,
//! hours in production), where the store's tiers are fixed; and it depends on no store
//! column. The price: after a server restart a filesystem needs a quarter of the window of
//! new points (1h30 at the default 6h) before it is predicted again.
//!
//! **Points** are taken at the time the server *received* the sample (snapshot time minus
//! `last_seen_ms`, the server's clock: an agent's clock offset cannot skew the slope), at
//! most one per `window / FILL_POINTS`, and dropped once older than the window.
//!
//! **Memory is bounded** three ways: at most [`MAX_POINTS`] points per series (16 bytes
//! each, allocated once); at most [`MAX_SERIES_PER_AGENT`] series per agent (the protocol's
//! filesystem bound: an agent that renames its mounts evicts its own least recently seen
//! series, never another agent's); at most [`MAX_SERIES`] series in all (beyond it new
//! series are not started, logged once a minute). A series costs about 1.4 KiB (points,
//! mount name ≤ 256 bytes, map entry), so the rings never hold more than ≈ 140 MiB, and a
//! typical fleet (a few filesystems per host) about 4 KiB per agent. Series not fed for a
//! window are forgotten, and an agent's ring goes with the agent.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::protocol::MAX_FILESYSTEMS;
use crate::server::alerts::rules::seconds_until_zero;

/// Points a series gets per fit window (one per `window / FILL_POINTS`).
pub const FILL_POINTS: u64 = 64;
/// Most points one series holds (a window's worth, and its first point).
pub const MAX_POINTS: usize = FILL_POINTS as usize + 1;
/// Most series per agent: the protocol's bound on filesystems in one sample.
pub const MAX_SERIES_PER_AGENT: usize = MAX_FILESYSTEMS;
/// Most series in all (one per agent at [`crate::config::MAX_AGENTS`]).
pub const MAX_SERIES: usize = 100_000;
/// Fewest points a prediction is made from.
pub const MIN_POINTS: usize = 3;

/// One filesystem's recent available bytes.
#[derive(Debug)]
struct Series {
    points: VecDeque<(u64, f64)>,
    last_fed_ms: u64,
}

/// Every agent's series (see the module documentation).
#[derive(Debug, Default)]
pub struct FillRings {
    agents: HashMap<String, HashMap<String, Series>>,
    series: usize,
    /// When "too many series" was last logged.
    full_logged: Option<Instant>,
}

impl FillRings {
    /// Adds a point for `mount` of `agent` (`avail_bytes` as received at `at_ms`), drops the
    /// points older than `window` before `now_ms`, and returns the seconds from `now_ms` until
    /// the fitted line reaches zero: `None` before the series spans a quarter of the window
    /// (or has [`MIN_POINTS`]), or when it cannot be tracked (a bound is reached);
    /// `Some(INFINITY)` when the filesystem is not filling.
    pub fn feed(
        &mut self,
        agent: &str,
        mount: &str,
        at_ms: u64,
        avail_bytes: u64,
        now_ms: u64,
        window: Duration,
    ) -> Option<f64> {
        let window = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let step = window / FILL_POINTS;
        let total = self.series;
        if !self.agents.contains_key(agent) {
            if total >= MAX_SERIES {
                log_full(&mut self.full_logged);
                return None;
            }
            self.agents.insert(agent.to_string(), HashMap::new());
        }
        let mounts = self.agents.get_mut(agent)?;
        if !mounts.contains_key(mount) {
            if mounts.len() >= MAX_SERIES_PER_AGENT {
                // The least recently fed of this agent's series makes room, unless every one
                // was fed at this very evaluation (more mounts than the protocol allows).
                let oldest = mounts
                    .iter()
                    .filter(|(_, s)| s.last_fed_ms < now_ms)
                    .min_by_key(|(_, s)| s.last_fed_ms)
                    .map(|(k, _)| k.clone())?;
                mounts.remove(&oldest);
                self.series -= 1;
            } else if total >= MAX_SERIES {
                log_full(&mut self.full_logged);
                return None;
            }
            mounts.insert(
                mount.to_string(),
                Series {
                    points: VecDeque::with_capacity(MAX_POINTS),
                    last_fed_ms: now_ms,
                },
            );
            self.series += 1;
        }
        let s = mounts.get_mut(mount)?;
        s.last_fed_ms = now_ms;
        if s.points
            .back()
            .is_none_or(|&(t, _)| at_ms >= t.saturating_add(step.max(1)))
        {
            if s.points.len() >= MAX_POINTS {
                s.points.pop_front();
            }
            s.points.push_back((at_ms, avail_bytes as f64));
        }
        while s
            .points
            .front()
            .is_some_and(|&(t, _)| t.saturating_add(window) < now_ms)
        {
            s.points.pop_front();
        }
        let span = match (s.points.front(), s.points.back()) {
            (Some(a), Some(b)) => b.0.saturating_sub(a.0),
            _ => 0,
        };
        if s.points.len() < MIN_POINTS || span < window / 4 {
            return None;
        }
        s.points.make_contiguous();
        seconds_until_zero(s.points.as_slices().0, now_ms)
    }

    /// Forgets the series not fed for a `window` before `now_ms`, and every series of an
    /// agent for which `keep` says no (the server forgot it).
    pub fn prune(&mut self, now_ms: u64, window: Duration, keep: impl Fn(&str) -> bool) {
        let window = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        self.agents.retain(|agent, mounts| {
            if keep(agent) {
                mounts.retain(|_, s| s.last_fed_ms.saturating_add(window) >= now_ms);
            } else {
                mounts.clear();
            }
            !mounts.is_empty()
        });
        self.series = self.agents.values().map(HashMap::len).sum();
    }

    /// Series held now (every agent's).
    pub fn series(&self) -> usize {
        self.series
    }

    /// Points held by `agent`'s series of `mount`.
    pub fn points(&self, agent: &str, mount: &str) -> usize {
        self.agents
            .get(agent)
            .and_then(|m| m.get(mount))
            .map_or(0, |s| s.points.len())
    }
}

/// Logs that [`MAX_SERIES`] is reached, at most once a minute.
fn log_full(logged: &mut Option<Instant>) {
    if logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
        tracing::warn!(
            "alerts: {MAX_SERIES} filesystems tracked for filesystem_fill; new ones are not"
        );
        *logged = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(640);

    /// Proves: a steady fill (1 MB/s, a point every 10 s) is predicted exactly once the
    /// series spans a quarter of the window, and not before; a flat one never fills.
    #[test]
    fn steady_fill_is_predicted_after_a_quarter_window() {
        let mut r = FillRings::default();
        let mut first = None;
        for i in 0..100u64 {
            let now = 1_700_000_000_000 + i * 10_000;
            let left = r.feed(
                "a",
                "/data",
                now,
                1_000_000_000 - i * 10_000_000,
                now,
                WINDOW,
            );
            if left.is_some() && first.is_none() {
                first = Some(i);
            }
            let flat = r.feed("a", "/flat", now, 5, now, WINDOW);
            assert!(flat.is_none_or(|f| f == f64::INFINITY), "{flat:?}");
            if i == 99 {
                let left = left.unwrap_or_default();
                assert!((left - 10.0).abs() < 1e-3, "{left}");
            }
        }
        assert_eq!(
            first,
            Some(16),
            "a quarter of 640 s is 160 s: 16 steps of 10 s"
        );
    }

    /// Proves: the points of a series stay within the window and [`MAX_POINTS`], however
    /// often it is fed (every 100 ms for an hour of a 640 s window), and a point is taken at
    /// most once per `window / FILL_POINTS`.
    #[test]
    fn points_are_bounded() {
        let mut r = FillRings::default();
        let mut most = 0;
        for i in 0..36_000u64 {
            let now = i * 100;
            r.feed("a", "/", now, 1_000_000 - i, now, WINDOW);
            most = most.max(r.points("a", "/"));
        }
        assert!(most <= MAX_POINTS, "{most}");
        assert!(most >= MAX_POINTS - 1, "{most}: the window is not used");
        // A shorter window on reload drops what is older than it.
        r.feed("a", "/", 3_600_000, 1, 3_600_000, Duration::from_secs(60));
        assert!(r.points("a", "/") <= 7, "{}", r.points("a", "/"));
    }

    /// Proves: an agent that sends new mount points every time holds at most
    /// [`MAX_SERIES_PER_AGENT`] series (its own oldest make room) and does not evict another
    /// agent's series; series not fed for a window, and forgotten agents, are pruned.
    #[test]
    fn series_per_agent_are_bounded_and_pruned() {
        let mut r = FillRings::default();
        r.feed("quiet", "/", 0, 10, 0, WINDOW);
        for i in 0..1000u64 {
            let now = 1 + i * 1000;
            r.feed("rotating", &format!("/m{i}"), now, 10, now, WINDOW);
            r.feed("quiet", "/", now, 10, now, WINDOW);
        }
        assert_eq!(r.series(), MAX_SERIES_PER_AGENT + 1);
        assert!(r.points("quiet", "/") > 0);
        assert!(r.points("rotating", "/m999") > 0);
        assert_eq!(r.points("rotating", "/m0"), 0);
        r.prune(2_000_000, WINDOW, |a| a == "rotating");
        assert_eq!(
            r.series(),
            0,
            "quiet was forgotten, rotating's were not fed"
        );
    }

    /// Proves: a full agent's mounts all fed in one evaluation are not evicted by more
    /// (the bound is kept: the extra one is not tracked).
    #[test]
    fn more_mounts_than_the_bound_in_one_evaluation() {
        let mut r = FillRings::default();
        for i in 0..=MAX_SERIES_PER_AGENT {
            r.feed("a", &format!("/m{i}"), 5, 10, 5, WINDOW);
        }
        assert_eq!(r.series(), MAX_SERIES_PER_AGENT);
        assert_eq!(r.points("a", &format!("/m{MAX_SERIES_PER_AGENT}")), 0);
    }
}
