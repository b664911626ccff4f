//! What a run is: the pacing mode, the shared read-only [`Plan`] (timeline, hello per agent,
//! source addresses) and the pre-encoded sample payloads that make sending cheap.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context as _;
use lanmon::codec::encode_line;
use lanmon::protocol::{AgentFrame, Cpu, Hello, Memory, Metrics, PROTOCOL_V1, PROTOCOL_VERSION};
use tokio::time::Instant;

/// How agents pace their samples.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// One sample every `period`, starting at a random phase.
    Rate { period: Duration },
    /// As many as the window allows.
    Flood { window: usize },
}

/// What every agent needs to know; shared read-only.
pub struct Plan {
    pub server: SocketAddr,
    pub agents: usize,
    pub agents_per_ip: u32,
    pub cores: u32,
    pub mode: Mode,
    pub interval_ms: u64,
    /// Distinguishes this run's agent ids from another loadgen's.
    pub tag: String,
    pub start: Instant,
    pub ramp: Duration,
    pub steady_from: Instant,
    pub stop_at: Instant,
    pub payloads: Payloads,
    /// Protocol 2 with this token's pin and network key; `None`: plaintext protocol 1.
    pub join: Option<lanmon::auth::token::JoinToken>,
    /// Reconnect after a lost connection until `stop_at`.
    pub reconnect: bool,
}

impl Plan {
    pub fn connect_at(&self, i: usize) -> Instant {
        let offset = self.ramp.mul_f64(i as f64 / self.agents as f64);
        self.start + offset
    }

    pub fn hello(&self, i: usize) -> Hello {
        Hello {
            proto: if self.join.is_some() {
                PROTOCOL_VERSION
            } else {
                PROTOCOL_V1
            },
            agent_id: format!("loadgen-{}-{i:06}", self.tag),
            run_id: format!("{}-{i:06}", self.tag),
            name: format!("loadgen-{i:06}"),
            hostname: format!("loadgen-{i:06}"),
            os: "Linux (loadgen)".into(),
            cores: self.cores,
            agent_version: format!("loadgen {}", env!("CARGO_PKG_VERSION")),
            interval_ms: self.interval_ms,
        }
    }
}

/// Source address of agent `i`: 127.1.0.1 for the first `per_ip` agents, then 127.1.0.2, …
/// `None` when the OS should choose (`per_ip` = 0, or an IPv6 server).
pub fn source_ip(server: &SocketAddr, i: usize, per_ip: u32) -> Option<IpAddr> {
    if per_ip == 0 || !server.is_ipv4() {
        return None;
    }
    let base = u32::from(Ipv4Addr::new(127, 1, 0, 0));
    let k = u32::try_from(i).unwrap_or(u32::MAX) / per_ip;
    Some(IpAddr::V4(Ipv4Addr::from(base.saturating_add(k + 1))))
}

/// Pre-encoded `metrics` frames without their `seq` and `ts_ms` values.
///
/// `encode_line` writes `{"type":"metrics","seq":S,"ts_ms":T,"cpu":…,"memory":…}\n`; each
/// payload here is everything after `T`, so a sample is the prefix, two numbers and a payload.
pub struct Payloads {
    pub tails: Vec<Vec<u8>>,
}

pub const SEQ_PREFIX: &[u8] = b"{\"type\":\"metrics\",\"seq\":";
pub const TS_PREFIX: &[u8] = b",\"ts_ms\":";

impl Payloads {
    /// `count` different realistic samples of `cores` cores, from a fixed seed.
    pub fn new(cores: u32, count: usize) -> anyhow::Result<Self> {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let template = [SEQ_PREFIX, b"0", TS_PREFIX, b"0"].concat();
        let mut tails = Vec::with_capacity(count);
        for _ in 0..count {
            let frame = AgentFrame::Metrics(sample_values(&mut rng, cores, 0, 0));
            let line = encode_line(&frame).context("cannot encode a metrics frame")?;
            let tail = line.strip_prefix(template.as_slice()).with_context(|| {
                format!(
                    "metrics frames no longer start with `{}`: update loadgen's encoder",
                    String::from_utf8_lossy(&template)
                )
            })?;
            tails.push(tail.to_vec());
        }
        Ok(Self { tails })
    }

