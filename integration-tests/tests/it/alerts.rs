//! Alerts end to end: the real server with a rules file, real agents, and a webhook sink in
//! the test process on 127.0.0.1 (a tiny HTTP server that records every POST). The
//! Alertmanager test runs Debian's `prometheus-alertmanager` on loopback with its own webhook
//! receiver pointing at the sink; the Prometheus rules file is checked and unit-tested with
//! `promtool`. Those two need Debian's packages (`make setup` installs them); a developer who
//! cannot install them sets `LANMON_SKIP_PROMETHEUS=1` to leave them out (CI never does).
//!
//! The whole-machine rules run on the agent's real readings: a tmpfs that only the agent sees
//! (its own mount namespace, `unshare -m`; needs root, else the test says SKIPPED), filled at
//! a steady rate through `/proc/PID/root`, fires `filesystem_fill` before it is full; another
//! whose use the test moves back and forth across the `filesystem` threshold fires once and
//! resolves once; the load rule's value is the host's `/proc/loadavg` per core.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

use lanmon::snapshot::{Status, used_pct};

use crate::support::is_root;
use crate::support::process::{bin, command, on_private_tmpfs, seen_by};
use crate::support::{
    Agent, DEADLINE, LOOPBACK, Server, SnapshotExt, TcpPortReservation, TempDir, poll, poll_every,
};

/// Waits this long to be sure that something does *not* happen (a second notification).
const QUIET: Duration = Duration::from_millis(1500);

const SKIP_ENV: &str = "LANMON_SKIP_PROMETHEUS";

// ---- The webhook sink ---------------------------------------------------------------------------

/// One POST the sink received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    body: Value,
}

/// An HTTP server on 127.0.0.1 that answers 200 to everything and keeps every request body.
struct Sink {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
}

impl Sink {
    fn start() -> Sink {
        Sink::on(0)
    }

