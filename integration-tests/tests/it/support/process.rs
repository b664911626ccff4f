//! The process layer: runs the real `server` and `agent` binaries on 127.0.0.1 and waits on
//! the server's JSON snapshots (`--report-format json`), parsed into typed
//! [`Snapshot`]s, never on fixed sleeps.
//!
//! - [`Server::start`] spawns `server --bind 127.0.0.1:0 --report-format json
//!   --report-interval 100ms --no-beacon --no-http --data-dir HOME --no-store`, with the
//!   secure default (`--auth required`): HOME is a [`Home`] of its own (its identity: keys,
//!   tokens, `agents.json`), kept by [`Server::home`] so a test can restart the server with the
//!   same identity ([`Server::start_in`]). A background thread keeps the latest snapshot and
//!   another the server's stderr (banner and logs), shown when a wait fails. The real port
//!   comes from the first snapshot's `server.listen`; the join token and the dashboard's login
//!   token from the banner ([`Server::join`], [`Server::login`]; HTTP requests through
//!   [`super::http`] carry the login). A test that wants the durable history passes
//!   `--data-dir` with its own [`TempDir`].
//! - [`Agent::start`] spawns `agent --host 127.0.0.1 --port PORT --join TOKEN --interval 200ms
//!   --name NAME --state-dir DIR` ([`Join`] says where and with which token; DIR is the
//!   agent's own temporary state directory: its key and pins) with its stdout (logs) and
//!   stderr captured.
//! - Every child is killed and reaped on drop, so a failing test leaves no process behind.
//!
//! The binaries are found next to the test executable (`target/<profile>/`), as in ripgrep's
//! `tests/util.rs`: Cargo sets `CARGO_BIN_EXE_*` only for a package's own binaries. Run
//! `cargo build --workspace --bins` before `cargo test -p integration-tests`, or the tests run
//! stale binaries (or panic if there are none).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lanmon::snapshot::Snapshot;
use serde::Deserialize;
use serde_json::Value;

use super::{DEADLINE, LOOPBACK, TempDir, ToJson, lock, poll};

/// How often the test server prints a snapshot.
const REPORT_INTERVAL: &str = "100ms";

/// How often test agents sample and send.
const AGENT_INTERVAL: &str = "200ms";

/// The directory holding the workspace's built binaries: the test executable lives in
/// `target/<profile>/deps/`, the binaries one level up.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe()
        .unwrap_or_else(|e| panic!("cannot find the test executable's path: {e}"));
    let mut dir = exe
        .parent()
        .unwrap_or_else(|| panic!("test executable {} has no parent", exe.display()))
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of the workspace binary `name`; panics with the fix if it has not been built.
#[track_caller]
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        panic!(
            "binary `{name}` not found at {}: run `cargo build --workspace --bins` before \
             `cargo test -p integration-tests`",
            path.display()
        );
    }
    path
}

/// A command for a workspace binary, with an environment that cannot change its behaviour:
/// no `RUST_LOG` and no `LANMON_*` variables from the developer's shell.
#[track_caller]
pub fn command(name: &str) -> Command {
    command_for(bin(name))
}

/// A command for `program` with the clean environment and pipes of [`command`].
pub fn command_for(program: PathBuf) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_remove("RUST_LOG").env("NO_COLOR", "1");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LANMON_") {
            cmd.env_remove(key);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// `inner`'s program and arguments (not its environment: the wrapper has
/// [`command_for`]'s) run in a mount namespace of their own with a tmpfs of `size` (as
/// mount(8) takes it: bytes, or e.g. `1m`) over `mount`; root only. unshare(1) makes the new
/// namespace's mounts private: nothing leaks out, and the tmpfs goes away with the process.
/// The test reaches its files through [`seen_by`].
pub fn on_private_tmpfs(size: &str, mount: &std::path::Path, inner: &Command) -> Command {
    let mut cmd = command_for(PathBuf::from("unshare"));
    cmd.args([
        "-m",
        "sh",
        "-c",
        r#"mount -t tmpfs -o "size=$1" lanmon-test "$2" && shift 2 && exec "$@""#,
        "sh",
        size,
    ])
    .arg(mount)
    .arg(inner.get_program())
    .args(inner.get_args());
    cmd
}

