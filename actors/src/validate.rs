//! Checks that a decoded frame makes sense before it reaches the Registry.
//!
//! The codec guarantees well-formed JSON of a known shape; this module rejects impossible
//! values: NaN or out-of-range percentages, `used > total`, a per-core array that does not
//! match the core count announced in `hello`, oversized strings, lists longer than the
//! protocol's bounds ([`MAX_FILESYSTEMS`], [`MAX_DISKS`], [`MAX_INTERFACES`],
//! [`MAX_SENSORS`], [`MAX_PROCESSES`]), strings with control, bidi or zero-width characters
//! (a name that displays as another).
//!
//! The agent's collectors apply the same rules before sending (they clamp and clean), so a
//! refusal means a broken or hostile agent, never a strange but real machine.

use crate::protocol::{
    Cpu, CpuModes, Filesystem, Hello, Load, MAX_CORES, MAX_DISKS, MAX_FILESYSTEMS, MAX_INTERFACES,
    MAX_LOAD, MAX_PROCESSES, MAX_SENSORS, MAX_TEXT_LEN, Memory, Metrics, PROTOCOL_VERSION, Swap,
    TEMP_RANGE_C,
};

/// Why a frame was refused. The `Display` text goes into the log line and the `error` frame.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Invalid {
    #[error(
        "unsupported protocol version {got} on this connection (it speaks {want}: protocol 2 \
         over the authenticated handshake, 1 in plaintext)"
    )]
    UnsupportedVersion { got: u32, want: u32 },
    #[error("field `{field}` is {reason}")]
    Field {
        field: &'static str,
        reason: &'static str,
    },
    #[error("`{field}` = {value} is not a percentage in 0..=100")]
    Percent { field: &'static str, value: f32 },
    #[error("cpu.per_core has {got} entries, hello announced {expected} cores")]
    CoreCount { got: usize, expected: u32 },
    #[error("memory.{field} ({value}) exceeds memory.total ({total})")]
    MemoryExceedsTotal {
        field: &'static str,
        value: u64,
        total: u64,
    },
    #[error("cores = {got} is not in 1..={max}")]
    TooManyCores { got: u32, max: usize },
    #[error("seq must start at 1, got 0")]
    ZeroSeq,
    #[error("`{field}` has {got} entries, at most {max} are allowed")]
    TooMany {
        field: &'static str,
        got: usize,
        max: usize,
    },
    #[error("`{field}` = {value} is out of range")]
    OutOfRange { field: &'static str, value: f64 },
    #[error("`{field}`: {value} exceeds {total}")]
    Exceeds {
        field: &'static str,
        value: u64,
        total: u64,
    },
}

/// Smallest sampling interval an agent may announce.
pub const MIN_INTERVAL_MS: u64 = 100;
/// Largest sampling interval an agent may announce (one hour): it bounds the idle timeout.
pub const MAX_INTERVAL_MS: u64 = 3_600_000;

fn text(field: &'static str, value: &str, may_be_empty: bool) -> Result<(), Invalid> {
    if value.len() > MAX_TEXT_LEN {
        return Err(Invalid::Field {
            field,
            reason: "too long",
        });
    }
    if !may_be_empty && value.trim().is_empty() {
        return Err(Invalid::Field {
            field,
            reason: "empty",
        });
    }
    if value.chars().any(char::is_control) {
        return Err(Invalid::Field {
            field,
            reason: "contains control characters",
        });
    }
    // A name must look like what it is: no bidi override turning it around, no zero-width
    // character making it a look-alike of another (see `crate::text`).
    if value.chars().any(crate::text::is_hidden) {
        return Err(Invalid::Field {
            field,
            reason: "contains invisible or bidi control characters",
        });
    }
    Ok(())
}

/// Validates a `hello` with the protocol's default core limit ([`MAX_CORES`]).
pub fn hello(h: &Hello) -> Result<(), Invalid> {
    hello_with_limit(h, MAX_CORES)
}

/// Validates a protocol-2 `hello`, allowing at most `max_cores` cores.
pub fn hello_with_limit(h: &Hello, max_cores: usize) -> Result<(), Invalid> {
    hello_for(h, max_cores, PROTOCOL_VERSION)
}

/// Validates a `hello` of a connection that speaks protocol `proto` ([`PROTOCOL_VERSION`] over
/// Noise, [`crate::protocol::PROTOCOL_V1`] in plaintext), allowing at most `max_cores` cores.
pub fn hello_for(h: &Hello, max_cores: usize, proto: u32) -> Result<(), Invalid> {
    if h.proto != proto {
        return Err(Invalid::UnsupportedVersion {
            got: h.proto,
            want: proto,
        });
    }
    text("agent_id", &h.agent_id, false)?;
    text("run_id", &h.run_id, false)?;
    text("name", &h.name, false)?;
    text("hostname", &h.hostname, true)?;
    text("os", &h.os, true)?;
    text("agent_version", &h.agent_version, true)?;
    if h.cores == 0 || h.cores as usize > max_cores {
        return Err(Invalid::TooManyCores {
            got: h.cores,
            max: max_cores,
        });
    }
    if h.interval_ms < MIN_INTERVAL_MS {
        return Err(Invalid::Field {
            field: "interval_ms",
            reason: "below 100 ms",
        });
    }
    if h.interval_ms > MAX_INTERVAL_MS {
        return Err(Invalid::Field {
            field: "interval_ms",
            reason: "above one hour",
        });
    }
    Ok(())
}

fn percent(field: &'static str, value: f32) -> Result<(), Invalid> {
    // `contains` is false for NaN, so NaN is refused here too.
    if (0.0..=100.0).contains(&value) {
        Ok(())
    } else {
        Err(Invalid::Percent { field, value })
    }
}

fn cpu(c: &Cpu, cores: u32) -> Result<(), Invalid> {
    percent("cpu.total", c.total)?;
    if c.per_core.len() != cores as usize {
        return Err(Invalid::CoreCount {
            got: c.per_core.len(),
            expected: cores,
        });
    }
    c.per_core
        .iter()
        .try_for_each(|&v| percent("cpu.per_core[]", v))
}

fn memory(m: &Memory) -> Result<(), Invalid> {
    let parts = [
        ("used", Some(m.used)),
        ("free", Some(m.free)),
        ("available", m.available),
    ];
    for (field, value) in parts {
        if let Some(value) = value.filter(|&v| v > m.total) {
            return Err(Invalid::MemoryExceedsTotal {
                field,
                value,
                total: m.total,
            });
        }
    }
    Ok(())
}

fn cpu_modes(m: &CpuModes) -> Result<(), Invalid> {
    percent("cpu_modes.user_pct", m.user_pct)?;
    percent("cpu_modes.system_pct", m.system_pct)?;
    percent("cpu_modes.iowait_pct", m.iowait_pct)?;
    percent("cpu_modes.steal_pct", m.steal_pct)
}

/// A finite number in `range` (NaN and infinities are refused).
fn within(
    field: &'static str,
    value: f32,
    range: std::ops::RangeInclusive<f32>,
) -> Result<(), Invalid> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(Invalid::OutOfRange {
            field,
            value: f64::from(value),
        })
    }
}

