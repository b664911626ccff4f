//! Metric collection on the agent, behind the [`MetricsSource`] trait.
//!
//! [`SystemSource`] is what the agent uses: on Linux the [`ProcSource`], which keeps
//! `/proc/stat` and `/proc/meminfo` open and re-reads them from offset 0 into one reused buffer
//! (no open/close/stat per sample, no allocation but the sample itself); elsewhere, or when
//! `/proc` cannot be read at startup, the [`SysinfoSource`]: one long-lived `sysinfo::System`,
//! refreshed (never rebuilt) for CPU usage and memory only. Both compute the same numbers
//! (sysinfo 0.40's formulas, see [`CpuTimes::usage_since`]). Host facts (host name, OS) come
//! from sysinfo either way.
//!
//! CPU usage is a difference of two readings, so both sources are primed at construction and
//! wait `sysinfo::MINIMUM_CPU_UPDATE_INTERVAL` (200 ms) once: the first real sample is a
//! measurement, not the since-boot average. Tests inject their own source with exact values.

use std::time::{Duration, Instant};

use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

use crate::protocol::{Cpu, Memory};

/// Static facts about the machine, sent in `hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    pub hostname: String,
    pub os: String,
    pub cores: u32,
}

/// One reading. Each part is `None` when it could not be read, so one failure does not sink
/// the other.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reading {
    pub cpu: Option<Cpu>,
    pub memory: Option<Memory>,
}

/// Where samples come from.
pub trait MetricsSource {
    fn host(&self) -> HostInfo;
    fn read(&mut self) -> Reading;
}

/// The agent's real source: `/proc` on Linux, sysinfo elsewhere or when `/proc` cannot be
/// read. The variant is chosen once, at construction.
pub enum SystemSource {
    #[cfg(target_os = "linux")]
    Proc(ProcSource),
    /// Boxed: sysinfo's state is large, and only one of the two is ever built.
    Sysinfo(Box<SysinfoSource>),
}

impl SystemSource {
    /// The cheapest source that works here. Blocks 200 ms once to prime the CPU counters.
    pub fn new() -> Result<Self, sysinfo::Error> {
        #[cfg(target_os = "linux")]
        match ProcSource::open() {
            Ok(source) => return Ok(Self::Proc(source)),
            Err(e) => tracing::warn!("cannot read /proc ({e}): using sysinfo for metrics"),
        }
        SysinfoSource::new().map(|s| Self::Sysinfo(Box::new(s)))
    }
}

impl MetricsSource for SystemSource {
    fn host(&self) -> HostInfo {
        match self {
            #[cfg(target_os = "linux")]
            Self::Proc(s) => s.host(),
            Self::Sysinfo(s) => s.host(),
        }
    }

    fn read(&mut self) -> Reading {
        match self {
            #[cfg(target_os = "linux")]
            Self::Proc(s) => s.read(),
            Self::Sysinfo(s) => s.read(),
        }
    }
}

/// Host name and OS as sysinfo names them; `cores` as counted by the caller.
fn host_info(cores: usize) -> HostInfo {
    HostInfo {
        hostname: System::host_name().unwrap_or_default(),
        os: System::long_os_version()
            .or_else(|_| System::name())
            .unwrap_or_else(|_| std::env::consts::OS.to_string()),
        cores: u32::try_from(cores).unwrap_or(u32::MAX),
    }
}

/// Waits out the rest of sysinfo's minimum CPU update interval since `last`, so that a CPU
/// reading always spans at least that long (only matters for sub-200 ms intervals).
fn wait_min_cpu_interval(last: Instant) {
    if let Some(rest) = sysinfo::MINIMUM_CPU_UPDATE_INTERVAL.checked_sub(last.elapsed()) {
        std::thread::sleep(rest.max(Duration::from_millis(1)));
    }
}

