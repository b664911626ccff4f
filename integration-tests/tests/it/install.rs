//! Installing as a service (`agent install`, `server install`, `install.sh`), on the real
//! binaries:
//! - into a `--root` directory they write exactly the documented files, upgrade in place and
//!   uninstall cleanly;
//! - `systemd-analyze verify` and `systemd-analyze security` accept the units, which carry the
//!   hardening directives;
//! - each unit's `ExecStart`, run the way systemd runs it (the unit's `Environment=`, then its
//!   `EnvironmentFile=`, an unprivileged user with no capabilities and no new privileges, a
//!   fresh state directory), is a working server and an agent that shows up `live`;
//! - the banner's one-line command fetches `install.sh` from a running server and installs an
//!   agent that connects (with curl and dash, with wget only, with busybox only); when a proxy
//!   alters one byte of the script or of the binary, it is refused and nothing is installed.
//!
//! The tests that need root (mount namespaces, changing user) print SKIPPED without it.
//! Network rule: everything is on 127.0.0.1 (servers run with --no-beacon).

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::is_root;
use crate::support::process::{bin, command, command_for};
use crate::support::{Agent, DEADLINE, LOOPBACK, Server, SnapshotExt, TempDir, poll};

/// The user the tests run services as (`nobody`): unprivileged, like the units' own users.
const NOBODY: u32 = 65534;

/// PATH for the processes the tests start the way systemd would.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Whether this process is root (mount namespaces, setpriv to another user).
#[allow(unsafe_code)] // geteuid(2) has no safe std wrapper; it takes and touches nothing.
/// Every file (not directory) under `root` as `path mode`, relative to `root`, sorted.
fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                out.push(format!(
                    "{} {:04o}",
                    rel.display(),
                    meta.permissions().mode() & 0o7777
                ));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// `path` (absolute, as on the target) under `root`.
fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// Runs `name` (a workspace binary) with `args` to completion.
#[track_caller]
fn run(name: &str, args: &[&str]) -> Output {
    command(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name} {args:?}: {e}"))
}

/// Asserts that `out` is a success; returns its stdout.
#[track_caller]
fn ok(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({})\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[track_caller]
fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A unit file's `key=value` lines, in order (sections are not needed by these tests).
struct Unit {
    path: PathBuf,
    lines: Vec<(String, String)>,
}

impl Unit {
    #[track_caller]
    fn load(path: PathBuf) -> Unit {
        let lines = read(&path)
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with('['))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Unit { path, lines }
    }

    /// Every value given to `key`, in order.
    fn all(&self, key: &str) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The one value of `key`; panics if it is missing or repeated.
    #[track_caller]
    fn one(&self, key: &str) -> &str {
        match self.all(key).as_slice() {
            [v] => v,
            other => panic!("{}: {key}= given {other:?}", self.path.display()),
        }
    }
}

/// The command that starts `unit` (installed under `root`) the way systemd does: a clean
/// environment with the unit's `Environment=`, then its `EnvironmentFile=` (read as root, by
/// a POSIX shell: the format is written for both), `STATE_DIRECTORY` on a fresh directory
/// owned by the service user (a tmpfs over /var/lib in a mount namespace of its own, gone with
/// the process), and the `ExecStart=` binary run as `nobody` with no supplementary groups, no
/// capabilities and no new privileges. The process keeps its pid through every `exec`.
fn as_systemd_would(root: &Path, unit: &Unit) -> Command {
    let exec = under(root, unit.one("ExecStart"));
    let env_file = under(root, unit.one("EnvironmentFile"));
    let state = unit.one("StateDirectory").to_string();
    let mut cmd = command_for(PathBuf::from("unshare"));
    cmd.env_clear().env("PATH", SYSTEM_PATH);
    for assignment in unit.all("Environment") {
        let (key, value) = assignment
            .split_once('=')
            .unwrap_or_else(|| panic!("bad Environment={assignment}"));
        cmd.env(key, value);
    }
    cmd.args([
        "-m",
        "sh",
        "-c",
        r#"mount -t tmpfs -o mode=0755 lanmon-test-state /var/lib &&
           mkdir -m 0700 "/var/lib/$1" && chown "$4:$4" "/var/lib/$1" &&
           set -a && . "$2" && set +a && export STATE_DIRECTORY="/var/lib/$1" &&
           exec setpriv --reuid="$4" --regid="$4" --clear-groups --no-new-privs \
                --inh-caps=-all --bounding-set=-all "$3""#,
        "sh",
        &state,
    ])
    .arg(&env_file)
    .arg(&exec)
    .arg(NOBODY.to_string());
    cmd
}