/// `path` as process `pid` sees it (through `/proc/PID/root`: its mount namespace).
pub fn seen_by(pid: u32, path: &std::path::Path) -> PathBuf {
    let relative = path.strip_prefix("/").unwrap_or(path);
    PathBuf::from(format!("/proc/{pid}/root")).join(relative)
}

/// Copies everything `from` produces into a shared string, on a background thread.
fn capture(what: String, from: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    let sink = buf.clone();
    std::thread::Builder::new()
        .name(what)
        .spawn(move || {
            let mut reader = BufReader::new(from);
            let mut line = String::new();
            // Ends at EOF, i.e. when the child exits (or on a read error).
            while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
                lock(&sink).push_str(&line);
                line.clear();
            }
        })
        .unwrap_or_else(|e| panic!("cannot spawn a capture thread: {e}"));
    buf
}

/// A child process that is killed and reaped when dropped.
struct Proc {
    what: String,
    child: Child,
    /// Set once the child has been reaped: its pid must not be signalled after that.
    exited: Option<ExitStatus>,
}

impl Proc {
    #[track_caller]
    fn spawn(what: String, cmd: &mut Command) -> Proc {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({cmd:?}): {e}"));
        Proc {
            what,
            child,
            exited: None,
        }
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the child.
    #[track_caller]
    #[allow(unsafe_code)] // kill(2) has no safe std wrapper for signals other than SIGKILL.
    fn signal(&self, signal: libc::c_int) {
        if let Some(status) = self.exited {
            panic!("cannot signal {}: it already exited ({status})", self.what);
        }
        let pid = libc::pid_t::try_from(self.child.id())
            .unwrap_or_else(|e| panic!("pid of {} out of range: {e}", self.what));
        // SAFETY: kill(2) takes two integers and touches no memory of ours. The pid is our own
        // child, not reaped yet (`exited` is None), so it cannot name another process.
        let rc = unsafe { libc::kill(pid, signal) };
        if rc != 0 {
            panic!(
                "kill({pid}, {signal}) on {} failed: {}",
                self.what,
                std::io::Error::last_os_error()
            );
        }
    }

    /// SIGKILL, then reap.
    #[track_caller]
    fn kill(&mut self) -> ExitStatus {
        if let Err(e) = self.child.kill() {
            panic!("cannot kill {}: {e}", self.what);
        }
        self.wait_exit(DEADLINE)
            .unwrap_or_else(|| panic!("{} did not die within {DEADLINE:?} of SIGKILL", self.what))
    }

    /// The exit status if the child has exited (and reaps it).
    fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            match self.child.try_wait() {
                Ok(status) => self.exited = status,
                Err(e) => panic!("cannot check whether {} exited: {e}", self.what),
            }
        }
        self.exited
    }

    /// Waits up to `within` for the child to exit.
    fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        poll(within, || self.try_exit())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One report the server printed: the typed snapshot and the JSON line it was parsed from
/// (for the few tests that check the JSON's shape itself, e.g. which keys are present).
#[derive(Debug, Clone)]
pub struct Report {
    pub snapshot: Snapshot,
    pub raw: Value,
}

/// What the server's stdout reader thread shares with the test.
#[derive(Default)]
struct Reports {
    /// The latest report printed (shared: every look of a wait takes a copy).
    latest: Option<Arc<Report>>,
    /// Snapshots printed so far.
    count: u64,
    /// Stdout lines that were not a JSON snapshot: in `--report-format json` there must be
    /// none.
    garbage: Vec<String>,
    /// Stdout closed: the server exited (or closed its stdout).
    closed: bool,
}

