//! One agent's whole-machine state in the Registry: the latest [`HostView`] (what snapshots
//! show), the rates between its last two samples ([`super::rates`]), and the agent's clock
//! offset. No actor: the Registry owns one [`HostState`] per agent and calls it from its
//! handlers; snapshots share the view (`Arc`), so a report copies nothing on the ingest
//! thread.
//!
//! **Clock offset.** The server writes its clock into `welcome` (`ts_ms`); the agent notes
//! its own clock when `welcome` arrives and the round trip since it sent `hello` (monotonic),
//! and echoes the three numbers in the first frame of the connection ([`ClockSync`]). The
//! server's clock stood at `welcome_ts_ms` about half a round trip before the agent's read
//! `received_ts_ms`, so the agent is ahead by `received_ts_ms - rtt_ms/2 - welcome_ts_ms`
//! (Cristian's algorithm; the error is at most half the round trip plus the server's time
//! between reading `hello` and writing `welcome`). Measured again at every connection; a
//! warning is logged once per run when it exceeds [`CLOCK_WARN_MS`].

use std::sync::Arc;

use crate::protocol::{ClockSync, Disk, Hello, Metrics, NetInterface};
use crate::snapshot::{AgentCostView, DiskView, HostView, NetView};

use super::rates::{elapsed_ms, per_second, share_pct};

/// An agent clock this far from the server's (either way) is logged as a warning.
pub const CLOCK_WARN_MS: u64 = 2_000;

/// Round trips longer than this make a clock measurement worthless; it is ignored.
pub const CLOCK_MAX_RTT_MS: u64 = 60_000;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct HostState {
    /// The run the view belongs to: a new run starts without rates.
    run_id: String,
    view: Option<Arc<HostView>>,
    /// `ts_ms` and `seq` of the sample behind `view`.
    ts_ms: u64,
    seq: u64,
    clock: Option<(i64, u64)>,
    /// The clock warning was logged for this run.
    warned: bool,
}

/// The agent's clock minus the server's, in ms, and the round trip; `None` for a
/// measurement that cannot be right (a round trip over [`CLOCK_MAX_RTT_MS`]).
pub fn clock_offset(c: &ClockSync) -> Option<(i64, u64)> {
    if c.rtt_ms > CLOCK_MAX_RTT_MS {
        return None;
    }
    let agent_at_welcome = i128::from(c.received_ts_ms) - i128::from(c.rtt_ms / 2);
    let offset = agent_at_welcome - i128::from(c.welcome_ts_ms);
    Some((i64::try_from(offset).ok()?, c.rtt_ms))
}

/// The rates of a block device between two samples `dt_ms` apart.
fn disk_view(old: Option<&Disk>, new: Disk, dt_ms: Option<u64>) -> DiskView {
    let rate = |f: fn(&Disk) -> u64| {
        old.zip(dt_ms)
            .and_then(|(o, dt)| per_second(f(o), f(&new), dt))
    };
    DiskView {
        read_bytes_per_s: rate(|d| d.read_bytes),
        written_bytes_per_s: rate(|d| d.written_bytes),
        reads_per_s: rate(|d| d.reads),
        writes_per_s: rate(|d| d.writes),
        busy_pct: old
            .zip(dt_ms)
            .and_then(|(o, dt)| share_pct(o.io_ms, new.io_ms, dt))
            .map(|p| p.min(100.0)),
        counters: new,
    }
}

/// The rates of a network interface between two samples `dt_ms` apart.
fn net_view(old: Option<&NetInterface>, new: NetInterface, dt_ms: Option<u64>) -> NetView {
    let rate = |f: fn(&NetInterface) -> u64| {
        old.zip(dt_ms)
            .and_then(|(o, dt)| per_second(f(o), f(&new), dt))
    };
    let sum = |a: Option<f64>, b: Option<f64>| Some(a? + b?);
    NetView {
        rx_bytes_per_s: rate(|n| n.rx_bytes),
        tx_bytes_per_s: rate(|n| n.tx_bytes),
        rx_packets_per_s: rate(|n| n.rx_packets),
        tx_packets_per_s: rate(|n| n.tx_packets),
        errs_per_s: sum(rate(|n| n.rx_errs), rate(|n| n.tx_errs)),
        drops_per_s: sum(rate(|n| n.rx_drops), rate(|n| n.tx_drops)),
        counters: new,
    }
}