/// The sysinfo-backed source (non-Linux, and the fallback on Linux).
pub struct SysinfoSource {
    system: System,
    last_cpu_refresh: Instant,
    host: HostInfo,
}

impl SysinfoSource {
    /// Opens the system handle and primes the CPU counters. Blocks for sysinfo's minimum CPU
    /// update interval (200 ms) once, so that the very first [`read`](MetricsSource::read) is
    /// a real measurement.
    pub fn new() -> Result<Self, sysinfo::Error> {
        let refresh = RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing().with_usage())
            .with_memory(MemoryRefreshKind::nothing().with_ram());
        let system = System::new_with_specifics(refresh)?;
        let host = host_info(system.cpus().len());
        let mut source = Self {
            system,
            last_cpu_refresh: Instant::now(),
            host,
        };
        source.system.refresh_cpu_usage();
        source.last_cpu_refresh = Instant::now();
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        Ok(source)
    }

    fn refresh(&mut self) {
        // A refresh sooner than the minimum interval is silently ignored by sysinfo; wait out
        // the remainder instead.
        wait_min_cpu_interval(self.last_cpu_refresh);
        self.system.refresh_cpu_usage();
        self.last_cpu_refresh = Instant::now();
        self.system
            .refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
    }
}

impl MetricsSource for SysinfoSource {
    fn host(&self) -> HostInfo {
        self.host.clone()
    }

    fn read(&mut self) -> Reading {
        self.refresh();
        let per_core: Vec<f32> = self.system.cpus().iter().map(|c| c.usage()).collect();
        let cpu = cpu_reading(self.system.global_cpu_usage(), per_core);
        let memory = memory_reading(
            self.system.total_memory(),
            self.system.available_memory(),
            self.system.free_memory(),
        );
        Reading { cpu, memory }
    }
}

/// The `/proc` source (Linux): `/proc/stat` and `/proc/meminfo` kept open and re-read from
/// offset 0 (`pread`) into one reused buffer; only the `cpu` lines and three (rarely six)
/// meminfo lines are parsed.
///
/// The cores are the `cpuN` lines of `/proc/stat` at startup (as sysinfo counts them), matched
/// by number on every read, so a numbering gap (offline CPUs) or a CPU going offline later
/// never shifts another core's value: an offline core reads 0 %, a core that appears later is
/// ignored (the `hello` announced the count).
#[cfg(target_os = "linux")]
pub struct ProcSource {
    stat: std::fs::File,
    meminfo: std::fs::File,
    buf: Vec<u8>,
    /// Last counters of the whole machine.
    total: CpuTimes,
    /// Last counters of each core, by CPU number, in `/proc/stat` order.
    cores: Vec<(u32, CpuTimes)>,
    last_read: Instant,
    host: HostInfo,
}

/// First read of a `/proc` file: enough for the cpu lines of a few dozen cores; the buffer
/// grows when a file needs more.
#[cfg(target_os = "linux")]
const PROC_CHUNK: usize = 4096;

#[cfg(target_os = "linux")]
impl ProcSource {
    /// Opens both files, counts the cores and primes the CPU counters. Blocks 200 ms once (as
    /// [`SysinfoSource::new`] does), so that the first [`read`](MetricsSource::read) is a real
    /// measurement.
    pub fn open() -> std::io::Result<Self> {
        let mut source = Self {
            stat: std::fs::File::open("/proc/stat")?,
            meminfo: std::fs::File::open("/proc/meminfo")?,
            buf: vec![0; PROC_CHUNK],
            total: CpuTimes::default(),
            cores: Vec::new(),
            last_read: Instant::now(),
            host: host_info(0),
        };
        let text = read_prefix(&source.stat, &mut source.buf, stat_complete)?;
        let mut total = None;
        parse_stat(text, |cpu, times| match cpu {
            None => total = Some(times),
            Some(n) => source.cores.push((n, times)),
        });
        source.total = total.ok_or_else(|| bad_proc("/proc/stat has no `cpu` line"))?;
        if source.cores.is_empty() {
            return Err(bad_proc("/proc/stat has no `cpuN` line"));
        }
        let text = read_prefix(&source.meminfo, &mut source.buf, meminfo_complete)?;
        if parse_meminfo(text).is_none() {
            return Err(bad_proc("/proc/meminfo has no MemTotal"));
        }
        source.host.cores = u32::try_from(source.cores.len()).unwrap_or(u32::MAX);
        source.last_read = Instant::now();
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        Ok(source)
    }

