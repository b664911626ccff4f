//! The one aggregation engine behind every series the server serves: samples (or rollup rows)
//! become [`Agg`]s, which [`rebucket`] merges into [`Bucket`]s aligned by [`bucket_start`].
//!
//! Used by the in-memory history ([`super::history::series`], the last `--history` samples
//! of an agent) and by the durable store (its rollup rows, and the points it reads back for
//! the HTTP API), so both give the same points for the same samples.
//!
//! Owns no state and sends nothing: plain values and pure functions.

use std::collections::BTreeMap;

/// Average, minimum and maximum of the values in one bucket.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stat {
    pub avg: f64,
    pub min: f64,
    pub max: f64,
}

/// One point of a series: every sample whose timestamp falls in `[ts_ms, ts_ms + step)`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Bucket {
    pub ts_ms: u64,
    /// Samples in the bucket.
    pub n: u64,
    /// CPU usage of the whole machine, percent.
    pub cpu: Option<Stat>,
    /// Memory used, bytes.
    pub mem_used: Option<Stat>,
    /// CPU usage of each core, percent, by core index (`null` for a core without readings).
    /// Only the durable store keeps it; empty (and left out of the JSON) otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cores: Vec<Option<Stat>>,
}

/// Count, sum, minimum and maximum of one quantity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinMax {
    pub n: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl MinMax {
    /// One value.
    pub fn one(v: f64) -> Self {
        Self {
            n: 1,
            sum: v,
            min: v,
            max: v,
        }
    }

    /// Both together (either may be absent).
    pub fn merge(a: Option<Self>, b: Option<Self>) -> Option<Self> {
        match (a, b) {
            (Some(a), Some(b)) => Some(Self {
                n: a.n + b.n,
                sum: a.sum + b.sum,
                min: a.min.min(b.min),
                max: a.max.max(b.max),
            }),
            (a, None) => a,
            (None, b) => b,
        }
    }

    /// What a [`Bucket`] shows of it.
    pub fn stat(self) -> Stat {
        Stat {
            avg: self.sum / self.n.max(1) as f64,
            min: self.min,
            max: self.max,
        }
    }
}

/// The aggregate of some samples: how many, and CPU total / memory used / each core's CPU over
/// those that had the reading (a sample may lack one). Merging is associative, so a rollup row
/// can absorb samples one batch at a time, and coarse points can be built from finer rows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Agg {
    pub n: u64,
    pub cpu: Option<MinMax>,
    pub mem: Option<MinMax>,
    /// Per-core CPU usage, percent, by core index.
    pub cores: Vec<Option<MinMax>>,
}

impl Agg {
    /// One sample.
    pub fn sample(cpu: Option<f64>, mem: Option<f64>) -> Self {
        Self {
            n: 1,
            cpu: cpu.map(MinMax::one),
            mem: mem.map(MinMax::one),
            cores: Vec::new(),
        }
    }

    /// The same sample with its per-core values.
    pub fn with_cores(mut self, cores: impl IntoIterator<Item = f64>) -> Self {
        self.cores = cores.into_iter().map(|v| Some(MinMax::one(v))).collect();
        self
    }

    pub fn merge(&mut self, other: &Agg) {
        // Destructured, so that a new field cannot be forgotten here.
        let Agg { n, cpu, mem, cores } = other;
        self.n += n;
        self.cpu = MinMax::merge(self.cpu, *cpu);
        self.mem = MinMax::merge(self.mem, *mem);
        if self.cores.len() < cores.len() {
            self.cores.resize(cores.len(), None);
        }
        for (mine, theirs) in self.cores.iter_mut().zip(cores) {
            *mine = MinMax::merge(*mine, *theirs);
        }
    }

    /// The point of a series for this aggregate.
    pub fn bucket(&self, ts_ms: u64) -> Bucket {
        let Agg { n, cpu, mem, cores } = self;
        Bucket {
            ts_ms,
            n: *n,
            cpu: cpu.map(MinMax::stat),
            mem_used: mem.map(MinMax::stat),
            cores: cores.iter().map(|c| c.map(MinMax::stat)).collect(),
        }
    }
}

/// Start of the `width_ms` bucket holding `ts_ms` (buckets are aligned to multiples of the
/// width; a width of 0 counts as 1).
pub fn bucket_start(ts_ms: u64, width_ms: u64) -> u64 {
    let w = width_ms.max(1);
    ts_ms / w * w
}

/// Re-buckets `(ts_ms, agg)` rows into points of `step_ms` over `[from_ms, to_ms)`, oldest
/// first; empty points are left out.
pub fn rebucket(
    rows: impl IntoIterator<Item = (u64, Agg)>,
    from_ms: u64,
    to_ms: u64,
    step_ms: u64,
) -> Vec<Bucket> {
    let mut points: BTreeMap<u64, Agg> = BTreeMap::new();
    for (ts, agg) in rows {
        if ts >= from_ms && ts < to_ms {
            points
                .entry(bucket_start(ts, step_ms))
                .or_default()
                .merge(&agg);
        }
    }
    points.into_iter().map(|(ts, a)| a.bucket(ts)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3_600_000;

    #[test]
    fn rollup_keeps_avg_min_max_and_counts_missing_readings() {
        let mut a = Agg::default();
        for (cpu, mem) in [
            (Some(10.0), Some(100.0)),
            (Some(90.0), None),
            (Some(20.0), Some(300.0)),
        ] {
            a.merge(&Agg::sample(cpu, mem));
        }
        a.merge(&Agg::sample(None, Some(200.0)));
        let b = a.bucket(0);
        assert_eq!(b.n, 4);
        assert_eq!(
            b.cpu,
            Some(Stat {
                avg: 40.0,
                min: 10.0,
                max: 90.0
            })
        );
        assert_eq!(
            b.mem_used,
            Some(Stat {
                avg: 200.0,
                min: 100.0,
                max: 300.0
            })
        );
        assert_eq!(Agg::sample(None, None).bucket(0).cpu, None);
    }

    #[test]
    fn merging_partial_rollups_equals_rolling_up_everything() {
        let samples: Vec<Agg> = (0..50u32)
            .map(|i| Agg::sample(Some(f64::from(i * 7 % 100)), Some(f64::from(i))))
            .collect();
        let mut whole = Agg::default();
        samples.iter().for_each(|s| whole.merge(s));
        let (mut left, mut right) = (Agg::default(), Agg::default());
        samples[..17].iter().for_each(|s| left.merge(s));
        samples[17..].iter().for_each(|s| right.merge(s));
        left.merge(&right);
        assert_eq!(left, whole);
    }

    #[test]
    fn rebucket_aligns_to_the_step_and_keeps_spikes() {
        let rows = [
            (60_000, Agg::sample(Some(5.0), None)),
            (120_000, Agg::sample(Some(99.0), None)),
            (179_999, Agg::sample(Some(1.0), None)),
            (400_000, Agg::sample(Some(50.0), None)),
        ];
        let got = rebucket(rows, 60_000, 400_000, 120_000);
        assert_eq!(
            got.iter().map(|b| b.ts_ms).collect::<Vec<_>>(),
            [0, 120_000]
        );
        assert_eq!(got[1].cpu.map(|c| (c.min, c.max)), Some((1.0, 99.0)));
        assert_eq!(got[1].n, 2);
    }

    /// Buckets start at multiples of their width; a width of 0 does not divide by zero.
    #[test]
    fn buckets_start_at_multiples_of_the_width() {
        assert_eq!(bucket_start(3_599_999, H), 0);
        assert_eq!(bucket_start(3_600_000, H), H);
        assert_eq!(bucket_start(1234, 0), 1234);
    }
}