/// Parses one stdout line: JSON, and then a [`Snapshot`] (so a field of the wrong type or a
/// missing one is caught here, with serde's message).
fn parse_report(line: &str) -> Result<Report, String> {
    let raw: Value = serde_json::from_str(line).map_err(|e| format!("{line:?} ({e})"))?;
    let snapshot =
        Snapshot::deserialize(&raw).map_err(|e| format!("{line:?} is not a snapshot ({e})"))?;
    Ok(Report { snapshot, raw })
}

fn read_reports(stdout: ChildStdout) -> Arc<Mutex<Reports>> {
    let reports = Arc::new(Mutex::new(Reports::default()));
    let shared = reports.clone();
    std::thread::Builder::new()
        .name("server stdout".into())
        .spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let report = parse_report(&line);
                let mut r = lock(&shared);
                match report {
                    Ok(report) => {
                        r.latest = Some(Arc::new(report));
                        r.count += 1;
                    }
                    Err(e) => r.garbage.push(e),
                }
            }
            lock(&shared).closed = true;
        })
        .unwrap_or_else(|e| panic!("cannot spawn the stdout reader thread: {e}"));
    reports
}

/// A server's data directory (its identity: keys, tokens, `agents.json`; with a store, its
/// history), removed when the last holder drops it. Shared, so that a test can restart a
/// server with the same identity, or know the join token before the server starts.
#[derive(Clone)]
pub struct Home(Arc<TempDir>);

impl Home {
    #[track_caller]
    pub fn new() -> Home {
        Home(Arc::new(TempDir::new("home")))
    }

    pub fn path(&self) -> &std::path::Path {
        self.0.path()
    }

    pub fn arg(&self) -> String {
        self.0.arg()
    }

    /// The join token, from `server token --data-dir HOME` (which creates the identity if no
    /// server has run here yet, as a first start would).
    #[track_caller]
    pub fn token(&self) -> String {
        let out = command("server")
            .args(["token", "--data-dir", &self.arg()])
            .output()
            .unwrap_or_else(|e| panic!("cannot run `server token`: {e}"));
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success() && text.starts_with("lm2-"),
            "`server token` failed ({}): {text} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }
}

/// Where an agent connects and with which join token (`None`: no token, so trust on first use
/// and wait for approval).
#[derive(Debug, Clone)]
pub struct Join {
    pub port: u16,
    pub token: Option<String>,
}

impl Join {
    pub fn new(port: u16, token: Option<String>) -> Join {
        Join { port, token }
    }

    /// The same token, another port (a proxy in front of the server).
    pub fn via(&self, port: u16) -> Join {
        Join {
            port,
            token: self.token.clone(),
        }
    }

    /// `--host 127.0.0.1 --port PORT [--join TOKEN]`.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--host".to_string(),
            LOOPBACK.to_string(),
            "--port".to_string(),
            self.port.to_string(),
        ];
        if let Some(t) = &self.token {
            args.extend(["--join".to_string(), t.clone()]);
        }
        args
    }
}

/// A running `server` binary printing JSON snapshots; killed on drop.
pub struct Server {
    proc: Proc,
    reports: Arc<Mutex<Reports>>,
    stderr: Arc<Mutex<String>>,
    port: u16,
    /// `server.http` of the first snapshot: the HTTP address when HTTP is on.
    http: Option<String>,
    /// The data directory the harness gave it (none when the test passed `--data-dir`).
    home: Option<Home>,
    /// From the banner: the join token and the dashboard's login token (trust layer on).
    token: Option<String>,
    login: Option<String>,
}

impl Server {
    /// Starts a server on an ephemeral loopback port and waits for its first snapshot.
    #[track_caller]
    pub fn start() -> Server {
        Server::start_on(0)
    }

    /// Starts a server on `127.0.0.1:port` (0: any free port) and waits for its first
    /// snapshot, which names the real port. A fixed port is for a restart on the port the
    /// first server reported, or a [`TcpPortReservation`](super::TcpPortReservation).
    #[track_caller]
    pub fn start_on(port: u16) -> Server {
        Server::start_with(port, &[])
    }

