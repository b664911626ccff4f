//! Checks that a decoded frame makes sense before it reaches the Registry.
//!
//! The codec guarantees well-formed JSON of a known shape; this module rejects impossible
//! values: NaN or out-of-range percentages, `used > total`, a per-core array that does not
//! match the core count announced in `hello`, oversized strings.

use crate::protocol::{Cpu, Hello, MAX_CORES, MAX_TEXT_LEN, Memory, Metrics, PROTOCOL_VERSION};

/// Why a frame was refused. The `Display` text goes into the log line and the `error` frame.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Invalid {
    #[error("unsupported protocol version {got} (this server speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion { got: u32 },
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
    Ok(())
}

/// Validates a `hello` with the protocol's default core limit ([`MAX_CORES`]).
pub fn hello(h: &Hello) -> Result<(), Invalid> {
    hello_with_limit(h, MAX_CORES)
}

/// Validates a `hello`, allowing at most `max_cores` cores.
pub fn hello_with_limit(h: &Hello, max_cores: usize) -> Result<(), Invalid> {
    if h.proto != PROTOCOL_VERSION {
        return Err(Invalid::UnsupportedVersion { got: h.proto });
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
            proto: 2,
            ..hello_fixture()
        };
        assert_eq!(hello(&h), Err(Invalid::UnsupportedVersion { got: 2 }));
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
