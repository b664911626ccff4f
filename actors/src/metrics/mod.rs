//! Metric collection on the agent, behind the [`MetricsSource`] trait; one module per metric
//! group, as in ClementTsang/bottom.
//!
//! [`SystemSource`] is what the agent uses: on Linux the [`ProcSource`] (`linux.rs`), which
//! keeps every file it reads open and re-reads it from offset 0 into one reused buffer (no
//! open/close/stat per sample, no allocation but the sample itself); elsewhere, or when
//! `/proc` cannot be read at startup, the [`SysinfoSource`] (`fallback.rs`): one long-lived
//! `sysinfo::System`, refreshed (never rebuilt). Both compute CPU usage the same way
//! (sysinfo 0.40's formulas, see [`CpuTimes::usage_since`]). Host facts (host name, OS) come
//! from sysinfo either way.
//!
//! A [`Reading`] is made of `Option`s: a group that is not collected ([`CollectConfig`]), or
//! that failed this time, is `None` and the others are unaffected. The parsing and the
//! arithmetic are pure functions in each group's module, unit-tested on real `/proc` text:
//!
//! ```text
//! cpu.rs      /proc/stat: usage, per core, user/system/iowait/steal
//! memory.rs   /proc/meminfo: memory, swap
//! load.rs     /proc/loadavg, /proc/uptime
//! fs.rs       /proc/self/mountinfo + statvfs
//! disk.rs     /proc/diskstats
//! network.rs  /proc/net/dev
//! temp.rs     /sys/class/hwmon, /sys/class/thermal
//! process.rs  /proc/[pid]/stat (top N, off by default)
//! own.rs      the agent's own RSS and CPU time
//! config.rs   CollectConfig: groups and selections (the agent's flags)
//! ```
//!
//! CPU usage is a difference of two readings, so both sources are primed at construction and
//! wait `sysinfo::MINIMUM_CPU_UPDATE_INTERVAL` (200 ms) once: the first real sample is a
//! measurement, not the since-boot average. Tests inject their own source with exact values.

pub mod config;
pub mod cpu;
pub mod disk;
mod fallback;
pub mod fs;
#[cfg(target_os = "linux")]
mod linux;
pub mod load;
pub mod memory;
pub mod network;
#[cfg(target_os = "linux")]
pub mod own;
pub mod process;
#[cfg(target_os = "linux")]
pub mod procfs;
pub mod temp;
pub mod text;

use std::time::{Duration, Instant};

use sysinfo::System;

use crate::protocol::{
    AgentCost, Cpu, CpuModes, Disk, Filesystem, Load, Memory, NetInterface, Process, Swap,
    Temperature,
};

pub use config::{CollectConfig, Group, Groups, Select};
pub use cpu::{CpuTimes, cpu_reading, parse_stat};
pub use fallback::SysinfoSource;
#[cfg(target_os = "linux")]
pub use linux::ProcSource;
pub use memory::{MemInfo, memory_reading, parse_meminfo};

/// Static facts about the machine, sent in `hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    pub hostname: String,
    pub os: String,
    pub cores: u32,
}

/// One reading. Each part is `None` when it is not collected or could not be read, so one
/// failure does not sink the others. The parts are the protocol's types
/// ([`crate::protocol::Metrics`] without `seq`, `ts_ms` and `clock`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reading {
    pub cpu: Option<Cpu>,
    pub memory: Option<Memory>,
    pub cpu_modes: Option<CpuModes>,
    pub load: Option<Load>,
    pub uptime_s: Option<u64>,
    pub swap: Option<Swap>,
    pub filesystems: Option<Vec<Filesystem>>,
    pub disks: Option<Vec<Disk>>,
    pub net: Option<Vec<NetInterface>>,
    pub temperatures: Option<Vec<Temperature>>,
    pub processes: Option<Vec<Process>>,
    pub agent_cost: Option<AgentCost>,
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
    /// Boxed like the other: only one of the two is ever built.
    Proc(Box<ProcSource>),
    /// Boxed: sysinfo's state is large, and only one of the two is ever built.
    Sysinfo(Box<SysinfoSource>),
}

impl SystemSource {
    /// The cheapest source that works here, collecting the default groups. Blocks 200 ms
    /// once to prime the CPU counters.
    pub fn new() -> Result<Self, sysinfo::Error> {
        Self::with_config(&CollectConfig::default())
    }

    /// The cheapest source that works here, collecting what `config` says.
    pub fn with_config(config: &CollectConfig) -> Result<Self, sysinfo::Error> {
        #[cfg(target_os = "linux")]
        match ProcSource::open_with(config) {
            Ok(source) => return Ok(Self::Proc(Box::new(source))),
            Err(e) => tracing::warn!("cannot read /proc ({e}): using sysinfo for metrics"),
        }
        SysinfoSource::with_config(config).map(|s| Self::Sysinfo(Box::new(s)))
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
