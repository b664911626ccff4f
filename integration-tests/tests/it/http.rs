//! The HTTP side: `/healthz`, `/api/agents`, `/api/agents/{id}/history` and Prometheus
//! `/metrics`, read with a tiny HTTP/1.1 client over `std::net::TcpStream`; then the real
//! tools from Debian's `prometheus` package: `promtool check metrics` on the live exposition,
//! and a real Prometheus (bound to 127.0.0.1, scraping only 127.0.0.1) that answers a query
//! for an agent's CPU.
//!
//! The Prometheus tests fail when the tools are missing (run `make setup`); a developer who
//! cannot install them sets `LANMON_SKIP_PROMETHEUS=1` to leave out those tests only. CI never
//! sets it.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::support::{
    Agent, DEADLINE, LOOPBACK, Server, agent, free_port, is_live, mem_total_bytes, poll,
    proc_stat_cores, seq, status,
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

/// The scrape interval and target in the README's `prometheus.yml`, replaced by the test's.
const README_SCRAPE_INTERVAL: &str = "scrape_interval: 15s";
const README_TARGET: &str = "\"lanmon-server:8081\"";

// ---- A tiny HTTP/1.1 client -------------------------------------------------------------------

/// An HTTP response, body decoded (chunked or not).
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics with the body if it is not.
    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}):\n{}", self.body))
    }
}

/// `GET path` on `addr` (`127.0.0.1:PORT`) with `Connection: close`; reads to EOF.
#[track_caller]
fn get(addr: &str, path: &str) -> Response {
    request("GET", addr, path)
}

