//! The HTTP side: `/healthz`, `/api/agents`, `/api/agents/{id}/history` and Prometheus
//! `/metrics`, read with a tiny HTTP/1.1 client (`support::http`); then the real
//! tools from Debian's `prometheus` package: `promtool check metrics` on the live exposition,
//! and a real Prometheus (bound to 127.0.0.1, scraping only 127.0.0.1) that answers a query
//! for an agent's CPU.
//!
//! The Prometheus tests fail when the tools are missing (run `make setup`); a developer who
//! cannot install them sets `LANMON_SKIP_PROMETHEUS=1` to leave out those tests only. CI never
//! sets it.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lanmon::snapshot::{Snapshot, Status};
use lanmon::util::now_ms;
use serde_json::Value;

use crate::support::http::{ApiError, Health, History, get, request, try_request};
use crate::support::{
    Agent, DEADLINE, LOOPBACK, Server, SnapshotExt, TempDir, ToJson, mem_total_bytes, poll,
    proc_stat_cores,
};

/// The Content-Type Prometheus' text format 0.0.4 requires (parameters may follow).
const EXPOSITION_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Set to `1` to leave out the tests that need Debian's `prometheus` package.
const SKIP_PROMETHEUS_ENV: &str = "LANMON_SKIP_PROMETHEUS";

/// How long a real Prometheus may take to start, scrape and answer: it is slow to start on a
/// busy 2-core CI machine.
const PROMETHEUS_DEADLINE: Duration = Duration::from_secs(60);

/// Pause between two queries to Prometheus' API.
const PROMETHEUS_POLL: Duration = Duration::from_millis(250);

/// The scrape interval, target and credentials file in the README's `prometheus.yml`,
/// replaced by the test's.
const README_SCRAPE_INTERVAL: &str = "scrape_interval: 15s";
const README_TARGET: &str = "\"lanmon-server:8081\"";
const README_CREDENTIALS: &str = "/etc/prometheus/lanmon-metrics.token";

/// Percent-encodes a query-string value.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

// ---- Server and agents ------------------------------------------------------------------------

/// A server with HTTP on an ephemeral loopback port (plus `extra` flags), and that address.
#[track_caller]
fn http_server(extra: &[&str]) -> (Server, String) {
    let mut args = vec!["--http", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let server = Server::start_with(0, &args);
    let snap = server.wait_for(DEADLINE, |s| s.server.http.is_some());
    let addr = server.http_addr().to_string();
    assert!(
        addr.starts_with(&format!("{LOOPBACK}:")) && !addr.ends_with(":0"),
        "server.http should be the bound loopback address: {}",
        snap.to_json()
    );
    (server, addr)
}

/// Waits until `name` is live with cpu and memory and at least `min_seq` samples; returns its
/// agent id.
#[track_caller]
fn live_agent_id(server: &Server, name: &str, min_seq: u64) -> String {
    let snap = server.wait_for(DEADLINE, |s| {
        s.is_live(name)
            && s.seq(name) >= min_seq
            && s.find(name)
                .is_some_and(|a| a.cpu.is_some() && a.memory.is_some())
    });
    snap.agent(name).id.clone()
}

/// The keys of a JSON object, sorted.
fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    k.sort_unstable();
    k
}

// ---- JSON API ---------------------------------------------------------------------------------

/// `GET /healthz` answers 200 with a JSON `{"status":"ok"}` body.
#[test]
fn healthz_answers_200_json() {
    let (_server, addr) = http_server(&[]);
    let r = get(&addr, "/healthz");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.header("content-type")
            .is_some_and(|ct| ct.starts_with("application/json")),
        "{r:?}"
    );
    let body: Health = r.parse();
    assert_eq!(body.status, "ok", "{body:?}");
    assert_eq!(body.version, lanmon::VERSION, "{body:?}");
}

/// HEAD answers like GET, headers only: what uptime monitors and `curl -I` send.
#[test]
fn head_answers_like_get_without_a_body() {
    let (_server, addr) = http_server(&[]);
    for path in ["/", "/healthz", "/api/agents", "/metrics"] {
        let got = get(&addr, path);
        let head = request("HEAD", &addr, path);
        assert_eq!((head.status, got.status), (200, 200), "{path}: {head:?}");
        assert_eq!(
            head.header("content-type"),
            got.header("content-type"),
            "{path}"
        );
        assert!(head.body.is_empty(), "{path}: {head:?}");
    }
}

