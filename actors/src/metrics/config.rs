//! What the agent collects: the metric groups (`--collect`, `--no-collect`), which
//! filesystems, disks and interfaces (`--fs-types`, `--disk-devices`, `--net-interfaces`) and
//! how many processes (`--processes`). The binary only parses flags into a [`CollectConfig`];
//! the defaults and the rules live here, so an in-process agent gets the same policy.

use std::fmt;
use std::str::FromStr;

use crate::protocol::MAX_PROCESSES;

use super::text::glob_match;

/// A group of metrics, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// CPU usage (total and per core) and its breakdown (user, system, iowait, steal).
    Cpu,
    /// Memory: total, used, free, available.
    Memory,
    /// Load averages, threads, uptime (and the process count with `--processes`).
    Load,
    /// Swap total and used.
    Swap,
    /// Mounted filesystems: size, used, available, inodes.
    Fs,
    /// Disk I/O counters per block device.
    Disk,
    /// Network counters per interface.
    Net,
    /// Temperature sensors.
    Temp,
    /// The agent's own RSS and CPU time.
    SelfCost,
}

impl Group {
    /// Every group, in the order the flags document them.
    pub const ALL: [Group; 9] = [
        Group::Cpu,
        Group::Memory,
        Group::Load,
        Group::Swap,
        Group::Fs,
        Group::Disk,
        Group::Net,
        Group::Temp,
        Group::SelfCost,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Group::Cpu => "cpu",
            Group::Memory => "memory",
            Group::Load => "load",
            Group::Swap => "swap",
            Group::Fs => "fs",
            Group::Disk => "disk",
            Group::Net => "net",
            Group::Temp => "temp",
            Group::SelfCost => "self",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl FromStr for Group {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Group::ALL
            .into_iter()
            .find(|g| g.name() == s.trim())
            .ok_or_else(|| {
                let names: Vec<&str> = Group::ALL.iter().map(|g| g.name()).collect();
                format!("unknown metric group `{s}` (known: {})", names.join(", "))
            })
    }
}

/// A set of [`Group`]s: a comma-separated list of names, or `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Groups(u16);

impl Groups {
    pub const NONE: Groups = Groups(0);

    pub fn all() -> Groups {
        Group::ALL.into_iter().fold(Groups::NONE, Groups::with)
    }

    pub fn with(self, g: Group) -> Groups {
        Groups(self.0 | g.bit())
    }

    pub fn without(self, other: Groups) -> Groups {
        Groups(self.0 & !other.0)
    }

    pub fn contains(self, g: Group) -> bool {
        self.0 & g.bit() != 0
    }
}

impl Default for Groups {
    fn default() -> Self {
        Groups::all()
    }
}

impl FromStr for Groups {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim() == "all" {
            return Ok(Groups::all());
        }
        s.split(',')
            .filter(|part| !part.trim().is_empty())
            .try_fold(Groups::NONE, |set, part| Ok(set.with(part.parse()?)))
    }
}

impl fmt::Display for Groups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Group::ALL
            .into_iter()
            .filter(|g| self.contains(*g))
            .map(Group::name)
            .collect();
        f.write_str(&names.join(","))
    }
}

/// Which names (filesystem types, devices, interfaces) to report: the built-in choice, all
/// of them, or those matching a list of patterns (`*` matches any run of characters, `?` any
/// one).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Select {
    /// The built-in choice: real filesystems, whole physical disks, physical interfaces.
    #[default]
    Default,
    /// Everything, pseudo and virtual ones included.
    All,
    /// Only names matching one of these patterns.
    Only(Vec<String>),
}

impl Select {
    /// Whether `name` is chosen; `default` says what the built-in choice is for it.
    pub fn chooses(&self, name: &str, default: impl FnOnce(&str) -> bool) -> bool {
        match self {
            Select::Default => default(name),
            Select::All => true,
            Select::Only(patterns) => patterns.iter().any(|p| glob_match(p, name)),
        }
    }
}

impl FromStr for Select {
    type Err = String;

    /// `default`, `all`, or a comma-separated list of patterns (`ext4,xfs`, `eth*,wlan0`).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "default" => Ok(Select::Default),
            "all" | "*" => Ok(Select::All),
            list => {
                let patterns: Vec<String> = list
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(String::from)
                    .collect();
                if patterns.is_empty() {
                    return Err("an empty list chooses nothing (use `default` or `all`)".into());
                }
                Ok(Select::Only(patterns))
            }
        }
    }
}