fn load(l: &Load) -> Result<(), Invalid> {
    within("load.load1", l.load1, 0.0..=MAX_LOAD)?;
    within("load.load5", l.load5, 0.0..=MAX_LOAD)?;
    within("load.load15", l.load15, 0.0..=MAX_LOAD)
}

/// `value <= total`, or an error naming `field`.
fn at_most(field: &'static str, value: u64, total: u64) -> Result<(), Invalid> {
    if value > total {
        return Err(Invalid::Exceeds {
            field,
            value,
            total,
        });
    }
    Ok(())
}

fn swap(s: &Swap) -> Result<(), Invalid> {
    at_most("swap.used_bytes", s.used_bytes, s.total_bytes)
}

/// At most `max` entries in an optional list.
fn bounded<'a, T>(
    field: &'static str,
    list: Option<&'a Vec<T>>,
    max: usize,
) -> Result<&'a [T], Invalid> {
    let list = list.map_or(&[][..], Vec::as_slice);
    if list.len() > max {
        return Err(Invalid::TooMany {
            field,
            got: list.len(),
            max,
        });
    }
    Ok(list)
}

fn filesystem(f: &Filesystem) -> Result<(), Invalid> {
    text("filesystems[].mount", &f.mount, false)?;
    text("filesystems[].fs_type", &f.fs_type, true)?;
    text("filesystems[].device", &f.device, true)?;
    at_most("filesystems[].used_bytes", f.used_bytes, f.size_bytes)?;
    at_most("filesystems[].avail_bytes", f.avail_bytes, f.size_bytes)?;
    at_most("filesystems[].inodes_used", f.inodes_used, f.inodes)
}