    /// Like [`Server::start_on`] with extra flags. Unless they include `--beacon-to`, the
    /// beacon is turned off; unless they include `--data-dir`, the server gets a [`Home`] of its
    /// own and `--no-store`.
    #[track_caller]
    pub fn start_with(port: u16, extra: &[&str]) -> Server {
        if extra.contains(&"--data-dir") {
            return Server::spawn(server_command(port, extra), port);
        }
        Server::start_in(&Home::new(), port, extra)
    }

    /// Like [`Server::start_with`] in `home` (`--data-dir HOME --no-store`): the identity of a
    /// previous server there (restart), or one the test prepared.
    #[track_caller]
    pub fn start_in(home: &Home, port: u16, extra: &[&str]) -> Server {
        let dir = home.arg();
        let mut args = vec!["--data-dir", dir.as_str(), "--no-store"];
        args.extend_from_slice(extra);
        let mut server = Server::spawn(server_command(port, &args), port);
        server.home = Some(home.clone());
        server
    }

    /// Like [`Server::start_with`], with the data directory `dir` on a tmpfs of `size` (e.g.
    /// `1m`) that only the server sees: it runs in a mount namespace of its own (`unshare -m`,
    /// root only), and the tmpfs goes away with it. The test reaches the files through
    /// [`Server::root_path`]. `extra` must not name `--data-dir`.
    #[track_caller]
    pub fn start_on_tmpfs(dir: &TempDir, size: &str, extra: &[&str]) -> Server {
        let data_dir = dir.arg();
        let mut args = vec!["--data-dir", data_dir.as_str()];
        args.extend_from_slice(extra);
        let inner = server_command(0, &args);
        Server::spawn(on_private_tmpfs(size, dir.path(), &inner), 0)
    }

    /// Runs `cmd`, a command line that ends in a server printing JSON snapshots on
    /// `127.0.0.1` (e.g. an installed unit's `ExecStart` run the way systemd would), and
    /// waits for its first snapshot.
    #[track_caller]
    pub fn start_command(cmd: Command) -> Server {
        Server::spawn(cmd, 0)
    }

    /// `path` as the server's process sees it (see [`seen_by`]).
    pub fn root_path(&self, path: &std::path::Path) -> PathBuf {
        seen_by(self.pid(), path)
    }

    /// Starts `cmd` (a server command line) and waits for its first snapshot, which names the
    /// real port (checked against `port` unless 0).
    #[track_caller]
    fn spawn(mut cmd: Command, port: u16) -> Server {
        let mut proc = Proc::spawn("server".into(), &mut cmd);
        let (Some(stdout), Some(stderr)) = (proc.child.stdout.take(), proc.child.stderr.take())
        else {
            panic!("server started without piped stdout/stderr");
        };
        let mut server = Server {
            reports: read_reports(stdout),
            stderr: capture("server stderr".into(), stderr),
            proc,
            port: 0,
            http: None,
            home: None,
            token: None,
            login: None,
        };
        let first = server.wait_for(DEADLINE, |_| true);
        let listen: SocketAddr = first.server.listen.parse().unwrap_or_else(|e| {
            panic!(
                "snapshot has no valid server.listen ({e}): {}",
                first.to_json()
            )
        });
        assert_eq!(listen.ip(), LOOPBACK, "server listens on {listen}");
        server.port = listen.port();
        if port != 0 {
            assert_eq!(server.port, port, "server did not bind the requested port");
        }
        server.http = first.server.http;
        if first
            .server
            .auth
            .is_some_and(|m| m != lanmon::config::AuthMode::Off)
        {
            server.read_banner();
        }
        server
    }

