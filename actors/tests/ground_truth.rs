//! Ground truth: the agent's collectors against this machine, on things the test creates and
//! measures itself: the load against `/proc/loadavg`; a tmpfs it mounts and fills by a known
//! amount against `df -B1`; a loop device it writes and reads with `O_DIRECT` against the
//! byte counts it moved; a veth pair between two network namespaces it creates against the
//! packets it sent; a CPU-burning child against the child's own `/proc` figures.
//!
//! Everything but the load needs root (mounts, loop devices, namespaces); without it those
//! tests print `SKIPPED (needs root)` and pass. Every object is removed on drop, also when a
//! test fails. Network rule: packets only cross the veth pair between the two namespaces,
//! never the machine's own network.

#![cfg(target_os = "linux")]
// Test helpers: a failed expectation is a failed test.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lanmon::metrics::network::parse_net_dev;
use lanmon::metrics::procfs::ProcFile;
use lanmon::metrics::{CollectConfig, Group, Groups, MetricsSource, ProcSource, Select};
use lanmon::protocol::NetInterface;

const MIB: u64 = 1024 * 1024;
const DEADLINE: Duration = Duration::from_secs(15);

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// True (and says so) when the test cannot run here.
fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("{test}: SKIPPED (needs root: it mounts, creates loop devices or namespaces)");
    true
}