/// `Uid:` and `NoNewPrivs:` of a running process.
#[track_caller]
fn credentials(pid: u32) -> (u32, bool) {
    let status = read(Path::new(&format!("/proc/{pid}/status")));
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
            .to_string()
    };
    let uid = field("Uid:")
        .split_whitespace()
        .nth(1)
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("bad Uid: line in /proc/{pid}/status"));
    (uid, field("NoNewPrivs:") == "1")
}

/// The agent's files, as `agent install` documents them.
const AGENT_FILES: &[&str] = &[
    "etc/lanmon/agent.env 0600",
    "etc/systemd/system/lanmon-agent.service 0644",
    "etc/sysusers.d/lanmon-agent.conf 0644",
    "usr/local/bin/agent 0755",
];

/// The server's files, as `server install` documents them (an `agent` is beside the test's
/// `server`, so it ships one).
const SERVER_FILES: &[&str] = &[
    "etc/lanmon/server.env 0600",
    "etc/systemd/system/lanmon-server.service 0644",
    "etc/sysusers.d/lanmon-server.conf 0644",
    "usr/local/bin/server 0755",
    "usr/local/lib/lanmon/agent 0755",
];

/// `agent install --root` writes exactly the documented files with their modes and the given
/// flags as quoted LANMON_* lines; installing again without flags upgrades (binary and unit
/// replaced) and keeps the settings, with flags rewrites them; `uninstall` leaves the
/// settings and `--purge` leaves nothing.
#[test]
fn agent_install_writes_the_documented_files_and_upgrades_in_place() {
    let root = TempDir::new("install-agent");
    let r = root.arg();
    let out = ok(
        "agent install",
        &run(
            "agent",
            &[
                "install",
                "--root",
                &r,
                "--host",
                "10.0.0.5",
                "--name",
                "it's \"lab\" $1",
            ],
        ),
    );
    assert!(out.contains("nothing was run"), "{out}");
    assert_eq!(tree(root.path()), AGENT_FILES);
    let env = read(&root.path().join("etc/lanmon/agent.env"));
    assert!(env.contains("\nLANMON_HOST=\"10.0.0.5\"\n"), "{env}");
    assert!(
        env.contains("\nLANMON_NAME=\"it's \\\"lab\\\" \\$1\"\n"),
        "{env}"
    );
    assert_eq!(
        fs::read(root.path().join("usr/local/bin/agent")).ok(),
        fs::read(bin("agent")).ok(),
        "the installed binary is a copy of the running one"
    );

    let again = ok(
        "agent install (upgrade)",
        &run("agent", &["install", "--root", &r]),
    );
    assert!(again.contains("upgrade"), "{again}");
    assert!(again.contains("kept  /etc/lanmon/agent.env"), "{again}");
    assert!(
        again.contains("systemctl restart lanmon-agent.service"),
        "{again}"
    );
    assert_eq!(read(&root.path().join("etc/lanmon/agent.env")), env);
    assert_eq!(tree(root.path()), AGENT_FILES);

    ok(
        "agent install --discover",
        &run("agent", &["install", "--root", &r, "--discover"]),
    );
    let env = read(&root.path().join("etc/lanmon/agent.env"));
    assert!(
        env.contains("\nLANMON_DISCOVER=\"true\"\n") && !env.contains("LANMON_HOST"),
        "{env}"
    );

    fs::create_dir_all(root.path().join("var/lib/lanmon-agent")).ok();
    fs::write(root.path().join("var/lib/lanmon-agent/key"), "k").ok();
    ok(
        "agent uninstall",
        &run("agent", &["uninstall", "--root", &r]),
    );
    assert_eq!(
        tree(root.path()),
        ["etc/lanmon/agent.env 0600", "var/lib/lanmon-agent/key 0644"]
    );
    ok(
        "agent uninstall --purge",
        &run("agent", &["uninstall", "--root", &r, "--purge"]),
    );
    assert_eq!(tree(root.path()), Vec::<String>::new());
}

