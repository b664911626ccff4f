//! The `/proc` source (Linux): one long-lived reader per file, for the groups collected.

use std::io;
use std::path::Path;
use std::time::Instant;

use crate::protocol::{Cpu, CpuModes, Load};

use super::config::{CollectConfig, Group};
use super::cpu::{CpuTimes, cpu_reading, parse_stat, stat_complete};
use super::disk::parse_diskstats;
use super::fs::FsReader;
use super::load::{parse_loadavg, parse_uptime};
use super::memory::{
    meminfo_complete, meminfo_swap_complete, memory_reading, parse_meminfo, swap_reading,
};
use super::network::parse_net_dev;
use super::own::OwnReader;
use super::process::ProcessReader;
use super::procfs::{PROC_CHUNK, ProcFile, bad_proc};
use super::temp::TempReader;
use super::{HostInfo, MetricsSource, Reading, host_info, wait_min_cpu_interval};

/// The `/proc` source: `/proc/stat`, `/proc/meminfo`, `/proc/loadavg`, `/proc/uptime`,
/// `/proc/self/mountinfo`, `/proc/diskstats`, `/proc/net/dev`, the sensors' sysfs files and
/// `/proc/self/statm` kept open and re-read from offset 0 (`pread`) into one reused buffer;
/// only what a sample needs is parsed. A reader that cannot be opened at startup leaves its
/// group out (with one warning); one that fails later leaves it out of that sample only.
///
/// The cores are the `cpuN` lines of `/proc/stat` at startup (as sysinfo counts them), matched
/// by number on every read, so a numbering gap (offline CPUs) or a CPU going offline later
/// never shifts another core's value: an offline core reads 0 %, a core that appears later is
/// ignored (the `hello` announced the count).
pub struct ProcSource {
    config: CollectConfig,
    stat: ProcFile,
    meminfo: Option<ProcFile>,
    loadavg: Option<ProcFile>,
    uptime: Option<ProcFile>,
    fs: Option<FsReader>,
    diskstats: Option<ProcFile>,
    net_dev: Option<ProcFile>,
    temps: Option<TempReader>,
    processes: Option<ProcessReader>,
    own: Option<OwnReader>,
    buf: Vec<u8>,
    /// Last counters of the whole machine.
    total: CpuTimes,
    /// Last counters of each core, by CPU number, in `/proc/stat` order.
    cores: Vec<(u32, CpuTimes)>,
    last_read: Instant,
    host: HostInfo,
}

/// Opens an optional reader; a failure leaves its group out, with one warning.
fn optional<T>(what: &str, opened: io::Result<T>) -> Option<T> {
    opened
        .inspect_err(|e| tracing::warn!("cannot read {what} ({e}): left out of the samples"))
        .ok()
}

impl ProcSource {
    /// Every group but processes ([`CollectConfig::default`]).
    pub fn open() -> io::Result<Self> {
        Self::open_with(&CollectConfig::default())
    }

