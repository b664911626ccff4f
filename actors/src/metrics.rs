//! Metric collection on the agent, behind the [`MetricsSource`] trait.
//!
//! [`SysinfoSource`] is the real source: one long-lived `sysinfo::System`, refreshed (never
//! rebuilt) for CPU usage and memory only. Its CPU reading is primed at construction, because
//! sysinfo's first reading is the since-boot average and needs a second refresh at least
//! `sysinfo::MINIMUM_CPU_UPDATE_INTERVAL` later. Tests inject their own source with exact values.

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

/// The real source, backed by sysinfo.
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
        let host = HostInfo {
            hostname: System::host_name().unwrap_or_default(),
            os: System::long_os_version()
                .or_else(|_| System::name())
                .unwrap_or_else(|_| std::env::consts::OS.to_string()),
            cores: u32::try_from(system.cpus().len()).unwrap_or(u32::MAX),
        };
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
        // the remainder instead (only possible with sub-200 ms intervals).
        let since = self.last_cpu_refresh.elapsed();
        if let Some(rest) = sysinfo::MINIMUM_CPU_UPDATE_INTERVAL.checked_sub(since) {
            std::thread::sleep(rest.max(Duration::from_millis(1)));
        }
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