/// `GET /api/agents` has the shape of the JSON snapshot (same keys at the top, in `summary`
/// and per agent) and lists a streaming agent as live with its metrics.
#[test]
fn api_agents_is_the_snapshot_with_a_live_agent() {
    let (server, addr) = http_server(&[]);
    let _agent = Agent::start(&server.join(), "api-1");
    let id = live_agent_id(&server, "api-1", 1);
    // The snapshot's JSON, to compare the shapes.
    let snap = server.wait_for_report(DEADLINE, |_| true).raw;

    let r = get(&addr, "/api/agents");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.header("content-type")
            .is_some_and(|ct| ct.starts_with("application/json")),
        "{r:?}"
    );
    let api = r.json();
    assert_eq!(
        keys(&api),
        keys(&snap),
        "top level\napi: {api}\nsnapshot: {snap}"
    );
    assert_eq!(keys(&api["summary"]), keys(&snap["summary"]), "{api}");
    assert_eq!(keys(&api["server"]), keys(&snap["server"]), "{api}");
    assert_eq!(api["server"]["http"], addr.as_str(), "{api}");
    assert_eq!(api["server"]["listen"], snap["server"]["listen"], "{api}");

    let entry = |s: &Value| {
        let agents = s["agents"].as_array().cloned().unwrap_or_default();
        agents
            .into_iter()
            .find(|a| a["name"] == "api-1")
            .unwrap_or_else(|| panic!("api-1 not listed: {s}"))
    };
    let (in_api, in_snapshot) = (entry(&api), entry(&snap));
    assert_eq!(
        keys(&in_api),
        keys(&in_snapshot),
        "agent entry\napi: {in_api}\nsnapshot: {in_snapshot}"
    );

    // And it is a snapshot: the same type, with the live agent.
    let api: Snapshot = r.parse();
    let a = api.agent("api-1");
    let shown = a.to_json();
    assert_eq!(a.id, id, "{shown}");
    assert_eq!(api.status("api-1"), Some(Status::Live), "{shown}");
    assert!(a.cpu.is_some(), "{shown}");
    assert_eq!(
        a.memory.map(|m| m.total),
        Some(mem_total_bytes()),
        "{shown}"
    );
    assert_eq!(api.summary.agents, 1, "{}", api.to_json());
    assert_eq!(api.summary.live, 1, "{}", api.to_json());
}