    /// Opens the files of the groups `config` collects, counts the cores and primes the CPU
    /// counters. Blocks 200 ms once when CPU is collected (as [`super::SysinfoSource::new`]
    /// does), so that the first [`read`](MetricsSource::read) is a real measurement. Fails
    /// when `/proc/stat` (always needed: it counts the cores) or, with the memory group,
    /// `/proc/meminfo` cannot be read.
    pub fn open_with(config: &CollectConfig) -> io::Result<Self> {
        let on = |g| config.collects(g);
        let meminfo = if on(Group::Memory) {
            Some(ProcFile::open("/proc/meminfo")?)
        } else if on(Group::Swap) {
            optional("/proc/meminfo", ProcFile::open("/proc/meminfo"))
        } else {
            None
        };
        let mut source = Self {
            config: config.clone(),
            stat: ProcFile::open("/proc/stat")?,
            meminfo,
            loadavg: on(Group::Load)
                .then(|| optional("/proc/loadavg", ProcFile::open("/proc/loadavg")))
                .flatten(),
            uptime: on(Group::Load)
                .then(|| optional("/proc/uptime", ProcFile::open("/proc/uptime")))
                .flatten(),
            fs: on(Group::Fs)
                .then(|| {
                    optional(
                        "/proc/self/mountinfo",
                        FsReader::open("/proc/self/mountinfo", config.fs_types.clone()),
                    )
                })
                .flatten(),
            diskstats: on(Group::Disk)
                .then(|| optional("/proc/diskstats", ProcFile::open("/proc/diskstats")))
                .flatten(),
            net_dev: on(Group::Net)
                .then(|| optional("/proc/net/dev", ProcFile::open("/proc/net/dev")))
                .flatten(),
            temps: on(Group::Temp)
                .then(|| TempReader::discover(Path::new("/sys")))
                .filter(|t| !t.is_empty()),
            processes: None,
            own: on(Group::SelfCost)
                .then(|| optional("/proc/self/statm", OwnReader::open()))
                .flatten(),
            buf: vec![0; PROC_CHUNK],
            total: CpuTimes::default(),
            cores: Vec::new(),
            last_read: Instant::now(),
            host: host_info(0),
        };
        let text = source.stat.read_until(&mut source.buf, stat_complete)?;
        let mut total = None;
        parse_stat(text, |cpu, times| match cpu {
            None => total = Some(times),
            Some(n) => source.cores.push((n, times)),
        });
        source.total = total.ok_or_else(|| bad_proc("/proc/stat has no `cpu` line"))?;
        if source.cores.is_empty() {
            return Err(bad_proc("/proc/stat has no `cpuN` line"));
        }
        if on(Group::Memory)
            && let Some(meminfo) = &source.meminfo
        {
            let text = meminfo.read_until(&mut source.buf, meminfo_complete)?;
            if parse_meminfo(text, false).is_none() {
                return Err(bad_proc("/proc/meminfo has no MemTotal"));
            }
        }
        source.host.cores = u32::try_from(source.cores.len()).unwrap_or(u32::MAX);
        if config.processes > 0 {
            source.processes = Some(ProcessReader::new(
                "/proc",
                config.processes,
                source.host.cores,
            ));
        }
        source.last_read = Instant::now();
        if on(Group::Cpu) {
            std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        }
        Ok(source)
    }