/// Runs a command that must succeed; panics with its output otherwise.
#[track_caller]
fn run(cmd: &[&str]) -> String {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A unique name for this process's objects.
fn unique(what: &str) -> String {
    format!("lmt-{}-{what}", std::process::id())
}

fn only(groups: &[Group]) -> CollectConfig {
    CollectConfig {
        groups: groups.iter().fold(Groups::NONE, |g, &x| g.with(x)),
        ..CollectConfig::default()
    }
}

/// Calls `f` until it returns `Some`, for at most [`DEADLINE`].
#[track_caller]
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- load ------------------------------------------------------------------------------------

/// The load group reads what `/proc/loadavg` says (three averages, runnable and total
/// threads), taken between two identical reads of the file so nothing changed meanwhile.
#[test]
fn load_matches_proc_loadavg() {
    let mut source = ProcSource::open_with(&only(&[Group::Load])).unwrap();
    let matched = wait_for(
        "two identical reads of /proc/loadavg around a sample",
        || {
            let before = std::fs::read_to_string("/proc/loadavg").ok()?;
            let load = source.read().load?;
            let after = std::fs::read_to_string("/proc/loadavg").ok()?;
            (before == after).then_some((before, load))
        },
    );
    let (text, load) = matched;
    let f: Vec<&str> = text.split_whitespace().collect();
    let avg = |i: usize| f[i].parse::<f32>().unwrap();
    assert_eq!(
        (load.load1, load.load5, load.load15),
        (avg(0), avg(1), avg(2))
    );
    let (running, threads) = f[3].split_once('/').unwrap();
    assert_eq!(load.running, running.parse().ok());
    assert_eq!(load.threads, threads.parse().ok());
    assert_eq!(load.procs, None, "counted only with --processes");
}

// ---- filesystems -----------------------------------------------------------------------------

/// A tmpfs mounted for the test; unmounted (and its directory removed) on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(size_mib: u64) -> Tmpfs {
        let dir = std::env::temp_dir().join(unique("fs"));
        std::fs::create_dir_all(&dir).unwrap();
        let dir_s = dir.to_str().unwrap().to_string();
        let opts = format!("size={size_mib}m");
        run(&["mount", "-t", "tmpfs", "-o", &opts, "lmt-tmpfs", &dir_s]);
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy (`-l`): detached from the mount table at once even if a child that another
        // test is forking holds a file of it open for a moment (a plain umount then fails with
        // EBUSY and the mount would stay listed).
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `df -B1` of `dir`: size, used, available, inodes, inodes used.
fn df(dir: &Path) -> [u64; 5] {
    let dir = dir.to_str().unwrap();
    let bytes = run(&["df", "-B1", "--output=size,used,avail", dir]);
    let inodes = run(&["df", "--output=itotal,iused", dir]);
    let last = |text: &str| -> Vec<u64> {
        let line = text.lines().last().unwrap_or_default();
        line.split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect()
    };
    let (b, i) = (last(&bytes), last(&inodes));
    [b[0], b[1], b[2], i[0], i[1]]
}

/// The filesystem group reports exactly what `df -B1` shows for a tmpfs the test mounts
/// (chosen with `--fs-types tmpfs`, since tmpfs is left out by default), and its figures
/// move by exactly the 10 MiB file the test writes.
#[test]
fn filesystem_matches_df_on_a_tmpfs_it_fills() {
    if skip_unless_root("filesystem_matches_df_on_a_tmpfs_it_fills") {
        return;
    }
    let fs = Tmpfs::mount(64);
    let mount = fs.dir.to_str().unwrap().to_string();
    let mut config = only(&[Group::Fs]);
    config.fs_types = "tmpfs".parse().unwrap();
    let mut source = ProcSource::open_with(&config).unwrap();
    let mut ours = || {
        let all = source.read().filesystems.unwrap_or_default();
        all.into_iter()
            .find(|f| f.mount == mount)
            .unwrap_or_else(|| panic!("{mount} is not among the filesystems"))
    };
    let before = ours();
    assert_eq!(before.size_bytes, 64 * MIB);
    assert_eq!(before.fs_type, "tmpfs");
    assert_eq!(before.device, "lmt-tmpfs");
    let figures = |f: &lanmon::protocol::Filesystem| {
        [
            f.size_bytes,
            f.used_bytes,
            f.avail_bytes,
            f.inodes,
            f.inodes_used,
        ]
    };
    assert_eq!(figures(&before), df(&fs.dir), "empty tmpfs vs df");

    let mut file = File::create(fs.dir.join("ten-mib")).unwrap();
    file.write_all(&vec![0x5a; 10 * MIB as usize]).unwrap();
    file.sync_all().unwrap();
    let after = ours();
    assert_eq!(figures(&after), df(&fs.dir), "filled tmpfs vs df");
    assert_eq!(after.used_bytes - before.used_bytes, 10 * MIB);
    assert_eq!(before.avail_bytes - after.avail_bytes, 10 * MIB);
    assert_eq!(after.inodes_used - before.inodes_used, 1);

    // The kernel says when the mount table changes: an unmount drops the filesystem.
    drop(file);
    drop(fs);
    let gone = source.read().filesystems.unwrap_or_default();
    assert!(gone.iter().all(|f| f.mount != mount), "{gone:?}");
}

// ---- disk I/O --------------------------------------------------------------------------------

/// A loop device over a sparse image file; detached and removed on drop.
struct LoopDevice {
    image: PathBuf,
    device: String,
}

impl LoopDevice {
    fn attach(size: u64) -> LoopDevice {
        let image = std::env::temp_dir().join(unique("disk.img"));
        File::create(&image).unwrap().set_len(size).unwrap();
        let device = run(&["losetup", "-f", "--show", image.to_str().unwrap()])
            .trim()
            .to_string();
        LoopDevice { image, device }
    }

    /// The kernel name (`loop3`).
    fn name(&self) -> &str {
        self.device.trim_start_matches("/dev/")
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

/// A buffer aligned for `O_DIRECT` (4 KiB), without unsafe code: a larger vector sliced at
/// an aligned offset.
fn aligned(len: usize) -> (Vec<u8>, usize) {
    let buf = vec![0xa5u8; len + 4096];
    let offset = (4096 - (buf.as_ptr() as usize) % 4096) % 4096;
    (buf, offset)
}

/// The disk group's counters for a loop device move by exactly the bytes the test writes
/// (8 MiB, `O_DIRECT` + `fsync`) and reads back (4 MiB, `O_DIRECT`): no page cache between.
#[test]
fn disk_counters_match_direct_io_on_a_loop_device() {
    if skip_unless_root("disk_counters_match_direct_io_on_a_loop_device") {
        return;
    }
    let dev = LoopDevice::attach(64 * MIB);
    let mut config = only(&[Group::Disk]);
    config.disk_devices = dev.name().parse().unwrap();
    let mut source = ProcSource::open_with(&config).unwrap();
    let mut counters = || {
        let disks = source.read().disks.unwrap_or_default();
        assert_eq!(disks.len(), 1, "only the chosen device: {disks:?}");
        disks[0].clone()
    };
    // Loop devices are left out by default.
    assert!(
        ProcSource::open_with(&only(&[Group::Disk]))
            .unwrap()
            .read()
            .disks
            .unwrap_or_default()
            .iter()
            .all(|d| !d.device.starts_with("loop"))
    );
    let before = counters();
    assert_eq!(before.device, dev.name());

    let (mut buf, at) = aligned(MIB as usize);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&dev.device)
        .unwrap();
    for _ in 0..8 {
        out.write_all(&buf[at..at + MIB as usize]).unwrap();
    }
    out.sync_all().unwrap();
    let written = wait_for("8 MiB written in the counters", || {
        let c = counters();
        (c.written_bytes - before.written_bytes >= 8 * MIB).then_some(c)
    });
    assert_eq!(written.written_bytes - before.written_bytes, 8 * MIB);
    assert!(
        written.writes - before.writes >= 8,
        "{before:?} → {written:?}"
    );
    assert_eq!(written.read_bytes, before.read_bytes, "nothing read yet");

    let mut input = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&dev.device)
        .unwrap();
    for _ in 0..4 {
        input.read_exact(&mut buf[at..at + MIB as usize]).unwrap();
    }
    let read = wait_for("4 MiB read in the counters", || {
        let c = counters();
        (c.read_bytes - before.read_bytes >= 4 * MIB).then_some(c)
    });
    assert_eq!(read.read_bytes - before.read_bytes, 4 * MIB);
    assert!(read.reads - before.reads >= 4);
    assert!(read.io_ms >= before.io_ms);
}

// ---- network ---------------------------------------------------------------------------------

/// Two network namespaces joined by a veth pair (`va` 10.231.250.1 in `a`, `vb` .2 in
/// `b`) with IPv6 off and static neighbours, so nothing but the test's packets crosses it.
/// Deleted on drop.
struct VethPair {
    a: String,
    b: String,
}

const MAC_A: &str = "02:4c:4d:54:00:01";
const MAC_B: &str = "02:4c:4d:54:00:02";

impl VethPair {
    fn create() -> VethPair {
        let pair = VethPair {
            a: unique("a"),
            b: unique("b"),
        };
        let (a, b) = (pair.a.as_str(), pair.b.as_str());
        run(&["ip", "netns", "add", a]);
        run(&["ip", "netns", "add", b]);
        run(&[
            "ip", "-n", a, "link", "add", "va", "address", MAC_A, "type", "veth", "peer", "name",
            "vb", "address", MAC_B, "netns", b,
        ]);
        for ns in [a, b] {
            run(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sh",
                "-c",
                "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; \
                 echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6",
            ]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        run(&["ip", "-n", a, "addr", "add", "10.231.250.1/24", "dev", "va"]);
        run(&["ip", "-n", b, "addr", "add", "10.231.250.2/24", "dev", "vb"]);
        run(&[
            "ip",
            "-n",
            a,
            "neigh",
            "replace",
            "10.231.250.2",
            "lladdr",
            MAC_B,
            "dev",
            "va",
            "nud",
            "permanent",
        ]);
        run(&[
            "ip",
            "-n",
            b,
            "neigh",
            "replace",
            "10.231.250.1",
            "lladdr",
            MAC_A,
            "dev",
            "vb",
            "nud",
            "permanent",
        ]);
        run(&["ip", "-n", a, "link", "set", "va", "up"]);
        run(&["ip", "-n", b, "link", "set", "vb", "up"]);
        for (ns, dev) in [(a, "va"), (b, "vb")] {
            wait_for("the veth pair to be up", || {
                let out = Command::new("ip")
                    .args(["-n", ns, "link", "show", dev])
                    .output()
                    .ok()?;
                String::from_utf8_lossy(&out.stdout)
                    .contains("state UP")
                    .then_some(())
            });
        }
        pair
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the pair, and with it the other end.
        let _ = Command::new("ip").args(["netns", "del", &self.a]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.b]).status();
    }
}

/// Moves the calling thread into the network namespace `name` (for good: call it on a
/// thread of its own).
#[allow(unsafe_code)]
fn enter_netns(name: &str) {
    let ns = File::open(format!("/run/netns/{name}")).unwrap();
    // SAFETY: setns takes a descriptor that `ns` keeps open for the call and a flag; it
    // changes the network namespace of the calling thread only and touches no memory.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns({name}): {}", std::io::Error::last_os_error());
}

/// `iface` in this thread's `/proc/net/dev` (the thread's namespace), through the
/// collector's parser with the interface chosen by name.
fn counters_of(dev: &ProcFile, iface: &str) -> NetInterface {
    let mut buf = Vec::new();
    let select: Select = iface.parse().unwrap();
    let found = parse_net_dev(dev.read(&mut buf).unwrap(), &select);
    found
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{iface} not in /proc/net/dev"))
}

/// UDP datagrams of this many bytes, and how many: each is one Ethernet frame of
/// 14 (Ethernet) + 20 (IPv4) + 8 (UDP) + payload bytes on the veth pair.
const PAYLOAD: usize = 1000;
const DATAGRAMS: u64 = 50;
const FRAME: u64 = 14 + 20 + 8 + PAYLOAD as u64;

/// The network parser reads exactly the packets and bytes the test sends from one
/// namespace to the other: `va`'s transmit counters and `vb`'s receive counters grow by 50
/// frames of 1,042 bytes.
#[test]
fn network_counters_match_packets_sent_across_a_veth_pair() {
    if skip_unless_root("network_counters_match_packets_sent_across_a_veth_pair") {
        return;
    }
    let pair = VethPair::create();
    let (a, b) = (pair.a.clone(), pair.b.clone());
    // The receiving side: a socket bound in `b` (so no ICMP comes back), and its counters.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let receiver = std::thread::spawn(move || {
        enter_netns(&b);
        let dev = ProcFile::open("/proc/thread-self/net/dev").unwrap();
        let socket = std::net::UdpSocket::bind("10.231.250.2:9999").unwrap();
        let before = counters_of(&dev, "vb");
        ready_tx.send(()).unwrap();
        let _ = done_rx.recv_timeout(DEADLINE);
        let after = wait_for("vb to count every frame", || {
            let c = counters_of(&dev, "vb");
            (c.rx_packets - before.rx_packets >= DATAGRAMS).then_some(c)
        });
        drop(socket);
        (before, after)
    });
    let sender = std::thread::spawn(move || {
        enter_netns(&a);
        let dev = ProcFile::open("/proc/thread-self/net/dev").unwrap();
        let socket = std::net::UdpSocket::bind("10.231.250.1:0").unwrap();
        ready_rx.recv_timeout(DEADLINE).unwrap();
        let before = counters_of(&dev, "va");
        for _ in 0..DATAGRAMS {
            // A send refused (the pair still coming up) sends no frame: try again.
            wait_for("a datagram sent", || {
                let sent = socket.send_to(&[7u8; PAYLOAD], "10.231.250.2:9999");
                sent.is_ok().then_some(())
            });
        }
        let after = wait_for("va to count every frame", || {
            let c = counters_of(&dev, "va");
            (c.tx_packets - before.tx_packets >= DATAGRAMS).then_some(c)
        });
        done_tx.send(()).unwrap();
        (before, after)
    });
    let (sent_before, sent_after) = sender.join().unwrap();
    let (got_before, got_after) = receiver.join().unwrap();
    assert_eq!(sent_after.tx_packets - sent_before.tx_packets, DATAGRAMS);
    assert_eq!(
        sent_after.tx_bytes - sent_before.tx_bytes,
        DATAGRAMS * FRAME
    );
    assert_eq!(got_after.rx_packets - got_before.rx_packets, DATAGRAMS);
    assert_eq!(got_after.rx_bytes - got_before.rx_bytes, DATAGRAMS * FRAME);
    assert_eq!(sent_after.tx_errs + got_after.rx_errs, 0);
    drop(pair);
}

