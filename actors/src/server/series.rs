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
    /// 1-minute load average.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load1: Option<Stat>,
    /// Swap used, bytes (durable store only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_used: Option<Stat>,
    /// Use of the fullest filesystem, percent (`(size - avail) / size`, like `df`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_used_pct: Option<Stat>,
    /// Bytes per second received over every interface together (durable store only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_rx_bytes_per_s: Option<Stat>,
    /// Bytes per second sent over every interface together (durable store only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_tx_bytes_per_s: Option<Stat>,
    /// Bytes per second read from every disk together (durable store only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_read_bytes_per_s: Option<Stat>,
    /// Bytes per second written to every disk together (durable store only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_written_bytes_per_s: Option<Stat>,
    /// Each filesystem, by its index in the store's list of the agent's filesystems (`null`
    /// for one without readings in the bucket). Durable store only; empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fs: Vec<Option<FsStat>>,
}

/// One filesystem in one bucket: its use in percent (like `df`'s Use%) and in bytes.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FsStat {
    pub used_pct: Stat,
    pub used_bytes: Stat,
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

    /// What a [`Bucket`] shows of it. The average is kept within the extremes: a sum of
    /// equal values divided back may miss them by a rounding error (5 × 3.76 / 5 =
    /// 3.7599999999999993).
    pub fn stat(self) -> Stat {
        Stat {
            avg: (self.sum / self.n.max(1) as f64)
                .max(self.min)
                .min(self.max),
            min: self.min,
            max: self.max,
        }
    }
}

/// One filesystem's use over some samples: percent and bytes, counted together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FsAgg {
    pub used_pct: MinMax,
    pub used_bytes: MinMax,
}

impl FsAgg {
    /// One reading.
    pub fn one(used_pct: f64, used_bytes: f64) -> Self {
        Self {
            used_pct: MinMax::one(used_pct),
            used_bytes: MinMax::one(used_bytes),
        }
    }

    /// Both together (either may be absent).
    pub fn merge(a: Option<Self>, b: Option<Self>) -> Option<Self> {
        match (a, b) {
            (Some(a), Some(b)) => Some(Self {
                used_pct: MinMax::merge(Some(a.used_pct), Some(b.used_pct))?,
                used_bytes: MinMax::merge(Some(a.used_bytes), Some(b.used_bytes))?,
            }),
            (a, None) => a,
            (None, b) => b,
        }
    }

    /// What a [`Bucket`] shows of it.
    pub fn stat(self) -> FsStat {
        FsStat {
            used_pct: self.used_pct.stat(),
            used_bytes: self.used_bytes.stat(),
        }
    }
}

/// The aggregate of some samples: how many, and per quantity (CPU total, memory used, each
/// core's CPU, load, swap, filesystems, network and disk rates) over those that had the
/// reading (a sample may lack one). Merging is associative, so a rollup row can absorb samples
/// one batch at a time, and coarse points can be built from finer rows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Agg {
    pub n: u64,
    pub cpu: Option<MinMax>,
    pub mem: Option<MinMax>,
    /// Per-core CPU usage, percent, by core index.
    pub cores: Vec<Option<MinMax>>,
    /// 1-minute load average.
    pub load1: Option<MinMax>,
    /// Swap used, bytes.
    pub swap: Option<MinMax>,
    /// Use of the fullest filesystem, percent.
    pub fs_pct: Option<MinMax>,
    /// Network bytes per second received and sent, every interface together.
    pub net_rx: Option<MinMax>,
    pub net_tx: Option<MinMax>,
    /// Disk bytes per second read and written, every device together.
    pub disk_read: Option<MinMax>,
    pub disk_write: Option<MinMax>,
    /// Per filesystem, by its slot (the store's `mounts`).
    pub fs: Vec<Option<FsAgg>>,
}

/// The whole-machine values of one sample that the history keeps (beyond CPU and memory),
/// for [`Agg::with_host`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HostValues {
    pub load1: Option<f64>,
    pub swap: Option<f64>,
    pub fs_pct: Option<f64>,
    pub net_rx: Option<f64>,
    pub net_tx: Option<f64>,
    pub disk_read: Option<f64>,
    pub disk_write: Option<f64>,
}

impl Agg {
    /// One sample.
    pub fn sample(cpu: Option<f64>, mem: Option<f64>) -> Self {
        Self {
            n: 1,
            cpu: cpu.map(MinMax::one),
            mem: mem.map(MinMax::one),
            ..Self::default()
        }
    }

    /// The same sample with its whole-machine values.
    pub fn with_host(mut self, h: HostValues) -> Self {
        // Destructured, so that a new value cannot be forgotten here.
        let HostValues {
            load1,
            swap,
            fs_pct,
            net_rx,
            net_tx,
            disk_read,
            disk_write,
        } = h;
        self.load1 = load1.map(MinMax::one);
        self.swap = swap.map(MinMax::one);
        self.fs_pct = fs_pct.map(MinMax::one);
        self.net_rx = net_rx.map(MinMax::one);
        self.net_tx = net_tx.map(MinMax::one);
        self.disk_read = disk_read.map(MinMax::one);
        self.disk_write = disk_write.map(MinMax::one);
        self
    }