/// `GET /api/agents/{id}/history` returns points with CPU and memory avg/min/max
/// (min ≤ avg ≤ max) covering the samples a streaming agent sent.
#[test]
fn history_has_avg_min_max_for_a_streaming_agent() {
    let (server, addr) = http_server(&[]);
    let _agent = Agent::start(&server.join(), "hist-1");
    let id = live_agent_id(&server, "hist-1", 5);

    let to = now_ms() + 1_000;
    let from = to - 60_000;
    let r = get(
        &addr,
        &format!("/api/agents/{id}/history?from={from}&to={to}&step=1000"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let body: History = r.parse();
    assert!(
        !body.points.is_empty(),
        "no points for a streaming agent: {body:?}"
    );
    for p in &body.points {
        assert!(
            (from..to).contains(&p.ts_ms),
            "point outside [{from}, {to}): {p:?}"
        );
        for (series, stat) in [("cpu", p.cpu), ("mem_used", p.mem_used)] {
            let stat = stat.unwrap_or_else(|| panic!("no {series}: {p:?}"));
            assert!(
                stat.min <= stat.avg && stat.avg <= stat.max,
                "{series}: min ≤ avg ≤ max: {p:?}"
            );
        }
        assert!(
            p.cpu.is_some_and(|cpu| (0.0..=100.0).contains(&cpu.max)),
            "cpu is a percentage: {p:?}"
        );
    }
    let samples = body.samples();
    assert!(samples >= 5, "at least the 5 samples seen live: {body:?}");
}

/// Without a store (`--no-store`), the in-memory history still has a real agent's load and
/// fullest filesystem when asked for them (`series=load,fs`), and names no filesystem (it keeps
/// no per-filesystem history).
#[test]
fn in_memory_history_has_load_and_the_fullest_filesystem() {
    let (server, addr) = http_server(&[]);
    let _agent = Agent::start(&server.join(), "hist-machine");
    let id = live_agent_id(&server, "hist-machine", 5);
    let to = now_ms() + 1_000;
    let from = to - 60_000;
    let r = get(
        &addr,
        &format!("/api/agents/{id}/history?from={from}&to={to}&step=1000&series=load,fs"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.json();
    assert_eq!(body["source"], "memory", "{body}");
    assert_eq!(body["filesystems"], serde_json::json!([]), "{body}");
    let points = body["points"].as_array().cloned().unwrap_or_default();
    assert!(!points.is_empty(), "{body}");
    for p in &points {
        let load = p["load1"]["avg"].as_f64();
        let fs = p["fs_used_pct"]["max"].as_f64();
        assert!(load.is_some_and(|l| l >= 0.0), "no load: {p}");
        assert!(
            fs.is_some_and(|f| (0.0..=100.0).contains(&f)),
            "no fullest filesystem: {p}"
        );
        assert!(p.get("cpu").is_none() && p.get("fs").is_none(), "{p}");
    }
}

/// Bad `from`/`to`/`step` get a 400 with an `error` message naming the problem; an unknown
/// agent id gets a 404 with an `error` message.
#[test]
fn history_rejects_bad_parameters_and_unknown_agents() {
    let (server, addr) = http_server(&[]);
    let _agent = Agent::start(&server.join(), "hist-bad");
    let id = live_agent_id(&server, "hist-bad", 1);

    for (query, mentions) in [
        ("from=yesterday", "from"),
        ("to=-5", "to"),
        ("step=0", "step"),
        ("step=1.5", "step"),
        ("from=2000&to=1000", "before"),
        ("from=0&to=100000000&step=1", "at most"),
    ] {
        let r = get(&addr, &format!("/api/agents/{id}/history?{query}"));
        assert_eq!(r.status, 400, "?{query}: {r:?}");
        let error = r.parse::<ApiError>().error;
        assert!(
            error.contains(mentions),
            "?{query}: the error should mention {mentions:?}: {error:?}"
        );
    }

    let r = get(&addr, "/api/agents/no-such-agent/history");
    assert_eq!(r.status, 404, "{r:?}");
    let error = r.parse::<ApiError>().error;
    assert!(error.contains("no-such-agent"), "{error:?}");
}

// ---- /metrics ---------------------------------------------------------------------------------

/// `GET /metrics`; checks the status and the exposition's Content-Type.
#[track_caller]
fn metrics(addr: &str) -> String {
    let r = get(addr, "/metrics");
    assert_eq!(r.status, 200, "{r:?}");
    let ct = r.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with(EXPOSITION_CONTENT_TYPE),
        "Content-Type {ct:?} should start with {EXPOSITION_CONTENT_TYPE:?}"
    );
    r.body
}

/// The value of the sample line `series` (name and labels exactly as exposed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    })
}

/// Sample lines of the metric `name` that carry `agent="id"`.
fn agent_lines<'a>(text: &'a str, name: &str, id: &str) -> Vec<&'a str> {
    let label = format!("agent=\"{id}\"");
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&label))
        .collect()
}