    /// Appends one complete frame line (newline included) to `buf`.
    pub fn write(&self, buf: &mut Vec<u8>, seq: u64, ts_ms: u64, which: usize) {
        buf.extend_from_slice(SEQ_PREFIX);
        // Writing to a Vec cannot fail.
        let _ = write!(buf, "{seq}");
        buf.extend_from_slice(TS_PREFIX);
        let _ = write!(buf, "{ts_ms}");
        buf.extend_from_slice(&self.tails[which % self.tails.len()]);
    }
}

/// A tiny deterministic generator for plausible sample values (not for anything secret).
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One plausible sample: mostly idle cores with a few busy ones, 16 GiB of memory.
pub fn sample_values(rng: &mut XorShift, cores: u32, seq: u64, ts_ms: u64) -> Metrics {
    let per_core: Vec<f32> = (0..cores)
        .map(|_| {
            let u = rng.unit();
            (u * u * 100.0) as f32
        })
        .collect();
    let total = per_core.iter().sum::<f32>() / per_core.len().max(1) as f32;
    let mem_total: u64 = 16 << 30;
    let used = (mem_total as f64 * (0.2 + 0.6 * rng.unit())) as u64;
    let available = mem_total - used;
    Metrics {
        seq,
        ts_ms,
        cpu: Some(Cpu {
            total: total.clamp(0.0, 100.0),
            per_core,
        }),
        memory: Some(Memory {
            total: mem_total,
            used,
            free: available / 3,
            available: Some(available),
        }),
        ..Metrics::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use lanmon::codec::ServerCodec;
    use tokio_util::codec::Decoder;

    /// The fast path writes exactly what the library's encoder writes, and the server's codec
    /// decodes it to the sample with the right seq and timestamp.
    #[test]
    fn payload_frames_are_the_real_encoding() -> anyhow::Result<()> {
        for cores in [1, 8, 64] {
            let payloads = Payloads::new(cores, 4)?;
            let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
            for which in 0..4 {
                let expected = sample_values(&mut rng, cores, 123_456, 1_764_115_200_123);
                let mut line = Vec::new();
                payloads.write(&mut line, 123_456, 1_764_115_200_123, which);
                let reference = encode_line(&AgentFrame::Metrics(expected.clone()))?;
                assert_eq!(
                    String::from_utf8_lossy(&line),
                    String::from_utf8_lossy(&reference)
                );
                let mut buf = BytesMut::from(&line[..]);
                let decoded = ServerCodec::new().decode(&mut buf)?;
                assert_eq!(decoded, Some(AgentFrame::Metrics(expected)));
            }
        }
        Ok(())
    }

    /// Generated samples pass the server's validation (percentages, memory sums, core count).
    #[test]
    fn samples_are_valid() {
        let mut rng = XorShift(42);
        let plan_hello = Hello {
            proto: PROTOCOL_VERSION,
            agent_id: "a".into(),
            run_id: "r".into(),
            name: "n".into(),
            hostname: String::new(),
            os: String::new(),
            cores: 8,
            agent_version: String::new(),
            interval_ms: 1000,
        };
        assert_eq!(lanmon::validate::hello(&plan_hello), Ok(()));
        for seq in 1..200 {
            let m = sample_values(&mut rng, 8, seq, 1);
            assert_eq!(lanmon::validate::metrics(&m, &plan_hello), Ok(()));
        }
    }

    /// Agents are spread over distinct loopback source addresses, never outside 127/8.
    #[test]
    fn source_addresses_stay_in_loopback() {
        let v4: SocketAddr = ([127, 0, 0, 1], 9).into();
        let v6: SocketAddr = (std::net::Ipv6Addr::LOCALHOST, 9).into();
        let ip = |i, per| source_ip(&v4, i, per).map(|ip| ip.to_string());
        assert_eq!(ip(0, 100).as_deref(), Some("127.1.0.1"));
        assert_eq!(ip(99, 100).as_deref(), Some("127.1.0.1"));
        assert_eq!(ip(100, 100).as_deref(), Some("127.1.0.2"));
        assert_eq!(ip(99_999, 1).as_deref(), Some("127.2.134.160"));
        assert_eq!(ip(5, 0), None);
        assert_eq!(source_ip(&v6, 5, 100), None);
        assert!(source_ip(&v4, 100_000, 1).is_some_and(|ip| ip.is_loopback()));
    }
}
