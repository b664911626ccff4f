//! Per-agent sample history: a bounded ring ordered by (run, seq), and the exactly-once
//! bookkeeping that goes with it.
//!
//! Samples of the current run are deduplicated by `seq`; a replayed sample that fills a gap is
//! put in its right place. The ring keeps the last `capacity` samples (across runs, oldest
//! dropped first), so memory per agent is fixed. Counters describe the current run:
//! `received` (distinct samples accepted), `duplicates` (seen before, dropped), and, within the
//! window, `first_seq` and `gaps` (seqs between `first_seq` and the highest never received).
//! [`series`] turns the ring into buckets with the aggregation engine of [`super::series`].
//! Besides CPU and memory a point keeps the 1-minute load and the fullest filesystem's use
//! (the in-memory history of `--no-store`); the durable store keeps more.

use std::collections::VecDeque;

use super::series::{Agg, HostValues, rebucket};
pub use super::series::{Bucket, Stat};

/// One remembered sample, kept small on purpose (the latest full sample lives elsewhere).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Which run of the agent (counts up on every new `run_id`).
    pub run: u32,
    pub seq: u64,
    /// Agent-side timestamp, ms since the Unix epoch.
    pub ts_ms: u64,
    pub cpu_total: Option<f32>,
    pub mem_used: Option<u64>,
    /// 1-minute load average.
    pub load1: Option<f32>,
    /// Use of the fullest filesystem in hundredths of a percent (two bytes: the point stays
    /// 56 bytes).
    pub fs_pct_x100: Option<u16>,
}

impl Point {
    /// A point of sample `seq` with CPU and memory only (`run` is set when it is recorded).
    pub fn new(seq: u64, ts_ms: u64, cpu_total: Option<f32>, mem_used: Option<u64>) -> Self {
        Self {
            run: 0,
            seq,
            ts_ms,
            cpu_total,
            mem_used,
            load1: None,
            fs_pct_x100: None,
        }
    }

    /// The point of sample `m`.
    pub fn of(m: &crate::protocol::Metrics) -> Self {
        let fullest = m.filesystems.as_deref().and_then(|fs| {
            fs.iter()
                .filter(|f| f.size_bytes > 0)
                .map(crate::snapshot::used_pct)
                .max_by(f64::total_cmp)
        });
        Self {
            load1: m.load.map(|l| l.load1),
            fs_pct_x100: fullest.map(|p| (p.clamp(0.0, 100.0) * 100.0).round() as u16),
            ..Self::new(
                m.seq,
                m.ts_ms,
                m.cpu.as_ref().map(|c| c.total),
                m.memory.map(|mem| mem.used),
            )
        }
    }

    /// The fullest filesystem's use, percent.
    pub fn fs_pct(&self) -> Option<f64> {
        self.fs_pct_x100.map(|v| f64::from(v) / 100.0)
    }

