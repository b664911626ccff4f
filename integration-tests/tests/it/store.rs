//! Durable history (`--data-dir`): the server's SQLite store across a clean restart and across
//! a SIGKILL in the middle of its writes.
//!
//! What is proved: every sample the server acknowledged is in the database after a crash, the
//! database passes `PRAGMA integrity_check`, a restarted server resumes each agent's run
//! exactly where the disk says (agents replay with no duplicate and no gap), and the history
//! endpoint still serves what the previous server stored. Each test has its own data directory
//! ([`TempDir`]), removed at the end.

use std::collections::BTreeMap;
use std::io::Write;

use lanmon::snapshot::{Snapshot, Status, StoreStatus};
use lanmon::util::now_ms;
use rusqlite::{Connection, OpenFlags};

use crate::support::http::{Health, History, get};
use crate::support::is_root;
use crate::support::{Agent, DEADLINE, Server, SnapshotExt, TempDir, ToJson, poll};

/// Longer than an agent's reconnect backoff after a few failed attempts (it doubles from
/// 0.5 s), plus a connect.
const RECONNECT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(45);

/// Every seq of the agent's run from 1 to `seq` is on the server exactly once.
#[track_caller]
fn assert_whole_run(snapshot: &Snapshot, name: &str, context: &str) {
    let entry = snapshot.agent(name);
    let a = entry.to_json();
    assert_eq!(entry.duplicates, 0, "{context}: {a}");
    assert_eq!(entry.gaps, 0, "{context}: {a}");
    assert_eq!(entry.first_seq, 1, "{context}: {a}");
    assert_eq!(
        entry.received, entry.seq,
        "{context}: every seq from 1 exactly once: {a}"
    );
}

/// The agent's points from the history endpoint, one per second over the last `span_ms`
/// (with the tier they came from).
#[track_caller]
fn history(http: &str, id: &str, span_ms: u64) -> History {
    let now = now_ms();
    let r = get(
        http,
        &format!(
            "/api/agents/{id}/history?from={}&to={}&step=1000",
            now - span_ms,
            now + 1000
        ),
    );
    assert_eq!(r.status, 200, "history of {id}: {r:?}");
    r.parse()
}

/// Opens the dead server's database read-only, as a separate tool would.
#[track_caller]
fn open_db(dir: &TempDir) -> Connection {
    let path = dir.path().join("lanmon.db");
    Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
}

/// `(distinct seqs, min seq, max seq)` of the samples of the agent's current run on disk.
#[track_caller]
fn stored_run(db: &Connection, agent_id: &str, run_id: &str) -> (u64, u64, u64) {
    db.query_row(
        // On disk: moved into `raw`, or still in `raw_log` (the last seconds).
        "SELECT count(DISTINCT s.seq), coalesce(min(s.seq), 0), coalesce(max(s.seq), 0)
         FROM (SELECT run, seq FROM raw UNION ALL SELECT run, seq FROM raw_log) AS s
         JOIN runs ON s.run = runs.key JOIN agents ON runs.agent = agents.key
         WHERE agents.id = ?1 AND runs.run_id = ?2",
        [agent_id, run_id],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        },
    )
    .map(|(n, lo, hi)| {
        let u = |v: i64| u64::try_from(v).unwrap_or(0);
        (u(n), u(lo), u(hi))
    })
    .unwrap_or_else(|e| panic!("cannot read {agent_id}'s samples: {e}"))
}