    /// The same sample with its filesystems' `(slot, used percent, used bytes)`.
    pub fn with_fs(mut self, fs: impl IntoIterator<Item = (usize, f64, f64)>) -> Self {
        for (slot, pct, bytes) in fs {
            if self.fs.len() <= slot {
                self.fs.resize(slot + 1, None);
            }
            self.fs[slot] = Some(FsAgg::one(pct, bytes));
        }
        self
    }

    /// The same sample with its per-core values.
    pub fn with_cores(mut self, cores: impl IntoIterator<Item = f64>) -> Self {
        self.cores = cores.into_iter().map(|v| Some(MinMax::one(v))).collect();
        self
    }

    pub fn merge(&mut self, other: &Agg) {
        // Destructured, so that a new field cannot be forgotten here.
        let Agg {
            n,
            cpu,
            mem,
            cores,
            load1,
            swap,
            fs_pct,
            net_rx,
            net_tx,
            disk_read,
            disk_write,
            fs,
        } = other;
        self.n += n;
        self.cpu = MinMax::merge(self.cpu, *cpu);
        self.mem = MinMax::merge(self.mem, *mem);
        if self.cores.len() < cores.len() {
            self.cores.resize(cores.len(), None);
        }
        for (mine, theirs) in self.cores.iter_mut().zip(cores) {
            *mine = MinMax::merge(*mine, *theirs);
        }
        self.load1 = MinMax::merge(self.load1, *load1);
        self.swap = MinMax::merge(self.swap, *swap);
        self.fs_pct = MinMax::merge(self.fs_pct, *fs_pct);
        self.net_rx = MinMax::merge(self.net_rx, *net_rx);
        self.net_tx = MinMax::merge(self.net_tx, *net_tx);
        self.disk_read = MinMax::merge(self.disk_read, *disk_read);
        self.disk_write = MinMax::merge(self.disk_write, *disk_write);
        if self.fs.len() < fs.len() {
            self.fs.resize(fs.len(), None);
        }
        for (mine, theirs) in self.fs.iter_mut().zip(fs) {
            *mine = FsAgg::merge(*mine, *theirs);
        }
    }

    /// The point of a series for this aggregate.
    pub fn bucket(&self, ts_ms: u64) -> Bucket {
        let Agg {
            n,
            cpu,
            mem,
            cores,
            load1,
            swap,
            fs_pct,
            net_rx,
            net_tx,
            disk_read,
            disk_write,
            fs,
        } = self;
        let stat = |m: &Option<MinMax>| m.map(MinMax::stat);
        Bucket {
            ts_ms,
            n: *n,
            cpu: stat(cpu),
            mem_used: stat(mem),
            cores: cores.iter().map(stat).collect(),
            load1: stat(load1),
            swap_used: stat(swap),
            fs_used_pct: stat(fs_pct),
            net_rx_bytes_per_s: stat(net_rx),
            net_tx_bytes_per_s: stat(net_tx),
            disk_read_bytes_per_s: stat(disk_read),
            disk_written_bytes_per_s: stat(disk_write),
            fs: fs.iter().map(|f| f.map(FsAgg::stat)).collect(),
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
        let mut same = Agg::default();
        for _ in 0..5 {
            same.merge(&Agg::sample(Some(3.76), None));
        }
        assert_eq!(
            same.bucket(0).cpu.map(|c| c.avg),
            Some(3.76),
            "no rounding outside"
        );
    }

    #[test]
    fn merging_partial_rollups_equals_rolling_up_everything() {
        let samples: Vec<Agg> = (0..50u32)
            .map(|i| {
                let v = f64::from(i * 7 % 100);
                Agg::sample(Some(v), Some(f64::from(i)))
                    .with_host(HostValues {
                        load1: Some(v / 10.0),
                        net_rx: (i % 3 > 0).then_some(v * 1000.0),
                        ..HostValues::default()
                    })
                    .with_fs([(usize::from(i % 2 == 0), v, v * 1e6)])
            })
            .collect();
        let mut whole = Agg::default();
        samples.iter().for_each(|s| whole.merge(s));
        let (mut left, mut right) = (Agg::default(), Agg::default());
        samples[..17].iter().for_each(|s| left.merge(s));
        samples[17..].iter().for_each(|s| right.merge(s));
        left.merge(&right);
        assert_eq!(left, whole);
        assert_eq!(whole.load1.map(|l| (l.n, l.max)), Some((50, 9.8)));
        assert_eq!(whole.net_rx.map(|r| r.n), Some(33));
        assert_eq!(
            whole
                .fs
                .iter()
                .map(|f| f.map(|f| f.used_bytes.n))
                .collect::<Vec<_>>(),
            [Some(25), Some(25)]
        );
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