/// Everything that decides what a sample holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectConfig {
    /// Groups collected; default: all of them.
    pub groups: Groups,
    /// Filesystem types; default: every real one (see [`super::fs::PSEUDO_FS_TYPES`] and
    /// [`super::fs::NETWORK_FS_TYPES`] for what is left out).
    pub fs_types: Select,
    /// Block devices by kernel name; default: whole disks, without loop, RAM and
    /// device-mapper devices.
    pub disk_devices: Select,
    /// Network interfaces; default: all but loopback and virtual ones (bridges, veth,
    /// docker, …).
    pub net_interfaces: Select,
    /// The top N processes by CPU and the top N by memory (merged); 0: none.
    pub processes: usize,
}

impl CollectConfig {
    /// Largest `--processes`: the two top-N lists together fit [`MAX_PROCESSES`].
    pub const MAX_PROCESSES: usize = MAX_PROCESSES / 2;

    /// Default: every group, built-in choices, no processes.
    pub const DEFAULT_PROCESSES: usize = 0;

    /// CPU and memory only: what agents collected before the other groups existed.
    pub fn cpu_and_memory() -> Self {
        Self {
            groups: Groups::NONE.with(Group::Cpu).with(Group::Memory),
            ..Self::default()
        }
    }

    /// The config from the agent's flags: `collect` (default every group) minus `no_collect`,
    /// the three selections, and `processes` (refused above [`Self::MAX_PROCESSES`]).
    pub fn from_flags(
        collect: Option<Groups>,
        no_collect: Option<Groups>,
        fs_types: Select,
        disk_devices: Select,
        net_interfaces: Select,
        processes: usize,
    ) -> Result<Self, String> {
        if processes > Self::MAX_PROCESSES {
            return Err(format!(
                "--processes {processes} is above the most the protocol carries ({})",
                Self::MAX_PROCESSES
            ));
        }
        let groups = collect
            .unwrap_or_else(Groups::all)
            .without(no_collect.unwrap_or(Groups::NONE));
        Ok(Self {
            groups,
            fs_types,
            disk_devices,
            net_interfaces,
            processes,
        })
    }

    pub fn collects(&self, g: Group) -> bool {
        self.groups.contains(g)
    }
}

impl Default for CollectConfig {
    fn default() -> Self {
        Self {
            groups: Groups::all(),
            fs_types: Select::Default,
            disk_devices: Select::Default,
            net_interfaces: Select::Default,
            processes: Self::DEFAULT_PROCESSES,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_parse_and_subtract() {
        let g: Groups = "cpu, memory,load".parse().unwrap();
        assert!(g.contains(Group::Cpu) && g.contains(Group::Load));
        assert!(!g.contains(Group::Net));
        assert_eq!(g.to_string(), "cpu,memory,load");
        assert_eq!("all".parse::<Groups>(), Ok(Groups::all()));
        assert!("cpu,disks".parse::<Groups>().unwrap_err().contains("disks"));
        let c = CollectConfig::from_flags(
            None,
            Some("temp,self".parse().unwrap()),
            Select::Default,
            Select::Default,
            Select::Default,
            0,
        )
        .unwrap();
        assert!(c.collects(Group::Fs) && !c.collects(Group::Temp) && !c.collects(Group::SelfCost));
        assert_eq!(CollectConfig::default().processes, 0);
        assert!(
            CollectConfig::from_flags(
                None,
                None,
                Select::Default,
                Select::Default,
                Select::Default,
                CollectConfig::MAX_PROCESSES + 1
            )
            .is_err()
        );
    }

    #[test]
    fn selections_choose_by_pattern_or_default() {
        let only: Select = "eth*, wlan0".parse().unwrap();
        assert!(only.chooses("eth1", |_| false));
        assert!(only.chooses("wlan0", |_| false));
        assert!(!only.chooses("lo", |_| true));
        assert!(Select::All.chooses("lo", |_| false));
        assert!(!Select::Default.chooses("lo", |n| n != "lo"));
        assert_eq!("default".parse::<Select>(), Ok(Select::Default));
        assert!(" , ".parse::<Select>().is_err());
    }
}
