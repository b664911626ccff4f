//! CPU: usage of the whole machine and of each core, and where the time went (user, system,
//! iowait, steal), all from two readings of `/proc/stat`'s `cpu` lines.

use crate::protocol::{Cpu, CpuModes};

use super::text::{parse_u64, round2};

/// Whether `/proc/stat` text holds all its `cpu` lines: a complete line follows them.
pub fn stat_complete(text: &[u8]) -> bool {
    text.split_inclusive(|&b| b == b'\n')
        .take_while(|line| line.ends_with(b"\n"))
        .any(|line| !line.starts_with(b"cpu"))
}

/// Cumulative CPU time counters of one `/proc/stat` line, in clock ticks, with sysinfo's
/// adjustments (`guest` is already counted in `user`, `guest_nice` in `nice`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    user: u64,
    nice: u64,
    system: u64,
    idle: u64,
    iowait: u64,
    irq: u64,
    softirq: u64,
    steal: u64,
    guest: u64,
    guest_nice: u64,
}

impl CpuTimes {
    /// From the columns of a `/proc/stat` cpu line (missing columns of older kernels are 0).
    pub fn from_columns(c: [u64; 10]) -> Self {
        let [
            user,
            nice,
            system,
            idle,
            iowait,
            irq,
            softirq,
            steal,
            guest,
            guest_nice,
        ] = c;
        Self {
            user: user.saturating_sub(guest),
            nice: nice.saturating_sub(guest_nice),
            system,
            idle,
            iowait,
            irq,
            softirq,
            steal,
            guest,
            guest_nice,
        }
    }

    fn system_time(&self) -> u64 {
        self.system
            .saturating_add(self.irq)
            .saturating_add(self.softirq)
    }

    fn virtual_time(&self) -> u64 {
        self.guest.saturating_add(self.guest_nice)
    }

    /// User time as people mean it: user + nice + the guests (which the kernel counts there).
    fn user_time(&self) -> u64 {
        self.user
            .saturating_add(self.nice)
            .saturating_add(self.virtual_time())
    }

    fn total_time(&self) -> u64 {
        self.user
            .saturating_add(self.nice)
            .saturating_add(self.system_time())
            .saturating_add(self.idle)
            .saturating_add(self.iowait)
            .saturating_add(self.virtual_time())
            .saturating_add(self.steal)
    }

    /// Ticks elapsed since `old` (1 when none did, or the counters went backwards: never a
    /// division by zero).
    #[allow(clippy::cast_precision_loss)] // tick counts of one interval: far below 2^24
    fn period_since(&self, old: &CpuTimes) -> f32 {
        let (total, old_total) = (self.total_time(), old.total_time());
        if total > old_total {
            (total - old_total) as f32
        } else {
            1.0
        }
    }

    /// Busy share since `old`, in percent, exactly as sysinfo 0.40 computes it (linux/cpu.rs,
    /// `CpuUsage::set`): user + nice + system/irq/softirq + steal + guest periods over the
    /// total period, i.e. everything but idle and iowait; at most 100.
    #[allow(clippy::cast_precision_loss)] // tick counts of one interval: far below 2^24
    pub fn usage_since(&self, old: &CpuTimes) -> f32 {
        let period = self.period_since(old);
        let busy = self.nice.saturating_sub(old.nice) as f32
            + self.user.saturating_sub(old.user) as f32
            + self.system_time().saturating_sub(old.system_time()) as f32
            + (self.steal.saturating_sub(old.steal)
                + self.virtual_time().saturating_sub(old.virtual_time())) as f32;
        (busy / period * 100.0).min(100.0)
    }

    /// Where the time since `old` went, in percent of the period (rounded to 0.01): the same
    /// period as [`usage_since`](Self::usage_since), so `user + system + steal` is the usage.
    #[allow(clippy::cast_precision_loss)] // tick counts of one interval: far below 2^24
    pub fn modes_since(&self, old: &CpuTimes) -> CpuModes {
        let period = self.period_since(old);
        let pct = |new: u64, old: u64| {
            round2((new.saturating_sub(old) as f32 / period * 100.0).clamp(0.0, 100.0))
        };
        CpuModes {
            user_pct: pct(self.user_time(), old.user_time()),
            system_pct: pct(self.system_time(), old.system_time()),
            iowait_pct: pct(self.iowait, old.iowait),
            steal_pct: pct(self.steal, old.steal),
        }
    }
}