/// `/metrics` has the right Content-Type and every series of a live agent in base units;
/// once the agent is killed it keeps `lanmon_agent_up 0` and its info but no CPU or memory
/// series.
#[test]
fn metrics_follow_an_agent_from_live_to_killed() {
    let (server, addr) = http_server(&[]);
    let mut victim = Agent::start(&server.join(), "prom-1");
    let id = live_agent_id(&server, "prom-1", 1);
    let text = metrics(&addr);

    let one = |name: &str| format!("{name}{{agent=\"{id}\"}}");
    assert_eq!(sample(&text, &one("lanmon_agent_up")), Some(1.0), "{text}");
    let cpu = sample(&text, &one("lanmon_cpu_usage_ratio"))
        .unwrap_or_else(|| panic!("no lanmon_cpu_usage_ratio for {id}\n{text}"));
    assert!(
        (0.0..=1.0).contains(&cpu),
        "a ratio, not a percentage: {cpu}"
    );
    let cores = proc_stat_cores();
    for core in 0..cores {
        let series = format!("lanmon_cpu_core_usage_ratio{{agent=\"{id}\",cpu=\"{core}\"}}");
        let v = sample(&text, &series).unwrap_or_else(|| panic!("no {series}\n{text}"));
        assert!((0.0..=1.0).contains(&v), "{series} {v}");
    }
    assert_eq!(
        agent_lines(&text, "lanmon_cpu_core_usage_ratio", &id).len(),
        cores,
        "one per-core series per core\n{text}"
    );
    let total = sample(&text, &one("lanmon_memory_total_bytes"));
    assert_eq!(total, Some(mem_total_bytes() as f64), "{text}");
    let used = sample(&text, &one("lanmon_memory_used_bytes"))
        .unwrap_or_else(|| panic!("no lanmon_memory_used_bytes\n{text}"));
    assert!(used > 0.0 && used <= mem_total_bytes() as f64, "{used}");
    let last = sample(&text, &one("lanmon_agent_last_sample_timestamp_seconds"))
        .unwrap_or_else(|| panic!("no last-sample timestamp\n{text}"));
    let now = now_ms() as f64 / 1000.0;
    assert!(
        (now - 60.0..=now + 1.0).contains(&last),
        "seconds, not ms: {last}"
    );
    let info = agent_lines(&text, "lanmon_agent_info", &id);
    assert!(
        info.len() == 1 && info[0].contains("name=\"prom-1\"") && info[0].ends_with(" 1"),
        "{info:?}"
    );
    assert_eq!(
        sample(&text, "lanmon_agents{status=\"live\"}"),
        Some(1.0),
        "{text}"
    );
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        // After the labels (or the bare name) comes the value and nothing else.
        let tail = l.rsplit_once('}').map_or(l, |(_, t)| t);
        let fields = tail.split_whitespace().count();
        assert_eq!(
            fields,
            if tail == l { 2 } else { 1 },
            "explicit timestamp? {l}"
        );
    }

    victim.kill();
    server.wait_for(DEADLINE, |s| s.status("prom-1") == Some(Status::Offline));
    let text = metrics(&addr);
    assert_eq!(sample(&text, &one("lanmon_agent_up")), Some(0.0), "{text}");
    assert_eq!(
        agent_lines(&text, "lanmon_agent_info", &id).len(),
        1,
        "{text}"
    );
    for name in [
        "lanmon_cpu_usage_ratio",
        "lanmon_cpu_core_usage_ratio",
        "lanmon_memory_total_bytes",
        "lanmon_memory_used_bytes",
        "lanmon_memory_free_bytes",
        "lanmon_memory_available_bytes",
    ] {
        assert!(
            agent_lines(&text, name, &id).is_empty(),
            "offline agent still has {name}\n{text}"
        );
    }
    assert_eq!(
        sample(&text, "lanmon_agents{status=\"offline\"}"),
        Some(1.0),
        "{text}"
    );
}

/// With `--no-per-core-metrics` there is no per-core series at all, and the whole-machine CPU
/// series stays.
#[test]
fn no_per_core_metrics_flag_drops_per_core_series() {
    let (server, addr) = http_server(&["--no-per-core-metrics"]);
    let _agent = Agent::start(&server.join(), "few-series");
    let id = live_agent_id(&server, "few-series", 1);
    let text = metrics(&addr);
    assert!(
        !text.contains("lanmon_cpu_core_usage_ratio"),
        "per-core series despite --no-per-core-metrics\n{text}"
    );
    assert!(
        sample(&text, &format!("lanmon_cpu_usage_ratio{{agent=\"{id}\"}}")).is_some(),
        "{text}"
    );
}

// ---- The real tools ---------------------------------------------------------------------------

/// The path of `tool` (`promtool`, `prometheus`) from Debian's `prometheus` package; `None`
/// only when `LANMON_SKIP_PROMETHEUS=1`. Panics with the fix when it is missing.
#[track_caller]
fn prometheus_tool(tool: &str) -> Option<PathBuf> {
    if std::env::var(SKIP_PROMETHEUS_ENV).is_ok_and(|v| v == "1") {
        eprintln!("{SKIP_PROMETHEUS_ENV}=1: not running the `{tool}` test");
        return None;
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    });
    match found {
        Some(path) => Some(path),
        None => panic!(
            "`{tool}` not found on PATH: run `make setup` (as root it installs Debian's \
             `prometheus` package), or set {SKIP_PROMETHEUS_ENV}=1 to leave out this test"
        ),
    }
}

/// Runs `promtool check metrics` on `text`; panics with promtool's output unless it passes
/// with nothing to say.
#[track_caller]
fn promtool_check_metrics(promtool: &Path, text: &str) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("cannot feed promtool: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("promtool did not finish: {e}"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {}\n{said}\n--- exposition ---\n{text}",
        out.status
    );
}

