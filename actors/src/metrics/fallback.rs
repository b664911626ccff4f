//! The sysinfo source: elsewhere than Linux, and on Linux when `/proc` cannot be read. One
//! long-lived `sysinfo::System`, refreshed (never rebuilt), for what sysinfo's `system`
//! feature offers: CPU, memory, swap, load, uptime, processes and the agent's own cost.
//! Filesystems, disk I/O, network and temperatures need sysinfo features the agent does not
//! build (`disk`, `network`, `component`): here those groups are `None`.

use std::time::Instant;

use sysinfo::{
    CpuRefreshKind, MemoryRefreshKind, Pid, ProcessRefreshKind, ProcessesToUpdate, RefreshKind,
    System,
};

use crate::protocol::{AgentCost, Load, MAX_LOAD};

use super::config::{CollectConfig, Group};
use super::cpu::cpu_reading;
use super::memory::{memory_reading, swap_reading};
use super::process::{Candidate, top};
use super::text::{clean_text, round2};
use super::{HostInfo, MetricsSource, Reading, host_info, wait_min_cpu_interval};

/// The sysinfo-backed source (non-Linux, and the fallback on Linux).
pub struct SysinfoSource {
    system: System,
    config: CollectConfig,
    last_cpu_refresh: Instant,
    host: HostInfo,
    own_pid: Option<Pid>,
}

impl SysinfoSource {
    /// Every group but processes ([`CollectConfig::default`]).
    pub fn new() -> Result<Self, sysinfo::Error> {
        Self::with_config(&CollectConfig::default())
    }

    /// Opens the system handle and primes the CPU counters. Blocks for sysinfo's minimum CPU
    /// update interval (200 ms) once, so that the very first [`read`](MetricsSource::read) is
    /// a real measurement.
    pub fn with_config(config: &CollectConfig) -> Result<Self, sysinfo::Error> {
        let refresh = RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing().with_usage())
            .with_memory(MemoryRefreshKind::nothing().with_ram());
        let system = System::new_with_specifics(refresh)?;
        let host = host_info(system.cpus().len());
        let mut source = Self {
            system,
            config: config.clone(),
            last_cpu_refresh: Instant::now(),
            host,
            own_pid: sysinfo::get_current_pid().ok(),
        };
        if config.processes > 0 {
            source.refresh_processes();
        }
        source.system.refresh_cpu_usage();
        source.last_cpu_refresh = Instant::now();
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        Ok(source)
    }

    fn refresh_processes(&mut self) {
        let kind = ProcessRefreshKind::nothing().with_cpu().with_memory();
        self.system
            .refresh_processes_specifics(ProcessesToUpdate::All, true, kind);
    }

    fn refresh(&mut self) {
        // A refresh sooner than the minimum interval is silently ignored by sysinfo; wait out
        // the remainder instead.
        wait_min_cpu_interval(self.last_cpu_refresh);
        self.system.refresh_cpu_usage();
        self.last_cpu_refresh = Instant::now();
        let mut memory = MemoryRefreshKind::nothing().with_ram();
        if self.config.collects(Group::Swap) {
            memory = memory.with_swap();
        }
        self.system.refresh_memory_specifics(memory);
        if self.config.processes > 0 {
            self.refresh_processes();
        } else if let (true, Some(pid)) = (self.config.collects(Group::SelfCost), self.own_pid) {
            let kind = ProcessRefreshKind::nothing().with_cpu().with_memory();
            self.system
                .refresh_processes_specifics(ProcessesToUpdate::Some(&[pid]), false, kind);
        }
    }

    fn load(&self) -> Option<Load> {
        let avg = System::load_average().ok()?;
        #[allow(clippy::cast_possible_truncation)] // a load average fits an f32
        let l = |v: f64| {
            v.is_finite()
                .then(|| round2((v as f32).clamp(0.0, MAX_LOAD)))
        };
        let procs = (self.config.processes > 0)
            .then(|| u32::try_from(self.system.processes().len()).ok())
            .flatten();
        // sysinfo has no thread counts.
        Some(Load {
            load1: l(avg.one)?,
            load5: l(avg.five)?,
            load15: l(avg.fifteen)?,
            running: None,
            threads: None,
            procs,
        })
    }
}

impl MetricsSource for SysinfoSource {
    fn host(&self) -> HostInfo {
        self.host.clone()
    }

    fn read(&mut self) -> Reading {
        self.refresh();
        let on = |g| self.config.collects(g);
        let mut r = Reading::default();
        if on(Group::Cpu) {
            let per_core: Vec<f32> = self.system.cpus().iter().map(|c| c.usage()).collect();
            r.cpu = cpu_reading(self.system.global_cpu_usage(), per_core);
        }
        if on(Group::Memory) {
            r.memory = memory_reading(
                self.system.total_memory(),
                self.system.available_memory(),
                self.system.free_memory(),
            );
        }
        if on(Group::Swap) {
            let (total, used) = (self.system.total_swap(), self.system.used_swap());
            r.swap = Some(swap_reading(total, total.saturating_sub(used)));
        }
        if on(Group::Load) {
            r.load = self.load();
            r.uptime_s = System::uptime().ok();
        }
        if on(Group::SelfCost)
            && let Some(p) = self.own_pid.and_then(|pid| self.system.process(pid))
        {
            r.agent_cost = Some(AgentCost {
                rss_bytes: p.memory(),
                cpu_ms: p.accumulated_cpu_time(),
            });
        }
        if self.config.processes > 0 {
            #[allow(clippy::cast_precision_loss)]
            let max_pct = 100.0 * self.host.cores.max(1) as f32;
            let all = self
                .system
                .processes()
                .values()
                .map(|p| Candidate {
                    pid: p.pid().as_u32(),
                    name: clean_text(p.name().as_encoded_bytes()),
                    cpu_pct: p.cpu_usage().clamp(0.0, max_pct),
                    rss_bytes: p.memory(),
                })
                .collect();
            r.processes = Some(top(all, self.config.processes));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let swap = reading.swap.unwrap_or_else(|| panic!("no swap reading"));
        assert!(swap.used_bytes <= swap.total_bytes);
        assert!(reading.load.is_some() && reading.uptime_s.is_some());
        let own = reading.agent_cost.unwrap_or_else(|| panic!("no self cost"));
        assert!(own.rss_bytes > 0);
        assert!(reading.processes.is_none());
        assert!(reading.filesystems.is_none() && reading.net.is_none());
    }

    #[test]
    fn sysinfo_source_lists_top_processes() {
        let config = CollectConfig {
            processes: 2,
            ..CollectConfig::default()
        };
        let Ok(mut source) = SysinfoSource::with_config(&config) else {
            return;
        };
        let procs = source.read().processes.unwrap_or_default();
        assert!((1..=4).contains(&procs.len()), "{procs:?}");
        let me = std::process::id();
        // This test process is among the largest by memory or not; either way every entry
        // is a live process with a name.
        assert!(
            procs.iter().all(|p| p.pid > 0 && !p.name.is_empty()),
            "{procs:?} (me {me})"
        );
    }
}