    /// Reads the join token and (with HTTP) the login token from the banner; registers the
    /// login for [`super::http`]'s requests.
    #[track_caller]
    fn read_banner(&mut self) {
        let want_login = self.http.is_some();
        let banner = poll(DEADLINE, || {
            let err = self.stderr();
            (err.contains("--join lm2-") && (!want_login || err.contains("?token="))).then_some(err)
        })
        .unwrap_or_else(|| {
            panic!(
                "the banner shows no join command (or login URL)
--- server stderr ---
{}",
                self.stderr()
            )
        });
        let after = |marker: &str| {
            banner.split(marker).nth(1).map(|rest| {
                rest.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect::<String>()
            })
        };
        self.token = after("--join ");
        self.login = after("?token=");
        if let (Some(http), Some(login)) = (&self.http, &self.login) {
            super::http::log_in(http, login);
        }
    }

    /// The data directory the harness gave this server (for a restart with its identity).
    #[track_caller]
    pub fn home(&self) -> Home {
        self.home
            .clone()
            .unwrap_or_else(|| panic!("this server was started with its own --data-dir"))
    }

    /// The join token its banner printed; panics with `--auth off`.
    #[track_caller]
    pub fn token(&self) -> String {
        self.token
            .clone()
            .unwrap_or_else(|| panic!("the server printed no join token (--auth off?)"))
    }

    /// The dashboard's login token its banner printed (HTTP on, trust layer on).
    #[track_caller]
    pub fn login(&self) -> String {
        self.login
            .clone()
            .unwrap_or_else(|| panic!("the server printed no login URL (--no-http? --auth off?)"))
    }

    /// Where agents connect, with the join token when the server has one.
    pub fn join(&self) -> Join {
        Join::new(self.port, self.token.clone())
    }

    /// The TCP port agents connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HTTP address (`127.0.0.1:PORT`) the server reported; panics if HTTP is off.
    #[track_caller]
    pub fn http_addr(&self) -> &str {
        self.http.as_deref().unwrap_or_else(|| {
            panic!(
                "the server reported no server.http (started without --http?)\n\
                 --- server stderr ---\n{}",
                self.stderr()
            )
        })
    }

    /// Everything the server wrote to stderr so far (banner and logs).
    pub fn stderr(&self) -> String {
        lock(&self.stderr).clone()
    }

    /// Polls the latest snapshot until `pred` holds and returns that snapshot. Panics after
    /// `within` with the last snapshot and the server's stderr, or at once if the server
    /// exits or prints anything that is not a JSON snapshot.
    #[track_caller]
    pub fn wait_for(&self, within: Duration, pred: impl FnMut(&Snapshot) -> bool) -> Snapshot {
        self.wait_for_report(within, pred).snapshot
    }

    /// Like [`Server::wait_for`], with the JSON the snapshot was parsed from.
    #[track_caller]
    pub fn wait_for_report(
        &self,
        within: Duration,
        mut pred: impl FnMut(&Snapshot) -> bool,
    ) -> Report {
        let mut last = None;
        let found = poll(within, || {
            let r = lock(&self.reports);
            if !r.garbage.is_empty() || r.closed {
                return Some(Err(()));
            }
            last.clone_from(&r.latest);
            r.latest
                .as_ref()
                .filter(|report| pred(&report.snapshot))
                .map(|report| Ok(Report::clone(report)))
        });
        match found {
            Some(Ok(report)) => report,
            Some(Err(())) => {
                let r = lock(&self.reports);
                panic!(
                    "server exited or printed a line that is not a JSON snapshot on stdout \
                     (closed: {}, bad lines: {:?})\nlast snapshot: {}\n--- server stderr ---\n{}",
                    r.closed,
                    r.garbage,
                    pretty(r.latest.as_ref()),
                    self.stderr()
                );
            }
            None => panic!(
                "no snapshot matched within {within:?} ({} snapshots seen)\nlast snapshot: {}\n\
                 --- server stderr ---\n{}",
                lock(&self.reports).count,
                pretty(last.as_ref()),
                self.stderr()
            ),
        }
    }