    fn read_cpu(&mut self) -> Option<(Cpu, CpuModes)> {
        wait_min_cpu_interval(self.last_read);
        let text = self.stat.read_until(&mut self.buf, stat_complete).ok();
        self.last_read = Instant::now();
        let (last_total, last_cores) = (&mut self.total, &mut self.cores);
        let mut total = None;
        let mut per_core = vec![0.0; last_cores.len()];
        parse_stat(text?, |cpu, times| match cpu {
            None => {
                total = Some((times.usage_since(last_total), times.modes_since(last_total)));
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
        let (usage, modes) = total?;
        Some((cpu_reading(usage, per_core)?, modes))
    }

    /// Memory and swap, from one read of `/proc/meminfo`.
    fn read_memory(&mut self, reading: &mut Reading) {
        let (memory, swap) = (
            self.config.collects(Group::Memory),
            self.config.collects(Group::Swap),
        );
        let Some(meminfo) = &self.meminfo else {
            return;
        };
        let complete = if swap {
            meminfo_swap_complete
        } else {
            meminfo_complete
        };
        let Some(m) = meminfo
            .read_until(&mut self.buf, complete)
            .ok()
            .and_then(|text| parse_meminfo(text, swap))
        else {
            return;
        };
        if memory {
            reading.memory = memory_reading(m.total, m.available, m.free);
        }
        if swap {
            reading.swap = m.swap.map(|(total, free)| swap_reading(total, free));
        }
    }

    /// The load; the process count only with the processes group, which lists `/proc`
    /// anyway (listing it just to count costs ~0.2 ms per sample, more than the rest of a
    /// sample together).
    fn read_load(&mut self, procs: Option<u32>) -> Option<Load> {
        let text = self.loadavg.as_ref()?.read(&mut self.buf).ok()?;
        let mut load = parse_loadavg(text)?;
        load.procs = procs;
        Some(load)
    }
}

impl MetricsSource for ProcSource {
    fn host(&self) -> HostInfo {
        self.host.clone()
    }

    fn read(&mut self) -> Reading {
        let mut reading = Reading::default();
        if self.config.collects(Group::Cpu)
            && let Some((cpu, modes)) = self.read_cpu()
        {
            reading.cpu = Some(cpu);
            reading.cpu_modes = Some(modes);
        }
        self.read_memory(&mut reading);
        let mut procs = None;
        if let Some(p) = self.processes.as_mut()
            && let Some((top, count)) = p.read()
        {
            reading.processes = Some(top);
            procs = Some(count);
        }
        if self.loadavg.is_some() {
            reading.load = self.read_load(procs);
        }
        if let Some(f) = &self.uptime {
            reading.uptime_s = f.read(&mut self.buf).ok().and_then(parse_uptime);
        }
        if let Some(fs) = self.fs.as_mut() {
            reading.filesystems = fs.read(&mut self.buf);
        }
        if let Some(f) = &self.diskstats {
            let select = &self.config.disk_devices;
            reading.disks = f
                .read(&mut self.buf)
                .ok()
                .map(|text| parse_diskstats(text, select));
        }
        if let Some(f) = &self.net_dev {
            let select = &self.config.net_interfaces;
            reading.net = f
                .read(&mut self.buf)
                .ok()
                .map(|text| parse_net_dev(text, select));
        }
        if let Some(t) = &self.temps {
            reading.temperatures = t.read(&mut self.buf);
        }
        if let Some(o) = &self.own {
            reading.agent_cost = o.read(&mut self.buf);
        }
        reading
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::SysinfoSource;

    /// The /proc source agrees with sysinfo on this machine: same cores and total memory,
    /// and usage over the same window within a few percent (both read the same counters;
    /// they differ only by the moments each read them).
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
        // The groups both sources offer agree too.
        let (Some(sa), Some(sb)) = (a.swap, b.swap) else {
            panic!("a swap reading is missing: {a:?} {b:?}")
        };
        assert_eq!(sa.total_bytes, sb.total_bytes);
        let (Some(la), Some(lb)) = (a.load, b.load) else {
            panic!("a load reading is missing: {a:?} {b:?}")
        };
        assert!((la.load15 - lb.load15).abs() < 0.05, "{la:?} vs {lb:?}");
        assert!(a.uptime_s.unwrap_or(0).abs_diff(b.uptime_s.unwrap_or(0)) <= 2);
        let modes = a.cpu_modes.unwrap_or_else(|| panic!("no cpu modes: {a:?}"));
        assert!(modes.user_pct + modes.system_pct + modes.steal_pct <= ca.total + 0.1);
    }

    /// A core missing from a later read (it went offline) reads 0 % and the others keep
    /// their positions; the count never changes.
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

    /// Only the chosen groups are read: CPU and memory alone give no load, fs, disk, net
    /// or self-cost; everything but processes (the default) gives them all on this machine.
    #[test]
    fn groups_choose_what_a_sample_holds() {
        let Ok(mut old) = ProcSource::open_with(&CollectConfig::cpu_and_memory()) else {
            return;
        };
        let r = old.read();
        assert!(r.cpu.is_some() && r.memory.is_some());
        assert!(r.load.is_none() && r.swap.is_none() && r.filesystems.is_none());
        assert!(r.disks.is_none() && r.net.is_none() && r.agent_cost.is_none());
        assert!(
            r.cpu_modes.is_some(),
            "the breakdown is part of the cpu group"
        );

        let mut all = ProcSource::open().unwrap_or_else(|e| panic!("{e}"));
        let r = all.read();
        assert!(r.load.is_some() && r.uptime_s.is_some() && r.swap.is_some());
        assert_eq!(
            r.load.and_then(|l| l.procs),
            None,
            "counted only with --processes"
        );
        let fs = r.filesystems.unwrap_or_default();
        assert!(fs.iter().any(|f| f.mount == "/"), "{fs:?}");
        assert!(r.disks.is_some() && r.net.is_some());
        assert!(r.processes.is_none(), "processes are off by default");
        let own = r.agent_cost.unwrap_or_else(|| panic!("no self cost"));
        assert!(own.rss_bytes > 0);

        let no_cpu = CollectConfig {
            groups: crate::metrics::config::Groups::NONE.with(Group::Load),
            processes: 3,
            ..CollectConfig::default()
        };
        let started = Instant::now();
        let mut source = ProcSource::open_with(&no_cpu).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            started.elapsed() < Duration::from_millis(150),
            "no CPU priming wait without the cpu group"
        );
        let r = source.read();
        assert!(r.cpu.is_none() && r.memory.is_none());
        let procs = r.processes.unwrap_or_default();
        assert!(!procs.is_empty() && procs.len() <= 6, "{procs:?}");
        let load = r.load.unwrap_or_else(|| panic!("no load"));
        assert!(load.procs.unwrap_or(0) >= procs.len() as u32);
        assert!(
            source.host().cores > 0,
            "the core count is known without the cpu group"
        );
    }
}