/// `server install --root` writes exactly the documented files (with the agent it offers),
/// and `--dry-run` writes nothing but prints the same plan.
#[test]
fn server_install_writes_the_documented_files() {
    let root = TempDir::new("install-server");
    let r = root.arg();
    let dry = ok(
        "server install --dry-run",
        &run("server", &["install", "--root", &r, "--dry-run"]),
    );
    assert!(
        dry.contains("write /etc/systemd/system/lanmon-server.service (0644)"),
        "{dry}"
    );
    assert!(
        dry.contains("run   systemctl enable --now lanmon-server.service"),
        "{dry}"
    );
    assert_eq!(
        tree(root.path()),
        Vec::<String>::new(),
        "--dry-run wrote files"
    );
    ok("server install", &run("server", &["install", "--root", &r]));
    assert_eq!(tree(root.path()), SERVER_FILES);
    let env = read(&root.path().join("etc/lanmon/server.env"));
    assert!(env.contains("no settings"), "{env}");
    assert_eq!(
        fs::read(root.path().join("usr/local/lib/lanmon/agent")).ok(),
        fs::read(bin("agent")).ok()
    );
    ok(
        "server uninstall --purge",
        &run("server", &["uninstall", "--root", &r, "--purge"]),
    );
    assert_eq!(tree(root.path()), Vec::<String>::new());
}

/// Flags the service could not use, and bad values, are refused before anything is written.
#[test]
fn install_refuses_bad_flags_and_writes_nothing() {
    let root = TempDir::new("install-refused");
    let r = root.arg();
    for (args, says) in [
        (vec!["--name", "x"], "--host"),
        (vec!["--discover", "--list"], "--list"),
        (
            vec!["--host", "h", "--name", "a\nLANMON_HOST=evil"],
            "control character",
        ),
        (vec!["--host", "h", "--port", "http"], "invalid value"),
    ] {
        let mut all = vec!["install", "--root", &r];
        all.extend(&args);
        let out = run("agent", &all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(says),
            "{args:?}: {stderr}"
        );
        assert_eq!(
            tree(root.path()),
            Vec::<String>::new(),
            "{args:?} wrote files"
        );
    }
}

/// `systemd-analyze verify` accepts both units, `systemd-analyze security` rates them at most
/// 2.0 ("OK"), and they carry the hardening directives.
#[test]
fn units_pass_systemd_analyze_and_are_hardened() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "units_pass_systemd_analyze: SKIPPED (no systemd-analyze: apt-get install systemd)"
        );
        return;
    }
    let root = TempDir::new("install-verify");
    let r = root.arg();
    // The binaries' real directory as --bin-dir: verify checks that ExecStart exists.
    let bin_dir = bin("agent")
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    ok(
        "agent install",
        &run(
            "agent",
            &["install", "--root", &r, "--bin-dir", &bin_dir, "--discover"],
        ),
    );
    ok(
        "server install",
        &run("server", &["install", "--root", &r, "--bin-dir", &bin_dir]),
    );
    let units: Vec<PathBuf> = ["lanmon-agent.service", "lanmon-server.service"]
        .iter()
        .map(|u| root.path().join("etc/systemd/system").join(u))
        .collect();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .unwrap_or_else(|e| panic!("systemd-analyze verify: {e}"));
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && !complaints.contains("lanmon"),
        "systemd-analyze verify: {}\n{complaints}",
        verify.status
    );
    for unit in &units {
        let security = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--threshold=20"])
            .arg(unit)
            .output()
            .unwrap_or_else(|e| panic!("systemd-analyze security: {e}"));
        let report = String::from_utf8_lossy(&security.stdout);
        assert!(
            security.status.success(),
            "{}: exposure above 2.0\n{report}",
            unit.display()
        );
    }
    for (unit, families) in [
        (&units[0], "AF_INET AF_INET6 AF_UNIX"),
        (&units[1], "AF_INET AF_INET6 AF_UNIX AF_NETLINK"),
    ] {
        let unit = Unit::load(unit.clone());
        for (key, value) in [
            ("Restart", "on-failure"),
            ("After", "network-online.target"),
            ("Wants", "network-online.target"),
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("PrivateDevices", "yes"),
            ("ProtectKernelTunables", "yes"),
            ("ProtectKernelModules", "yes"),
            ("ProtectKernelLogs", "yes"),
            ("ProtectControlGroups", "yes"),
            ("CapabilityBoundingSet", ""),
            ("RestrictAddressFamilies", families),
        ] {
            assert_eq!(unit.one(key), value, "{key} in {}", unit.path.display());
        }
        assert_eq!(
            unit.all("SystemCallFilter"),
            ["@system-service", "~@privileged"]
        );
        assert!(unit.all("DynamicUser").is_empty());
        assert!(!unit.one("User").is_empty() && unit.one("User") != "root");
    }
}

