//! Test harness, written once for every test module. Two layers:
//!
//! - [`process`]: the real `server` and `agent` binaries on 127.0.0.1; the server prints a JSON
//!   snapshot every 100 ms, which the harness parses into the typed
//!   [`lanmon::snapshot::Snapshot`] and waits on ([`Server::wait_for`]), never on fixed sleeps.
//! - [`inproc`]: a `lanmon::server::Server` and `lanmon::agent` loops inside the test process,
//!   on one actix System, with fake metric sources of exact values.
//!
//! Shared by both: [`SnapshotExt`] (typed questions about a snapshot: is `x` live, its seq…)
//! and [`ToJson`] (a snapshot or agent entry as JSON in failure messages); [`http`] (a tiny
//! HTTP/1.1 client and the API's typed bodies); [`net`] (port reservations, a raw client);
//! [`TempDir`], [`poll`], and what this machine is ([`proc_stat_cores`], [`mem_total_bytes`]).
//!
//! Ports: servers bind `127.0.0.1:0` and the tests read the real port from what the server
//! reports (`server.listen`). A test that needs a port before anything listens on it holds a
//! reservation ([`TcpPortReservation`], [`UdpPortReservation`]) instead of binding, releasing
//! and hoping.
//!
//! Network rule: everything binds and connects to 127.0.0.1 only (hence `--no-beacon`: the
//! server's discovery beacon would broadcast on every interface). Run the suite inside
//! `unshare -n sh -c 'ip link set lo up; cargo test -p integration-tests --offline'` as a
//! safety net.

pub mod http;
pub mod inproc;
pub mod net;
pub mod process;
mod snapshot;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub use net::{TcpPortReservation, UdpPortReservation, raw_exchange};
pub use process::{Agent, Home, Join, Server};
pub use snapshot::{SnapshotExt, ToJson};

/// How long any wait may take before the test fails: generous, CI machines are slow (2 cores,
/// several tests in parallel).
pub const DEADLINE: Duration = Duration::from_secs(15);

/// Pause between two looks at observable state inside a wait loop.
pub const POLL: Duration = Duration::from_millis(20);

/// The only address the tests ever bind or connect to.
pub const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Locks `m`, also after a panic on another thread: a panicking reader thread must not hide
/// the diagnostics of the test that is failing.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Calls `f` until it returns `Some` or `within` has passed, looking every [`POLL`].
pub fn poll<T>(within: Duration, f: impl FnMut() -> Option<T>) -> Option<T> {
    poll_every(POLL, within, f)
}

/// Calls `f` until it returns `Some` or `within` has passed, pausing `pause` between looks
/// (1 ms for waits of a few milliseconds that are repeated many times).
pub fn poll_every<T>(
    pause: Duration,
    within: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(pause);
    }
}

// ---- Temporary directories ------------------------------------------------------------------

/// A directory of its own under the system's temp dir (pid, counter and clock in its name, so
/// parallel tests never share one), removed with everything in it on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    #[track_caller]
    pub fn new(what: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "lanmon-it-{what}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The path as a string, for command lines.
    pub fn arg(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---- This machine, read independently of the agent ------------------------------------------

/// Whether the tests run as root (namespaces, mounts and packages need it): the effective uid
/// in /proc/self/status.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Logical CPUs as the kernel counts them: the `cpuN` lines of /proc/stat.
/// (`available_parallelism` is not it: it follows cgroup quotas and affinity.)
pub fn proc_stat_cores() -> usize {
    let stat = std::fs::read_to_string("/proc/stat")
        .unwrap_or_else(|e| panic!("cannot read /proc/stat: {e}"));
    stat.lines()
        .filter(|l| {
            // `cpu0 …`, `cpu1 …`; not the `cpu  …` line that sums them all.
            l.split_whitespace()
                .next()
                .and_then(|field| field.strip_prefix("cpu"))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count()
}

/// `MemTotal` from /proc/meminfo, in bytes.
pub fn mem_total_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_else(|e| panic!("cannot read /proc/meminfo: {e}"));
    let kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no `MemTotal: N kB` line in /proc/meminfo"));
    kib * 1024
}