    /// This sample as an aggregate of one.
    pub fn agg(&self) -> Agg {
        Agg::sample(
            self.cpu_total.map(f64::from),
            self.mem_used.map(|m| m as f64),
        )
        .with_host(HostValues {
            load1: self.load1.map(f64::from),
            fs_pct: self.fs_pct(),
            ..HostValues::default()
        })
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct History {
    points: VecDeque<Point>,
    capacity: usize,
    run: u32,
    highest: u64,
    received: u64,
    duplicates: u64,
    /// Highest seq of the current run pushed out of the window (a repeat of it is a duplicate).
    evicted_through: u64,
    /// What [`History::forget_points`] dropped of the current run: its lowest seq (0: none)
    /// and how many points it had, still counted by `first_seq` and `gaps`.
    forgotten_first: u64,
    forgotten_held: u64,
}

impl History {
    pub fn new(capacity: usize) -> Self {
        Self {
            points: VecDeque::new(),
            capacity: capacity.max(1),
            run: 0,
            highest: 0,
            received: 0,
            duplicates: 0,
            evicted_through: 0,
            forgotten_first: 0,
            forgotten_held: 0,
        }
    }

    /// Drops every point and frees their memory, keeping the run's accounting (`highest`,
    /// `received`, `duplicates`, `first_seq`, `gaps`); every seq up to the highest counts as
    /// held from now on, so a repeat of one is still a duplicate. For an agent gone offline
    /// while a store keeps its history.
    pub fn forget_points(&mut self) {
        let held = self.current().len() as u64;
        if held > 0 && self.forgotten_first == 0 {
            self.forgotten_first = self.first_seq();
        }
        self.forgotten_held += held;
        self.evicted_through = self.evicted_through.max(self.highest);
        self.points = VecDeque::new();
    }

    /// Starts counting a new run of the agent; earlier points stay until pushed out.
    pub fn new_run(&mut self) {
        self.run += 1;
        self.highest = 0;
        self.received = 0;
        self.duplicates = 0;
        self.evicted_through = 0;
        self.forgotten_first = 0;
        self.forgotten_held = 0;
    }

    /// Records a sample of the current run with CPU and memory only; see
    /// [`History::record_point`].
    pub fn record(
        &mut self,
        seq: u64,
        ts_ms: u64,
        cpu_total: Option<f32>,
        mem_used: Option<u64>,
    ) -> bool {
        self.record_point(Point::new(seq, ts_ms, cpu_total, mem_used))
    }

    /// Records a sample of the current run (`point.run` is not looked at); false if it is a
    /// duplicate (then nothing changes but the duplicate count).
    pub fn record_point(&mut self, point: Point) -> bool {
        let seq = point.seq;
        let key = (self.run, seq);
        if seq <= self.evicted_through {
            self.duplicates += 1;
            return false;
        }
        // The usual case, the next sample in order, goes at the end without a search.
        let in_order = self.points.back().is_none_or(|p| (p.run, p.seq) < key);
        let pos = if in_order {
            self.points.len()
        } else {
            match self.points.binary_search_by(|p| (p.run, p.seq).cmp(&key)) {
                Ok(_) => {
                    self.duplicates += 1;
                    return false;
                }
                Err(pos) => pos,
            }
        };
        if self.points.len() == self.points.capacity() && self.points.len() < self.capacity {
            // Grow by doubling, but never past the ring's size: the default doubling would
            // take a 720-sample ring to 1024 slots (40 KiB per agent instead of 28).
            let want = (self.points.len() * 2).clamp(4, self.capacity + 1);
            self.points.reserve_exact(want - self.points.len());
        }
        self.points.insert(
            pos,
            Point {
                run: self.run,
                ..point
            },
        );
        self.received += 1;
        self.highest = self.highest.max(seq);
        while self.points.len() > self.capacity {
            if let Some(old) = self.points.pop_front()
                && old.run == self.run
            {
                self.evicted_through = self.evicted_through.max(old.seq);
                // The window now starts past whatever was forgotten (it was older).
                self.forgotten_first = 0;
                self.forgotten_held = 0;
            }
        }
        true
    }

    /// Continues a run that a previous server held (restart with a store): `points` (oldest
    /// first) refill the window as samples of the current run (their `run` is not looked
    /// at), and every seq up to `highest` counts as held, so its repeat is a duplicate.
    pub fn resume(&mut self, points: &[Point], highest: u64) {
        for p in points {
            self.record_point(*p);
        }
        let below_window = match self.first_seq() {
            0 => highest,
            first => first - 1,
        };
        self.evicted_through = self.evicted_through.max(below_window);
        self.highest = self.highest.max(highest);
    }

    /// Highest seq received in the current run (0 before the first).
    pub fn highest(&self) -> u64 {
        self.highest
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// The current run's points (a suffix of the ring, since runs only count up).
    fn current(&self) -> impl ExactSizeIterator<Item = &Point> {
        let start = self.points.partition_point(|p| p.run < self.run);
        self.points.range(start..)
    }

    /// Lowest seq of the current run still in the window (0 if none).
    pub fn first_seq(&self) -> u64 {
        match self.forgotten_first {
            0 => self.current().next().map_or(0, |p| p.seq),
            first => first,
        }
    }

    /// Seqs between `first_seq` and the highest that were never received.
    pub fn gaps(&self) -> u64 {
        let held = self.current().len() as u64 + self.forgotten_held;
        match self.first_seq() {
            0 => 0,
            first => (self.highest - first + 1).saturating_sub(held),
        }
    }

    /// Every remembered point, oldest first.
    pub fn points(&self) -> impl Iterator<Item = &Point> {
        self.points.iter()
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

/// Aggregates points with `from_ms <= ts < to_ms` into buckets of `step_ms` aligned to
/// multiples of the step (avg, min and max, so spikes survive). Empty buckets are left out.
/// The same engine as the store's ([`rebucket`]): the ring's points carry no per-core values.
pub fn series<'a>(
    points: impl Iterator<Item = &'a Point>,
    from_ms: u64,
    to_ms: u64,
    step_ms: u64,
) -> Vec<Bucket> {
    rebucket(points.map(|p| (p.ts_ms, p.agg())), from_ms, to_ms, step_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(h: &mut History, seq: u64) -> bool {
        h.record(seq, seq * 1000, Some(1.0), Some(1))
    }

    /// Proves: forgetting the points frees them but keeps the run's accounting, a repeat of a
    /// forgotten seq is still a duplicate, and new samples count on from there.
    #[test]
    fn forgotten_points_keep_the_accounting_and_the_duplicates() {
        let mut h = History::new(10);
        for seq in [3, 4, 6] {
            rec(&mut h, seq);
        }
        let before = (h.highest(), h.received(), h.first_seq(), h.gaps());
        h.forget_points();
        assert!(h.is_empty());
        assert_eq!((h.highest(), h.received(), h.first_seq(), h.gaps()), before);
        assert!(!rec(&mut h, 5), "a seq up to the highest counts as held");
        assert!(rec(&mut h, 8));
        assert_eq!((h.first_seq(), h.gaps(), h.duplicates()), (3, 2, 1));
    }

    #[test]
    fn the_ring_never_allocates_far_beyond_its_size() {
        let mut h = History::new(720);
        for seq in 1..=2000 {
            rec(&mut h, seq);
        }
        assert_eq!(h.len(), 720);
        // One spare slot: a sample is inserted before the oldest is dropped.
        assert!(h.points.capacity() <= 721 + 8, "{}", h.points.capacity());
    }

    #[test]
    fn series_buckets_keep_avg_min_and_max() {
        let mut h = History::new(10);
        for (seq, cpu) in [(1, 10.0), (2, 90.0), (3, 20.0), (4, 40.0)] {
            h.record(seq, seq * 1000, Some(cpu), Some(seq * 100));
        }
        // Buckets of 2 s over [1 s, 5 s): {1 s}, {2 s, 3 s}, {4 s}.
        let got = series(h.points(), 1000, 5000, 2000);
        let ts: Vec<u64> = got.iter().map(|b| b.ts_ms).collect();
        assert_eq!(ts, [0, 2000, 4000]);
        assert_eq!(
            got[1].cpu,
            Some(Stat {
                avg: 55.0,
                min: 20.0,
                max: 90.0
            })
        );
        assert_eq!(got[1].n, 2);
        assert_eq!(got[2].mem_used.map(|m| m.max), Some(400.0));
        assert!(series(h.points(), 5000, 9000, 1000).is_empty());
    }

    /// Proves: the ring keeps each sample's 1-minute load and fullest filesystem (the
    /// in-memory history of `--no-store`), its series have their avg/min/max, and a point
    /// stays within 56 bytes.
    #[test]
    fn the_ring_keeps_load_and_the_fullest_filesystem() {
        let sample = |seq: u64, load1: f32, used: u64| crate::protocol::Metrics {
            seq,
            ts_ms: seq * 1000,
            load: Some(crate::protocol::Load {
                load1,
                load5: 0.0,
                load15: 0.0,
                running: None,
                threads: None,
                procs: None,
            }),
            filesystems: Some(vec![
                crate::protocol::Filesystem {
                    mount: "/".into(),
                    fs_type: "ext4".into(),
                    device: "/dev/sda1".into(),
                    size_bytes: 1000,
                    used_bytes: used,
                    avail_bytes: 1000 - used,
                    inodes: 0,
                    inodes_used: 0,
                },
                crate::protocol::Filesystem {
                    mount: "/boot".into(),
                    fs_type: "ext4".into(),
                    device: "/dev/sda2".into(),
                    size_bytes: 100,
                    used_bytes: 50,
                    avail_bytes: 50,
                    inodes: 0,
                    inodes_used: 0,
                },
            ]),
            ..crate::protocol::Metrics::default()
        };
        let mut h = History::new(10);
        for (seq, load, used) in [(1, 0.5, 100), (2, 2.5, 900), (3, 1.5, 800)] {
            assert!(h.record_point(Point::of(&sample(seq, load, used))));
        }
        let got = series(h.points(), 0, 10_000, 10_000);
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].load1,
            Some(Stat {
                avg: 1.5,
                min: 0.5,
                max: 2.5
            })
        );
        // The fullest of `/` (10, 90, 80 %) and `/boot` (50 %): 50, 90, 80.
        assert_eq!(
            got[0].fs_used_pct,
            Some(Stat {
                avg: 220.0 / 3.0,
                min: 50.0,
                max: 90.0
            })
        );
        assert!(std::mem::size_of::<Point>() <= 56);
    }

    #[test]
    fn in_order_samples_have_no_gaps_or_duplicates() {
        let mut h = History::new(10);
        for seq in 5..=9 {
            assert!(rec(&mut h, seq));
        }
        assert_eq!(
            (h.first_seq(), h.highest(), h.gaps(), h.duplicates()),
            (5, 9, 0, 0)
        );
        assert_eq!(h.received(), 5);
    }

    #[test]
    fn repeats_are_duplicates_and_change_nothing() {
        let mut h = History::new(10);
        (1..=3).for_each(|s| {
            rec(&mut h, s);
        });
        assert!(!rec(&mut h, 2));
        assert!(!rec(&mut h, 3));
        assert_eq!((h.received(), h.duplicates(), h.len()), (3, 2, 3));
    }

    #[test]
    fn replay_fills_a_gap_in_its_place() {
        let mut h = History::new(10);
        for seq in [1, 2, 5, 6] {
            rec(&mut h, seq);
        }
        assert_eq!(h.gaps(), 2);
        rec(&mut h, 4);
        rec(&mut h, 3);
        assert_eq!(h.gaps(), 0);
        let seqs: Vec<u64> = h.points().map(|p| p.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn window_is_bounded_and_evicted_repeats_stay_duplicates() {
        let mut h = History::new(3);
        (1..=5).for_each(|s| {
            rec(&mut h, s);
        });
        assert_eq!((h.len(), h.first_seq(), h.gaps()), (3, 3, 0));
        assert!(
            !rec(&mut h, 1),
            "seq 1 was seen, then evicted: still a duplicate"
        );
        assert_eq!(h.duplicates(), 1);
    }

    #[test]
    fn a_resumed_run_treats_everything_held_before_as_duplicates() {
        let mut h = History::new(3);
        let stored: Vec<_> = (8..=10)
            .map(|seq| Point::new(seq, seq * 1000, Some(1.0), Some(1)))
            .collect();
        h.resume(&stored, 10);
        assert_eq!((h.first_seq(), h.highest(), h.gaps()), (8, 10, 0));
        assert!(!rec(&mut h, 10), "held by the previous server");
        assert!(!rec(&mut h, 2), "below the refilled window, but held");
        assert!(rec(&mut h, 11));
        assert_eq!((h.duplicates(), h.gaps(), h.highest()), (2, 0, 11));
        let mut empty = History::new(3);
        empty.resume(&[], 7);
        assert!(!rec(&mut empty, 7));
        assert!(rec(&mut empty, 8));
    }

    #[test]
    fn a_new_run_restarts_counting_but_keeps_old_points() {
        let mut h = History::new(10);
        (1..=4).for_each(|s| {
            rec(&mut h, s);
        });
        h.new_run();
        assert_eq!(
            (h.highest(), h.received(), h.first_seq(), h.gaps()),
            (0, 0, 0, 0)
        );
        assert!(rec(&mut h, 1), "seq 1 of the new run is new");
        assert!(rec(&mut h, 2));
        assert_eq!((h.first_seq(), h.gaps(), h.len()), (1, 0, 6));
    }
}