    /// The last snapshot the server printed before its stdout closed (it exited); panics if
    /// stdout does not close within `within`.
    #[track_caller]
    pub fn final_snapshot(&self, within: Duration) -> Snapshot {
        let last = poll(within, || {
            let r = lock(&self.reports);
            r.closed.then(|| r.latest.clone())
        });
        match last {
            Some(Some(report)) => report.snapshot.clone(),
            Some(None) => panic!("the server printed no snapshot at all"),
            None => panic!("server stdout still open after {within:?}"),
        }
    }

    /// The server's process id (for /proc readings).
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// The server's resident memory in KiB (`VmRSS` in /proc/<pid>/status).
    #[track_caller]
    pub fn rss_kib(&self) -> u64 {
        let path = format!("/proc/{}/status", self.pid());
        let status =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `VmRSS: N kB` line in {path}"))
    }

    /// SIGKILL: the server dies without a word to anyone.
    #[track_caller]
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Sends `signal` (`libc::SIGINT`, `libc::SIGTERM`, ...) to the server.
    #[track_caller]
    pub fn signal(&self, signal: libc::c_int) {
        self.proc.signal(signal);
    }

    /// Waits up to `within` for the server to exit; panics with its stderr if it does not.
    #[track_caller]
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        match self.proc.wait_exit(within) {
            Some(status) => status,
            None => panic!(
                "server still running {within:?} later\n--- server stderr ---\n{}",
                self.stderr()
            ),
        }
    }
}

/// The test server's command line on `127.0.0.1:port`, with `extra` flags: JSON reports every
/// [`REPORT_INTERVAL`], and no beacon, HTTP or store unless `extra` asks for them.
fn server_command(port: u16, extra: &[&str]) -> Command {
    let mut cmd = command("server");
    cmd.arg("--bind")
        .arg(format!("{LOOPBACK}:{port}"))
        .args([
            "--report-format",
            "json",
            "--report-interval",
            REPORT_INTERVAL,
        ])
        .args(["--log-level", "info"])
        .args(extra);
    if !extra.contains(&"--beacon-to") {
        // The UDP discovery beacon goes to every interface's broadcast address by default,
        // i.e. onto the shared network: never from tests.
        cmd.arg("--no-beacon");
    }
    if !extra.contains(&"--http") {
        // The default HTTP port is fixed (8081): parallel tests would collide on it.
        cmd.arg("--no-http");
    }
    assert!(
        extra.contains(&"--data-dir"),
        "a test server needs a data directory of its own: the default one is shared (one \
         server per directory), and a test must not leave history behind"
    );
    cmd
}

/// A report as the server printed it, indented, for failure messages.
fn pretty(report: Option<&Arc<Report>>) -> String {
    match report {
        Some(r) => serde_json::to_string_pretty(&r.raw).unwrap_or_else(|_| r.raw.to_string()),
        None => "(none yet)".into(),
    }
}

/// A running `agent` binary; killed on drop.
pub struct Agent {
    name: String,
    proc: Proc,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    /// Its state directory (key, pins), when the harness gave it one.
    state: Option<Arc<TempDir>>,
}

impl Agent {
    /// Starts an agent named `name` sending every 200 ms to `127.0.0.1:join.port`, joining
    /// with `join.token`, with a state directory of its own.
    #[track_caller]
    pub fn start(join: &Join, name: &str) -> Agent {
        let args = join.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Agent::start_with(name, &args)
    }

    /// Starts an agent named `name` sampling every 200 ms, finding the server as `target`
    /// says (`["--host", ..]` or `["--discover", ..]`, with `--join` or not), with a state
    /// directory of its own unless `target` names one (`--state-dir`).
    #[track_caller]
    pub fn start_with(name: &str, target: &[&str]) -> Agent {
        if target.contains(&"--state-dir") {
            return Agent::start_in(None, name, target);
        }
        Agent::start_in(Some(Arc::new(TempDir::new("agent"))), name, target)
    }