/// A server stopped with SIGTERM and started again on the same data directory knows every
/// agent at once (last-known state, offline "server restarted"), tells each agent where its
/// run stands, so their replay adds no duplicate and leaves no gap, and still serves the
/// history the first server stored.
#[test]
fn restart_keeps_history_and_agents_resume_exactly_once() {
    let dir = TempDir::new("store-restart");
    let args = ["--data-dir", &dir.arg(), "--http", "127.0.0.1:0"];
    let mut server = Server::start_with(0, &args);
    let port = server.port();
    let agents: Vec<Agent> = ["keep-1", "keep-2"]
        .iter()
        .map(|n| Agent::start(&server.join(), n))
        .collect();
    let names: Vec<&str> = agents.iter().map(Agent::name).collect();
    let before = server.wait_for(DEADLINE, |s| {
        names
            .iter()
            .all(|n| s.is_live(n) && s.find(n).and_then(|a| a.stored_seq) >= Some(5))
    });
    let ids: BTreeMap<&str, String> = names
        .iter()
        .map(|n| (*n, before.agent(n).id.clone()))
        .collect();
    let one_minute = history(server.http_addr(), &ids["keep-1"], 60_000);
    let stored_before = one_minute.samples();
    assert_eq!(
        one_minute.source, "raw",
        "a one-minute range comes from the raw tier"
    );
    assert!(
        stored_before >= 5,
        "history before the restart: {stored_before} samples"
    );

    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(DEADLINE).success(), "{}", server.stderr());
    let last = server.final_snapshot(DEADLINE);

    let started = std::time::Instant::now();
    let reborn = Server::start_with(port, &args);
    let restarted_in = started.elapsed();
    let first = reborn.wait_for(DEADLINE, |_| true);
    for name in &names {
        let a = first
            .find(name)
            .unwrap_or_else(|| panic!("{name} not restored from the store: {}", first.to_json()));
        let shown = a.to_json();
        // An agent may already be back by the first report; if not, it shows why it is away.
        assert!(
            a.status == Status::Live || a.offline_reason.as_deref() == Some("server restarted"),
            "{name}: {shown}"
        );
        assert!(
            a.memory.is_some(),
            "{name}: last-known sample kept: {shown}"
        );
        assert!(
            first.seq(name) >= last.seq(name),
            "{name}: {shown}\nbefore: {}",
            last.to_json()
        );
    }
    eprintln!(
        "restart with {} agents took {restarted_in:?} to the first snapshot",
        names.len()
    );

    let at_restart = last.seqs(&names);
    let after = reborn.wait_for(RECONNECT_DEADLINE, |s| {
        s.all_live_and_advanced_by(&at_restart, 5)
    });
    for name in &names {
        assert_whole_run(&after, name, "after the restart");
    }
    // The snapshot runs ahead of the disk by up to one commit batch: poll the history.
    let http = reborn.http_addr();
    let read = || history(http, &ids["keep-1"], 120_000);
    let stored_after = poll(DEADLINE, || {
        let h = read();
        (h.samples() >= stored_before + 5).then_some(h)
    })
    .unwrap_or_else(read);
    assert!(
        stored_after.samples() >= stored_before + 5,
        "the new server serves the old points and the new ones: {stored_before} then \
         {}: {:?}",
        stored_after.samples(),
        stored_after.points
    );
    // The minute tier has what the first server stored (written at its shutdown), with the
    // per-core breakdown.
    let now = now_ms();
    let r = get(
        http,
        &format!(
            "/api/agents/{}/history?from={}&to={}&step=60000",
            ids["keep-1"],
            now - 600_000,
            now + 60_000
        ),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let minutes: History = r.parse();
    assert_eq!(minutes.source, "1m", "{minutes:?}");
    let rolled = minutes.samples();
    assert!(
        rolled >= stored_before,
        "{rolled} < {stored_before}: {minutes:?}"
    );
    let cores = after.find("keep-1").map(|a| a.cores as usize);
    assert!(
        minutes
            .points
            .iter()
            .all(|p| Some(p.cores.len()) == cores && p.cores.first().is_some_and(Option::is_some)),
        "per-core avg/min/max for {cores:?} cores in every minute: {minutes:?}"
    );
    assert_eq!(get(http, "/api/agents/nobody/history").status, 404);
    let r = get(
        http,
        &format!("/api/agents/{}/history?step=0", ids["keep-1"]),
    );
    assert_eq!(r.status, 400);
}

/// The 1-minute load average now, from `/proc/loadavg`.
fn loadavg() -> f64 {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("cannot read /proc/loadavg: {text:?}"))
}