impl HostState {
    /// Takes the whole-machine fields out of `m`, the agent's latest sample, into a new view
    /// with the rates since the previous one (same run, earlier `ts_ms`). `m` keeps its
    /// `cpu` and `memory`.
    pub fn update(&mut self, hello: &Hello, m: &mut Metrics) {
        self.enter_run(hello);
        let old = self.view.as_deref();
        let dt = old.and_then(|_| elapsed_ms(self.ts_ms, m.ts_ms));
        let seqs = m.seq.saturating_sub(self.seq);
        let old_disks = old.and_then(|v| v.disks.as_deref()).unwrap_or_default();
        let old_net = old.and_then(|v| v.net.as_deref()).unwrap_or_default();
        let disks = m.disks.take().map(|disks| {
            disks
                .into_iter()
                .map(|d| {
                    let prev = old_disks.iter().find(|o| o.counters.device == d.device);
                    disk_view(prev.map(|p| &p.counters), d, dt)
                })
                .collect()
        });
        let net = m.net.take().map(|net| {
            net.into_iter()
                .map(|n| {
                    let prev = old_net.iter().find(|o| o.counters.interface == n.interface);
                    net_view(prev.map(|p| &p.counters), n, dt)
                })
                .collect()
        });
        let old_cpu_ms = old
            .and_then(|v| v.agent_cost.as_ref())
            .map(|c| c.counters.cpu_ms);
        let agent_cost = m.agent_cost.take().map(|c| {
            let spent = old_cpu_ms.and_then(|o| super::rates::increase(o, c.cpu_ms));
            #[allow(clippy::cast_precision_loss)] // ms and sample counts of one interval
            AgentCostView {
                cpu_pct: old_cpu_ms
                    .zip(dt)
                    .and_then(|(o, dt)| share_pct(o, c.cpu_ms, dt)),
                cpu_ms_per_sample: spent
                    .filter(|_| seqs > 0 && dt.is_some())
                    .map(|ms| ms as f64 / seqs as f64),
                counters: c,
            }
        });
        let (clock_offset_ms, clock_rtt_ms) = self.clock.unzip();
        self.view = Some(Arc::new(HostView {
            cpu_modes: m.cpu_modes.take(),
            load: m.load.take(),
            uptime_s: m.uptime_s.take(),
            swap: m.swap.take(),
            filesystems: m.filesystems.take(),
            disks,
            net,
            temperatures: m.temperatures.take(),
            processes: m.processes.take(),
            agent_cost,
            clock_offset_ms,
            clock_rtt_ms,
        }));
        self.ts_ms = m.ts_ms;
        self.seq = m.seq;
    }

    /// Records a clock measurement (any frame of the agent that carries one, duplicate or
    /// not); warns once per run when the offset is large. Shown from the next sample on.
    pub fn clock(&mut self, hello: &Hello, c: &ClockSync) {
        let Some((offset, rtt)) = clock_offset(c) else {
            return;
        };
        self.enter_run(hello);
        self.clock = Some((offset, rtt));
        if offset.unsigned_abs() > CLOCK_WARN_MS && !self.warned {
            self.warned = true;
            let way = if offset > 0 { "ahead of" } else { "behind" };
            #[allow(clippy::cast_precision_loss)]
            let secs = offset.unsigned_abs() as f64 / 1000.0;
            tracing::warn!(
                "agent {} ({}): its clock is {secs:.1} s {way} the server's (measured with a \
                 {rtt} ms round trip); sample times and last-sample ages will be off by as much",
                hello.name,
                hello.agent_id
            );
        }
    }