/// `promtool check metrics` finds no error and no lint problem in the live exposition, with
/// a live agent (per-core series included) and again once that agent is offline.
#[test]
fn promtool_check_metrics_passes() {
    let Some(promtool) = prometheus_tool("promtool") else {
        return;
    };
    let (server, addr) = http_server(&[]);
    let mut streaming = Agent::start(&server.join(), "lint-me");
    let id = live_agent_id(&server, "lint-me", 1);
    let text = metrics(&addr);
    assert!(!agent_lines(&text, "lanmon_cpu_core_usage_ratio", &id).is_empty());
    promtool_check_metrics(&promtool, &text);

    streaming.kill();
    server.wait_for(DEADLINE, |s| s.status("lint-me") == Some(Status::Offline));
    promtool_check_metrics(&promtool, &metrics(&addr));
}

/// The README's `prometheus.yml` snippet (the first ```yaml block with `job_name: lanmon`).
fn readme_prometheus_yml() -> String {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&readme)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", readme.display()));
    text.split("```yaml\n")
        .skip(1)
        .filter_map(|block| block.split_once("```").map(|(yml, _)| yml))
        .find(|yml| yml.contains("job_name: lanmon"))
        .unwrap_or_else(|| panic!("no ```yaml block with `job_name: lanmon` in README.md"))
        .to_string()
}

/// A real Prometheus in a temporary directory; on drop it is killed and the directory
/// removed, also when the test fails.
struct Prometheus {
    child: Child,
    dir: TempDir,
    addr: String,
}

impl Prometheus {
    /// Starts `prometheus` with `config` (a `prometheus.yml`), its storage in a new temporary
    /// directory, listening on an ephemeral port of 127.0.0.1 (`127.0.0.1:0`); waits until it
    /// logs the address it listens on.
    #[track_caller]
    fn start(prometheus: &Path, config: &str) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", data.display()));
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", config_file.display()));
        let log = File::create(dir.path().join("prometheus.log"))
            .unwrap_or_else(|e| panic!("cannot create the log file: {e}"));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone the log file: {e}"));
        let spawned = Command::new(prometheus)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={LOOPBACK}:0"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn();
        let mut prom = match spawned {
            Ok(child) => Prometheus {
                child,
                dir,
                addr: String::new(),
            },
            Err(e) => panic!("cannot start {}: {e}", prometheus.display()),
        };
        let mut exited = None;
        let addr = poll(PROMETHEUS_DEADLINE, || {
            if let Ok(Some(status)) = prom.child.try_wait() {
                exited = Some(status);
                return Some(None);
            }
            listening_on(&prom.log()).map(Some)
        });
        match addr {
            Some(Some(addr)) => prom.addr = addr,
            _ => panic!(
                "Prometheus did not say where it listens within {PROMETHEUS_DEADLINE:?} \
                 (exited: {exited:?})\n--- prometheus log ---\n{}",
                prom.log()
            ),
        }
        prom
    }

    /// What Prometheus logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Runs the instant query `promql` against the HTTP API; `None` while Prometheus is not
    /// up yet.
    fn query(&self, promql: &str) -> Option<Value> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let r = try_request("GET", &self.addr, &path).ok()?;
        (r.status == 200).then(|| r.json())
    }
}

