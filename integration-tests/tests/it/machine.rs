//! The whole machine end to end: the real agent and server in a network namespace of the
//! test's own, joined to a second one by a veth pair; the test sends a known number of frames
//! across it and finds exactly them in the server's typed snapshot, with rates, beside the
//! agent's load, filesystems, own cost and clock offset.
//!
//! Needs root (namespaces); without it the test prints `SKIPPED (needs root)`. Network rule:
//! the server binds 127.0.0.1 inside the namespace and has no beacon; the test's frames only
//! cross the veth pair between the two namespaces.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};

use lanmon::snapshot::{AgentView, NetView, Snapshot};

use crate::support::is_root;
use crate::support::process::{bin, command_for};
use crate::support::{DEADLINE, TempDir, poll};

#[track_caller]
fn run(cmd: &[&str]) {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Namespaces `a` and `b` joined by veth `va` (10.231.251.1, in `a`) – `vb` (.2, in `b`),
/// IPv6 off and neighbours static, so only the test's frames cross; deleted on drop.
struct Namespaces {
    a: String,
    b: String,
}

const MAC_A: &str = "02:4c:4d:54:01:01";
const MAC_B: &str = "02:4c:4d:54:01:02";

impl Namespaces {
    fn create() -> Namespaces {
        let ns = Namespaces {
            a: format!("lmt-it-{}-a", std::process::id()),
            b: format!("lmt-it-{}-b", std::process::id()),
        };
        let (a, b) = (ns.a.as_str(), ns.b.as_str());
        run(&["ip", "netns", "add", a]);
        run(&["ip", "netns", "add", b]);
        run(&[
            "ip", "-n", a, "link", "add", "va", "address", MAC_A, "type", "veth", "peer", "name",
            "vb", "address", MAC_B, "netns", b,
        ]);
        for n in [a, b] {
            run(&[
                "ip",
                "netns",
                "exec",
                n,
                "sh",
                "-c",
                "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6",
            ]);
            run(&["ip", "-n", n, "link", "set", "lo", "up"]);
        }
        run(&["ip", "-n", a, "addr", "add", "10.231.251.1/24", "dev", "va"]);
        run(&["ip", "-n", b, "addr", "add", "10.231.251.2/24", "dev", "vb"]);
        run(&[
            "ip",
            "-n",
            a,
            "neigh",
            "replace",
            "10.231.251.2",
            "lladdr",
            MAC_B,
            "dev",
            "va",
            "nud",
            "permanent",
        ]);
        // `b` answers the test's frames with ICMP (nothing listens): without ARP, so that
        // `va` sends nothing but the test's frames.
        run(&[
            "ip",
            "-n",
            b,
            "neigh",
            "replace",
            "10.231.251.1",
            "lladdr",
            MAC_A,
            "dev",
            "vb",
            "nud",
            "permanent",
        ]);
        run(&["ip", "-n", a, "link", "set", "va", "up"]);
        run(&["ip", "-n", b, "link", "set", "vb", "up"]);
        ns
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.a]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.b]).status();
    }
}

/// A child killed and reaped on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `program args…` inside namespace `ns` (`ip netns exec` execs it: same pid).
fn in_netns(ns: &str, program: PathBuf, args: &[&str]) -> Command {
    let mut cmd = command_for(PathBuf::from("ip"));
    cmd.args(["netns", "exec", ns]).arg(program).args(args);
    cmd
}

/// The agent named `machine` in the latest snapshot, once `pred` holds for it.
#[track_caller]
fn wait_agent(
    latest: &Mutex<Option<Snapshot>>,
    what: &str,
    pred: impl Fn(&AgentView) -> bool,
) -> AgentView {
    poll(DEADLINE, || {
        let snap = latest.lock().ok()?.clone()?;
        snap.agents
            .into_iter()
            .find(|a| a.name == "machine" && pred(a))
    })
    .unwrap_or_else(|| {
        panic!(
            "no snapshot with {what} within {DEADLINE:?}; last: {:?}",
            latest.lock().ok().and_then(|s| s.clone())
        )
    })
}

fn va(a: &AgentView) -> Option<&NetView> {
    a.host
        .net
        .as_ref()?
        .iter()
        .find(|n| n.counters.interface == "va")
}

/// Frames of 14 + 20 + 8 + 700 bytes (Ethernet, IPv4, UDP, payload), this many.
const PAYLOAD: usize = 700;
const FRAMES: u64 = 40;