/// Calls `f` for each leading `cpu` line of `/proc/stat` text: `None` for the machine's
/// `cpu` line, `Some(n)` for `cpuN`. Stops at the first other line (`intr`, …); skips a line
/// whose CPU number does not parse.
pub fn parse_stat(text: &[u8], mut f: impl FnMut(Option<u32>, CpuTimes)) {
    for line in text.split(|&b| b == b'\n') {
        let Some(rest) = line.strip_prefix(b"cpu") else {
            return;
        };
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let (number, counters) = rest.split_at(digits);
        let cpu = if number.is_empty() {
            if counters.first() != Some(&b' ') {
                continue; // `cpuX`: not a CPU line we know
            }
            None
        } else {
            match parse_u64(number).and_then(|n| u32::try_from(n).ok()) {
                Some(n) => Some(n),
                None => continue,
            }
        };
        let mut columns = [0u64; 10];
        let fields = counters.split(|&b| b == b' ').filter(|s| !s.is_empty());
        for (slot, field) in columns.iter_mut().zip(fields) {
            *slot = parse_u64(field).unwrap_or(0);
        }
        f(cpu, CpuTimes::from_columns(columns));
    }
}

/// Clamps percentages into 0–100 (sysinfo can overshoot by rounding); `None` if any is NaN or
/// there are no cores, since such a reading is not trustworthy.
pub fn cpu_reading(total: f32, per_core: Vec<f32>) -> Option<Cpu> {
    if per_core.is_empty() || total.is_nan() || per_core.iter().any(|v| v.is_nan()) {
        return None;
    }
    Some(Cpu {
        total: total.clamp(0.0, 100.0),
        per_core: per_core.into_iter().map(|v| v.clamp(0.0, 100.0)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_clamped_and_nan_refused() {
        let cpu = cpu_reading(100.4, vec![-0.1, 50.0, 101.0]);
        assert_eq!(
            cpu,
            Some(Cpu {
                total: 100.0,
                per_core: vec![0.0, 50.0, 100.0]
            })
        );
        assert_eq!(cpu_reading(f32::NAN, vec![1.0]), None);
        assert_eq!(cpu_reading(1.0, vec![f32::NAN]), None);
        assert_eq!(cpu_reading(1.0, vec![]), None);
    }

    /// A `/proc/stat` of a 4-CPU machine with CPUs 1 and 2 offline: numbering gap.
    const STAT_GAP: &str = "cpu  100 10 50 1000 20 1 2 3 0 0
cpu0 40 5 20 500 10 1 1 1 0 0
cpu3 60 5 30 500 10 0 1 2 0 0
intr 12345 0 1 2 3
ctxt 999
btime 1700000000
";

    #[test]
    fn stat_lines_are_parsed_by_cpu_number_and_stop_at_intr() {
        let mut seen = Vec::new();
        parse_stat(STAT_GAP.as_bytes(), |cpu, t| seen.push((cpu, t)));
        let cpus: Vec<Option<u32>> = seen.iter().map(|&(c, _)| c).collect();
        assert_eq!(cpus, vec![None, Some(0), Some(3)]);
        assert_eq!(
            seen.first().map(|&(_, t)| t),
            Some(CpuTimes::from_columns([
                100, 10, 50, 1000, 20, 1, 2, 3, 0, 0
            ]))
        );
        assert!(stat_complete(STAT_GAP.as_bytes()));
        // Cut inside the cpu lines, or right after them with the next line unfinished:
        // not complete yet, read on.
        assert!(!stat_complete(&STAT_GAP.as_bytes()[..60]));
        let cpu_end = STAT_GAP.find("intr").unwrap_or(0);
        assert!(!stat_complete(&STAT_GAP.as_bytes()[..cpu_end + 3]));
    }

    #[test]
    fn stat_tolerates_old_kernels_and_junk() {
        // Linux 2.6.11-era lines have 8 columns; a bad CPU number is skipped, not fatal.
        let text = b"cpu  1 2 3 4 5 6 7 8\ncpuX 1 2 3\ncpu1 9 9 9 9\nintr 0\n";
        let mut seen = Vec::new();
        parse_stat(text, |cpu, t| seen.push((cpu, t)));
        assert_eq!(
            seen,
            vec![
                (None, CpuTimes::from_columns([1, 2, 3, 4, 5, 6, 7, 8, 0, 0])),
                (
                    Some(1),
                    CpuTimes::from_columns([9, 9, 9, 9, 0, 0, 0, 0, 0, 0])
                ),
            ]
        );
        let mut none = 0;
        parse_stat(b"intr 1 2\ncpu 1 2 3\n", |_, _| none += 1);
        assert_eq!(
            none, 0,
            "cpu lines after another line are not the cpu section"
        );
    }

    #[test]
    fn usage_is_everything_but_idle_and_iowait() {
        let old = CpuTimes::from_columns([100, 0, 100, 700, 100, 0, 0, 0, 0, 0]);
        // +30 user, +10 system, +5 irq, +5 steal, +40 idle, +10 iowait = 100 ticks, 50 busy.
        let new = CpuTimes::from_columns([130, 0, 110, 740, 110, 5, 0, 5, 0, 0]);
        assert!((new.usage_since(&old) - 50.0).abs() < 1e-4);
        // Guest time is inside user: counted once, not twice.
        let guest_old = CpuTimes::from_columns([100, 0, 0, 100, 0, 0, 0, 0, 50, 0]);
        let guest_new = CpuTimes::from_columns([150, 0, 0, 150, 0, 0, 0, 0, 100, 0]);
        assert!((guest_new.usage_since(&guest_old) - 50.0).abs() < 1e-4);
        // No time passed, or counters went backwards (CPU re-plugged): 0, never NaN or < 0.
        assert_eq!(old.usage_since(&old), 0.0);
        assert_eq!(old.usage_since(&new), 0.0);
    }

    /// The breakdown uses the same deltas as the usage: on two real `/proc/stat` cpu lines
    /// (a 2-core VM, 5 s apart) user + system + steal is the usage and iowait is apart.
    #[test]
    fn modes_split_the_same_period_as_the_usage() {
        let mut old = None;
        let mut new = None;
        parse_stat(
            b"cpu  190863 1129 77373 5418934 2371 0 3437 811 0 0\nintr 1\n",
            |_, t| old = Some(t),
        );
        parse_stat(
            b"cpu  191243 1129 77521 5419339 2421 0 3446 818 0 0\nintr 1\n",
            |_, t| new = Some(t),
        );
        let (Some(old), Some(new)) = (old, new) else {
            panic!("fixture lines did not parse")
        };
        // Deltas: user 380, system 148 + softirq 9, idle 405, iowait 50, steal 7: 999 ticks.
        let m = new.modes_since(&old);
        assert_eq!(m.user_pct, round2(380.0 / 999.0 * 100.0));
        assert_eq!(m.system_pct, round2(157.0 / 999.0 * 100.0));
        assert_eq!(m.iowait_pct, round2(50.0 / 999.0 * 100.0));
        assert_eq!(m.steal_pct, round2(7.0 / 999.0 * 100.0));
        let busy = m.user_pct + m.system_pct + m.steal_pct;
        assert!((busy - new.usage_since(&old)).abs() < 0.03, "{m:?}");
        // Nice and guest time count as user time; counters going backwards give 0, not < 0.
        let a = CpuTimes::from_columns([100, 50, 0, 0, 0, 0, 0, 0, 20, 10]);
        let b = CpuTimes::from_columns([200, 100, 0, 0, 0, 0, 0, 0, 40, 20]);
        assert_eq!(b.modes_since(&a).user_pct, 100.0);
        assert_eq!(a.modes_since(&b).user_pct, 0.0);
    }
}