    fn read_cpu(&mut self) -> Option<Cpu> {
        wait_min_cpu_interval(self.last_read);
        let text = read_prefix(&self.stat, &mut self.buf, stat_complete).ok();
        self.last_read = Instant::now();
        let (last_total, last_cores) = (&mut self.total, &mut self.cores);
        let mut total = None;
        let mut per_core = vec![0.0; last_cores.len()];
        parse_stat(text?, |cpu, times| match cpu {
            None => {
                total = Some(times.usage_since(last_total));
                *last_total = times;
            }
            Some(n) => {
                if let Ok(i) = last_cores.binary_search_by_key(&n, |&(id, _)| id)
                    && let (Some((_, last)), Some(usage)) =
                        (last_cores.get_mut(i), per_core.get_mut(i))
                {
                    *usage = times.usage_since(last);
                    *last = times;
                }
            }
        });
        cpu_reading(total?, per_core)
    }

    fn read_memory(&mut self) -> Option<Memory> {
        let text = read_prefix(&self.meminfo, &mut self.buf, meminfo_complete).ok()?;
        let m = parse_meminfo(text)?;
        memory_reading(m.total, m.available, m.free)
    }
}

#[cfg(target_os = "linux")]
impl MetricsSource for ProcSource {
    fn host(&self) -> HostInfo {
        self.host.clone()
    }

    fn read(&mut self) -> Reading {
        Reading {
            cpu: self.read_cpu(),
            memory: self.read_memory(),
        }
    }
}

#[cfg(target_os = "linux")]
fn bad_proc(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// Reads `file` from offset 0 into `buf` until EOF or until `complete` says the text so far
/// holds everything wanted (the kernel builds the whole file on the first read anyway; the
/// rest, like `/proc/stat`'s long `intr` line, need not be copied out). Grows `buf` when it
/// fills up. Returns the text read.
#[cfg(target_os = "linux")]
fn read_prefix<'b>(
    file: &std::fs::File,
    buf: &'b mut Vec<u8>,
    complete: fn(&[u8]) -> bool,
) -> std::io::Result<&'b [u8]> {
    use std::os::unix::fs::FileExt;
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let Some(free) = buf.get_mut(len..) else {
            return Err(bad_proc("read past the buffer"));
        };
        let n = file.read_at(free, len as u64)?;
        len += n;
        if n == 0 || complete(buf.get(..len).unwrap_or_default()) {
            break;
        }
    }
    Ok(buf.get(..len).unwrap_or_default())
}

/// Whether `/proc/stat` text holds all its `cpu` lines: a complete line follows them.
fn stat_complete(text: &[u8]) -> bool {
    text.split_inclusive(|&b| b == b'\n')
        .take_while(|line| line.ends_with(b"\n"))
        .any(|line| !line.starts_with(b"cpu"))
}

