// lanmon dashboard: the overview table (live over Server-Sent Events) and the per-agent
// detail view (#/agent/<id>) with history charts. Plain JavaScript, no build step.
//
// Data: /api/events pushes the snapshot (the same JSON as /api/agents) once per second; the
// overview updates rows in place, and only rows on screen (only cells whose text changed; rows
// off screen are brought up to date when they scroll into view). Sparklines start from /api/agents/{id}/history (fetched when a row first comes on
// screen, a few at a time) and then grow from the live snapshots.
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
    renderSummary(snapshot.summary);
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
    nameTd.append(link, host, badge);
    const ip = cell(tr, "c-ip");
    const cpu = meter(cell(tr, "c-cpu"), "");
    const cores = document.createElement("canvas");
    cores.className = "cores";
    cell(tr, "c-cores").append(cores);
    const sparkCanvas = document.createElement("canvas");
    sparkCanvas.className = "spark";
    cell(tr, "c-spark").append(sparkCanvas);
    const mem = meter(cell(tr, "c-mem"), "mem");
    const seen = cell(tr, "c-seen");
    const row = { id, tr, dot, link, host, badge, ip, cpu, cores, spark: sparkCanvas, mem, seen, visible: false, prev: {}, coresKey: "" };
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
    put(row, "badgeTitle", row.badge, "title", shown.map((x) => `${x.state}: ${x.summary}`).join("\n"));
    const cpu = a.cpu ? a.cpu.total : null;
    put(row, "cpuText", row.cpu.label, "textContent", pct(cpu));
    put(row, "cpuW", row.cpu.fill, "width", `${cpu == null ? 0 : Math.min(100, cpu)}%`);
    put(row, "cpuC", row.cpu.fill, "className", `fill ${cpu >= 85 ? "bad" : cpu >= 60 ? "warn" : ""}`);
    const mr = memRatio(a);
    put(row, "memText", row.mem.label, "textContent", a.memory ? `${bytes(a.memory.used)} / ${bytes(a.memory.total)}` : "–");
    put(row, "memW", row.mem.fill, "width", `${mr == null ? 0 : (mr * 100).toFixed(1)}%`);
    put(row, "memTitle", row.mem.label, "title", a.memory ? `${(mr * 100).toFixed(1)}% used, ${bytes(a.memory.available)} available, ${bytes(a.memory.free)} free` : "");
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
    else state.sort = { key, dir: ["cpu", "mem", "seen", "cores"].includes(key) ? -1 : 1 };
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
    fetch(`/api/agents/${encodeURIComponent(id)}/history?from=${Math.floor(from)}&to=${Math.ceil(to)}&step=${asked}`)
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
      info("Alerts", (state.alerts.byAgent.get(a.id) || []).map((x) => `${x.rule} ${x.state}`).join(", ") || "none"),
    );
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