/// The installed server and agent, started from their units the way systemd starts them (as
/// an unprivileged user, settings from the env file), work: the server runs as that user with
/// no new privileges and keeps its history in its state directory, and the installed agent
/// shows up `live` on it.
#[test]
fn installed_units_start_a_working_server_and_agent() {
    if !is_root() {
        eprintln!("installed_units_start: SKIPPED (needs root: mount namespace, setpriv)");
        return;
    }
    let server_root = TempDir::new("unit-server");
    ok(
        "server install",
        &run(
            "server",
            &[
                "install",
                "--root",
                &server_root.arg(),
                "--bind",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                "--no-beacon",
                "--report-format",
                "json",
                "--report-interval",
                "100ms",
            ],
        ),
    );
    let unit = Unit::load(
        server_root
            .path()
            .join("etc/systemd/system/lanmon-server.service"),
    );
    let server = Server::start_command(as_systemd_would(server_root.path(), &unit));
    assert_eq!(credentials(server.pid()), (NOBODY, true));

    let agent_root = TempDir::new("unit-agent");
    let port = server.port().to_string();
    let token = server.token();
    ok(
        "agent install",
        &run(
            "agent",
            &[
                "install",
                "--root",
                &agent_root.arg(),
                "--host",
                "127.0.0.1",
                "--port",
                &port,
                "--join",
                &token,
                "--name",
                "installed-agent",
                "--interval",
                "200ms",
            ],
        ),
    );
    let unit = Unit::load(
        agent_root
            .path()
            .join("etc/systemd/system/lanmon-agent.service"),
    );
    let agent = Agent::start_command(
        "installed-agent",
        as_systemd_would(agent_root.path(), &unit),
    );
    server.wait_for(DEADLINE, |s| s.is_live("installed-agent"));
    assert_eq!(credentials(agent.pid()), (NOBODY, true));

    // The history is in the unit's state directory (Environment=LANMON_DATA_DIR), owned by
    // the service user.
    let state = server.root_path(Path::new("/var/lib/lanmon"));
    let files = poll(DEADLINE, || {
        let files: Vec<_> = fs::read_dir(&state).ok()?.flatten().collect();
        (!files.is_empty()).then_some(files)
    })
    .unwrap_or_else(|| {
        panic!(
            "nothing written in {}\n{}",
            state.display(),
            server.stderr()
        )
    });
    for f in files {
        let meta = f.metadata().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            meta.uid(),
            NOBODY,
            "{} owned by {}",
            f.path().display(),
            meta.uid()
        );
    }
}

// ---- install.sh from a running server ------------------------------------------------------

/// The one-line install command the server's banner prints (waits for it).
#[track_caller]
fn install_line(server: &Server) -> String {
    poll(DEADLINE, || {
        server
            .stderr()
            .lines()
            .find(|l| l.contains("f=$(mktemp)"))
            .map(|l| l.trim().to_string())
    })
    .unwrap_or_else(|| panic!("no install line in the banner\n{}", server.stderr()))
}

/// `line` with `args` given to the script (right after `sh "$f"`).
fn with_script_args(line: &str, args: &str) -> String {
    let at = "sh \"$f\" ";
    assert!(line.contains(at), "no `{at}` in {line}");
    line.replacen(at, &format!("{at}{args} "), 1)
}