/// Whether `/proc/meminfo` text holds the lines needed (MemAvailable comes third).
fn meminfo_complete(text: &[u8]) -> bool {
    text.split_inclusive(|&b| b == b'\n')
        .any(|line| line.starts_with(b"MemAvailable:") && line.ends_with(b"\n"))
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

    fn total_time(&self) -> u64 {
        self.user
            .saturating_add(self.nice)
            .saturating_add(self.system_time())
            .saturating_add(self.idle)
            .saturating_add(self.iowait)
            .saturating_add(self.virtual_time())
            .saturating_add(self.steal)
    }

    /// Busy share since `old`, in percent, exactly as sysinfo 0.40 computes it (linux/cpu.rs,
    /// `CpuUsage::set`): user + nice + system/irq/softirq + steal + guest periods over the
    /// total period, i.e. everything but idle and iowait; at most 100.
    #[allow(clippy::cast_precision_loss)] // tick counts of one interval: far below 2^24
    pub fn usage_since(&self, old: &CpuTimes) -> f32 {
        let total = self.total_time();
        let old_total = old.total_time();
        let period = if total > old_total {
            (total - old_total) as f32
        } else {
            1.0
        };
        let busy = self.nice.saturating_sub(old.nice) as f32
            + self.user.saturating_sub(old.user) as f32
            + self.system_time().saturating_sub(old.system_time()) as f32
            + (self.steal.saturating_sub(old.steal)
                + self.virtual_time().saturating_sub(old.virtual_time())) as f32;
        (busy / period * 100.0).min(100.0)
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

/// The meminfo values the samples need, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    pub total: u64,
    pub free: u64,
    pub available: u64,
}

/// Parses `/proc/meminfo` text (values in KiB, though it says "kB"). `None` without MemTotal.
/// Without MemAvailable (Linux < 3.14) available memory is estimated as sysinfo does: free +
/// buffers + page cache + reclaimable slab − shmem.
pub fn parse_meminfo(text: &[u8]) -> Option<MemInfo> {
    let (mut total, mut free, mut available) = (None, 0u64, None);
    let (mut buffers, mut cached, mut shmem, mut reclaimable) = (0u64, 0u64, 0u64, 0u64);
    for line in text.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (key, rest) = line.split_at(colon);
        let field = match key {
            b"MemTotal" => total.insert(0),
            b"MemFree" => &mut free,
            b"MemAvailable" => available.insert(0),
            b"Buffers" => &mut buffers,
            b"Cached" => &mut cached,
            b"Shmem" => &mut shmem,
            b"SReclaimable" => &mut reclaimable,
            _ => continue,
        };
        let value = rest
            .get(1..)
            .unwrap_or_default()
            .split(|&b| b == b' ')
            .find(|s| !s.is_empty());
        *field = value.and_then(parse_u64).unwrap_or(0).saturating_mul(1024);
        if total.is_some() && available.is_some() && free > 0 {
            break;
        }
    }
    let available = available.unwrap_or_else(|| {
        free.saturating_add(buffers)
            .saturating_add(cached)
            .saturating_add(reclaimable)
            .saturating_sub(shmem)
    });
    Some(MemInfo {
        total: total?,
        free,
        available,
    })
}

/// A decimal number of ASCII digits only; `None` for anything else or on overflow.
fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
            .flatten()
    })
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

