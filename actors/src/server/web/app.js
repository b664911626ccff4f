// lanmon dashboard: the overview table (live over Server-Sent Events) and the per-agent
// detail view (#/agent/<id>) with history charts. Plain JavaScript, no build step.
//
// Data: /api/events pushes the snapshot (the same JSON as /api/agents) once per second; the
// overview updates rows in place, and only rows on screen (only cells whose text changed; rows
// off screen are brought up to date when they scroll into view). Sparklines start from /api/agents/{id}/history (fetched when a row first comes on
// screen, a few at a time) and then grow from the live snapshots. The whole machine (load,
// fullest filesystem, network in the overview; load, swap, filesystems, network and disk I/O
// charts, temperatures, processes, the agent's cost and clock in the detail view) has its own
// sections ("whole machine: …"); the detail charts ask the history API for every series.
"use strict";

(function () {
  const { drawSparkline, drawCoreBars, TimeChart, loadColor, fullTime, css } = window.LanmonChart;
  const $ = (id) => document.getElementById(id);

  const SPARK_WINDOW = 10 * 60 * 1000;
  const HISTORY_FETCHES = 4; // at most this many sparkline history requests at once
  const FEED_SILENT_MS = 5000; // no event for this long: show the feed as lost
  const DETAIL_REFRESH_MS = 5000;
  const CORE_WINDOW = 10 * 60 * 1000;
  const ALERTS_REFRESH_MS = 3000; // /api/alerts is polled this often (404: alerts are off)

  const state = {
    snapshot: null,
    agents: new Map(), // id → AgentView (latest)
    rows: new Map(), // id → Row
    order: [], // ids in the DOM order
    sort: { key: "name", dir: 1 },
    filter: "",
    lastEvent: 0,
    route: { view: "overview" },
    alerts: { on: true, active: [], byAgent: new Map() }, // byAgent: id → active alerts
  };

  // ---- formatting ---------------------------------------------------------------------

  const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  function bytes(n) {
    if (n == null) return "–";
    let i = 0;
    while (n >= 1024 && i < UNITS.length - 1) { n /= 1024; i++; }
    return `${n.toFixed(n >= 100 || i === 0 ? 0 : 1)} ${UNITS[i]}`;
  }
  const pct = (v) => (v == null ? "–" : `${v.toFixed(1)}%`);
  /// Bytes per second, e.g. "1.2 MiB/s".
  const rate = (v) => (v == null ? "–" : `${bytes(v)}/s`);
  const loadText = (v) => (v == null ? "–" : v.toFixed(2));
  function ago(ms) {
    if (ms == null) return "never";
    const s = ms / 1000;
    if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }
  function duration(ms) {
    const units = [[86400000, "d"], [3600000, "h"], [60000, "min"], [1000, "s"]];
    for (const [u, name] of units) if (ms >= u) return `${+(ms / u).toFixed(1)} ${name}`;
    return `${ms} ms`;
  }
  const memRatio = (a) => (a.memory && a.memory.total ? a.memory.used / a.memory.total : null);
  const statusRank = { live: 0, stale: 1, offline: 2 };
  function ipKey(ip) {
    const parts = (ip || "").split(".");
    return parts.length === 4 ? parts.map((p) => p.padStart(3, "0")).join(".") : ip || "";
  }
  const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

  // ---- live feed ----------------------------------------------------------------------

  function connect() {
    const source = new EventSource("/api/events");
    source.onmessage = (e) => {
      let snapshot;
      try {
        snapshot = JSON.parse(e.data);
      } catch (err) {
        console.warn("lanmon: bad event", err);
        return;
      }
      state.lastEvent = Date.now();
      setConn("live", "live");
      onSnapshot(snapshot);
    };
    source.onerror = () => setConn("lost", "reconnecting…");
  }

  function setConn(s, text) {
    const el = $("conn");
    if (el.dataset.state !== s) el.dataset.state = s;
    if (el.textContent !== text) el.textContent = text;
  }

  setInterval(() => {
    if (state.lastEvent && Date.now() - state.lastEvent > FEED_SILENT_MS) setConn("lost", "no updates");
  }, 1000);

  // How long each snapshot took to apply (ms), for people and tests checking large fleets.
  const stats = (window.lanmonStats = { snapshots: 0, lastMs: 0, maxMs: 0 });

  function onSnapshot(snapshot) {
    const t0 = performance.now();
    applySnapshot(snapshot);
    stats.lastMs = performance.now() - t0;
    stats.maxMs = Math.max(stats.maxMs, stats.lastMs);
    stats.snapshots++;
  }

  function applySnapshot(snapshot) {
    state.snapshot = snapshot;
    state.agents = new Map(snapshot.agents.map((a) => [a.id, a]));
    $("server-name").textContent = `${snapshot.server.name} · v${snapshot.server.version}`;
    $("server-name").title = snapshot.server.fingerprint ? `server key ${snapshot.server.fingerprint}` : "no authentication (--auth off)";
    renderSummary(snapshot.summary);
    renderPending(snapshot.pending || []);
    for (const a of snapshot.agents) recordSpark(a);
    renderOverview();
    if (state.route.view === "agent") detailOnSnapshot();
  }

  function renderSummary(s) {
    const el = $("summary");
    const text = `${s.agents}|${s.live}|${s.stale}|${s.offline}`;
    if (el.dataset.text === text) return;
    el.dataset.text = text;
    el.replaceChildren(
      ...[["agents", s.agents, null], ["live", s.live, "live"], ["stale", s.stale, "stale"], ["offline", s.offline, "offline"]].map(
        ([label, n, dot]) => {
          const pill = document.createElement("span");
          pill.className = "pill";
          if (dot) {
            const d = document.createElement("span");
            d.className = `dot ${dot}`;
            pill.append(d);
          }
          const b = document.createElement("b");
          b.textContent = n;
          pill.append(b, ` ${label}`);
          return pill;
        }),
    );
  }

  // ---- trust: pending agents, approve and revoke --------------------------------------

  /// POSTs an approve or revoke of `who` (an id, name or key fingerprint); the session
  /// cookie and the page's own Origin authorize it. Resolves to null or an error sentence.
  function enroll(who, action) {
    return fetch(`/api/agents/${encodeURIComponent(who)}/${action}`, { method: "POST" })
      .then(async (r) => {
        if (r.ok) return null;
        const body = await r.json().catch(() => ({}));
        return body.error || `HTTP ${r.status}`;
      })
      .catch((e) => e.message);
  }

  function renderPending(pending) {
    const key = pending.map((p) => `${p.fp}|${p.name}|${p.last_seen_ms}`).join(",");
    const panel = $("pending-panel");
    if (panel.dataset.key === key) return;
    panel.dataset.key = key;
    panel.hidden = pending.length === 0;
    $("pending-list").replaceChildren(
      ...pending.map((p) => {
        const item = document.createElement("div");
        item.className = "pending";
        item.setAttribute("role", "listitem");
        item.dataset.fp = p.fp;
        item.dataset.name = p.name;
        const name = document.createElement("span");
        name.textContent = p.name;
        name.title = `id ${p.id}`;
        const host = document.createElement("span");
        host.textContent = p.ip ? `${p.hostname} · ${p.ip}` : p.hostname;
        const fp = document.createElement("span");
        fp.className = "fp";
        fp.textContent = p.fp;
        const since = document.createElement("span");
        since.className = "since";
        since.textContent = `asked ${ago(Date.now() - (p.last_seen_ms || p.first_seen_ms))}`;
        const button = document.createElement("button");
        button.type = "button";
        button.className = "approve";
        button.textContent = "Approve";
        button.addEventListener("click", () => {
          button.disabled = true;
          enroll(p.fp, "approve").then((error) => {
            const el = $("pending-error");
            el.hidden = !error;
            el.textContent = error ? `approve ${p.name}: ${error}` : "";
            if (error) button.disabled = false;
          });
        });
        item.append(name, host, fp, since, button);
        return item;
      }),
    );
  }

  $("d-revoke").addEventListener("click", () => {
    const a = state.agents.get(detail.id);
    if (!a || !a.fp) return;
    if (!window.confirm(`Revoke ${a.name}? Its key ${a.fp} is refused from now on, and its connection is closed.`)) return;
    $("d-revoke").disabled = true;
    enroll(a.fp, "revoke").then((error) => {
      $("d-error").hidden = !error;
      $("d-error").textContent = error ? `revoke: ${error}` : "";
      $("d-revoke").disabled = false;
    });
  });

  // ---- sparkline data -----------------------------------------------------------------

  const sparks = new Map(); // id → { points: [[ts, cpu]], fetched: bool, dirty: bool }

  function spark(id) {
    let s = sparks.get(id);
    if (!s) {
      s = { points: [], fetched: false, dirty: true };
      sparks.set(id, s);
    }
    return s;
  }

  function recordSpark(a) {
    if (!a.cpu || a.last_sample_ts_ms == null) return;
    const s = spark(a.id);
    const last = s.points.length ? s.points[s.points.length - 1][0] : 0;
    if (a.last_sample_ts_ms > last) {
      s.points.push([a.last_sample_ts_ms, a.cpu.total]);
      s.dirty = true;
    }
    const cut = Date.now() - SPARK_WINDOW - 60000;
    let drop = 0;
    while (drop < s.points.length && s.points[drop][0] < cut) drop++;
    if (drop) s.points.splice(0, drop);
  }

  const fetchQueue = [];
  let fetching = 0;
  function queueSparkHistory(id) {
    const s = spark(id);
    if (s.fetched) return;
    s.fetched = true;
    fetchQueue.push(id);
    pumpFetches();
  }
  function pumpFetches() {
    while (fetching < HISTORY_FETCHES && fetchQueue.length) {
      const id = fetchQueue.shift();
      fetching++;
      const to = Date.now() + 1000, from = to - SPARK_WINDOW - 1000;
      const a = state.agents.get(id);
      const step = Math.max(1000, Math.min(10000, (a && a.interval_ms) || 5000));
      fetch(`/api/agents/${encodeURIComponent(id)}/history?from=${from}&to=${to}&step=${step}&cores=0`)
        .then((r) => (r.ok ? r.json() : null))
        .then((h) => {
          if (!h) return;
          const s = spark(id);
          const old = h.points.filter((p) => p.cpu).map((p) => [p.ts_ms, p.cpu.avg]);
          const first = s.points.length ? s.points[0][0] : Infinity;
          s.points = old.filter((p) => p[0] < first).concat(s.points);
          s.dirty = true;
          const row = state.rows.get(id);
          if (row && row.visible) drawRowCanvases(row, true);
        })
        .catch(() => {})
        .finally(() => {
          fetching--;
          pumpFetches();
        });
    }
  }

  // ---- overview -----------------------------------------------------------------------

  const visibility = new IntersectionObserver((entries) => {
    for (const e of entries) {
      const row = e.target.__row;
      if (!row) continue;
      row.visible = e.isIntersecting;
      if (row.visible) {
        const a = state.agents.get(row.id);
        if (row.stale && a) updateRow(row, a);
        queueSparkHistory(row.id);
        drawRowCanvases(row, true);
      }
    }
  }, { rootMargin: "200px 0px" });

  function cell(tr, cls) {
    const td = document.createElement("div");
    td.className = cls;
    tr.append(td);
    return td;
  }

  function meter(td, kind) {
    const m = document.createElement("div");
    m.className = "meter";
    const fill = document.createElement("div");
    fill.className = `fill ${kind}`;
    const label = document.createElement("span");
    m.append(fill, label);
    td.append(m);
    return { fill, label };
  }

  function makeRow(id) {
    const tr = document.createElement("div");
    tr.className = "row";
    tr.setAttribute("role", "row");
    tr.dataset.id = id;
    const dot = document.createElement("span");
    dot.className = "dot";
    cell(tr, "c-status").append(dot);
    const nameTd = cell(tr, "c-name");
    const link = document.createElement("a");
    link.href = `#/agent/${encodeURIComponent(id)}`;
    const host = document.createElement("span");
    host.className = "host";
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.hidden = true;
    const authBadge = document.createElement("span");
    authBadge.className = "badge unauthenticated";
    authBadge.textContent = "unauthenticated";
    authBadge.title = "a protocol-1 agent (server --auth optional): anyone could send as it";
    authBadge.hidden = true;
    nameTd.append(link, host, badge, authBadge);
    const ip = cell(tr, "c-ip");
    const cpu = meter(cell(tr, "c-cpu"), "");
    const cores = document.createElement("canvas");
    cores.className = "cores";
    cell(tr, "c-cores").append(cores);
    const sparkCanvas = document.createElement("canvas");
    sparkCanvas.className = "spark";
    cell(tr, "c-spark").append(sparkCanvas);
    const mem = meter(cell(tr, "c-mem"), "mem");
    const machine = hostCells(tr);
    const seen = cell(tr, "c-seen");
    const row = { id, tr, dot, link, host, badge, authBadge, ip, cpu, cores, spark: sparkCanvas, mem, machine, seen, visible: false, prev: {}, coresKey: "" };
    tr.__row = row;
    visibility.observe(tr);
    return row;
  }

  /// Sets a property only when it changed (DOM writes are the expensive part).
  function put(row, key, el, prop, value) {
    if (row.prev[key] === value) return;
    row.prev[key] = value;
    if (prop === "width") el.style.width = value;
    else el[prop] = value;
  }

  function updateRow(row, a) {
    row.stale = false;
    const offline = a.status === "offline";
    put(row, "class", row.tr, "className", `row ${a.status}`);
    put(row, "status", row.tr.dataset, "status", a.status);
    put(row, "seq", row.tr.dataset, "seq", String(a.seq));
    put(row, "dname", row.tr.dataset, "name", a.name);
    put(row, "dot", row.dot, "className", `dot ${a.status}`);
    const why = a.offline_reason ? `: ${a.offline_reason}` : "";
    put(row, "dotTitle", row.dot, "title", `${a.status}${why}`);
    put(row, "name", row.link, "textContent", a.name);
    put(row, "host", row.host, "textContent", a.hostname && a.hostname !== a.name ? a.hostname : "");
    put(row, "title", row.link, "title", `${a.hostname} · ${a.os} · agent ${a.agent_version}`);
    put(row, "ip", row.ip, "textContent", a.ip);
    const alerts = state.alerts.byAgent.get(a.id) || [];
    const firing = alerts.filter((x) => x.state === "firing");
    const shown = firing.length ? firing : alerts;
    put(row, "badgeHidden", row.badge, "hidden", shown.length === 0);
    put(row, "badge", row.badge, "textContent", shown.length ? `${shown.length === 1 ? shown[0].rule : `${shown.length} alerts`}` : "");
    put(row, "badgeCls", row.badge, "className", `badge ${firing.length ? worstSeverity(firing) : "pending"}`);
    put(row, "auth", row.authBadge, "hidden", a.auth !== "unauthenticated" && a.auth !== "revoked");
    put(row, "authText", row.authBadge, "textContent", a.auth === "revoked" ? "revoked" : "unauthenticated");
    put(row, "authCls", row.authBadge, "className", `badge ${a.auth === "revoked" ? "revoked" : "unauthenticated"}`);
    put(row, "authTitle", row.authBadge, "title", a.auth === "revoked"
      ? `its key ${a.fp} was revoked on the server: refused until approved again`
      : "a protocol-1 agent (server --auth optional): anyone could send as it");
    put(row, "dauth", row.tr.dataset, "auth", a.auth || "");
    put(row, "badgeTitle", row.badge, "title", shown.map((x) => `${x.state}: ${x.summary}`).join("\n"));
    const cpu = a.cpu ? a.cpu.total : null;
    put(row, "cpuText", row.cpu.label, "textContent", pct(cpu));
    put(row, "cpuW", row.cpu.fill, "width", `${cpu == null ? 0 : Math.min(100, cpu)}%`);
    put(row, "cpuC", row.cpu.fill, "className", `fill ${cpu >= 85 ? "bad" : cpu >= 60 ? "warn" : ""}`);
    const mr = memRatio(a);
    put(row, "memText", row.mem.label, "textContent", a.memory ? `${bytes(a.memory.used)} / ${bytes(a.memory.total)}` : "–");
    put(row, "memW", row.mem.fill, "width", `${mr == null ? 0 : (mr * 100).toFixed(1)}%`);
    put(row, "memTitle", row.mem.label, "title", a.memory ? `${(mr * 100).toFixed(1)}% used, ${bytes(a.memory.available)} available, ${bytes(a.memory.free)} free` : "");
    updateHostCells(row, a);
    const seenText = offline ? `offline${a.last_seen_ms != null ? ` · ${ago(a.last_seen_ms)}` : ""}` : ago(a.last_seen_ms);
    put(row, "seen", row.seen, "textContent", seenText);
    put(row, "seenTitle", row.seen, "title", a.last_sample_ts_ms ? `last sample ${fullTime(a.last_sample_ts_ms)}${why}` : "");
    const coresKey = `${a.status}|${a.cpu ? a.cpu.per_core.map((v) => v.toFixed(0)).join(",") : ""}`;
    if (coresKey !== row.coresKey) {
      row.coresKey = coresKey;
      row.coresDirty = true;
    }
  }

  // Canvas sizes of the rows' small charts, read once (reading layout after DOM writes forces
  // a reflow; with many rows that is the slow part). Cleared when the window is resized.
  let rowCanvasSize = null;
  window.addEventListener("resize", () => {
    rowCanvasSize = null;
    for (const row of state.rows.values()) if (row.visible) drawRowCanvases(row, true);
  });

  function drawRowCanvases(row, force) {
    const a = state.agents.get(row.id);
    if (!a || row.tr.hidden) return;
    if (!rowCanvasSize) {
      const c = { w: row.cores.clientWidth, h: row.cores.clientHeight };
      const s = { w: row.spark.clientWidth, h: row.spark.clientHeight };
      if (!c.w || !s.w) return;
      rowCanvasSize = { cores: c, spark: s };
    }
    const offline = a.status === "offline";
    if (force || row.coresDirty) {
      row.coresDirty = false;
      drawCoreBars(row.cores, a.cpu ? a.cpu.per_core : [], offline, rowCanvasSize.cores);
    }
    const s = spark(row.id);
    // The time axis moves every second, so redraw each tick while live.
    if (force || s.dirty || !offline) {
      s.dirty = false;
      const to = state.snapshot ? state.snapshot.ts_ms : Date.now();
      drawSparkline(row.spark, s.points, to - SPARK_WINDOW, to, offline, rowCanvasSize.spark);
    }
  }

  // ---- whole machine: overview cells ------------------------------------------------

  /// The fullest filesystem of an agent: { mount, pct, used, size } (pct as df's Use%), or
  /// null when it sends none.
  function fullestFs(a) {
    let best = null;
    for (const f of a.filesystems || []) {
      if (!f.size_bytes) continue;
      const p = ((f.size_bytes - f.avail_bytes) / f.size_bytes) * 100;
      if (!best || p > best.pct) best = { mount: f.mount, pct: p, used: f.used_bytes, size: f.size_bytes };
    }
    return best;
  }

  /// Network bytes per second over every interface: { rx, tx }, or null before two samples.
  function netRates(a) {
    const rated = (a.net || []).filter((n) => n.rx_bytes_per_s != null && n.tx_bytes_per_s != null);
    if (!rated.length) return null;
    return rated.reduce((s, n) => ({ rx: s.rx + n.rx_bytes_per_s, tx: s.tx + n.tx_bytes_per_s }), { rx: 0, tx: 0 });
  }

  /// Disk bytes per second over every device: { read, write }, or null before two samples.
  function diskRates(a) {
    const rated = (a.disks || []).filter((d) => d.read_bytes_per_s != null && d.written_bytes_per_s != null);
    if (!rated.length) return null;
    return rated.reduce((s, d) => ({ read: s.read + d.read_bytes_per_s, write: s.write + d.written_bytes_per_s }), { read: 0, write: 0 });
  }

  function hostCells(tr) {
    const load = cell(tr, "c-load");
    const disk = meter(cell(tr, "c-disk"), "disk");
    const net = cell(tr, "c-net");
    return { load, disk, net };
  }

  function updateHostCells(row, a) {
    const m = row.machine;
    const l = a.load;
    put(row, "load", m.load, "textContent", loadText(l && l.load1));
    put(row, "loadTitle", m.load, "title", l ? `load ${l.load1.toFixed(2)} / ${l.load5.toFixed(2)} / ${l.load15.toFixed(2)} (1, 5, 15 min) on ${a.cores} cores` : "");
    const f = fullestFs(a);
    put(row, "diskText", m.disk.label, "textContent", f ? pct(f.pct) : "–");
    put(row, "diskW", m.disk.fill, "width", `${f ? Math.min(100, f.pct).toFixed(1) : 0}%`);
    put(row, "diskC", m.disk.fill, "className", `fill ${f && f.pct >= 90 ? "bad" : f && f.pct >= 80 ? "warn" : "disk"}`);
    put(row, "diskTitle", m.disk.label, "title", f ? `${f.mount}: ${bytes((f.size * f.pct) / 100)} of ${bytes(f.size)} used (the fullest of ${(a.filesystems || []).length})` : "");
    const n = netRates(a);
    put(row, "net", m.net, "textContent", n ? `${rate(n.rx)} / ${rate(n.tx)}` : "–");
    put(row, "netTitle", m.net, "title", (a.net || []).map((i) => `${i.interface}: ${rate(i.rx_bytes_per_s)} in, ${rate(i.tx_bytes_per_s)} out`).join("\n"));
  }

  function matches(a, f) {
    if (!f) return true;
    const hay = `${a.name} ${a.hostname} ${a.ip} ${a.os} ${a.status} ${a.id}`.toLowerCase();
    return f.split(/\s+/).every((word) => hay.includes(word));
  }

  function comparator() {
    const { key, dir } = state.sort;
    const num = (f) => (a, b) => {
      const x = f(a), y = f(b);
      if (x == null && y == null) return 0;
      if (x == null) return 1; // unknown values last, whatever the direction
      if (y == null) return -1;
      return (x - y) * dir;
    };
    const byName = (a, b) => collator.compare(a.name, b.name) || (a.id < b.id ? -1 : 1);
    const primary = {
      name: (a, b) => byName(a, b) * dir,
      ip: (a, b) => ipKey(a.ip).localeCompare(ipKey(b.ip)) * dir,
      status: (a, b) => (statusRank[a.status] - statusRank[b.status]) * dir,
      cpu: num((a) => (a.cpu ? a.cpu.total : null)),
      cores: num((a) => a.cores),
      mem: num(memRatio),
      load: num((a) => (a.load ? a.load.load1 : null)),
      disk: num((a) => { const f = fullestFs(a); return f ? f.pct : null; }),
      net: num((a) => { const n = netRates(a); return n ? n.rx + n.tx : null; }),
      seen: num((a) => a.last_seen_ms),
    }[key];
    return (a, b) => primary(a, b) || byName(a, b);
  }

  function renderOverview() {
    const agents = [...state.agents.values()];
    const f = state.filter;
    // Rows of agents the server forgot go away.
    for (const [id, row] of state.rows) {
      if (!state.agents.has(id)) {
        visibility.unobserve(row.tr);
        row.tr.remove();
        state.rows.delete(id);
        sparks.delete(id);
      }
    }
    const shown = agents.filter((a) => matches(a, f)).sort(comparator());
    const shownIds = new Set(shown.map((a) => a.id));
    for (const a of agents) {
      let row = state.rows.get(a.id);
      if (!row) {
        row = makeRow(a.id);
        state.rows.set(a.id, row);
        updateRow(row, a);
      } else if (row.visible) {
        updateRow(row, a);
      } else {
        // Off screen: written when it scrolls into view (most of a large fleet is off screen).
        row.stale = true;
      }
      put(row, "hidden", row.tr, "hidden", !shownIds.has(a.id));
    }
    // Reorder the DOM only when the order changed.
    const order = shown.map((a) => a.id);
    if (order.length !== state.order.length || order.some((id, i) => id !== state.order[i])) {
      const body = $("rows");
      const frag = document.createDocumentFragment();
      for (const id of order) frag.append(state.rows.get(id).tr);
      for (const [id, row] of state.rows) if (!shownIds.has(id)) frag.append(row.tr);
      body.append(frag);
      state.order = order;
    }
    // DOM writes are done: now draw the small charts of the rows on screen.
    for (const row of state.rows.values()) if (row.visible) drawRowCanvases(row, false);
    // Meter animations cost style work on every row; only small fleets get them.
    document.body.classList.toggle("many", agents.length > 200);
    $("empty").hidden = agents.length > 0;
    const shownText = f ? `${shown.length} of ${agents.length} shown` : "";
    if ($("shown").textContent !== shownText) $("shown").textContent = shownText;
  }

  function setSort(key) {
    if (state.sort.key === key) state.sort.dir = -state.sort.dir;
    else state.sort = { key, dir: ["cpu", "mem", "seen", "cores", "load", "disk", "net"].includes(key) ? -1 : 1 };
    for (const th of document.querySelectorAll(".head [data-sort]")) {
      if (th.dataset.sort === state.sort.key) th.setAttribute("aria-sort", state.sort.dir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    }
    renderOverview();
  }

  for (const th of document.querySelectorAll(".head [data-sort]")) th.addEventListener("click", () => setSort(th.dataset.sort));
  document.querySelector('.head [data-sort="name"]').setAttribute("aria-sort", "ascending");
  $("filter").addEventListener("input", (e) => {
    state.filter = e.target.value.trim().toLowerCase();
    renderOverview();
  });

  // ---- alerts -------------------------------------------------------------------------

  const severityRank = { info: 0, warning: 1, critical: 2 };
  function worstSeverity(alerts) {
    return alerts.reduce((w, x) => (severityRank[x.severity] > severityRank[w] ? x.severity : w), "info");
  }

  function fetchAlerts() {
    if (!state.alerts.on) return;
    fetch("/api/alerts")
      .then((r) => {
        if (r.status === 404) {
          state.alerts.on = false; // the server runs with --no-alerts
          return null;
        }
        return r.ok ? r.json() : null;
      })
      .then((body) => {
        if (!body) return;
        applyAlerts(body);
      })
      .catch(() => {})
      .finally(() => {
        if (state.alerts.on) setTimeout(fetchAlerts, ALERTS_REFRESH_MS);
      });
  }

  function applyAlerts(body) {
    const byAgent = new Map();
    for (const x of body.active) {
      if (!byAgent.has(x.agent)) byAgent.set(x.agent, []);
      byAgent.get(x.agent).push(x);
    }
    state.alerts.active = body.active;
    state.alerts.byAgent = byAgent;
    renderAlerts(body);
    if (state.snapshot) {
      // Rows on screen get their badge now; the others when they scroll into view.
      for (const row of state.rows.values()) {
        const a = state.agents.get(row.id);
        if (a && row.visible) updateRow(row, a);
        else row.stale = true;
      }
      if (state.route.view === "agent") detailOnSnapshot();
    }
  }

  function renderAlerts(body) {
    const firing = body.active.filter((x) => x.state === "firing");
    const pill = $("alert-pill");
    pill.hidden = firing.length === 0;
    pill.textContent = `${firing.length} firing`;
    pill.className = `alert-pill ${worstSeverity(firing)}`;
    $("alerts-panel").hidden = body.active.length === 0;
    $("alerts-count").textContent = `${body.firing} firing, ${body.pending} pending`;
    const list = $("alerts-list");
    list.replaceChildren(
      ...body.active.map((x) => {
        const item = document.createElement("div");
        item.className = `alert ${x.state}${x.silenced ? " silenced" : ""}`;
        item.setAttribute("role", "listitem");
        item.dataset.rule = x.rule;
        item.dataset.agent = x.agent;
        const sev = document.createElement("span");
        sev.className = `sev ${x.severity}`;
        sev.title = x.severity;
        const st = document.createElement("span");
        st.className = "state";
        st.textContent = x.silenced ? `${x.state} (silenced)` : x.state;
        const rule = document.createElement("span");
        rule.className = "rule";
        rule.textContent = x.subject ? `${x.rule} ${x.subject}` : x.rule;
        const who = document.createElement("span");
        const link = document.createElement("a");
        link.href = `#/agent/${encodeURIComponent(x.agent)}`;
        link.textContent = x.name;
        link.title = `${x.hostname} · ${x.ip}`;
        who.append(link);
        const summary = document.createElement("span");
        summary.textContent = x.summary;
        summary.title = x.summary;
        const since = document.createElement("span");
        since.className = "since";
        const t = x.state === "firing" ? x.fired_ms : x.started_ms;
        since.textContent = t ? `for ${duration(Math.max(0, Date.now() - t))}` : "";
        item.append(sev, st, rule, who, summary, since);
        return item;
      }),
    );
  }

  // ---- detail view --------------------------------------------------------------------

  const detail = {
    id: null,
    span: 3600000,
    zoom: null, // { from, to } when zoomed in
    charts: null,
    cores: [], // [{ t, values: [] }] live per-core samples since the view opened
    coresFromHistory: false, // the store's history has per-core points: chart those instead
    timer: null,
    seq: 0, // request counter: answers to older requests are ignored
    info: null,
  };

  function ensureCharts() {
    if (detail.charts) return detail.charts;
    const onZoom = (from, to) => {
      detail.zoom = { from, to };
      loadHistory();
    };
    const percent = (v) => `${v.toFixed(0)}%`;
    detail.charts = {
      cpu: new TimeChart($("chart-cpu"), { yMax: 100, format: percent, onZoom }),
      mem: new TimeChart($("chart-mem"), { format: (v) => memFormat(v), onZoom }),
      cores: new TimeChart($("chart-cores"), { yMax: 100, format: percent, onZoom }),
      load: new TimeChart($("chart-load"), { format: (v) => (v >= 10 ? v.toFixed(0) : v.toFixed(1)), onZoom }),
      swap: scaledChart($("chart-swap"), BYTE_UNITS, "", onZoom),
      net: scaledChart($("chart-net"), BYTE_UNITS, "/s", onZoom),
      disk: scaledChart($("chart-disk"), BYTE_UNITS, "/s", onZoom),
      fs: new Map(), // mount → TimeChart (percent used), made as filesystems appear
      onZoom,
    };
    return detail.charts;
  }

  // Memory is charted in GiB (or MiB for small machines) so the axis ticks are round.
  let memUnit = { div: 1024 ** 3, name: "GiB" };
  function memFormat(v) {
    return `${v === 0 || v >= 10 ? v.toFixed(0) : v.toFixed(1)} ${memUnit.name}`;
  }

  function openDetail(id) {
    if (detail.id !== id) {
      detail.id = id;
      detail.zoom = null;
      detail.cores = [];
      detail.coresFromHistory = false;
      detail.info = null;
      resetMachineCharts();
    }
    ensureCharts();
    detailOnSnapshot();
    loadHistory();
    clearInterval(detail.timer);
    detail.timer = setInterval(() => {
      if (!detail.zoom) loadHistory();
    }, DETAIL_REFRESH_MS);
  }

  function closeDetail() {
    clearInterval(detail.timer);
    detail.timer = null;
  }

  function rangeButtons() {
    for (const b of document.querySelectorAll("#ranges button[data-range]")) {
      b.setAttribute("aria-pressed", String(!detail.zoom && Number(b.dataset.range) === detail.span));
    }
    $("zoom-out").hidden = !detail.zoom;
  }

  function loadHistory() {
    const id = detail.id;
    if (!id) return;
    const now = Date.now();
    const { from, to } = detail.zoom || { from: now - detail.span, to: now };
    // About 400 points across, in whole seconds (the server's tiers pick their resolution).
    const asked = Math.max(1000, Math.ceil((to - from) / 400 / 1000) * 1000);
    const seq = ++detail.seq;
    rangeButtons();
    $("range-label").textContent = `${fullTime(from)} – ${fullTime(to)} · one point per ${duration(asked)}`;
    fetch(`/api/agents/${encodeURIComponent(id)}/history?from=${Math.floor(from)}&to=${Math.ceil(to)}&step=${asked}&series=${HISTORY_SERIES}`)
      .then(async (r) => {
        if (r.status === 404) return { points: [], missing: true };
        if (!r.ok) throw new Error(`history: HTTP ${r.status}: ${await r.text()}`);
        return r.json();
      })
      .then((h) => {
        if (seq !== detail.seq || id !== detail.id) return;
        // The server may answer a coarser step (a machine with many cores): chart that one.
        const step = h.step || asked;
        if (step !== asked) $("range-label").textContent = `${fullTime(from)} – ${fullTime(to)} · one point per ${duration(step)}`;
        const a = state.agents.get(id);
        const total = a && a.memory ? a.memory.total : 0;
        memUnit = total && total < 2 * 1024 ** 3 ? { div: 1024 ** 2, name: "MiB" } : { div: 1024 ** 3, name: "GiB" };
        const cpu = [], mem = [];
        for (const p of h.points) {
          if (p.cpu) cpu.push({ t: p.ts_ms, avg: p.cpu.avg, min: p.cpu.min, max: p.cpu.max });
          if (p.mem_used) {
            const d = memUnit.div;
            mem.push({ t: p.ts_ms, avg: p.mem_used.avg / d, min: p.mem_used.min / d, max: p.mem_used.max / d });
          }
        }
        // Per core: avg lines, with the min–max band only while few enough to stay readable.
        const cores = [];
        const n = h.points.reduce((m, p) => Math.max(m, p.cores ? p.cores.length : 0), 0);
        for (const p of h.points) {
          (p.cores || []).forEach((v, i) => {
            if (!v) return;
            (cores[i] ||= []).push(n <= 4 ? { t: p.ts_ms, avg: v.avg, min: v.min, max: v.max } : { t: p.ts_ms, avg: v.avg });
          });
        }
        const c = ensureCharts();
        detail.coresFromHistory = cores.length > 0;
        if (detail.coresFromHistory) {
          const series = [];
          for (let i = 0; i < n; i++) series.push({ label: `core ${i}`, color: coreColor(i, n), width: 1.25, points: cores[i] || [] });
          c.cores.set({ from, to, step, series });
          $("chart-cores").dataset.source = "history";
          $("cores-legend").textContent = n <= 4 ? "avg line, min–max band, same range as above" : "avg per core, same range as above";
        }
        c.cpu.set({ from, to, step, series: [{ label: "CPU", color: css("--accent"), points: cpu }] });
        c.mem.set({
          from, to, step,
          series: [{ label: "used", color: css("--accent-2"), points: mem }],
          lines: total ? [{ label: "total", color: css("--muted"), value: total / memUnit.div }] : [],
        });
        setMachineCharts(h, a, { from, to, step });
      })
      .catch((e) => console.warn("lanmon:", e.message));
  }

  function coreColor(i, n) {
    return `hsl(${(i * 360) / Math.max(n, 1) + 200}, 65%, 60%)`;
  }

  function info(label, value) {
    const div = document.createElement("div");
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = label;
    dd.textContent = value;
    dd.title = value;
    div.append(dt, dd);
    return div;
  }

  function detailOnSnapshot() {
    const a = state.agents.get(detail.id);
    if (!a) {
      $("d-name").textContent = state.snapshot ? "Unknown agent" : "Loading…";
      $("d-status").textContent = state.snapshot ? `no agent with id ${detail.id}` : "";
      $("d-dot").className = "dot";
      return;
    }
    document.title = `${a.name} · lanmon`;
    $("d-trust").hidden = a.auth !== "approved";
    $("d-name").textContent = a.name;
    $("d-dot").className = `dot ${a.status}`;
    $("d-status").textContent = a.status === "offline" ? `offline${a.offline_reason ? ` (${a.offline_reason})` : ""}, last seen ${ago(a.last_seen_ms)}` : `${a.status}, last sample ${ago(a.last_seen_ms)}`;
    $("d-info").replaceChildren(
      info("CPU", pct(a.cpu && a.cpu.total)),
      info("Memory used", a.memory ? `${bytes(a.memory.used)} / ${bytes(a.memory.total)}` : "–"),
      info("Available / free", a.memory ? `${bytes(a.memory.available)} / ${bytes(a.memory.free)}` : "–"),
      info("IP", a.ip),
      info("Host name", a.hostname),
      info("OS", a.os),
      info("Cores", String(a.cores)),
      info("Agent", `v${a.agent_version}, every ${duration(a.interval_ms)}`),
      info("Samples (this run)", `${a.received} · gaps ${a.gaps} · dup ${a.duplicates}`),
      info("Agent id / run", `${a.id} / ${a.run_id}`),
      info("Authentication", a.auth === "approved" ? `approved key ${a.fp}` : a.auth === "revoked" ? `revoked key ${a.fp}` : a.auth === "unauthenticated" ? "none (protocol 1)" : "off"),
      info("Alerts", (state.alerts.byAgent.get(a.id) || []).map((x) => `${x.rule} ${x.state}`).join(", ") || "none"),
      ...machineInfo(a),
    );
    renderMachinePanels(a);
    // Per-core, live.
    if (a.cpu && a.last_sample_ts_ms != null) {
      const last = detail.cores.length ? detail.cores[detail.cores.length - 1].t : 0;
      if (a.last_sample_ts_ms > last) detail.cores.push({ t: a.last_sample_ts_ms, values: a.cpu.per_core.slice() });
    }
    const now = state.snapshot.ts_ms;
    while (detail.cores.length && detail.cores[0].t < now - CORE_WINDOW) detail.cores.shift();
    const n = a.cpu ? a.cpu.per_core.length : 0;
    // Without per-core history (a server run with --no-store), chart what this view saw.
    if (!detail.coresFromHistory) {
      const series = [];
      for (let i = 0; i < n; i++) {
        series.push({
          label: `core ${i}`,
          color: coreColor(i, n),
          width: 1.25,
          points: detail.cores.filter((s) => s.values.length > i).map((s) => ({ t: s.t, avg: s.values[i] })),
        });
      }
      const from = detail.cores.length ? Math.min(detail.cores[0].t, now - 60000) : now - 60000;
      ensureCharts().cores.set({ from, to: now, step: a.interval_ms, series });
      $("chart-cores").dataset.source = "live";
      $("cores-legend").textContent = "live, since this view opened (last 10 min)";
    }
    const grid = $("core-grid");
    if (grid.children.length !== n) {
      grid.replaceChildren();
      for (let i = 0; i < n; i++) meter(grid, "");
    }
    [...grid.children].forEach((td, i) => {
      const v = a.cpu.per_core[i];
      const fill = td.querySelector(".fill"), label = td.querySelector("span");
      fill.style.width = `${Math.min(100, v)}%`;
      fill.style.background = a.status === "offline" ? "var(--offline)" : loadColor(v);
      label.textContent = `${i}: ${v.toFixed(0)}%`;
    });
  }

  // ---- whole machine: detail charts and panels -----------------------------------------

  // Every series the detail view charts (the history API's default is cpu, mem, cores only).
  const HISTORY_SERIES = "cpu,mem,cores,load,swap,fs,net,disk";
  const BYTE_UNITS = [[1, "B"], [1024, "KiB"], [1024 ** 2, "MiB"], [1024 ** 3, "GiB"], [1024 ** 4, "TiB"]];
  const CLOCK_WARN_MS = 2000; // the server warns beyond this too

  /// A TimeChart whose values are charted in the unit (of `units`) that suits their largest,
  /// so the axis ticks are round; `chart.setScaled(data)` takes values in the base unit.
  function scaledChart(el, units, suffix, onZoom) {
    let unit = units[0];
    // Whole bytes have no fractions; larger units get one decimal below 10.
    const format = (v) => `${v === 0 || v >= 10 || unit[0] === 1 ? v.toFixed(0) : v.toFixed(1)} ${unit[1]}${suffix}`;
    const chart = new TimeChart(el, { format, onZoom, marginLeft: 76 });
    chart.setScaled = (data) => {
      let top = 0;
      for (const s of data.series) for (const p of s.points) top = Math.max(top, p.max ?? p.avg);
      for (const l of data.lines || []) top = Math.max(top, l.value);
      unit = units.filter(([div]) => top >= div).pop() || units[0];
      // Nothing or almost nothing (no swap, an idle disk): an axis up to 1 KiB, not 1 B.
      chart.opt.yMax = top < 1024 ? 1024 : undefined;
      const d = unit[0];
      chart.set({
        ...data,
        series: data.series.map((s) => ({ ...s, points: s.points.map((p) => ({ t: p.t, avg: p.avg / d, min: p.min / d, max: p.max / d })) })),
        lines: (data.lines || []).map((l) => ({ ...l, value: l.value / d })),
      });
    };
    return chart;
  }

  /// `{ t, avg, min, max }` of each point that has `field`.
  function statPoints(points, field) {
    const out = [];
    for (const p of points) {
      const v = p[field];
      if (v) out.push({ t: p.ts_ms, avg: v.avg, min: v.min, max: v.max });
    }
    return out;
  }

  function resetMachineCharts() {
    if (!detail.charts) return;
    detail.charts.fs.clear();
    $("fs-charts").replaceChildren();
  }

  /// The chart of filesystem `mount`, made the first time it is needed.
  function fsChart(mount) {
    const charts = ensureCharts();
    let c = charts.fs.get(mount);
    if (c) return c;
    const box = document.createElement("div");
    box.className = "fs-chart";
    box.dataset.mount = mount;
    const title = document.createElement("h4");
    const name = document.createElement("span");
    name.className = "mount";
    name.textContent = mount;
    const size = document.createElement("span");
    size.className = "size";
    title.append(name, size);
    const el = document.createElement("div");
    box.append(title, el);
    $("fs-charts").append(box);
    c = new TimeChart(el, { yMax: 100, format: (v) => `${v.toFixed(0)}%`, onZoom: charts.onZoom });
    c.sizeEl = size;
    charts.fs.set(mount, c);
    return c;
  }

  function setMachineCharts(h, a, range) {
    const c = ensureCharts();
    const pts = h.points;
    c.load.set({
      ...range,
      series: [{ label: "load", color: css("--load"), points: statPoints(pts, "load1") }],
      lines: a ? [{ label: "cores", color: css("--muted"), value: a.cores }] : [],
    });
    const swapTotal = a && a.swap ? a.swap.total_bytes : 0;
    c.swap.setScaled({
      ...range,
      series: [{ label: "used", color: css("--accent-2"), points: statPoints(pts, "swap_used") }],
      lines: swapTotal ? [{ label: "total", color: css("--muted"), value: swapTotal }] : [],
    });
    c.net.setScaled({
      ...range,
      series: [
        { label: "received", color: css("--accent"), points: statPoints(pts, "net_rx_bytes_per_s") },
        { label: "sent", color: css("--rx-tx"), points: statPoints(pts, "net_tx_bytes_per_s") },
      ],
    });
    c.disk.setScaled({
      ...range,
      series: [
        { label: "read", color: css("--accent"), points: statPoints(pts, "disk_read_bytes_per_s") },
        { label: "written", color: css("--rx-tx"), points: statPoints(pts, "disk_written_bytes_per_s") },
      ],
    });
    // One chart per filesystem from the store; without one (--no-store), the fullest only.
    const mounts = h.filesystems || [];
    const perFs = mounts.map(() => []);
    for (const p of pts) {
      (p.fs || []).forEach((v, i) => {
        if (v && i < perFs.length) perFs[i].push({ t: p.ts_ms, avg: v.used_pct.avg, min: v.used_pct.min, max: v.used_pct.max });
      });
    }
    const live = new Map(((a && a.filesystems) || []).map((f) => [f.mount, f]));
    const wanted = mounts.length ? mounts : ["fullest filesystem"];
    for (const [mount, chart] of c.fs) {
      if (!wanted.includes(mount)) {
        chart.el.parentElement.remove();
        c.fs.delete(mount);
      }
    }
    wanted.forEach((mount, i) => {
      if (!mount) return;
      const chart = fsChart(mount);
      const points = mounts.length ? perFs[i] : statPoints(pts, "fs_used_pct");
      chart.set({ ...range, series: [{ label: "used", color: css("--accent"), points }], lines: [] });
      const f = live.get(mount);
      chart.sizeEl.textContent = f ? `${bytes(f.used_bytes)} of ${bytes(f.size_bytes)} used, ${bytes(f.avail_bytes)} available · ${f.fs_type} on ${f.device}` : "";
    });
    $("fs-legend").textContent = mounts.length ? `${mounts.length} with a history (average line, min–max band)` : "the fullest one (this server keeps no per-filesystem history: --no-store)";
  }

  /// The info items of the whole machine: load, uptime, swap, the agent's own cost, the clock.
  function machineInfo(a) {
    const items = [];
    if (a.load) items.push(info("Load 1 / 5 / 15 min", `${loadText(a.load.load1)} / ${loadText(a.load.load5)} / ${loadText(a.load.load15)}`));
    if (a.uptime_s != null) items.push(info("Uptime", duration(a.uptime_s * 1000)));
    if (a.swap) items.push(info("Swap used", a.swap.total_bytes ? `${bytes(a.swap.used_bytes)} / ${bytes(a.swap.total_bytes)}` : "no swap"));
    const n = netRates(a), d = diskRates(a);
    if (n) items.push(info("Network rx / tx", `${rate(n.rx)} / ${rate(n.tx)}`));
    if (d) items.push(info("Disk read / write", `${rate(d.read)} / ${rate(d.write)}`));
    const cost = a.agent_cost;
    if (cost) {
      const per = cost.cpu_ms_per_sample != null ? `${cost.cpu_ms_per_sample.toFixed(2)} ms CPU per sample` : "CPU per sample after the next sample";
      const item = info("Agent's own cost", `${bytes(cost.rss_bytes)} RSS · ${per}${cost.cpu_pct != null ? ` (${cost.cpu_pct.toFixed(2)}% of a core)` : ""}`);
      item.dataset.key = "cost";
      items.push(item);
    }
    if (a.clock_offset_ms != null) {
      const off = a.clock_offset_ms;
      const way = off > 0 ? "ahead" : off < 0 ? "behind" : "in step";
      const text = `${off > 0 ? "+" : ""}${(off / 1000).toFixed(off % 1000 === 0 ? 0 : 3)} s (${way}, ±${Math.ceil((a.clock_rtt_ms || 0) / 2)} ms)`;
      const item = info("Clock offset", text);
      item.dataset.key = "clock";
      if (Math.abs(off) > CLOCK_WARN_MS) {
        item.classList.add("warn");
        item.title = "The agent's clock is more than 2 s off the server's: sample times and ages are off by as much";
      }
      items.push(item);
    }
    return items;
  }

  /// The live panels: temperatures (when the host has sensors) and processes (when sent).
  function renderMachinePanels(a) {
    const temps = a.temperatures || [];
    $("temps-card").hidden = temps.length === 0;
    $("temps").replaceChildren(
      ...temps.map((t) => {
        const row = document.createElement("div");
        row.className = `temp${t.temp_c >= 90 ? " bad" : t.temp_c >= 75 ? " hot" : ""}`;
        const name = document.createElement("span");
        name.className = "sensor";
        name.textContent = t.sensor;
        name.title = t.sensor;
        const v = document.createElement("b");
        v.textContent = `${t.temp_c.toFixed(1)} °C`;
        row.append(name, v);
        return row;
      }),
    );
    const procs = a.processes || [];
    $("procs-card").hidden = procs.length === 0;
    const line = (cls, cells) => {
      const row = document.createElement("div");
      row.className = cls;
      row.setAttribute("role", "row");
      for (const [text, num] of cells) {
        const c = document.createElement("span");
        if (num) c.className = "num";
        c.textContent = text;
        c.title = text;
        row.append(c);
      }
      return row;
    };
    $("procs").replaceChildren(
      ...(procs.length ? [line("proc head", [["PID", true], ["Name", false], ["CPU", true], ["RSS", true]])] : []),
      ...procs.map((p) => line("proc", [[String(p.pid), true], [p.name, false], [pct(p.cpu_pct), true], [bytes(p.rss_bytes), true]])),
    );
  }

  for (const b of document.querySelectorAll("#ranges button[data-range]")) {
    b.addEventListener("click", () => {
      detail.span = Number(b.dataset.range);
      detail.zoom = null;
      loadHistory();
    });
  }
  $("zoom-out").addEventListener("click", () => {
    detail.zoom = null;
    loadHistory();
  });

  // ---- routing ------------------------------------------------------------------------

  function route() {
    const m = location.hash.match(/^#\/agent\/([^/?]+)/);
    if (m) {
      state.route = { view: "agent", id: decodeURIComponent(m[1]) };
      $("overview").hidden = true;
      $("detail").hidden = false;
      openDetail(state.route.id);
    } else {
      state.route = { view: "overview" };
      document.title = "lanmon";
      closeDetail();
      $("detail").hidden = true;
      $("overview").hidden = false;
      // Canvases were not drawn while hidden.
      for (const row of state.rows.values()) if (row.visible) drawRowCanvases(row, true);
    }
    window.scrollTo(0, 0);
  }

  window.addEventListener("hashchange", route);
  route();
  connect();
  fetchAlerts();
})();