/// Proves: every group the agent collects by default reaches the server's snapshot; the
/// network counters of an interface chosen with `--net-interfaces` grow by exactly the
/// frames the test sent across it, with rates derived by the server; and the clock offset
/// measured at `welcome` is near zero for an agent on the server's own machine.
#[test]
fn whole_machine_reaches_the_snapshot_with_exact_network_counters() {
    if !is_root() {
        eprintln!("whole_machine_reaches_the_snapshot…: SKIPPED (needs root for namespaces)");
        return;
    }
    let ns = Namespaces::create();
    // Plaintext (`--auth off`, the agent too): this test is about the metrics; its own data
    // directory, since the server keeps its identity there even with `--no-store`.
    let data_dir = TempDir::new("machine-server");
    let data = data_dir.arg();
    let mut server = in_netns(
        &ns.a,
        bin("server"),
        &[
            "--data-dir",
            &data,
            "--auth",
            "off",
            "--bind",
            "127.0.0.1:0",
            "--report-format",
            "json",
            "--report-interval",
            "100ms",
            "--no-beacon",
            "--no-http",
            "--no-store",
        ],
    );
    let mut server = Killed(server.spawn().unwrap_or_else(|e| panic!("server: {e}")));
    let stdout = server
        .0
        .stdout
        .take()
        .unwrap_or_else(|| panic!("no stdout"));
    let latest: Arc<Mutex<Option<Snapshot>>> = Arc::default();
    let shared = latest.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let (Ok(snap), Ok(mut slot)) =
                (serde_json::from_str::<Snapshot>(&line), shared.lock())
            {
                *slot = Some(snap);
            }
        }
    });
    let port = poll(DEADLINE, || {
        let listen = latest.lock().ok()?.as_ref()?.server.listen.clone();
        listen.rsplit_once(':')?.1.parse::<u16>().ok()
    })
    .unwrap_or_else(|| panic!("the server printed no typed snapshot"));
    let port = port.to_string();
    let _agent = Killed(
        in_netns(
            &ns.a,
            bin("agent"),
            &[
                "--host",
                "127.0.0.1",
                "--port",
                &port,
                "--interval",
                "200ms",
                "--name",
                "machine",
                "--net-interfaces",
                "va",
                "--auth",
                "off",
            ],
        )
        .spawn()
        .unwrap_or_else(|e| panic!("agent: {e}")),
    );

    // Two samples in: counters and their first rates.
    let before = wait_agent(&latest, "rates for va", |a| {
        va(a).is_some_and(|n| n.tx_bytes_per_s.is_some())
    });
    let base = va(&before)
        .map(|n| n.counters.clone())
        .unwrap_or_else(|| unreachable!());
    assert_eq!(
        before.host.net.as_ref().map(Vec::len),
        Some(1),
        "only va was chosen"
    );
    let load = before
        .host
        .load
        .unwrap_or_else(|| panic!("no load: {before:?}"));
    assert!(load.threads.unwrap_or(0) > 0);
    assert!(before.host.uptime_s.unwrap_or(0) > 0);
    assert!(before.host.cpu_modes.is_some() && before.host.swap.is_some());
    let filesystems = before.host.filesystems.clone().unwrap_or_default();
    assert!(
        filesystems.iter().any(|f| f.mount == "/"),
        "{filesystems:?}"
    );
    assert!(before.host.disks.is_some());
    let cost = before
        .host
        .agent_cost
        .clone()
        .unwrap_or_else(|| panic!("no agent cost"));
    assert!(cost.counters.rss_bytes > 0 && cost.cpu_pct.is_some());
    let offset = before
        .host
        .clock_offset_ms
        .unwrap_or_else(|| panic!("no clock offset"));
    assert!(
        offset.abs() < 1_000,
        "same machine, yet the offset is {offset} ms"
    );
    assert!(before.host.clock_rtt_ms.is_some());

    let a = ns.a.clone();
    std::thread::spawn(move || {
        let netns = File::open(format!("/run/netns/{a}")).unwrap_or_else(|e| panic!("{e}"));
        // SAFETY: setns takes a descriptor that `netns` keeps open for the call and a flag;
        // it moves only this thread (which exists for this) into the namespace.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let socket = std::net::UdpSocket::bind("10.231.251.1:0").unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..FRAMES {
            // A send refused (the pair still coming up) sends no frame: try again.
            poll(DEADLINE, || {
                let sent = socket.send_to(&[1u8; PAYLOAD], "10.231.251.2:9999");
                sent.is_ok().then_some(())
            })
            .unwrap_or_else(|| panic!("cannot send across the veth pair"));
        }
    })
    .join()
    .unwrap_or_else(|_| panic!("the sender failed"));

    let after = wait_agent(&latest, "every frame counted", |a| {
        va(a).is_some_and(|n| n.counters.tx_packets >= base.tx_packets + FRAMES)
    });
    let n = va(&after).unwrap_or_else(|| unreachable!());
    assert_eq!(n.counters.tx_packets - base.tx_packets, FRAMES);
    assert_eq!(
        n.counters.tx_bytes - base.tx_bytes,
        FRAMES * (14 + 20 + 8 + PAYLOAD as u64)
    );
    assert!(n.tx_bytes_per_s.is_some_and(|r| r >= 0.0));
    drop(server);
}