    /// Forgets everything of an earlier run: a restarted agent starts from nothing.
    fn enter_run(&mut self, hello: &Hello) {
        if self.run_id != hello.run_id {
            self.run_id.clone_from(&hello.run_id);
            self.view = None;
            self.clock = None;
            self.warned = false;
        }
    }

    /// The view for snapshots (shared, not copied).
    pub fn view(&self) -> Option<Arc<HostView>> {
        self.view.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{AgentCost, Load, PROTOCOL_VERSION};

    fn hello(run: &str) -> Hello {
        Hello {
            proto: PROTOCOL_VERSION,
            agent_id: "a1".into(),
            run_id: run.into(),
            name: "web-1".into(),
            hostname: "web-1".into(),
            os: "Linux".into(),
            cores: 2,
            agent_version: "0".into(),
            interval_ms: 5000,
        }
    }

    fn sample(seq: u64, ts_ms: u64, rx: u64, read: u64, cpu_ms: u64) -> Metrics {
        Metrics {
            seq,
            ts_ms,
            load: Some(Load {
                load1: 1.0,
                load5: 1.0,
                load15: 1.0,
                running: None,
                threads: None,
                procs: None,
            }),
            net: Some(vec![NetInterface {
                interface: "eth0".into(),
                rx_bytes: rx,
                tx_bytes: rx / 2,
                rx_packets: rx / 100,
                tx_packets: 0,
                rx_errs: 0,
                tx_errs: 0,
                rx_drops: 0,
                tx_drops: 0,
            }]),
            disks: Some(vec![Disk {
                device: "sda".into(),
                read_bytes: read,
                written_bytes: 0,
                reads: read / 4096,
                writes: 0,
                io_ms: ts_ms / 4,
            }]),
            agent_cost: Some(AgentCost {
                rss_bytes: 3 << 20,
                cpu_ms,
            }),
            ..Metrics::default()
        }
    }

    fn net0(s: &HostState) -> NetView {
        s.view()
            .and_then(|v| v.net.as_ref()?.first().cloned())
            .unwrap_or_else(|| panic!("no net view"))
    }

    /// Rates come from two samples of one run, over the agents' `ts_ms`; the first sample
    /// has counters but no rates; the sample keeps only cpu and memory.
    #[test]
    fn rates_between_two_samples() {
        let h = hello("r1");
        let mut s = HostState::default();
        let mut m = sample(1, 10_000, 1_000_000, 8192, 100);
        s.update(&h, &mut m);
        assert!(
            m.net.is_none() && m.load.is_none(),
            "fields moved into the view"
        );
        let first = net0(&s);
        assert_eq!(first.counters.rx_bytes, 1_000_000);
        assert_eq!(first.rx_bytes_per_s, None);
        // Two samples later (one was lost): rates over the whole 10 s.
        s.update(&h, &mut sample(3, 20_000, 6_000_000, 8192 + 40_960, 150));
        let n = net0(&s);
        assert_eq!(n.rx_bytes_per_s, Some(500_000.0));
        assert_eq!(n.tx_bytes_per_s, Some(250_000.0));
        assert_eq!(n.rx_packets_per_s, Some(5_000.0));
        assert_eq!(n.errs_per_s, Some(0.0));
        let v = s.view().unwrap_or_default();
        let d = &v.disks.as_ref().unwrap()[0];
        assert_eq!(d.read_bytes_per_s, Some(4096.0));
        assert_eq!(d.reads_per_s, Some(1.0));
        assert_eq!(d.busy_pct, Some(25.0));
        let c = v.agent_cost.as_ref().unwrap();
        assert_eq!(c.cpu_pct, Some(0.5));
        assert_eq!(c.cpu_ms_per_sample, Some(25.0));
        assert!(v.load.is_some());
    }

    /// A counter going backwards (interface re-created) gives no rate for that interval, and
    /// rates again after; a new run (agent restarted) starts without rates; an interface
    /// that appears later has none until its second sample.
    #[test]
    fn resets_and_new_runs_give_no_rate() {
        let h = hello("r1");
        let mut s = HostState::default();
        s.update(&h, &mut sample(1, 10_000, 9_000_000_000_000, 0, 100));
        s.update(&h, &mut sample(2, 15_000, 5_000, 0, 110));
        assert_eq!(net0(&s).rx_bytes_per_s, None, "reset");
        s.update(&h, &mut sample(3, 20_000, 10_000, 0, 120));
        assert_eq!(net0(&s).rx_bytes_per_s, Some(1_000.0));
        let restarted = hello("r2");
        s.update(&restarted, &mut sample(1, 25_000, 20_000, 0, 5));
        assert_eq!(net0(&s).rx_bytes_per_s, None, "new run");
        let c = s.view().and_then(|v| v.agent_cost.clone()).unwrap();
        assert_eq!((c.cpu_pct, c.cpu_ms_per_sample), (None, None));
        let mut more = sample(2, 30_000, 30_000, 0, 10);
        if let Some(net) = more.net.as_mut() {
            let mut wlan = net[0].clone();
            wlan.interface = "wlan0".into();
            net.push(wlan);
        }
        s.update(&restarted, &mut more);
        let v = s.view().unwrap_or_default();
        let net = v.net.as_ref().unwrap();
        assert_eq!(net[0].rx_bytes_per_s, Some(2_000.0));
        assert_eq!(net[1].rx_bytes_per_s, None, "new interface");
        // A sample with the same timestamp (or an agent clock stepped back): no rates.
        s.update(&restarted, &mut sample(3, 30_000, 40_000, 0, 11));
        assert_eq!(net0(&s).rx_bytes_per_s, None);
    }

    /// A 32-bit counter wrapping between two samples still gives the right rate.
    #[test]
    fn a_32bit_wrap_keeps_its_rate() {
        let h = hello("r1");
        let mut s = HostState::default();
        let top = u64::from(u32::MAX);
        s.update(&h, &mut sample(1, 0, top - 999, 0, 0));
        s.update(&h, &mut sample(2, 1_000, 1_000, 0, 0));
        assert_eq!(net0(&s).rx_bytes_per_s, Some(2_000.0));
    }

    /// Cristian's estimate: the agent read its clock half a round trip after the server
    /// wrote `welcome`; absurd round trips are ignored; the view shows the latest
    /// measurement from the next sample on.
    #[test]
    fn clock_offset_corrects_for_half_the_round_trip() {
        let c = |welcome, received, rtt| ClockSync {
            welcome_ts_ms: welcome,
            received_ts_ms: received,
            rtt_ms: rtt,
        };
        assert_eq!(clock_offset(&c(1_000, 1_010, 20)), Some((0, 20)));
        assert_eq!(clock_offset(&c(1_000, 4_010, 20)), Some((3_000, 20)));
        assert_eq!(clock_offset(&c(10_000, 6_005, 10)), Some((-4_000, 10)));
        assert_eq!(
            clock_offset(&c(u64::MAX, 0, 0)),
            None,
            "beyond i64: nonsense"
        );
        assert_eq!(clock_offset(&c(1_000, 1_000, CLOCK_MAX_RTT_MS + 1)), None);
        let h = hello("r1");
        let mut s = HostState::default();
        s.clock(&h, &c(1_000, 4_010, 20));
        s.update(&h, &mut sample(1, 5_000, 0, 0, 0));
        let v = s.view().unwrap_or_default();
        assert_eq!((v.clock_offset_ms, v.clock_rtt_ms), (Some(3_000), Some(20)));
        assert!(s.warned, "3 s is above the warning threshold");
        // A new run forgets the old run's measurement until it sends its own.
        s.update(&hello("r2"), &mut sample(1, 6_000, 0, 0, 0));
        let v = s.view().unwrap_or_default();
        assert_eq!(v.clock_offset_ms, None);
        assert!(!s.warned);
    }
}