    /// A sink on `port` (0: any free port).
    #[track_caller]
    fn on(port: u16) -> Sink {
        let listener = TcpListener::bind((LOOPBACK, port))
            .unwrap_or_else(|e| panic!("sink: cannot bind {LOOPBACK}:{port}: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("sink: no address: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("sink: {e}"));
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (got.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Some(r) = read_request(stream) {
                            g.lock().unwrap_or_else(PoisonError::into_inner).push(r);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Sink { addr, got, stop }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.got
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// lanmon-format notifications of `rule` received so far, as (status, agent name).
    fn lanmon(&self, rule: &str) -> Vec<(String, String)> {
        self.received()
            .iter()
            .filter(|r| r.body["alert"]["rule"] == rule)
            .map(|r| {
                (
                    r.body["status"].as_str().unwrap_or_default().to_string(),
                    r.body["agent"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect()
    }

    /// Waits until `pred` holds on what was received; panics with it and `why` otherwise.
    #[track_caller]
    fn wait_for(&self, within: Duration, why: impl Fn() -> String, pred: impl Fn(&Sink) -> bool) {
        if poll(within, || pred(self).then_some(())).is_none() {
            panic!(
                "sink: not received within {within:?}: {:#?}\n{}",
                self.received(),
                why()
            );
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads one HTTP request (headers, then Content-Length bytes of body) and answers 200.
fn read_request(stream: TcpStream) -> Option<Received> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let mut out = stream;
    let _ = out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    Some(Received {
        path,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    })
}

// ---- Helpers ------------------------------------------------------------------------------------

/// Writes `text` as `alerts.toml` in `dir` and returns its path as a string.
fn rules_file(dir: &TempDir, text: &str) -> String {
    let path = dir.path().join("alerts.toml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path.to_string_lossy().into_owned()
}

/// Rules for quick tests: evaluated every 100 ms, every rule but those in `rules` off (a busy
/// test machine must not add CPU, memory, load or disk alerts), notifications to `webhook`.
fn quick_rules(rules: &str, webhook: &str) -> String {
    let off: String = [
        "offline",
        "stale",
        "cpu",
        "memory",
        "swap",
        "load",
        "filesystem",
        "filesystem_fill",
        "clock",
        "temperature",
    ]
    .iter()
    .filter(|r| !rules.contains(&format!("[rules.{r}]")))
    .map(|r| format!("[rules.{r}]\nenabled = false\n"))
    .collect();
    format!(
        "[settings]\nevaluate_every = \"100ms\"\n\n{off}\n{rules}\n\
         [notify]\nretry_min = \"50ms\"\nretry_max = \"200ms\"\ntimeout = \"2s\"\n\n\
         [[notify.webhook]]\nurl = \"{webhook}\"\n"
    )
}

/// A GET on the server's HTTP side, logged in (the harness's client): (status code, body).
#[track_caller]
fn get(addr: &str, path: &str) -> (u16, String) {
    let r = crate::support::http::get(addr, path);
    (r.status, r.body)
}

/// The server's HTTP address, from its snapshot (`--http 127.0.0.1:0`).
#[track_caller]
fn http_addr(server: &Server) -> String {
    let snap = server.wait_for(DEADLINE, |s| s.server.http.is_some());
    snap.server.http.unwrap_or_default()
}

#[track_caller]
fn api_alerts(addr: &str) -> Value {
    let (status, body) = get(addr, "/api/alerts");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/api/alerts not JSON ({e}): {body}"))
}

/// The state of `rule`'s alert on agent `name` in `/api/alerts`' active list.
fn active_state(alerts: &Value, rule: &str, name: &str) -> Option<String> {
    alerts["active"]
        .as_array()?
        .iter()
        .find(|a| a["rule"] == rule && a["name"] == name)
        .and_then(|a| a["state"].as_str())
        .map(String::from)
}

#[track_caller]
fn wait_live(server: &Server, name: &str) {
    server.wait_for(DEADLINE, |s| s.is_live(name) && s.seq(name) >= 2);
}

// ---- Tests --------------------------------------------------------------------------------------

/// Proves: a killed agent's offline alert fires after its `for` (not before), shows in
/// /api/alerts and /metrics, and resolves when the agent is back; the webhook receives one
/// firing and one resolved notification, no more.
#[test]
fn offline_alert_fires_after_for_and_resolves_once_each() {
    let sink = Sink::start();
    let dir = TempDir::new("alerts-offline");
    let rules = quick_rules("[rules.offline]\nfor = \"1s\"\n", &sink.url("/hook"));
    let file = rules_file(&dir, &rules);
    let server = Server::start_with(0, &["--http", "127.0.0.1:0", "--alerts", &file]);
    let http = http_addr(&server);
    let mut agent = Agent::start(&server.join(), "al-off-1");
    wait_live(&server, "al-off-1");

    agent.kill();
    let killed = Instant::now();
    server.wait_for(DEADLINE, |s| s.status("al-off-1") == Some(Status::Offline));
    sink.wait_for(
        DEADLINE,
        || server.stderr(),
        |s| !s.lanmon("offline").is_empty(),
    );
    let waited = killed.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "fired {waited:?} after the kill, before `for`"
    );
    let alerts = api_alerts(&http);
    assert_eq!(
        active_state(&alerts, "offline", "al-off-1").as_deref(),
        Some("firing"),
        "{alerts}"
    );
    let (_, metrics) = get(&http, "/metrics");
    assert!(
        metrics.contains("lanmon_alerts{rule=\"offline\",severity=\"critical\"} 1\n"),
        "{metrics}"
    );
    let hook = &sink.received()[0];
    assert_eq!(hook.path, "/hook");
    assert_eq!(hook.body["version"], 1);
    assert_eq!(hook.body["alert"]["severity"], "critical");

    let _agent = agent.again(&server.join());
    sink.wait_for(
        DEADLINE,
        || server.stderr(),
        |s| s.lanmon("offline").len() >= 2,
    );
    std::thread::sleep(QUIET);
    assert_eq!(
        sink.lanmon("offline"),
        vec![
            ("firing".to_string(), "al-off-1".to_string()),
            ("resolved".to_string(), "al-off-1".to_string())
        ]
    );
    let alerts = api_alerts(&http);
    assert_eq!(alerts["firing"], 0, "{alerts}");
    assert!(
        alerts["recent"].as_array().is_some_and(|r| r
            .iter()
            .any(|a| a["rule"] == "offline" && a["state"] == "resolved")),
        "{alerts}"
    );
}

/// Child processes that keep every core busy; killed on drop.
struct Burners(Vec<Child>);

impl Burners {
    fn start(n: usize) -> Burners {
        Burners(
            (0..n)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .stdout(Stdio::null())
                        .spawn()
                        .unwrap_or_else(|e| panic!("cannot start a CPU burner: {e}"))
                })
                .collect(),
        )
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Proves: with child processes burning every core, the agent's CPU reading crosses a
/// (low, for the test) threshold and the CPU alert fires with the value that did it.
#[test]
fn cpu_burning_children_fire_the_cpu_alert() {
    let sink = Sink::start();
    let dir = TempDir::new("alerts-cpu");
    let rules = quick_rules(
        "[rules.cpu]\nthreshold = 60\nresolve = 50\nfor = \"1s\"\n",
        &sink.url("/hook"),
    );
    let file = rules_file(&dir, &rules);
    let server = Server::start_with(0, &["--alerts", &file]);
    let _agent = Agent::start(&server.join(), "al-cpu-1");
    wait_live(&server, "al-cpu-1");
    let _burn = Burners::start(crate::support::proc_stat_cores());
    sink.wait_for(
        DEADLINE,
        || server.stderr(),
        |s| !s.lanmon("cpu").is_empty(),
    );
    let hook = sink
        .received()
        .into_iter()
        .find(|r| r.body["alert"]["rule"] == "cpu")
        .unwrap_or_else(|| panic!("no cpu notification"));
    assert_eq!(hook.body["status"], "firing");
    assert_eq!(hook.body["agent"]["name"], "al-cpu-1");
    let value = hook.body["alert"]["value"].as_f64().unwrap_or_default();
    assert!(value > 60.0, "fired at {value}%");
}

/// Proves: a server restarted while an alert fires keeps it firing (from the store) and
/// sends no second notification for it.
#[test]
fn restart_while_firing_sends_no_duplicate() {
    let sink = Sink::start();
    let dir = TempDir::new("alerts-restart");
    let data = TempDir::new("alerts-restart-data");
    let rules = quick_rules("[rules.offline]\nfor = \"200ms\"\n", &sink.url("/hook"));
    let file = rules_file(&dir, &rules);
    let args = [
        "--http",
        "127.0.0.1:0",
        "--alerts",
        &file,
        "--data-dir",
        &data.arg(),
    ];
    let mut server = Server::start_with(0, &args);
    let mut agent = Agent::start(&server.join(), "al-restart-1");
    wait_live(&server, "al-restart-1");
    agent.kill();
    sink.wait_for(
        DEADLINE,
        || server.stderr(),
        |s| s.lanmon("offline").len() == 1,
    );
    // Delivered and marked so in the store before the restart.
    std::thread::sleep(Duration::from_millis(300));
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(DEADLINE).success(), "{}", server.stderr());

    let server = Server::start_with(0, &args);
    let http = http_addr(&server);
    let first = api_alerts(&http);
    assert_eq!(
        active_state(&first, "offline", "al-restart-1").as_deref(),
        Some("firing"),
        "{first}"
    );
    // Let it evaluate for a while: still firing, nothing sent again.
    let since = first["evaluated_ms"].as_u64().unwrap_or_default();
    let later = poll(DEADLINE, || {
        let a = api_alerts(&http);
        (a["evaluated_ms"].as_u64().unwrap_or_default() > since + 1000).then_some(a)
    })
    .unwrap_or_else(|| {
        panic!(
            "the restarted server does not evaluate\n{}",
            server.stderr()
        )
    });
    assert_eq!(
        active_state(&later, "offline", "al-restart-1").as_deref(),
        Some("firing"),
        "{later}"
    );
    assert_eq!(
        sink.lanmon("offline"),
        vec![("firing".to_string(), "al-restart-1".to_string())]
    );
}

/// Proves: while the webhook endpoint is down the notification is retried (and ingest goes
/// on: another agent keeps streaming), and once the endpoint is back it is delivered, once.
#[test]
fn webhook_down_then_back_gets_the_notification() {
    // Nothing listens on the port until the sink binds it below.
    let reserved = TcpPortReservation::new();
    let port = reserved.port();
    let url = format!("http://{LOOPBACK}:{port}/hook");
    let dir = TempDir::new("alerts-down");
    let file = rules_file(&dir, &quick_rules("[rules.offline]\nfor = \"0s\"\n", &url));
    let server = Server::start_with(0, &["--alerts", &file]);
    let mut victim = Agent::start(&server.join(), "al-down-1");
    let _steady = Agent::start(&server.join(), "al-down-2");
    wait_live(&server, "al-down-1");
    wait_live(&server, "al-down-2");
    victim.kill();
    poll(DEADLINE, || {
        server.stderr().contains("cannot deliver").then_some(())
    })
    .unwrap_or_else(|| panic!("no failed delivery logged\n{}", server.stderr()));
    let before = server.wait_for(DEADLINE, |_| true).seq("al-down-2");
    server.wait_for(DEADLINE, |s| s.seq("al-down-2") >= before + 3);

    let sink = Sink::on(port);
    drop(reserved);
    sink.wait_for(
        DEADLINE,
        || server.stderr(),
        |s| !s.lanmon("offline").is_empty(),
    );
    std::thread::sleep(QUIET);
    assert_eq!(
        sink.lanmon("offline"),
        vec![("firing".to_string(), "al-down-1".to_string())]
    );
}

/// Proves: a rules file with problems stops the server at start with exit code 2 and a
/// message naming the file, and each problem's line and key.
#[test]
fn bad_rules_file_names_the_line() {
    let dir = TempDir::new("alerts-bad");
    let file = rules_file(
        &dir,
        "[rules.cpu]\nfor = \"5m\"\nthreshold = 120\n\n[rules.cpux]\nenabled = true\n",
    );
    let out = command("server")
        .args([
            "--bind",
            "127.0.0.1:0",
            "--no-beacon",
            "--no-http",
            "--no-store",
        ])
        .args(["--alerts", &file])
        .output()
        .unwrap_or_else(|e| panic!("cannot run the server: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("alerts: {file}: 2 problems")),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 3: rules.cpu: threshold must be between 0 and 100%, got 120"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 5: rules.cpux: unknown rule"),
        "{stderr}"
    );
}

/// Proves: SIGHUP reads the rules file again: a rule turned on in the file starts firing;
/// a file with a problem is refused with its line, and the rules in force stay.
#[test]
fn sighup_reloads_the_rules_file() {
    let sink = Sink::start();
    let dir = TempDir::new("alerts-hup");
    let off = quick_rules("", &sink.url("/hook"));
    let file = rules_file(&dir, &off);
    let server = Server::start_with(0, &["--http", "127.0.0.1:0", "--alerts", &file]);
    let http = http_addr(&server);
    let mut agent = Agent::start(&server.join(), "al-hup-1");
    wait_live(&server, "al-hup-1");
    agent.kill();
    server.wait_for(DEADLINE, |s| s.status("al-hup-1") == Some(Status::Offline));
    std::thread::sleep(QUIET);
    assert!(sink.lanmon("offline").is_empty(), "fired while off");

    rules_file(&dir, "[rules.offline]\nthreshold = 1\n");
    server.signal(libc::SIGHUP);
    poll(DEADLINE, || {
        server
            .stderr()
            .contains("line 2: rules.offline.threshold")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("bad reload not reported\n{}", server.stderr()));
    assert!(
        server.stderr().contains("keeping the previous rules"),
        "{}",
        server.stderr()
    );

    rules_file(
        &dir,
        &quick_rules("[rules.offline]\nfor = \"0s\"\n", &sink.url("/hook")),
    );
    server.signal(libc::SIGHUP);
    sink.wait_for(
        DEADLINE,
        || server.stderr(),
        |s| !s.lanmon("offline").is_empty(),
    );
    assert_eq!(
        active_state(&api_alerts(&http), "offline", "al-hup-1").as_deref(),
        Some("firing")
    );
}

/// Bytes available to unprivileged users on the filesystem holding `path` (`df`'s Avail).
fn avail_bytes(path: &std::path::Path) -> u64 {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return 0;
    };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a plain struct statvfs fills in.
    #[allow(unsafe_code)]
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return 0;
        }
        st.f_bavail * st.f_frsize
    }
}

/// lanmon-format notifications of `rule` on `subject`, as (status, seconds-left value).
fn on_subject(sink: &Sink, rule: &str, subject: &str) -> Vec<(String, Option<f64>)> {
    sink.received()
        .iter()
        .filter(|r| r.body["alert"]["rule"] == rule && r.body["alert"]["subject"] == subject)
        .map(|r| {
            (
                r.body["status"].as_str().unwrap_or_default().to_string(),
                r.body["alert"]["value"].as_f64(),
            )
        })
        .collect()
}

/// Starts agent `name` in a mount namespace of its own with a tmpfs of `size` bytes over
/// `mount` (unshare(1) makes its mounts private; root only), reporting tmpfs filesystems (left
/// out by default) every `interval`, joined with the token, its key in a state directory of
/// its own (returned: keep it). Waits until the server shows the mount; returns the agent, the
/// state directory and the mount as the test reaches it, through the agent's root.
#[track_caller]
fn tmpfs_agent(
    server: &Server,
    name: &str,
    mount: &std::path::Path,
    size: u64,
    interval: &str,
) -> (Agent, TempDir, PathBuf) {
    let mount_s = mount.to_string_lossy().into_owned();
    let port = server.port().to_string();
    let mut inner = Command::new(bin("agent"));
    inner
        .args(["--host", "127.0.0.1", "--port", &port, "--name", name])
        .args(["--interval", interval, "--fs-types", "tmpfs"]);
    let state = TempDir::new("tmpfs-agent");
    inner.args(["--join", &server.token(), "--state-dir", &state.arg()]);
    let cmd = on_private_tmpfs(&size.to_string(), mount, &inner);
    let agent = Agent::start_command(name, cmd);
    let seen = fs_reading(server, name, &mount_s).unwrap_or_else(|| {
        panic!(
            "the agent does not report {mount_s}\n{}\n{}",
            server.stderr(),
            agent.diagnostics()
        )
    });
    assert_eq!(seen.fs_type, "tmpfs");
    assert_eq!(seen.size_bytes, size);
    let inside = seen_by(agent.pid(), mount);
    (agent, state, inside)
}

/// The reading of `mount` that agent `name` last sent, waiting up to [`DEADLINE`] for one.
fn fs_reading(server: &Server, name: &str, mount: &str) -> Option<lanmon::protocol::Filesystem> {
    poll(DEADLINE, || {
        let snap = server.wait_for(DEADLINE, |_| true);
        let a = snap.find(name)?;
        a.host
            .filesystems
            .as_ref()?
            .iter()
            .find(|f| f.mount == mount)
            .cloned()
    })
}

/// Size of the test's tmpfs.
const FILL_SIZE: u64 = 64 << 20;
/// Written per step, and the pause between steps: 4 MiB/s, full in 16 s.
const FILL_CHUNK: usize = 1 << 20;
const FILL_STEP: Duration = Duration::from_millis(250);

/// Proves: a tmpfs the agent sees, filled at a steady 4 MiB/s, fires `filesystem_fill`
/// (predicted full within 6 s, fitted over 3 s) with that mount as its subject while the
/// tmpfs still has room, once; deleting the file resolves it, once.
#[test]
fn steadily_filled_tmpfs_fires_full_within_before_it_is_full() {
    if !is_root() {
        eprintln!("steadily_filled_tmpfs_fires_full_within…: SKIPPED (needs root for unshare -m)");
        return;
    }
    let sink = Sink::start();
    let dir = TempDir::new("alerts-fill");
    let mount = dir.path().join("fs");
    std::fs::create_dir_all(&mount).unwrap_or_else(|e| panic!("mkdir: {e}"));
    let mount_s = mount.to_string_lossy().into_owned();
    let rules = quick_rules(
        "[rules.filesystem_fill]\nwithin = \"6s\"\nresolve_within = \"12s\"\nwindow = \"3s\"\n\
         for = \"0s\"\nresolve_for = \"500ms\"\n",
        &sink.url("/hook"),
    );
    let file = rules_file(&dir, &rules);
    let server = Server::start_with(0, &["--alerts", &file]);
    let name = "al-fill-1";
    let (agent, _state, inside) = tmpfs_agent(&server, name, &mount, FILL_SIZE, "200ms");
    let why = || format!("{}\n{}", server.stderr(), agent.diagnostics());
    let fill_path = inside.join("fill");
    let mut fill = std::fs::File::create(&fill_path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", fill_path.display()));
    let chunk = vec![0x5a_u8; FILL_CHUNK];
    let start = Instant::now();
    let mut written = 0u64;
    let mut free_at_fire = None;
    for step in 1.. {
        fill.write_all(&chunk)
            .unwrap_or_else(|e| panic!("write after {written} bytes: {e}\n{}", why()));
        written += FILL_CHUNK as u64;
        if !on_subject(&sink, "filesystem_fill", &mount_s).is_empty() {
            free_at_fire = Some(avail_bytes(&inside));
            break;
        }
        if written + FILL_CHUNK as u64 > FILL_SIZE {
            break;
        }
        if let Some(pause) = (start + FILL_STEP * step).checked_duration_since(Instant::now()) {
            std::thread::sleep(pause);
        }
    }
    let Some(free) = free_at_fire else {
        panic!(
            "filesystem_fill did not fire before {written} of {FILL_SIZE} bytes were written\n{}",
            why()
        );
    };
    assert!(free > 0, "fired when the tmpfs was already full");
    let got = on_subject(&sink, "filesystem_fill", &mount_s);
    let left = got[0].1.unwrap_or_default();
    assert_eq!(got[0].0, "firing");
    assert!(
        left > 0.0 && left <= 6.0,
        "fired predicting {left} s to full"
    );
    eprintln!(
        "filesystem_fill fired after {:?}: {written} bytes written, {free} free, {left:.1} s \
         predicted",
        start.elapsed()
    );

    drop(fill);
    std::fs::remove_file(&fill_path)
        .unwrap_or_else(|e| panic!("cannot delete {}: {e}", fill_path.display()));
    sink.wait_for(DEADLINE, why, |s| {
        on_subject(s, "filesystem_fill", &mount_s).len() >= 2
    });
    std::thread::sleep(QUIET);
    let statuses: Vec<String> = on_subject(&sink, "filesystem_fill", &mount_s)
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(statuses, ["firing", "resolved"], "{:#?}", sink.received());
}

/// The flapping test's tmpfs (1,024 pages) and rule: fires above 60 % used held for 4 s,
/// resolves below 30 % held for 2 s. The floor file fills 45 % (inside the hysteresis band),
/// floor and spike together 70 % (past the threshold).
const FLAP_SIZE: u64 = 4 << 20;
const FLAP_FLOOR: usize = 460 * 4096;
const FLAP_SPIKE: usize = 256 * 4096;
const FLAP_RULE: &str = "[rules.filesystem]\nthreshold = 60\nresolve = 30\nfor = \"4s\"\n\
                         resolve_for = \"2s\"\n";
/// How long the test keeps the value in the band between spikes: before the alert fires,
/// long enough that every evaluation sees it (pending starts over); while it fires, longer
/// than `resolve_for` (without hysteresis it would resolve).
const FLAP_BAND_BEFORE: Duration = Duration::from_millis(1200);
const FLAP_BAND_FIRING: Duration = Duration::from_secs(3);

/// Proves: a filesystem whose use hovers around the threshold (a spike file written and
/// deleted on an agent-only tmpfs, the rest of the time in the hysteresis band) neither
/// fires before it has stayed past the threshold for `for`, nor resolves while it hovers in
/// the band once firing: one `firing` and one `resolved` notification in all, and
/// /api/alerts shows one firing episode.
#[test]
fn flapping_filesystem_fires_once_and_resolves_once() {
    if !is_root() {
        eprintln!("flapping_filesystem_fires_once…: SKIPPED (needs root for unshare -m)");
        return;
    }
    let sink = Sink::start();
    let dir = TempDir::new("alerts-flap");
    let mount = dir.path().join("fs");
    std::fs::create_dir_all(&mount).unwrap_or_else(|e| panic!("mkdir: {e}"));
    let mount_s = mount.to_string_lossy().into_owned();
    let file = rules_file(&dir, &quick_rules(FLAP_RULE, &sink.url("/hook")));
    let server = Server::start_with(0, &["--http", "127.0.0.1:0", "--alerts", &file]);
    let http = http_addr(&server);
    let name = "al-flap-1";
    // 500 ms samples: stale (no input, which counts as clear) only after 1.1 s without one.
    let (agent, _state, inside) = tmpfs_agent(&server, name, &mount, FLAP_SIZE, "500ms");
    let why = || format!("{}\n{}", server.stderr(), agent.diagnostics());

    // Every look at /api/alerts: the `fired_ms` of each firing episode of this alert seen.
    let episodes = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let firing_now = || {
        let alerts = api_alerts(&http);
        let mine = alerts["active"].as_array().into_iter().flatten().find(|a| {
            a["rule"] == "filesystem" && a["name"] == name && a["subject"] == mount_s.as_str()
        });
        let firing = mine.is_some_and(|a| a["state"] == "firing");
        if let Some(at) = mine.filter(|_| firing).and_then(|a| a["fired_ms"].as_u64()) {
            episodes.borrow_mut().insert(at);
        }
        firing
    };
    let notified = || -> Vec<String> {
        on_subject(&sink, "filesystem", &mount_s)
            .into_iter()
            .map(|(s, _)| s)
            .collect()
    };
    // Waits until the agent's reading of the tmpfs is `over` the threshold or not (and then
    // in the band, above `resolve`); returns the reading.
    let reaches = |over: bool| {
        poll_every(Duration::from_millis(50), DEADLINE, || {
            firing_now();
            let used = used_pct(&fs_reading(&server, name, &mount_s)?);
            (if over {
                used > 60.0
            } else {
                used > 30.0 && used < 60.0
            })
            .then_some(used)
        })
        .unwrap_or_else(|| {
            let want = if over {
                "over 60 %"
            } else {
                "between 30 and 60 %"
            };
            panic!("the tmpfs's reading is not {want} in time\n{}", why())
        })
    };
    // Keeps the value in the band for `d`, looking all along.
    let stay_in_band = |d: Duration| {
        let until = Instant::now() + d;
        poll_every(Duration::from_millis(50), d + DEADLINE, || {
            firing_now();
            let used = used_pct(&fs_reading(&server, name, &mount_s)?);
            assert!(
                used > 30.0 && used < 60.0,
                "left the band: {used} %\n{}",
                why()
            );
            (Instant::now() >= until).then_some(())
        })
        .unwrap_or_else(|| panic!("no reading of the tmpfs\n{}", why()));
    };
    let write = |path: &std::path::Path, len: usize| {
        std::fs::write(path, vec![0x5a_u8; len])
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    };
    let delete = |path: &std::path::Path| {
        std::fs::remove_file(path)
            .unwrap_or_else(|e| panic!("cannot delete {}: {e}", path.display()));
    };
    let (floor, spike) = (inside.join("floor"), inside.join("spike"));

    write(&floor, FLAP_FLOOR);
    reaches(false);
    // Hovering: past the threshold for one or two samples, then back in the band, 3 times.
    let mut longest = Duration::ZERO;
    for _ in 0..3 {
        let on = Instant::now();
        write(&spike, FLAP_SPIKE);
        reaches(true);
        delete(&spike);
        longest = longest.max(on.elapsed());
        reaches(false);
        stay_in_band(FLAP_BAND_BEFORE);
        assert!(
            notified().is_empty() && episodes.borrow().is_empty(),
            "fired while hovering (the spike stayed at most {longest:?}, `for` is 4 s): {:#?}\n{}",
            sink.received(),
            why()
        );
    }

    // A sustained breach: fires, once.
    let breach = Instant::now();
    write(&spike, FLAP_SPIKE);
    sink.wait_for(DEADLINE, why, |s| {
        firing_now();
        !on_subject(s, "filesystem", &mount_s).is_empty()
    });
    let waited = breach.elapsed();
    assert!(
        waited >= Duration::from_millis(3900),
        "fired {waited:?} into the breach, before `for`"
    );
    poll(DEADLINE, || firing_now().then_some(()))
        .unwrap_or_else(|| panic!("/api/alerts does not show it firing\n{}", why()));

    // Hovering while firing: back in the band for longer than `resolve_for`, then past the
    // threshold again, twice: still firing, nothing notified.
    for _ in 0..2 {
        delete(&spike);
        reaches(false);
        stay_in_band(FLAP_BAND_FIRING);
        write(&spike, FLAP_SPIKE);
        reaches(true);
        assert!(
            firing_now(),
            "not firing after a hover in the band\n{}",
            why()
        );
        assert_eq!(notified(), ["firing"], "{:#?}", sink.received());
    }

    // Recovery: below `resolve`; resolves, once.
    delete(&spike);
    delete(&floor);
    sink.wait_for(DEADLINE, why, |s| {
        firing_now();
        on_subject(s, "filesystem", &mount_s).len() >= 2
    });
    std::thread::sleep(QUIET);
    assert_eq!(notified(), ["firing", "resolved"], "{:#?}", sink.received());
    assert!(!firing_now());
    let alerts = api_alerts(&http);
    let recent: Vec<&Value> = alerts["recent"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| {
            a["rule"] == "filesystem" && a["name"] == name && a["subject"] == mount_s.as_str()
        })
        .collect();
    let episodes = episodes.into_inner();
    assert_eq!(episodes.len(), 1, "firing episodes seen: {episodes:?}");
    assert_eq!(recent.len(), 1, "{alerts}");
    assert_eq!(recent[0]["state"], "resolved", "{alerts}");
    assert_eq!(
        recent[0]["fired_ms"].as_u64(),
        episodes.first().copied(),
        "{alerts}"
    );
}

/// `/proc/loadavg`'s 1-minute load.
fn loadavg1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("cannot read /proc/loadavg"))
}

/// Proves: the load rule compares the host's 1-minute load per core (`/proc/loadavg` over
/// the cores) with its threshold: with a CPU burner running, a threshold of 0.01 per core
/// fires, and the value notified is the load the host showed meanwhile, over its cores.
#[test]
fn load_per_core_fires_with_the_hosts_load() {
    let sink = Sink::start();
    let dir = TempDir::new("alerts-load");
    let rules = quick_rules(
        "[rules.load]\nthreshold = 0.01\nresolve = 0\nfor = \"0s\"\n",
        &sink.url("/hook"),
    );
    let file = rules_file(&dir, &rules);
    let server = Server::start_with(0, &["--alerts", &file]);
    let _burn = Burners::start(1);
    let (mut lo, mut hi) = (loadavg1(), loadavg1());
    let _agent = Agent::start(&server.join(), "al-load-1");
    poll(Duration::from_secs(30), || {
        let l = loadavg1();
        (lo, hi) = (lo.min(l), hi.max(l));
        (!sink.lanmon("load").is_empty()).then_some(())
    })
    .unwrap_or_else(|| panic!("no load notification\n{}", server.stderr()));
    let l = loadavg1();
    (lo, hi) = (lo.min(l), hi.max(l));
    let hook = sink
        .received()
        .into_iter()
        .find(|r| r.body["alert"]["rule"] == "load")
        .unwrap_or_else(|| panic!("no load notification"));
    assert_eq!(hook.body["status"], "firing");
    let cores = crate::support::proc_stat_cores() as f64;
    let value = hook.body["alert"]["value"].as_f64().unwrap_or_default();
    assert!(
        value > 0.01 && value * cores >= lo - 0.011 && value * cores <= hi + 0.011,
        "load {value} per core × {cores} cores, the host showed {lo}..{hi}"
    );
}

// ---- Alertmanager and Prometheus ----------------------------------------------------------------

/// Path of a tool from Debian's packages, `None` only with `LANMON_SKIP_PROMETHEUS=1`.
#[track_caller]
fn tool(names: &[&str], package: &str) -> Option<PathBuf> {
    if std::env::var(SKIP_ENV).is_ok_and(|v| v == "1") {
        eprintln!("{SKIP_ENV}=1: not running the {package} test");
        return None;
    }
    for name in names {
        for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
            let p = PathBuf::from(dir).join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    panic!(
        "{} not found: install Debian's `{package}` package (`make setup` does, as root), or set \
         {SKIP_ENV}=1 to leave out this test",
        names.join(" / ")
    );
}

/// A real Alertmanager on 127.0.0.1 (no cluster gossip, its own storage); killed on drop.
struct Alertmanager {
    child: Child,
    addr: String,
    log: Arc<Mutex<String>>,
    _dir: TempDir,
}

impl Alertmanager {
    #[track_caller]
    fn start(binary: &PathBuf, receiver_url: &str) -> Alertmanager {
        let dir = TempDir::new("alertmanager");
        let config = format!(
            "route:\n  receiver: sink\n  group_by: ['alertname', 'agent']\n  group_wait: 1s\n  \
             group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: sink\n    \
             webhook_configs:\n      - url: {receiver_url}\n        send_resolved: true\n"
        );
        let config_path = dir.path().join("alertmanager.yml");
        std::fs::write(&config_path, config)
            .unwrap_or_else(|e| panic!("cannot write the config: {e}"));
        // Held until Alertmanager listens on it (both set SO_REUSEADDR; this one never listens).
        let reserved = TcpPortReservation::new();
        let addr = format!("{LOOPBACK}:{}", reserved.port());
        let mut child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let log = Arc::new(Mutex::new(String::new()));
        if let Some(stderr) = child.stderr.take() {
            let sink = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut l = sink.lock().unwrap_or_else(PoisonError::into_inner);
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let am = Alertmanager {
            child,
            addr,
            log,
            _dir: dir,
        };
        poll(DEADLINE, || {
            (get_quiet(&am.addr, "/-/ready") == Some(200)).then_some(())
        })
        .unwrap_or_else(|| panic!("alertmanager not ready\n{}", am.log()));
        drop(reserved);
        am
    }

    fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GET's status, `None` when nothing answers.
fn get_quiet(addr: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    let _ = stream.read_to_string(&mut raw);
    raw.split_whitespace().nth(1)?.parse().ok()
}

/// Alertmanager's webhook notifications received: (status, alerts' `rule`/`name` labels).
fn am_notifications(sink: &Sink) -> Vec<(String, Vec<(String, String)>)> {
    sink.received()
        .iter()
        .filter(|r| r.path == "/am")
        .map(|r| {
            let alerts = r.body["alerts"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| {
                            (
                                x["labels"]["rule"].as_str().unwrap_or_default().to_string(),
                                x["labels"]["name"].as_str().unwrap_or_default().to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            (
                r.body["status"].as_str().unwrap_or_default().to_string(),
                alerts,
            )
        })
        .collect()
}

/// Proves: a firing lanmon alert reaches the real Alertmanager (API v2) with lanmon's labels
/// and comes out of its webhook receiver, and so does its resolve.
#[test]
fn alertmanager_routes_a_lanmon_alert_and_its_resolve() {
    let Some(binary) = tool(
        &["prometheus-alertmanager", "alertmanager"],
        "prometheus-alertmanager",
    ) else {
        return;
    };
    let sink = Sink::start();
    let am = Alertmanager::start(&binary, &sink.url("/am"));
    let dir = TempDir::new("alerts-am");
    let rules = format!(
        "{}\n[[notify.alertmanager]]\nurl = \"http://{}\"\nresend_every = \"1s\"\n",
        quick_rules("[rules.offline]\nfor = \"0s\"\n", &sink.url("/hook")),
        am.addr
    );
    let file = rules_file(&dir, &rules);
    let server = Server::start_with(0, &["--alerts", &file]);
    let mut agent = Agent::start(&server.join(), "al-am-1");
    wait_live(&server, "al-am-1");
    agent.kill();
    let why = || {
        format!(
            "--- lanmon ---\n{}\n--- alertmanager ---\n{}",
            server.stderr(),
            am.log()
        )
    };
    let firing = |s: &Sink| {
        am_notifications(s)
            .iter()
            .any(|(st, a)| st == "firing" && a.contains(&("offline".into(), "al-am-1".into())))
    };
    sink.wait_for(DEADLINE, why, firing);
    let am_alert = sink
        .received()
        .into_iter()
        .find(|r| r.path == "/am")
        .map(|r| r.body["alerts"][0].clone())
        .unwrap_or_default();
    assert_eq!(
        am_alert["labels"]["alertname"], "LanmonAgentOffline",
        "{am_alert}"
    );
    assert_eq!(am_alert["labels"]["severity"], "critical", "{am_alert}");
    assert!(
        am_alert["labels"]["agent"]
            .as_str()
            .is_some_and(|a| !a.is_empty()),
        "{am_alert}"
    );

    let _agent = agent.again(&server.join());
    let resolved = |s: &Sink| {
        am_notifications(s)
            .iter()
            .any(|(st, a)| st == "resolved" && a.contains(&("offline".into(), "al-am-1".into())))
    };
    sink.wait_for(DEADLINE, why, resolved);
}

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bins/deploy/prometheus")
}

/// Proves: the shipped Prometheus rules file is valid (`promtool check rules`) and its unit
/// tests pass (`promtool test rules`): each rule fires on a synthetic fleet as documented.
#[test]
fn prometheus_rules_pass_promtool() {
    let Some(promtool) = tool(&["promtool"], "prometheus") else {
        return;
    };
    for args in [
        ["check", "rules", "lanmon-rules.yml"],
        ["test", "rules", "lanmon-rules.test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(deploy_dir())
            .output()
            .unwrap_or_else(|e| panic!("cannot run promtool: {e}"));
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