/// Validates a sample against the `hello` of its connection.
pub fn metrics(m: &Metrics, hello: &Hello) -> Result<(), Invalid> {
    if m.seq == 0 {
        return Err(Invalid::ZeroSeq);
    }
    if let Some(c) = &m.cpu {
        cpu(c, hello.cores)?;
    }
    if let Some(mem) = &m.memory {
        memory(mem)?;
    }
    if let Some(c) = &m.cpu_modes {
        cpu_modes(c)?;
    }
    if let Some(l) = &m.load {
        load(l)?;
    }
    if let Some(s) = &m.swap {
        swap(s)?;
    }
    for f in bounded("filesystems", m.filesystems.as_ref(), MAX_FILESYSTEMS)? {
        filesystem(f)?;
    }
    for d in bounded("disks", m.disks.as_ref(), MAX_DISKS)? {
        text("disks[].device", &d.device, false)?;
    }
    for n in bounded("net", m.net.as_ref(), MAX_INTERFACES)? {
        text("net[].interface", &n.interface, false)?;
    }
    for t in bounded("temperatures", m.temperatures.as_ref(), MAX_SENSORS)? {
        text("temperatures[].sensor", &t.sensor, false)?;
        within("temperatures[].temp_c", t.temp_c, TEMP_RANGE_C)?;
    }
    #[allow(clippy::cast_precision_loss)] // a core count, far below 2^24
    let max_process_pct = 100.0 * hello.cores.max(1) as f32;
    for p in bounded("processes", m.processes.as_ref(), MAX_PROCESSES)? {
        text("processes[].name", &p.name, true)?;
        within("processes[].cpu_pct", p.cpu_pct, 0.0..=max_process_pct)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello_fixture() -> Hello {
        Hello {
            proto: PROTOCOL_VERSION,
            agent_id: "a1".into(),
            run_id: "r1".into(),
            name: "web-1".into(),
            hostname: "web-1".into(),
            os: "Linux".into(),
            cores: 2,
            agent_version: "0.1.0".into(),
            interval_ms: 5000,
        }
    }

    fn sample(total: f32, per_core: Vec<f32>, used: u64) -> Metrics {
        Metrics {
            seq: 1,
            ts_ms: 0,
            cpu: Some(Cpu { total, per_core }),
            memory: Some(Memory {
                total: 100,
                used,
                free: 10,
                available: Some(100 - used.min(100)),
            }),
            ..Metrics::default()
        }
    }

    #[test]
    fn good_frames_pass() {
        let h = hello_fixture();
        assert_eq!(hello(&h), Ok(()));
        assert_eq!(metrics(&sample(0.0, vec![0.0, 100.0], 100), &h), Ok(()));
    }

    #[test]
    fn unsupported_version_is_refused() {
        let h = Hello {
            proto: 1,
            ..hello_fixture()
        };
        assert_eq!(
            hello(&h),
            Err(Invalid::UnsupportedVersion { got: 1, want: 2 })
        );
        assert_eq!(
            hello_for(&h, MAX_CORES, crate::protocol::PROTOCOL_V1),
            Ok(())
        );
    }

    #[test]
    fn bad_hello_fields_are_refused() {
        let empty_id = Hello {
            agent_id: " ".into(),
            ..hello_fixture()
        };
        assert!(matches!(
            hello(&empty_id),
            Err(Invalid::Field {
                field: "agent_id",
                ..
            })
        ));
        let long_name = Hello {
            name: "x".repeat(MAX_TEXT_LEN + 1),
            ..hello_fixture()
        };
        assert!(matches!(
            hello(&long_name),
            Err(Invalid::Field { field: "name", .. })
        ));
        let escape = Hello {
            name: "a\u{1b}[2J".into(),
            ..hello_fixture()
        };
        assert!(matches!(
            hello(&escape),
            Err(Invalid::Field { field: "name", .. })
        ));
        let no_cores = Hello {
            cores: 0,
            ..hello_fixture()
        };
        assert!(matches!(
            hello(&no_cores),
            Err(Invalid::TooManyCores { got: 0, .. })
        ));
        let many = Hello {
            cores: 65,
            ..hello_fixture()
        };
        assert_eq!(hello(&many), Ok(()));
        assert_eq!(
            hello_with_limit(&many, 64),
            Err(Invalid::TooManyCores { got: 65, max: 64 })
        );
        let slow = Hello {
            interval_ms: u64::MAX,
            ..hello_fixture()
        };
        assert!(matches!(
            hello(&slow),
            Err(Invalid::Field {
                field: "interval_ms",
                ..
            })
        ));
        let fast = Hello {
            interval_ms: 1,
            ..hello_fixture()
        };
        assert!(matches!(
            hello(&fast),
            Err(Invalid::Field {
                field: "interval_ms",
                ..
            })
        ));
    }

    /// Proves: a name (or any hello string) with a bidi override or a zero-width character is
    /// refused, while letters of any script pass.
    #[test]
    fn bidi_and_zero_width_characters_are_refused_in_names() {
        for bad in [
            "web-1\u{202e}1-bew",
            "web\u{200b}-1",
            "\u{2066}db\u{2069}",
            "a\u{feff}",
        ] {
            let h = Hello {
                name: bad.into(),
                ..hello_fixture()
            };
            assert_eq!(
                hello(&h),
                Err(Invalid::Field {
                    field: "name",
                    reason: "contains invisible or bidi control characters"
                }),
                "{bad:?}"
            );
            let h = Hello {
                os: bad.into(),
                ..hello_fixture()
            };
            assert!(hello(&h).is_err(), "os {bad:?}");
        }
        let h = Hello {
            name: "сервер-1 ünï 名前".into(),
            ..hello_fixture()
        };
        assert_eq!(hello(&h), Ok(()));
    }

    #[test]
    fn nan_negative_and_over_100_percent_are_refused() {
        let h = hello_fixture();
        for bad in [f32::NAN, -0.5, 100.5, f32::INFINITY] {
            assert!(matches!(
                metrics(&sample(bad, vec![1.0, 1.0], 1), &h),
                Err(Invalid::Percent {
                    field: "cpu.total",
                    ..
                })
            ));
            assert!(matches!(
                metrics(&sample(1.0, vec![1.0, bad], 1), &h),
                Err(Invalid::Percent {
                    field: "cpu.per_core[]",
                    ..
                })
            ));
        }
    }

    #[test]
    fn core_count_must_match_hello() {
        let h = hello_fixture();
        assert_eq!(
            metrics(&sample(1.0, vec![1.0], 1), &h),
            Err(Invalid::CoreCount {
                got: 1,
                expected: 2
            })
        );
    }

    #[test]
    fn memory_parts_cannot_exceed_total() {
        let h = hello_fixture();
        assert!(matches!(
            metrics(&sample(1.0, vec![1.0, 1.0], 101), &h),
            Err(Invalid::MemoryExceedsTotal { field: "used", .. })
        ));
    }

    /// A sample with every group at its protocol bounds passes; one entry too many in any
    /// list, an impossible number or a control character in any string is refused, naming
    /// the field.
    #[test]
    fn whole_machine_fields_are_bounded() {
        use crate::protocol::{
            AgentCost, ClockSync, Disk, Filesystem, NetInterface, Process, Temperature,
        };
        let h = hello_fixture();
        let fs = Filesystem {
            mount: "/".into(),
            fs_type: "ext4".into(),
            device: "/dev/sda1".into(),
            size_bytes: 100,
            used_bytes: 100,
            avail_bytes: 90,
            inodes: 10,
            inodes_used: 10,
        };
        let disk = Disk {
            device: "sda".into(),
            read_bytes: u64::MAX,
            written_bytes: 0,
            reads: 1,
            writes: 1,
            io_ms: 1,
        };
        let nic = NetInterface {
            interface: "eth0".into(),
            rx_bytes: 1,
            tx_bytes: 1,
            rx_packets: 1,
            tx_packets: 1,
            rx_errs: 0,
            tx_errs: 0,
            rx_drops: 0,
            tx_drops: 0,
        };
        let temp = Temperature {
            sensor: "coretemp Core 0".into(),
            temp_c: 45.5,
        };
        let process = Process {
            pid: 1,
            name: String::new(),
            cpu_pct: 200.0, // two busy threads on the fixture's 2 cores
            rss_bytes: 1,
        };
        let full = Metrics {
            seq: 1,
            cpu_modes: Some(CpuModes {
                user_pct: 100.0,
                system_pct: 0.0,
                iowait_pct: 0.0,
                steal_pct: 0.0,
            }),
            load: Some(Load {
                load1: 0.0,
                load5: 12.5,
                load15: MAX_LOAD,
                running: Some(1),
                threads: Some(100),
                procs: None,
            }),
            swap: Some(Swap {
                total_bytes: 10,
                used_bytes: 10,
            }),
            filesystems: Some(vec![fs.clone(); MAX_FILESYSTEMS]),
            disks: Some(vec![disk.clone(); MAX_DISKS]),
            net: Some(vec![nic.clone(); MAX_INTERFACES]),
            temperatures: Some(vec![temp.clone(); MAX_SENSORS]),
            processes: Some(vec![process.clone(); MAX_PROCESSES]),
            agent_cost: Some(AgentCost {
                rss_bytes: 1,
                cpu_ms: 1,
            }),
            clock: Some(Box::new(ClockSync {
                welcome_ts_ms: 0,
                received_ts_ms: u64::MAX,
                rtt_ms: 0,
            })),
            ..Metrics::default()
        };
        assert_eq!(metrics(&full, &h), Ok(()));
        let refused = |m: Metrics| {
            metrics(&m, &h)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let one_more = |field: &str| {
            let mut m = full.clone();
            match field {
                "filesystems" => m.filesystems.as_mut().map(|l| l.push(fs.clone())),
                "disks" => m.disks.as_mut().map(|l| l.push(disk.clone())),
                "net" => m.net.as_mut().map(|l| l.push(nic.clone())),
                "temperatures" => m.temperatures.as_mut().map(|l| l.push(temp.clone())),
                _ => m.processes.as_mut().map(|l| l.push(process.clone())),
            };
            m
        };
        for field in ["filesystems", "disks", "net", "temperatures", "processes"] {
            assert!(
                refused(one_more(field)).starts_with(&format!("`{field}` has ")),
                "{field}"
            );
        }
        let mut m = full.clone();
        m.filesystems = Some(vec![Filesystem {
            used_bytes: 101,
            ..fs.clone()
        }]);
        assert!(refused(m).contains("filesystems[].used_bytes"));
        let mut m = full.clone();
        m.filesystems = Some(vec![Filesystem {
            mount: "/mnt/a\u{7}".into(),
            ..fs.clone()
        }]);
        assert!(refused(m).contains("filesystems[].mount"));
        let mut m = full.clone();
        m.net = Some(vec![NetInterface {
            interface: "x".repeat(MAX_TEXT_LEN + 1),
            ..nic.clone()
        }]);
        assert!(refused(m).contains("net[].interface"));
        let mut m = full.clone();
        m.disks = Some(vec![Disk {
            device: String::new(),
            ..disk.clone()
        }]);
        assert!(refused(m).contains("disks[].device"));
        for bad in [f32::NAN, -300.0, 501.0] {
            let mut m = full.clone();
            m.temperatures = Some(vec![Temperature {
                temp_c: bad,
                ..temp.clone()
            }]);
            assert!(refused(m).contains("temperatures[].temp_c"), "{bad}");
        }
        let mut m = full.clone();
        m.processes = Some(vec![Process {
            cpu_pct: 200.5,
            ..process.clone()
        }]);
        assert!(refused(m).contains("processes[].cpu_pct"));
        let mut m = full.clone();
        m.load = m.load.map(|l| Load {
            load5: f32::INFINITY,
            ..l
        });
        assert!(refused(m).contains("load.load5"));
        let mut m = full.clone();
        m.cpu_modes = m.cpu_modes.map(|c| CpuModes {
            steal_pct: -1.0,
            ..c
        });
        assert!(refused(m).contains("cpu_modes.steal_pct"));
        let mut m = full;
        m.swap = Some(Swap {
            total_bytes: 1,
            used_bytes: 2,
        });
        assert!(refused(m).contains("swap.used_bytes"));
    }

    #[test]
    fn seq_zero_and_missing_readings() {
        let h = hello_fixture();
        let mut m = sample(1.0, vec![1.0, 1.0], 1);
        m.seq = 0;
        assert_eq!(metrics(&m, &h), Err(Invalid::ZeroSeq));
        let partial = Metrics {
            seq: 1,
            ts_ms: 0,
            ..Metrics::default()
        };
        assert_eq!(metrics(&partial, &h), Ok(()));
    }
}