/// A directory of symlinks standing for a minimal system's PATH: each of `tools` found by
/// `which`, or all of them as busybox applets.
fn tools_dir(dir: &Path, tools: &[&str], busybox: Option<&Path>) {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
    for tool in tools {
        let target = match busybox {
            Some(b) => b.to_path_buf(),
            None => which(tool).unwrap_or_else(|| panic!("{tool} not found")),
        };
        std::os::unix::fs::symlink(&target, dir.join(tool))
            .unwrap_or_else(|e| panic!("symlink {tool}: {e}"));
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    SYSTEM_PATH
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

/// What the script and the agent need, besides the downloader.
const BASE_TOOLS: &[&str] = &[
    "sh",
    "mktemp",
    "sha256sum",
    "rm",
    "tr",
    "id",
    "chmod",
    "uname",
    "sed",
];

/// Runs the install `line` with the shell `sh` and `path` as PATH, temporary files in `tmp`.
#[track_caller]
fn run_line(sh: &Path, path: &str, tmp: &Path, line: &str) -> Output {
    let mut cmd = command_for(sh.to_path_buf());
    cmd.env_clear()
        .env("PATH", path)
        .env("TMPDIR", tmp)
        .args(["-c", line]);
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", sh.display()))
}

/// The banner's line, run as printed (plus `--root`), fetches install.sh and the agent from
/// the running server, checks both and installs the agent: with curl and dash, with only
/// wget, and with only busybox. The agent it installed connects and shows up `live`; the
/// temporary files are gone.
#[test]
fn install_script_from_the_server_installs_an_agent_that_connects() {
    let server = Server::start_with(0, &["--http", "127.0.0.1:0"]);
    let line = install_line(&server);
    assert!(
        line.contains(&format!("--host 127.0.0.1 --port {}", server.port())),
        "{line}"
    );
    let work = TempDir::new("script");
    let busybox = which("busybox");
    let mut variants = vec![("curl+dash", None, None)];
    if which("wget").is_some() {
        let dir = work.path().join("wget-bin");
        let mut tools = BASE_TOOLS.to_vec();
        tools.push("wget");
        tools_dir(&dir, &tools, None);
        variants.push(("wget only", Some(dir), None));
    } else {
        eprintln!("install script with wget: SKIPPED (no wget)");
    }
    if let Some(b) = &busybox {
        let dir = work.path().join("busybox-bin");
        let mut tools = BASE_TOOLS.to_vec();
        tools.push("wget");
        tools_dir(&dir, &tools, Some(b));
        variants.push(("busybox only", Some(dir.clone()), Some(dir.join("sh"))));
    } else {
        eprintln!("install script with busybox: SKIPPED (no busybox: apt-get install busybox)");
    }
    for (i, (what, path_dir, shell)) in variants.into_iter().enumerate() {
        let root = work.path().join(format!("root-{i}"));
        let tmp = work.path().join(format!("tmp-{i}"));
        fs::create_dir_all(&tmp).unwrap_or_else(|e| panic!("{e}"));
        let name = format!("script-agent-{i}");
        let line = with_script_args(
            &line,
            &format!("--root {} --name {name} --interval 200ms", root.display()),
        );
        let path = path_dir.map_or(SYSTEM_PATH.to_string(), |d| d.display().to_string());
        let sh = shell.unwrap_or_else(|| PathBuf::from("/bin/dash"));
        let out = run_line(&sh, &path, &tmp, &line);
        ok(&format!("install line ({what})"), &out);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("agent checked"), "{what}: {stderr}");
        assert_eq!(tree(&root), AGENT_FILES, "{what}");
        let env = read(&root.join("etc/lanmon/agent.env"));
        assert!(
            env.contains("\nLANMON_HOST=\"127.0.0.1\"\n"),
            "{what}: {env}"
        );
        assert!(
            env.contains(&format!("\nLANMON_PORT=\"{}\"\n", server.port())),
            "{env}"
        );
        assert_eq!(
            tree(&tmp),
            Vec::<String>::new(),
            "{what}: temporary files left"
        );
        if i == 0 {
            if !is_root() {
                eprintln!("running the script-installed agent: SKIPPED (needs root)");
                continue;
            }
            let unit = Unit::load(root.join("etc/systemd/system/lanmon-agent.service"));
            let _agent = Agent::start_command(&name, as_systemd_would(&root, &unit));
            server.wait_for(DEADLINE, |s| s.is_live(&name));
        }
    }
}

/// A man in the middle on loopback that passes requests through and flips one bit of one
/// byte in the body of the answers to requests for `path`.
struct TamperProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TamperProxy {
    fn start(upstream: u16, path: &'static str) -> TamperProxy {
        let listener = TcpListener::bind((LOOPBACK, 0)).unwrap_or_else(|e| panic!("{e}"));
        let port = listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("{e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        std::thread::spawn(move || relay(client, upstream, path));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        TamperProxy {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TamperProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads an HTTP head (up to the blank line).
fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).ok()?;
        head.push(byte[0]);
        if head.len() > 64 * 1024 {
            return None;
        }
    }
    Some(head)
}

/// One request: forwarded as is; the answer (with a Content-Length) is read whole, altered if
/// the request was for `path`, and sent back; then the connection closes.
fn relay(mut client: TcpStream, upstream: u16, path: &str) {
    let _ = client.set_nonblocking(false);
    let _ = client.set_read_timeout(Some(DEADLINE));
    let Some(request) = read_head(&mut client) else {
        return;
    };
    let first_line = String::from_utf8_lossy(&request)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let tamper = first_line.split_whitespace().nth(1) == Some(path);
    let Ok(mut up) = TcpStream::connect((LOOPBACK, upstream)) else {
        return;
    };
    let _ = up.set_read_timeout(Some(DEADLINE));
    if up.write_all(&request).is_err() {
        return;
    }
    let Some(head) = read_head(&mut up) else {
        return;
    };
    let len = String::from_utf8_lossy(&head)
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    if up.read_exact(&mut body).is_err() {
        return;
    }
    if tamper && !body.is_empty() {
        let at = body.len() / 2;
        body[at] ^= 0x01;
    }
    let _ = client.write_all(&head);
    let _ = client.write_all(&body);
}

/// The HTTP address in the server's snapshot (`server.http`), as its port.
#[track_caller]
fn http_port(server: &Server) -> u16 {
    let snapshot = server.wait_for(DEADLINE, |s| s.server.http.is_some());
    snapshot
        .server
        .http
        .as_deref()
        .and_then(|a| a.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("no server.http in {:?}", snapshot.server))
}

/// Through a proxy that alters one byte, the install line refuses a changed install.sh (it
/// never runs it) and the script refuses a changed agent binary, each with a clear message,
/// a failing exit status, nothing installed and no temporary file left.
#[test]
fn tampered_script_or_binary_is_refused_and_nothing_is_installed() {
    let server = Server::start_with(0, &["--http", "127.0.0.1:0"]);
    let line = install_line(&server);
    let port = http_port(&server);
    let work = TempDir::new("tamper");
    for (path, says) in [
        (
            "/install.sh",
            "does not match the SHA-256 in this command: not run",
        ),
        ("/download/agent", "REFUSED: the agent from"),
    ] {
        let proxy = TamperProxy::start(port, path);
        let root = work.path().join(format!("root{}", path.replace('/', "-")));
        let tmp = work.path().join(format!("tmp{}", path.replace('/', "-")));
        fs::create_dir_all(&tmp).unwrap_or_else(|e| panic!("{e}"));
        let line = with_script_args(&line, &format!("--root {}", root.display())).replace(
            &format!("http://127.0.0.1:{port}"),
            &format!("http://127.0.0.1:{}", proxy.port),
        );
        let started = Instant::now();
        let out = run_line(Path::new("/bin/dash"), SYSTEM_PATH, &tmp, &line);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{path} altered, yet the line succeeded: {stderr}"
        );
        assert!(stderr.contains(says), "{path}: {stderr}");
        assert_eq!(
            tree(&root),
            Vec::<String>::new(),
            "{path}: something was installed"
        );
        assert_eq!(
            tree(&tmp),
            Vec::<String>::new(),
            "{path}: temporary files left"
        );
        assert!(started.elapsed() < DEADLINE * 2);
    }
}