    /// Like [`Agent::start_with`] with `state` as its state directory (e.g. the one of an
    /// agent that ran before: the same key).
    #[track_caller]
    pub fn start_in(state: Option<Arc<TempDir>>, name: &str, target: &[&str]) -> Agent {
        let mut args: Vec<String> = target.iter().map(ToString::to_string).collect();
        if let Some(dir) = &state {
            args.extend(["--state-dir".to_string(), dir.arg()]);
        }
        args.extend(
            [
                "--interval",
                AGENT_INTERVAL,
                "--name",
                name,
                "--log-level",
                "info",
            ]
            .map(String::from),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut agent = Agent::spawn(name, &args);
        agent.state = state;
        agent
    }

    /// Its state directory (to restart it with the same key).
    pub fn state(&self) -> Option<Arc<TempDir>> {
        self.state.clone()
    }

    /// The same agent (name, state directory: its key) started again, e.g. after
    /// [`Agent::kill`], connecting as `join` says.
    #[track_caller]
    pub fn again(&self, join: &Join) -> Agent {
        let args = join.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Agent::start_in(self.state(), &self.name, &args)
    }

    /// Runs `agent` with exactly `args` (e.g. the `discover` subcommand).
    #[track_caller]
    pub fn start_with_args(args: &[&str]) -> Agent {
        Agent::spawn(&args.join(" "), args)
    }

    #[track_caller]
    fn spawn(name: &str, args: &[&str]) -> Agent {
        let mut cmd = command("agent");
        cmd.args(args);
        Agent::start_command(name, cmd)
    }

    /// Runs `cmd`, a command line that ends in an agent (e.g. an installed unit's
    /// `ExecStart` run the way systemd would); `name` labels its diagnostics.
    #[track_caller]
    pub fn start_command(name: &str, mut cmd: Command) -> Agent {
        let mut proc = Proc::spawn(format!("agent {name}"), &mut cmd);
        let (Some(stdout), Some(stderr)) = (proc.child.stdout.take(), proc.child.stderr.take())
        else {
            panic!("agent started without piped stdout/stderr");
        };
        Agent {
            name: name.to_string(),
            stdout: capture(format!("agent {name} stdout"), stdout),
            stderr: capture(format!("agent {name} stderr"), stderr),
            proc,
            state: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Everything the agent logged so far (its logs go to stdout).
    pub fn stdout(&self) -> String {
        lock(&self.stdout).clone()
    }

    /// Stdout and stderr, for failure messages.
    pub fn diagnostics(&self) -> String {
        format!(
            "--- agent {} stdout ---\n{}--- agent {} stderr ---\n{}",
            self.name,
            self.stdout(),
            self.name,
            lock(&self.stderr)
        )
    }

    /// Waits until the agent's stdout contains `needle` at or after byte `from`; returns the
    /// byte offset where it starts, so callers can check the order of log lines.
    #[track_caller]
    pub fn wait_for_output(&self, within: Duration, from: usize, needle: &str) -> usize {
        let found = poll(within, || {
            let out = lock(&self.stdout);
            out.get(from..)
                .and_then(|rest| rest.find(needle))
                .map(|i| from + i)
        });
        found.unwrap_or_else(|| {
            panic!(
                "agent {} did not log {needle:?} within {within:?}\n{}",
                self.name,
                self.diagnostics()
            )
        })
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// SIGKILL: the agent dies without a word to the server.
    #[track_caller]
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Sends `signal` (`libc::SIGTERM`, ...) to the agent.
    #[track_caller]
    pub fn signal(&self, signal: libc::c_int) {
        self.proc.signal(signal);
    }

    /// Waits up to `within` for the agent to exit; panics with its output if it does not.
    #[track_caller]
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        match self.proc.wait_exit(within) {
            Some(status) => status,
            None => panic!(
                "agent {} still running {within:?} later\n{}",
                self.name,
                self.diagnostics()
            ),
        }
    }

    /// The exit status if the agent has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.proc.try_exit()
    }
}