/// `(avg, min, max)` of a stat in a history point (`null` → `None`).
fn stat(v: &serde_json::Value) -> Option<(f64, f64, f64)> {
    Some((v["avg"].as_f64()?, v["min"].as_f64()?, v["max"].as_f64()?))
}

/// The history API serves a real agent's whole machine from the store: with `series=` its
/// load (as `/proc/loadavg` has it), swap, the fullest filesystem and each filesystem by name
/// (as the agent reports them), and network (its own loopback traffic) and disk rates; without
/// `series` the answer has exactly the fields it always had. After a restart, before the agent
/// is back, the snapshot shows the agent's whole machine from the last sample stored.
#[test]
fn history_serves_the_whole_machine_and_a_restart_shows_it() {
    let dir = TempDir::new("store-machine");
    let args = ["--data-dir", &dir.arg(), "--http", "127.0.0.1:0"];
    let mut server = Server::start_with(0, &args);
    let port = server.port().to_string();
    let token = server.token();
    // Loopback is the only interface in the test's namespace: count it.
    let mut agent = Agent::start_with(
        "machine-1",
        &[
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--join",
            &token,
            "--net-interfaces",
            "lo",
        ],
    );
    let snap = server.wait_for(DEADLINE, |s| {
        s.find("machine-1").is_some_and(|a| {
            a.stored_seq >= Some(10) && a.host.net_rates().is_some_and(|(rx, _)| rx > 0.0)
        })
    });
    let a = snap.agent("machine-1");
    let id = a.id.clone();
    let http = server.http_addr().to_string();
    let sent_mounts: Vec<String> = a
        .host
        .filesystems
        .iter()
        .flatten()
        .map(|f| f.mount.clone())
        .collect();
    assert!(!sent_mounts.is_empty(), "no filesystems: {}", a.to_json());
    let has_disks = a.host.disks.as_ref().is_some_and(|d| !d.is_empty());

    let query = |series: &str| {
        let now = now_ms();
        format!(
            "/api/agents/{id}/history?from={}&to={}&step=1000{series}",
            now - 60_000,
            now + 1000
        )
    };
    let before = loadavg();
    let r = get(&http, &query("&series=load,swap,fs,net,disk"));
    let after = loadavg();
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.json();
    assert_eq!(body["source"], "raw", "{body}");
    assert_eq!(
        body["series"],
        serde_json::json!(["load", "swap", "fs", "net", "disk"]),
        "{body}"
    );
    let mounts: Vec<&str> = body["filesystems"]
        .as_array()
        .unwrap_or_else(|| panic!("no filesystems list: {body}"))
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    assert!(
        !mounts.is_empty() && mounts.iter().all(|m| sent_mounts.iter().any(|s| s == m)),
        "history names {mounts:?}, the agent sends {sent_mounts:?}"
    );
    let points = body["points"].as_array().cloned().unwrap_or_default();
    assert!(points.len() >= 2, "{body}");
    let mut net = 0;
    let mut disk = 0;
    for p in &points {
        let keys: Vec<&str> = p
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert!(
            !keys.contains(&"cpu") && !keys.contains(&"cores"),
            "only the series asked for: {p}"
        );
        let (avg, min, max) = stat(&p["load1"]).unwrap_or_else(|| panic!("no load: {p}"));
        assert!(min <= avg && avg <= max && min >= 0.0, "{p}");
        assert!(stat(&p["swap_used"]).is_some(), "no swap: {p}");
        let fullest = stat(&p["fs_used_pct"]).unwrap_or_else(|| panic!("no fs: {p}"));
        assert!((0.0..=100.0).contains(&fullest.2), "{p}");
        let fs = p["fs"].as_array().cloned().unwrap_or_default();
        assert_eq!(fs.len(), mounts.len(), "one entry per filesystem: {p}");
        for f in &fs {
            let pct = stat(&f["used_pct"]).unwrap_or_else(|| panic!("{p}"));
            assert!(
                pct.2 <= fullest.2 + 0.01,
                "no filesystem fuller than the fullest: {p}"
            );
            assert!(stat(&f["used_bytes"]).is_some_and(|b| b.0 > 0.0), "{p}");
        }
        if stat(&p["net_rx_bytes_per_s"]).is_some_and(|r| r.0 > 0.0)
            && stat(&p["net_tx_bytes_per_s"]).is_some_and(|r| r.0 > 0.0)
        {
            net += 1;
        }
        if stat(&p["disk_read_bytes_per_s"]).is_some()
            && stat(&p["disk_written_bytes_per_s"]).is_some()
        {
            disk += 1;
        }
    }
    assert!(net > 0, "no point with loopback traffic: {body}");
    assert!(!has_disks || disk > 0, "no point with disk rates: {body}");
    // Ground truth: the newest points' load is what /proc/loadavg said around the request
    // (it moves by a fraction per 5 s update).
    let newest = stat(&points[points.len() - 1]["load1"]).map_or(-1.0, |s| s.0);
    let (lo, hi) = (before.min(after) - 1.0, before.max(after) + 1.0);
    assert!(
        (lo..=hi).contains(&newest),
        "load {newest} vs /proc/loadavg {before}..{after}"
    );
    // The root filesystem's bytes used are the agent's figure.
    if let (Some(i), Some(root)) = (
        mounts.iter().position(|m| *m == "/"),
        a.host.filesystems.iter().flatten().find(|f| f.mount == "/"),
    ) {
        let used = stat(&points[0]["fs"][i]["used_bytes"]).map_or(0.0, |b| b.0);
        let sent = root.used_bytes as f64;
        assert!(
            (used - sent).abs() <= sent * 0.01,
            "/: history {used} bytes used, the agent sent {sent}"
        );
    }

    // Without `series`: today's answer.
    let body = get(&http, &query("")).json();
    assert!(
        body.get("series").is_none() && body.get("filesystems").is_none(),
        "{body}"
    );
    for p in body["points"].as_array().into_iter().flatten() {
        let mut keys: Vec<&str> = p
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        keys.sort_unstable();
        assert_eq!(keys, ["cores", "cpu", "mem_used", "n", "ts_ms"], "{p}");
    }
    let r = get(&http, &query("&series=cpu,bogus"));
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.body.contains("bogus") && r.body.contains("known"),
        "{r:?}"
    );

    // A restart while the agent is away: its whole machine is back from disk.
    agent.kill();
    server.wait_for(DEADLINE, |s| s.status("machine-1") == Some(Status::Offline));
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(DEADLINE).success(), "{}", server.stderr());
    let reborn = Server::start_with(0, &args);
    let first = reborn.wait_for(DEADLINE, |_| true);
    let a = first.agent("machine-1");
    assert_eq!(
        a.offline_reason.as_deref(),
        Some("server restarted"),
        "{}",
        a.to_json()
    );
    assert!(
        a.host.load.is_some() && a.host.fullest_filesystem().is_some(),
        "the restored agent shows its load and filesystems: {}",
        a.to_json()
    );
    assert!(
        a.host.net.as_ref().is_some_and(|n| !n.is_empty()),
        "and its network counters: {}",
        a.to_json()
    );
}