/// The address in Prometheus' `msg="Listening on" address=127.0.0.1:PORT` log line (the real
/// port when started on port 0).
fn listening_on(log: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains("msg=\"Listening on\""))?;
    let addr = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("address="))?;
    (addr.starts_with(&format!("{LOOPBACK}:")) && !addr.ends_with(":0")).then(|| addr.to_string())
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real Prometheus, configured with the README's `prometheus.yml` (1 s scrapes of the
/// server on 127.0.0.1, `authorization.credentials_file` a copy of the server's
/// `metrics.token`), scrapes `/metrics` and answers a query for the agent's CPU ratio with the
/// labels `agent`, `job` and `instance`, while a job without the token is refused (401, `up`
/// 0); once the agent is killed it sees `up 0` and no CPU series.
#[test]
fn real_prometheus_scrapes_the_server() {
    let (Some(prometheus), Some(promtool)) =
        (prometheus_tool("prometheus"), prometheus_tool("promtool"))
    else {
        return;
    };
    let (server, addr) = http_server(&[]);
    let mut streaming = Agent::start(&server.join(), "scraped");
    let id = live_agent_id(&server, "scraped", 1);

    let readme = readme_prometheus_yml();
    assert!(
        readme.contains(README_SCRAPE_INTERVAL)
            && readme.contains(README_TARGET)
            && readme.contains(README_CREDENTIALS),
        "the README's prometheus.yml should contain {README_SCRAPE_INTERVAL:?}, \
         {README_TARGET:?} and {README_CREDENTIALS:?} (the test replaces them):\n{readme}"
    );
    // The copy Prometheus reads, as the README says: the server's metrics.token.
    let secrets = TempDir::new("prometheus-secrets");
    let credentials = secrets.path().join("lanmon-metrics.token");
    std::fs::copy(server.home().path().join("metrics.token"), &credentials)
        .unwrap_or_else(|e| panic!("cannot copy metrics.token: {e}"));
    let anonymous_job = format!(
        "  - job_name: lanmon-anonymous\n    static_configs:\n      - targets: [\"{addr}\"]\n"
    );
    let config = readme
        .replace(README_SCRAPE_INTERVAL, "scrape_interval: 1s")
        .replace(README_TARGET, &format!("\"{addr}\""))
        .replace(README_CREDENTIALS, &credentials.to_string_lossy())
        + &anonymous_job;
    let prom = Prometheus::start(&prometheus, &config);
    let config_file = prom.dir.path().join("prometheus.yml");
    let checked = Command::new(&promtool)
        .args(["check", "config"])
        .arg(&config_file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run promtool check config: {e}"));
    assert!(
        checked.status.success(),
        "promtool check config:\n{}{}\n{config}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let promql = format!("lanmon_cpu_usage_ratio{{agent=\"{id}\"}}");
    let mut last = None;
    let found = poll(PROMETHEUS_DEADLINE, || {
        std::thread::sleep(PROMETHEUS_POLL);
        let answer = prom.query(&promql)?;
        let first = answer["data"]["result"].get(0).cloned();
        last = Some(answer);
        first
    });
    let Some(result) = found else {
        panic!(
            "Prometheus did not answer {promql} within {PROMETHEUS_DEADLINE:?}\nlast answer: \
             {last:?}\n--- prometheus log ---\n{}\n--- server stderr ---\n{}",
            prom.log(),
            server.stderr()
        );
    };
    assert_eq!(result["metric"]["agent"], id.as_str(), "{result}");
    assert_eq!(result["metric"]["job"], "lanmon", "{result}");
    assert_eq!(result["metric"]["instance"], addr.as_str(), "{result}");
    let value: f64 = result["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no value: {result}"));
    assert!((0.0..=1.0).contains(&value), "{result}");

    // The job without the token is refused: its `up` is 0 (Prometheus' own series).
    let refused = poll(PROMETHEUS_DEADLINE, || {
        std::thread::sleep(PROMETHEUS_POLL);
        let answer = prom.query("up{job=\"lanmon-anonymous\"}")?;
        let value = answer["data"]["result"][0]["value"][1]
            .as_str()?
            .to_string();
        (value == "0").then_some(())
    });
    assert!(
        refused.is_some(),
        "a scrape without the token was not refused: {:?}",
        prom.query("up")
    );
    let authorized = prom.query("up{job=\"lanmon\"}");
    assert_eq!(
        authorized
            .as_ref()
            .map(|a| a["data"]["result"][0]["value"][1].clone()),
        Some(Value::from("1")),
        "the job with the credentials file: {authorized:?}"
    );

    let up_query = format!("lanmon_agent_up{{agent=\"{id}\"}}");
    let up = prom.query(&up_query);
    let up = up
        .as_ref()
        .map(|a| a["data"]["result"][0]["value"][1].clone());
    assert_eq!(up, Some(Value::from("1")), "lanmon_agent_up via Prometheus");

    // Offline: `up` turns 0 and, with no explicit timestamps, Prometheus marks the dropped
    // CPU series stale at the next scrape, so the query comes back empty.
    streaming.kill();
    server.wait_for(DEADLINE, |s| s.status("scraped") == Some(Status::Offline));
    let gone = poll(PROMETHEUS_DEADLINE, || {
        std::thread::sleep(PROMETHEUS_POLL);
        let up = prom.query(&up_query)?;
        let cpu = prom.query(&promql)?;
        let offline = up["data"]["result"][0]["value"][1] == "0"
            && cpu["data"]["result"].as_array().is_some_and(Vec::is_empty);
        offline.then_some(())
    });
    assert!(
        gone.is_some(),
        "Prometheus still sees the killed agent as up or its CPU series
{:?}
{:?}",
        prom.query(&up_query),
        prom.query(&promql)
    );
}