/// Without an agent binary to offer, the banner says why, `GET /download/agent` answers 404
/// with the reason and `GET /install.sh` still serves the script whose hash the line carries.
#[test]
fn missing_agent_binary_is_a_clear_404() {
    let server = Server::start_with(
        0,
        &[
            "--http",
            "127.0.0.1:0",
            "--agent-binary",
            "/nonexistent/lanmon-agent",
        ],
    );
    let port = http_port(&server);
    poll(DEADLINE, || {
        server
            .stderr()
            .contains("install from this server: not available")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("banner does not say why\n{}", server.stderr()));
    let (status, body) = http_get(port, "/download/agent");
    assert_eq!(status, 404);
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("/nonexistent/lanmon-agent"), "{body}");
    let (status, script) = http_get(port, "/install.sh");
    assert_eq!(status, 200);
    assert_eq!(script, lanmon::install::script::SCRIPT.as_bytes());
}

/// `GET path` on 127.0.0.1:port with `Connection: close`: status and body (to EOF).
#[track_caller]
fn http_get(port: u16, path: &str) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect((LOOPBACK, port)).unwrap_or_else(|e| panic!("{e}"));
    stream
        .set_read_timeout(Some(DEADLINE))
        .unwrap_or_else(|e| panic!("{e}"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("{e}"));
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers"));
    let status = String::from_utf8_lossy(&raw[..split])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line"));
    (status, raw[split + 4..].to_vec())
}