/// SIGKILL while three agents stream (the store commits every ~25 ms): the database left
/// behind passes `PRAGMA integrity_check` and holds every sample the server had acknowledged
/// (all of seq 1..=stored_seq of each run); the next server resumes every run with no
/// duplicate and no gap.
#[test]
fn sigkill_mid_write_keeps_every_acknowledged_sample() {
    let dir = TempDir::new("store-sigkill");
    let args = ["--data-dir", &dir.arg()];
    let mut server = Server::start_with(0, &args);
    let port = server.port();
    let agents: Vec<Agent> = ["crash-1", "crash-2", "crash-3"]
        .iter()
        .map(|n| Agent::start(&server.join(), n))
        .collect();
    let names: Vec<&str> = agents.iter().map(Agent::name).collect();
    let stored = |s: &Snapshot, n: &str| s.find(n).and_then(|a| a.stored_seq);
    let before = server.wait_for(DEADLINE, |s| {
        names
            .iter()
            .all(|n| s.is_live(n) && stored(s, n) >= Some(10))
    });
    // The last report before the kill: what had been acknowledged by then at least.
    let before = server.wait_for(DEADLINE, |s| s.ts_ms != before.ts_ms);
    server.kill();

    let db = open_db(&dir);
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("integrity_check failed to run: {e}"));
    assert_eq!(check, "ok");
    let mut on_disk = Vec::new();
    for name in &names {
        let a = before.agent(name);
        let (id, run) = (a.id.as_str(), a.run_id.as_str());
        let acked = stored(&before, name).unwrap_or(0);
        let (count, lo, hi) = stored_run(&db, id, run);
        assert!(
            lo == 1 && hi >= acked && count == hi,
            "{name}: on disk {count} samples, seq {lo}..={hi}; acknowledged up to {acked}"
        );
        on_disk.push((id.to_string(), count));
    }
    drop(db);

    let reborn = Server::start_with(port, &args);
    let at_kill = before.seqs(&names);
    let after = reborn.wait_for(RECONNECT_DEADLINE, |s| {
        s.all_live_and_advanced_by(&at_kill, 5)
    });
    for name in &names {
        assert_whole_run(&after, name, "after the crash and restart");
    }
    // Rollups lag the raw rows by up to 10 s in memory; the restart rebuilt what the kill
    // lost, so every sample on disk at the kill is in the minute tier (exactly once).
    let db = open_db(&dir);
    for (id, count) in on_disk {
        let rolled: u64 = db
            .query_row(
                "SELECT coalesce(sum(r.n), 0) FROM rollup_1m r JOIN agents a ON r.agent = a.key
                 WHERE a.id = ?1",
                [&id],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("cannot read rollup_1m: {e}"));
        let raw: u64 = db
            .query_row(
                "SELECT count(*) FROM raw r JOIN agents a ON r.agent = a.key WHERE a.id = ?1",
                [&id],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("cannot read raw: {e}"));
        assert!(
            count <= rolled && rolled <= raw,
            "{id}: {count} raw rows at the kill, {rolled} in the minute tier, {raw} raw now"
        );
    }
}