/// Derives used memory as `total - available`; `None` when the kernel reported no total.
pub fn memory_reading(total: u64, available: u64, free: u64) -> Option<Memory> {
    if total == 0 {
        return None;
    }
    let available = available.min(total);
    Some(Memory {
        total,
        used: total - available,
        free: free.min(total),
        available: Some(available),
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

    #[test]
    fn memory_used_is_total_minus_available() {
        let m = memory_reading(1000, 300, 100);
        assert_eq!(
            m,
            Some(Memory {
                total: 1000,
                used: 700,
                free: 100,
                available: Some(300)
            })
        );
        assert_eq!(memory_reading(0, 0, 0), None);
        let over = memory_reading(1000, 5000, 5000).map(|m| (m.used, m.free));
        assert_eq!(over, Some((0, 1000)));
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

    #[test]
    fn meminfo_reads_the_three_values_in_bytes() {
        let text = b"MemTotal:       16000000 kB\nMemFree:         2000000 kB\n\
MemAvailable:    9000000 kB\nBuffers:          100000 kB\n";
        assert_eq!(
            parse_meminfo(text),
            Some(MemInfo {
                total: 16_000_000 * 1024,
                free: 2_000_000 * 1024,
                available: 9_000_000 * 1024
            })
        );
        assert!(meminfo_complete(text));
        assert!(!meminfo_complete(&text[..70]));
        // Before Linux 3.14: estimated as sysinfo does.
        let old = b"MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 10 kB\nCached: 200 kB\n\
Shmem: 50 kB\nSReclaimable: 40 kB\n";
        assert_eq!(parse_meminfo(old).map(|m| m.available), Some(300 * 1024));
        assert_eq!(parse_meminfo(b"MemFree: 1 kB\n"), None);
    }

    #[test]
    fn numbers_parse_strictly() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"12a"), None);
    }

    /// The /proc source agrees with sysinfo on this machine: same cores and total memory,
    /// and usage over the same window within a few percent (both read the same counters;
    /// they differ only by the moments each read them).
    #[cfg(target_os = "linux")]
    #[test]
    fn proc_source_agrees_with_sysinfo() {
        // Keep one core busy over both windows so the usage is not just ~0 on both.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spin = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        };
        let (Ok(mut proc_source), Ok(mut sysinfo_source)) =
            (ProcSource::open(), SysinfoSource::new())
        else {
            return; // no /proc (exotic sandbox): nothing to compare against
        };
        assert_eq!(proc_source.host(), sysinfo_source.host());
        std::thread::sleep(Duration::from_millis(300));
        let a = proc_source.read();
        let b = sysinfo_source.read();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = spin.join();
        let (Some(ca), Some(cb)) = (a.cpu.clone(), b.cpu.clone()) else {
            panic!("a CPU reading is missing: {a:?} {b:?}")
        };
        assert_eq!(ca.per_core.len(), cb.per_core.len());
        assert!(
            (ca.total - cb.total).abs() < 15.0,
            "total usage: /proc {} vs sysinfo {}",
            ca.total,
            cb.total
        );
        let cores = ca.per_core.len() as f32;
        assert!(
            ca.total > 100.0 / cores * 0.5,
            "one spinning thread on {cores} cores, yet /proc says {}",
            ca.total
        );
        let (Some(ma), Some(mb)) = (a.memory, b.memory) else {
            panic!("a memory reading is missing: {a:?} {b:?}")
        };
        assert_eq!(ma.total, mb.total);
        let close = |x: u64, y: u64| x.abs_diff(y) < 64 << 20;
        assert!(close(ma.used, mb.used), "used {} vs {}", ma.used, mb.used);
    }

    /// A core missing from a later read (it went offline) reads 0 % and the others keep
    /// their positions; the count never changes.
    #[cfg(target_os = "linux")]
    #[test]
    fn offline_core_keeps_positions() {
        let Ok(mut source) = ProcSource::open() else {
            return;
        };
        let cores = source.cores.len();
        // Pretend an extra core 9999 existed at startup: it never appears in /proc/stat.
        source.cores.push((9999, CpuTimes::default()));
        std::thread::sleep(Duration::from_millis(250));
        let cpu = source
            .read()
            .cpu
            .unwrap_or_else(|| panic!("no cpu reading"));
        assert_eq!(cpu.per_core.len(), cores + 1);
        assert_eq!(cpu.per_core.last(), Some(&0.0));
    }

    #[test]
    fn sysinfo_source_reads_this_machine() {
        let Ok(mut source) = SysinfoSource::new() else {
            return; // no /proc (exotic sandbox): nothing to compare against
        };
        let host = source.host();
        let reading = source.read();
        let cpu = reading.cpu.unwrap_or_else(|| panic!("no cpu reading"));
        assert_eq!(cpu.per_core.len() as u32, host.cores);
        let mem = reading
            .memory
            .unwrap_or_else(|| panic!("no memory reading"));
        assert!(mem.used <= mem.total && mem.free <= mem.total);
    }
}