/// `method path` on `addr` (`127.0.0.1:PORT`) with `Connection: close`; reads to EOF.
#[track_caller]
fn request(method: &str, addr: &str, path: &str) -> Response {
    assert!(
        addr.starts_with(&format!("{LOOPBACK}:")),
        "tests only talk to {LOOPBACK}, not {addr}"
    );
    let mut stream =
        TcpStream::connect(addr).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    stream
        .set_read_timeout(Some(DEADLINE))
        .unwrap_or_else(|e| panic!("cannot set a read timeout: {e}"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: lanmon-it\r\nAccept: */*\r\n\
         Connection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .unwrap_or_else(|e| panic!("cannot send {method} {path} to {addr}: {e}"));
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: no complete answer: {e}"));
    parse_response(&raw, method == "HEAD").unwrap_or_else(|e| {
        panic!(
            "{method} {path} on {addr}: {e}\n{}",
            String::from_utf8_lossy(&raw)
        )
    })
}

/// Parses a whole HTTP/1.1 response; the answer to a HEAD request has headers only.
fn parse_response(raw: &[u8], head_only: bool) -> Result<Response, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|e| format!("head not UTF-8: {e}"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| format!("bad header line {l:?}"))
        })
        .collect::<Result<_, _>>()?;
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if head_only {
        if !body.is_empty() {
            return Err(format!("{} bytes of body after HEAD", body.len()));
        }
    } else if chunked {
        body = dechunk(&body)?;
    } else if let Some((_, len)) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        let len: usize = len
            .parse()
            .map_err(|e| format!("content-length {len:?}: {e}"))?;
        if body.len() != len {
            return Err(format!("content-length {len} but {} bytes", body.len()));
        }
    }
    let body = String::from_utf8(body).map_err(|e| format!("body not UTF-8: {e}"))?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Decodes a chunked body (RFC 9112 §7.1), without trailers.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line not terminated")?;
        let size_line = std::str::from_utf8(&rest[..eol]).map_err(|e| e.to_string())?;
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|e| format!("chunk size {size_line:?}: {e}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or("chunk shorter than its size")?;
        out.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or("chunk not followed by CRLF")?;
    }
}

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
    let snap = server.wait_for(DEADLINE, |s| s["server"]["http"].is_string());
    let addr = snap["server"]["http"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        addr.starts_with(&format!("{LOOPBACK}:")) && !addr.ends_with(":0"),
        "server.http should be the bound loopback address: {snap}"
    );
    (server, addr)
}

/// Waits until `name` is live with cpu and memory and at least `min_seq` samples; returns its
/// agent id.
#[track_caller]
fn live_agent_id(server: &Server, name: &str, min_seq: u64) -> String {
    let snap = server.wait_for(DEADLINE, |s| {
        is_live(s, name)
            && seq(s, name) >= min_seq
            && agent(s, name).is_some_and(|a| !a["cpu"].is_null() && !a["memory"].is_null())
    });
    agent(&snap, name)
        .and_then(|a| a["id"].as_str())
        .unwrap_or_else(|| panic!("agent {name} has no id: {snap}"))
        .to_string()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
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
    let body = r.json();
    assert_eq!(body["status"], "ok", "{body}");
    assert!(body["version"].is_string(), "{body}");
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
    let _agent = Agent::start(server.port(), "api-1");
    let id = live_agent_id(&server, "api-1", 1);
    let snap = server.wait_for(DEADLINE, |_| true);

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

    let a = agent(&api, "api-1").unwrap_or_else(|| panic!("api-1 not listed: {api}"));
    let in_snapshot = agent(&snap, "api-1").unwrap_or_else(|| panic!("{snap}"));
    assert_eq!(
        keys(a),
        keys(in_snapshot),
        "agent entry\napi: {a}\nsnapshot: {in_snapshot}"
    );
    assert_eq!(a["id"], id.as_str(), "{a}");
    assert_eq!(status(&api, "api-1"), Some("live"), "{a}");
    assert!(a["cpu"]["total"].is_number(), "{a}");
    assert_eq!(
        a["memory"]["total"].as_u64(),
        Some(mem_total_bytes()),
        "{a}"
    );
    assert_eq!(api["summary"]["agents"], 1, "{api}");
    assert_eq!(api["summary"]["live"], 1, "{api}");
}

/// `GET /api/agents/{id}/history` returns points with CPU and memory avg/min/max
/// (min ≤ avg ≤ max) covering the samples a streaming agent sent.
#[test]
fn history_has_avg_min_max_for_a_streaming_agent() {
    let (server, addr) = http_server(&[]);
    let _agent = Agent::start(server.port(), "hist-1");
    let id = live_agent_id(&server, "hist-1", 5);

    let to = now_ms() + 1_000;
    let from = to - 60_000;
    let r = get(
        &addr,
        &format!("/api/agents/{id}/history?from={from}&to={to}&step=1000"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.json();
    let points = body["points"]
        .as_array()
        .unwrap_or_else(|| panic!("no points array: {body}"));
    assert!(
        !points.is_empty(),
        "no points for a streaming agent: {body}"
    );
    let mut samples = 0;
    for p in points {
        let ts = p["ts_ms"].as_u64().unwrap_or_else(|| panic!("ts_ms: {p}"));
        assert!(
            (from..to).contains(&ts),
            "point outside [{from}, {to}): {p}"
        );
        samples += p["n"].as_u64().unwrap_or_else(|| panic!("n: {p}"));
        for series in ["cpu", "mem_used"] {
            let stat = &p[series];
            let [avg, min, max] = ["avg", "min", "max"].map(|k| {
                stat[k]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{series}.{k}: {p}"))
            });
            assert!(min <= avg && avg <= max, "{series}: min ≤ avg ≤ max: {p}");
        }
        assert!(
            (0.0..=100.0).contains(&p["cpu"]["max"].as_f64().unwrap_or(-1.0)),
            "cpu is a percentage: {p}"
        );
    }
    assert!(samples >= 5, "at least the 5 samples seen live: {body}");
}

/// Bad `from`/`to`/`step` get a 400 with an `error` message naming the problem; an unknown
/// agent id gets a 404 with an `error` message.
#[test]
fn history_rejects_bad_parameters_and_unknown_agents() {
    let (server, addr) = http_server(&[]);
    let _agent = Agent::start(server.port(), "hist-bad");
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
        let error = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(
            error.contains(mentions),
            "?{query}: the error should mention {mentions:?}: {error:?}"
        );
    }

    let r = get(&addr, "/api/agents/no-such-agent/history");
    assert_eq!(r.status, 404, "{r:?}");
    let error = r.json()["error"].as_str().unwrap_or_default().to_string();
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
    let mut victim = Agent::start(server.port(), "prom-1");
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
    server.wait_for(DEADLINE, |s| status(s, "prom-1") == Some("offline"));
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
    let _agent = Agent::start(server.port(), "few-series");
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
    let mut streaming = Agent::start(server.port(), "lint-me");
    let id = live_agent_id(&server, "lint-me", 1);
    let text = metrics(&addr);
    assert!(!agent_lines(&text, "lanmon_cpu_core_usage_ratio", &id).is_empty());
    promtool_check_metrics(&promtool, &text);

    streaming.kill();
    server.wait_for(DEADLINE, |s| status(s, "lint-me") == Some("offline"));
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
    dir: PathBuf,
    addr: String,
}

impl Prometheus {
    /// Starts `prometheus` with `config` (a `prometheus.yml`), its storage in a new temporary
    /// directory, listening on a free port of 127.0.0.1.
    #[track_caller]
    fn start(prometheus: &Path, config: &str) -> Prometheus {
        let dir = std::env::temp_dir().join(format!(
            "lanmon-it-prometheus-{}-{}",
            std::process::id(),
            now_ms()
        ));
        std::fs::create_dir_all(dir.join("data"))
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", config_file.display()));
        let log = File::create(dir.join("prometheus.log"))
            .unwrap_or_else(|e| panic!("cannot create the log file: {e}"));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone the log file: {e}"));
        let addr = format!("{LOOPBACK}:{}", free_port());
        let spawned = Command::new(prometheus)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn();
        match spawned {
            Ok(child) => Prometheus { child, dir, addr },
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                panic!("cannot start {}: {e}", prometheus.display());
            }
        }
    }

    /// What Prometheus logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Runs the instant query `promql` against the HTTP API; `None` while Prometheus is not
    /// up yet.
    fn query(&self, promql: &str) -> Option<Value> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let mut stream = TcpStream::connect(&self.addr).ok()?;
        drop(stream.set_read_timeout(Some(DEADLINE)));
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        stream.write_all(request.as_bytes()).ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).ok()?;
        let r = parse_response(&raw, false).ok()?;
        (r.status == 200).then(|| r.json())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A real Prometheus, configured with the README's `prometheus.yml` (1 s scrapes of the
/// server on 127.0.0.1), scrapes `/metrics` and answers a query for the agent's CPU ratio
/// with the labels `agent`, `job` and `instance`; once the agent is killed it sees `up 0`
/// and no CPU series.
#[test]
fn real_prometheus_scrapes_the_server() {
    let (Some(prometheus), Some(promtool)) =
        (prometheus_tool("prometheus"), prometheus_tool("promtool"))
    else {
        return;
    };
    let (server, addr) = http_server(&[]);
    let mut streaming = Agent::start(server.port(), "scraped");
    let id = live_agent_id(&server, "scraped", 1);

    let readme = readme_prometheus_yml();
    assert!(
        readme.contains(README_SCRAPE_INTERVAL) && readme.contains(README_TARGET),
        "the README's prometheus.yml should contain {README_SCRAPE_INTERVAL:?} and \
         {README_TARGET:?} (the test replaces them):\n{readme}"
    );
    let config = readme
        .replace(README_SCRAPE_INTERVAL, "scrape_interval: 1s")
        .replace(README_TARGET, &format!("\"{addr}\""));
    let prom = Prometheus::start(&prometheus, &config);
    let config_file = prom.dir.join("prometheus.yml");
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

    let up_query = format!("lanmon_agent_up{{agent=\"{id}\"}}");
    let up = prom.query(&up_query);
    let up = up
        .as_ref()
        .map(|a| a["data"]["result"][0]["value"][1].clone());
    assert_eq!(up, Some(Value::from("1")), "lanmon_agent_up via Prometheus");

    // Offline: `up` turns 0 and, with no explicit timestamps, Prometheus marks the dropped
    // CPU series stale at the next scrape, so the query comes back empty.
    streaming.kill();
    server.wait_for(DEADLINE, |s| status(s, "scraped") == Some("offline"));
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