/// Whether this process may create mount namespaces and mount a tmpfs (root, as in CI).
#[allow(unsafe_code)] // geteuid(2) has no safe std wrapper; it takes and touches nothing.
/// Fills the filesystem holding `dir` until it refuses to take more (ENOSPC); the filler file
/// is `dir/filler`.
#[track_caller]
fn fill_up(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    let chunk = vec![0u8; 16 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // The last partial pages too.
    while matches!(f.write(&[0u8; 512]), Ok(n) if n > 0) {}
    let _ = f.sync_all();
    path
}

/// The data directory on a small tmpfs that the test fills while an agent streams: commits
/// fail, the server keeps running, says so (log, snapshot `store`, `/healthz` 503) and
/// acknowledges nothing; the agent keeps its samples. Once there is room again, the backlog
/// drains and every sample ever acknowledged is on disk, with no gap. (Before the fix, the
/// retry after a failed commit skipped samples and a later ack covered the hole.)
#[test]
fn full_disk_stops_acks_and_loses_nothing_once_there_is_room() {
    if !is_root() {
        eprintln!("full_disk test: SKIPPED (needs root for a tmpfs in a mount namespace)");
        return;
    }
    let dir = TempDir::new("store-full");
    let server = Server::start_on_tmpfs(&dir, "2m", &["--http", "127.0.0.1:0"]);
    let data = server.root_path(dir.path());
    let streaming = Agent::start(&server.join(), "full-1");
    // The acknowledged seq (0 until there is one).
    let stored = |s: &Snapshot| s.find("full-1").and_then(|a| a.stored_seq).unwrap_or(0);
    let store_is = |s: &Snapshot, status| s.store.as_ref().map(|st| st.status) == Some(status);
    server.wait_for(DEADLINE, |s| s.is_live("full-1") && stored(s) >= 3);
    let http = server.http_addr();
    let r = get(http, "/healthz");
    let health: Health = r.parse();
    assert_eq!(
        (r.status, health.store.as_ref().map(|st| st.status)),
        (200, Some(StoreStatus::Ok)),
        "{health:?}"
    );

    let filler = fill_up(&data);
    let mut acked = 0;
    let failing = server.wait_for(RECONNECT_DEADLINE, |s| {
        acked = acked.max(stored(s));
        store_is(s, StoreStatus::Failing)
    });
    assert!(
        failing
            .store
            .as_ref()
            .and_then(|st| st.error.as_deref())
            .is_some_and(|e| e.contains("full")),
        "the snapshot says why: {}",
        failing.store.to_json()
    );
    let r = get(http, "/healthz");
    let health: Health = r.parse();
    assert_eq!(r.status, 503, "{health:?}");
    assert_eq!(health.status, "degraded", "{health:?}");
    assert!(
        server.stderr().contains("store: cannot commit"),
        "one clear log line: {}",
        server.stderr()
    );
    // While the disk is full the agent goes on sampling, and nothing more is acknowledged.
    let frozen = stored(&failing);
    let later = server.wait_for(DEADLINE, |s| {
        acked = acked.max(stored(s));
        s.seq("full-1") >= failing.seq("full-1") + 5
    });
    assert!(
        stored(&later) <= frozen + 1,
        "nothing is acknowledged while the store fails: {frozen} then {}",
        stored(&later)
    );

    std::fs::remove_file(&filler)
        .unwrap_or_else(|e| panic!("cannot remove {}: {e}", filler.display()));
    let target = later.seq("full-1") + 5;
    let drained = server.wait_for(RECONNECT_DEADLINE, |s| {
        acked = acked.max(stored(s));
        store_is(s, StoreStatus::Ok) && s.is_live("full-1") && stored(s) >= target
    });
    // Every seq from 1 arrived, none is missing; repeats are expected (the agent reconnects
    // when nothing is acknowledged for 3 intervals, and sends its unacknowledged samples).
    let entry = drained.agent("full-1");
    let a = entry.to_json();
    assert_eq!((entry.gaps, entry.first_seq), (0, 1), "{a}");
    assert_eq!(entry.received, entry.seq, "{a}");
    let r = get(http, "/healthz");
    let health: Health = r.parse();
    assert_eq!(r.status, 200, "{health:?}");
    assert!(
        server.stderr().contains("store: writing again"),
        "{}",
        server.stderr()
    );

    // Every seq ever acknowledged is on disk (read while the server runs: its tmpfs goes
    // away with it).
    let (id, run) = (entry.id.as_str(), entry.run_id.as_str());
    let copy = TempDir::new("store-full-copy");
    {
        // A consistent copy: the server is stopped while its files are copied (as a crash at
        // that instant would leave them), since SQLite cannot open them through /proc/PID/root.
        server.signal(libc::SIGSTOP);
        for file in ["lanmon.db", "lanmon.db-wal"] {
            let from = data.join(file);
            if let Err(e) = std::fs::copy(&from, copy.path().join(file)) {
                server.signal(libc::SIGCONT);
                panic!("cannot copy {}: {e}", from.display());
            }
        }
        server.signal(libc::SIGCONT);
    }
    // Read-write: it is a copy, and SQLite recovers its WAL on open.
    let db = Connection::open(copy.path().join("lanmon.db"))
        .unwrap_or_else(|e| panic!("cannot open the copied database: {e}"));
    let (count, lo, hi) = stored_run(&db, id, run);
    assert!(
        lo == 1 && hi >= acked && count == hi,
        "on disk {count} samples, seq {lo}..={hi}; acknowledged up to {acked}"
    );
    drop(streaming);
}