// ---- processes -------------------------------------------------------------------------------

/// A child that burns one core, under a name of its own (a copy of `/bin/sh` called
/// `lmtburn`); killed and removed on drop.
struct Burner {
    child: Child,
    dir: PathBuf,
}

impl Burner {
    fn start() -> Burner {
        let dir = std::env::temp_dir().join(unique("burn"));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("lmtburn");
        std::fs::copy("/bin/sh", &exe).unwrap();
        let child = Command::new(&exe)
            .args(["-c", "while :; do :; done"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Burner { child, dir }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child's CPU ticks (utime + stime) from its own `/proc/PID/stat`.
    fn ticks(&self) -> u64 {
        let text = std::fs::read(format!("/proc/{}/stat", self.pid())).unwrap();
        lanmon::metrics::process::parse_pid_stat(&text)
            .unwrap()
            .ticks
    }
}

impl Drop for Burner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The top processes include a child the test starts that burns CPU: by pid, with its
/// name, with the CPU share its own tick counters show over the same window (within 15
/// points: the windows differ by a few milliseconds) and its resident size from `statm`.
#[test]
fn top_processes_include_a_cpu_burning_child() {
    if skip_unless_root("top_processes_include_a_cpu_burning_child") {
        return;
    }
    let burner = Burner::start();
    // Let it start spinning before the collector's first reading.
    std::thread::sleep(Duration::from_millis(200));
    let config = CollectConfig {
        processes: CollectConfig::MAX_PROCESSES,
        ..only(&[])
    };
    let mut source = ProcSource::open_with(&config).unwrap();
    let (t0, ticks0) = (Instant::now(), burner.ticks());
    std::thread::sleep(Duration::from_secs(1));
    let procs = source.read().processes.unwrap_or_default();
    let (t1, ticks1) = (Instant::now(), burner.ticks());
    let (_, page) = lanmon::metrics::procfs::clock_ticks_and_page_size();
    let statm = std::fs::read(format!("/proc/{}/statm", burner.pid())).unwrap();
    let rss = lanmon::metrics::own::parse_statm_rss(&statm).unwrap() * page;

    let me = procs
        .iter()
        .find(|p| p.pid == burner.pid())
        .unwrap_or_else(|| panic!("child {} not in the top: {procs:?}", burner.pid()));
    assert_eq!(me.name, "lmtburn");
    let (hz, _) = lanmon::metrics::procfs::clock_ticks_and_page_size();
    let truth = (ticks1 - ticks0) as f64 / hz as f64 / (t1 - t0).as_secs_f64() * 100.0;
    assert!(
        (f64::from(me.cpu_pct) - truth).abs() < 15.0,
        "collector {} % vs the child's own ticks {truth:.1} %",
        me.cpu_pct
    );
    assert!(me.cpu_pct > 5.0, "a spinning child uses CPU: {me:?}");
    assert_eq!(me.rss_bytes, rss);
    assert!(procs.len() <= lanmon::protocol::MAX_PROCESSES);
}
