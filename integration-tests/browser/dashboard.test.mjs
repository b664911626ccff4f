// The dashboard in a real browser: Debian's Chromium, headless, driven by playwright-core,
// against the real server and three real agents, everything on 127.0.0.1.
//
// Proves: without the login the dashboard and API answer 401; the login URL the server
// printed opens a session (cookie) and drops the token from the address; agents (joined with
// the printed token) appear; values change live (Server-Sent Events); the whole-machine columns
// (load, fullest filesystem, network) show the agents' real values; sorting and the text filter
// work; an agent that dies stays listed, greyed, with its last-known values; the detail view
// draws its charts (CPU, memory, cores, load, swap, each filesystem, network, disk I/O) from the
// history API and zooms them together; it shows the processes table, the agent's own cost and
// the clock offset, warns about a clock more than 2 s off, and shows temperatures when there
// are sensors, agent-controlled names as text; a killed agent's offline alert shows (badge,
// list, pill); an agent without the token shows as pending and the Approve button enrolls it;
// the Revoke button closes it (its row marked revoked); the page logs no console error. Saves screenshot.png
// (overview) and screenshot-detail.png next to this file.
//
//   node integration-tests/browser/dashboard.test.mjs [BIN_DIR]     (default target/debug)
//
// Run it inside `unshare -n` (the Makefile's itest-browser does, as root): Chromium then has
// no network but loopback. Its flags keep it from calling out anyway.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const bin = path.resolve(root, process.argv[2] || process.env.LANMON_BIN_DIR || "target/debug");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const DEADLINE_MS = 15000; // for each wait
const AGENTS = ["browser-alpha", "browser-bravo", "browser-charlie"];

const started = Date.now();
const children = [];
let context = null;
let userDataDir = null;
let dataDir = null;
const stateDirs = [];

function log(msg) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);
}

function fail(msg) {
  throw new Error(msg);
}

function check(cond, msg) {
  if (!cond) fail(msg);
}

function run(name, args) {
  const child = spawn(path.join(bin, name), args, { stdio: ["ignore", "pipe", "pipe"] });
  child.stderr.on("data", (d) => process.env.VERBOSE && process.stderr.write(`${name}: ${d}`));
  children.push(child);
  return child;
}

/// The server's banner (stderr) prints the join token and the dashboard's login URL.
function banner(server) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no join token and login URL in the banner within 10 s")), 10000);
    let text = "";
    server.stderr.on("data", (d) => {
      text += d;
      const token = text.match(/--join (lm2-[0-9A-Z]+)/);
      const login = text.match(/\?token=([0-9A-Z]+)/);
      if (token && login) {
        clearTimeout(timer);
        resolve({ token: token[1], login: login[1] });
      }
    });
  });
}

/// An agent with a state directory of its own (its key), joining with `token` if given.
function agent(name, tcpPort, token, extra = []) {
  const dir = mkdtempSync(path.join(tmpdir(), "lanmon-browser-agent-"));
  stateDirs.push(dir);
  const args = ["--host", "127.0.0.1", "--port", tcpPort, "--interval", "1s", "--name", name, "--state-dir", dir, "--quiet"];
  if (token) args.push("--join", token);
  return run("agent", [...args, ...extra]);
}

/// The server's first JSON snapshot (stdout, --report-format json) tells its real addresses.
function firstSnapshot(server) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no snapshot from the server within 10 s")), 10000);
    server.on("exit", (code) => reject(new Error(`server exited (${code}) before its first snapshot`)));
    const lines = readline.createInterface({ input: server.stdout });
    lines.on("line", (line) => {
      try {
        const snapshot = JSON.parse(line);
        clearTimeout(timer);
        resolve(snapshot);
      } catch {
        // not a snapshot line
      }
    });
  });
}

async function stopAll() {
  if (context) await context.close().catch(() => {});
  for (const c of children) if (c.exitCode === null) c.kill("SIGTERM");
  await Promise.all(
    children.map((c) => (c.exitCode !== null ? null : new Promise((r) => {
      const t = setTimeout(() => { c.kill("SIGKILL"); r(); }, 3000);
      c.on("exit", () => { clearTimeout(t); r(); });
    }))),
  );
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  for (const d of stateDirs) rmSync(d, { recursive: true, force: true });
}

async function main() {
  // The server as shipped: with its durable store (in a throwaway directory).
  dataDir = mkdtempSync(path.join(tmpdir(), "lanmon-browser-data-"));
  // Only the offline rule: the others read this machine's real load, memory and disks, which
  // on a busy test machine may fire on any agent.
  const rules = path.join(dataDir, "alerts.toml");
  const others = ["stale", "cpu", "memory", "swap", "load", "filesystem", "filesystem_fill",
    "clock", "temperature", "pending", "unauthenticated"];
  writeFileSync(rules, others.map((r) => `[rules.${r}]\nenabled = false\n`).join("\n"));
  const server = run("server", [
    "--bind", "127.0.0.1:0", "--http", "127.0.0.1:0", "--no-beacon", "--data-dir", dataDir,
    "--report-format", "json", "--report-interval", "1s",
    "--alert-offline-for", "1s", "--alert-interval", "500ms", "--alerts", rules,
  ]);
  const printed = banner(server);
  const snapshot = await firstSnapshot(server);
  const { token, login } = await printed;
  const tcpPort = snapshot.server.listen.split(":").pop();
  const http = snapshot.server.http;
  check(http && http.startsWith("127.0.0.1:"), `server.http is ${http}`);
  log(`server on ${snapshot.server.listen}, HTTP on ${http}, key ${snapshot.server.fingerprint}`);
  for (const name of AGENTS) {
    // alpha also sends its busiest processes and counts loopback traffic (the only interface
    // in the test's network namespace), so that its network rates and processes are real.
    const extra = name === "browser-alpha" ? ["--processes", "5", "--net-interfaces", "lo"] : [];
    agent(name, tcpPort, token, extra);
  }

  // 0. Without the login: 401 for the page and the API (fetched from here, not the browser).
  for (const p of ["/", "/api/agents", "/metrics"]) {
    const r = await fetch(`http://${http}${p}`, { redirect: "manual" });
    check(r.status === 401, `${p} without login: ${r.status}`);
  }
  log("without the login: 401");

  userDataDir = mkdtempSync(path.join(tmpdir(), "lanmon-chromium-"));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1360, height: 640 },
    colorScheme: "dark",
    args: [
      "--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(DEADLINE_MS);
  const problems = [];
  page.on("console", (m) => m.type() === "error" && problems.push(`console error: ${m.text()}`));
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("requestfailed", (r) => {
    // The live feed is cut when the test closes the page, and `net::ERR_ABORTED` is the
    // browser cancelling a request itself (a reload or navigation while a poll such as
    // /api/alerts is in flight); a server that fails gives another error (reset, empty
    // response, refused). Anything else is a problem.
    const why = r.failure()?.errorText;
    if (!r.url().endsWith("/api/events") && why !== "net::ERR_ABORTED") problems.push(`request failed: ${r.url()} ${why}`);
  });
  page.on("request", (r) => {
    if (!r.url().startsWith(`http://${http}/`)) problems.push(`request outside the server: ${r.url()}`);
  });

  // Logging in as the banner says: the token leaves the address bar (303 to /, cookie set).
  await page.goto(`http://${http}/?token=${login}`);
  check(page.url() === `http://${http}/`, `after login the page is at ${page.url()}`);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "lanmon_session");
  check(session && session.httpOnly && session.sameSite === "Strict", `session cookie: ${JSON.stringify(cookies)}`);
  log("logged in through the printed URL (session cookie, token gone from the address)");
  const rows = "#rows .row[data-id]:not([hidden])";

  // 1. Agents appear, live.
  await page.waitForFunction(
    (sel) => [...document.querySelectorAll(sel)].filter((r) => r.dataset.status === "live").length === 3,
    rows,
  );
  log("three agents listed, live");
  const names = () => page.$$eval(`${rows} .c-name a`, (els) => els.map((e) => e.textContent));
  check(JSON.stringify(await names()) === JSON.stringify(AGENTS), `rows by name: ${await names()}`);

  // 2. Values change live: the seq grows and the row's text (CPU, memory, last seen) changes.
  const alpha = `${rows}[data-name="browser-alpha"]`;
  const seq0 = Number(await page.getAttribute(alpha, "data-seq"));
  const text0 = await page.textContent(alpha);
  await page.waitForFunction(
    ([sel, seq, text]) => {
      const r = document.querySelector(sel);
      return r && Number(r.dataset.seq) >= seq + 2 && r.textContent !== text;
    },
    [alpha, seq0, text0],
  );
  check(/%$/.test(await page.textContent(`${alpha} .c-cpu`)), "CPU cell shows no percentage");
  check(/ \/ /.test(await page.textContent(`${alpha} .c-mem`)), "memory cell shows no used / total");
  log(`values change live (seq ${seq0} → ${await page.getAttribute(alpha, "data-seq")})`);

  // 2b. The whole-machine columns show what the agent sends: load like /proc/loadavg, the
  // fullest filesystem's percent, and (alpha counts loopback) network rates.
  const api = async () => (await page.request.get(`http://${http}/api/agents`)).json();
  const alphaView = async () => (await api()).agents.find((a) => a.name === "browser-alpha");
  await page.waitForFunction((sel) => /\/s \/ .*\/s$/.test(document.querySelector(`${sel} .c-net`)?.textContent || ""), alpha);
  const view = await alphaView();
  check(view.load && view.filesystems && view.filesystems.length > 0, `alpha sends no load or filesystems: ${JSON.stringify(view)}`);
  check(/^\d+\.\d\d$/.test(await page.textContent(`${alpha} .c-load`)), `load cell: ${await page.textContent(`${alpha} .c-load`)}`);
  const diskText = await page.textContent(`${alpha} .c-disk`);
  const fullest = Math.max(...view.filesystems.filter((f) => f.size_bytes).map((f) => ((f.size_bytes - f.avail_bytes) / f.size_bytes) * 100));
  check(/%$/.test(diskText) && Math.abs(parseFloat(diskText) - fullest) < 1, `disk cell ${diskText}, fullest filesystem ${fullest.toFixed(1)}%`);
  check(await page.isVisible(`${alpha} .c-disk .fill`), "disk meter not drawn");
  await page.click('.head [data-sort="load"]');
  const loads = await page.$$eval(`${rows} .c-load`, (els) => els.map((e) => parseFloat(e.textContent)));
  check(loads.every((v, i) => i === 0 || loads[i - 1] >= v), `load ▼ not in order: ${loads}`);
  await page.click('.head [data-sort="name"]');
  log(`whole-machine columns: load ${await page.textContent(`${alpha} .c-load`)}, disk ${diskText}, net ${await page.textContent(`${alpha} .c-net`)}`);

  // 3. Sorting: name descending, then ascending; CPU busiest first.
  await page.click('.head [data-sort="name"]');
  check(JSON.stringify(await names()) === JSON.stringify([...AGENTS].reverse()), `name ▼: ${await names()}`);
  check((await page.getAttribute('.head [data-sort="name"]', "aria-sort")) === "descending", "no ▼ on Name");
  await page.click('.head [data-sort="name"]');
  check(JSON.stringify(await names()) === JSON.stringify(AGENTS), `name ▲: ${await names()}`);
  await page.click('.head [data-sort="cpu"]');
  const cpus = await page.$$eval(`${rows} .c-cpu`, (els) => els.map((e) => parseFloat(e.textContent)));
  check(cpus.every((v, i) => i === 0 || cpus[i - 1] >= v), `CPU ▼ not in order: ${cpus}`);
  await page.click('.head [data-sort="name"]');
  log("sorting works");

  // 4. Filter.
  await page.fill("#filter", "bravo");
  await page.waitForFunction((sel) => document.querySelectorAll(sel).length === 1, rows);
  check(JSON.stringify(await names()) === '["browser-bravo"]', `filtered: ${await names()}`);
  check((await page.textContent("#shown")) === "1 of 3 shown", "no '1 of 3 shown'");
  await page.fill("#filter", "");
  await page.waitForFunction((sel) => document.querySelectorAll(sel).length === 3, rows);
  log("filter works");

  // 5. An agent killed outright goes offline: greyed, last-known values kept.
  children[1 + AGENTS.indexOf("browser-charlie")].kill("SIGKILL");
  const charlie = `${rows}[data-name="browser-charlie"]`;
  await page.waitForSelector(`${charlie}.offline`);
  check(/%$/.test(await page.textContent(`${charlie} .c-cpu`)), "offline agent lost its last CPU value");
  check(/^offline/.test(await page.textContent(`${charlie} .c-seen`)), "offline agent's last seen says nothing");
  log("killed agent shown offline with its last values");

  // 5b. Its offline alert fires: a badge on its row, a line in the alerts list, the pill.
  await page.waitForSelector(`${charlie} .badge.critical:not([hidden])`);
  check((await page.textContent(`${charlie} .badge`)) === "offline", "badge does not name the rule");
  // (Not "no badge at all": on a busy machine alpha's CPU alert may be pending meanwhile.)
  const alphaBadge = (await page.isVisible(`${alpha} .badge`)) ? await page.getAttribute(`${alpha} .badge`, "title") : "";
  check(!/offline/.test(alphaBadge), `a live agent has an offline alert: ${alphaBadge} (${await page.$eval(alpha, (r) => r.querySelector(".c-name").outerHTML)})`);
  const item = '#alerts-list .alert.firing[data-rule="offline"]';
  await page.waitForSelector(item);
  check((await page.textContent(`${item} a`)) === "browser-charlie", "alerts list names another agent");
  check((await page.textContent("#alert-pill")) === "1 firing", "no '1 firing' pill");
  log("offline alert shown: badge, list, pill");
  await page.waitForTimeout(1500); // a few more sparkline points for the picture
  await page.screenshot({ path: path.join(here, "screenshot.png"), fullPage: true });

  // 6. Detail view: charts render and zoom.
  await page.click(`${alpha} .c-name a`);
  await page.waitForFunction(() => location.hash.startsWith("#/agent/") && !document.getElementById("detail").hidden);
  await page.waitForFunction(() => Number(document.getElementById("chart-cpu").dataset.points) > 0);
  await page.waitForFunction(() => Number(document.getElementById("chart-mem").dataset.points) > 0);
  await page.waitForFunction(() => Number(document.getElementById("chart-cores").dataset.points) > 0);
  // Per-core lines come from the store's history (same range and zoom as the CPU chart).
  await page.waitForFunction(() => document.getElementById("chart-cores").dataset.source === "history");
  // Pixels of the series colour (blue-ish for CPU), not just grid and labels.
  const painted = () => page.$eval("#chart-cpu canvas", (c) => {
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && d[i + 2] - d[i] > 80) n++;
    return n;
  });
  const painted1h = await painted();
  check(painted1h > 0, "CPU chart (1 h) draws no series");
  check((await page.textContent("#d-name")) === "browser-alpha", "detail view of the wrong agent");
  log(`detail charts drawn (${painted1h} series pixels in the 1 h CPU chart)`);

  // 6a. The whole machine in the detail view: history charts with points from the API's new
  // series, one chart per filesystem the store keeps, the live panels and info items.
  const points = (sel) => page.$eval(sel, (el) => Number(el.dataset.points));
  for (const id of ["chart-load", "chart-swap", "chart-net", "chart-disk"]) {
    await page.waitForFunction((i) => Number(document.getElementById(i).dataset.points) > 0, id);
  }
  const mounts = await page.$$eval("#fs-charts .fs-chart", (els) => els.map((e) => e.dataset.mount));
  const sent = (await alphaView()).filesystems.map((f) => f.mount);
  check(mounts.length > 0 && mounts.every((m) => sent.includes(m)), `filesystem charts ${mounts}, agent sends ${sent}`);
  await page.waitForFunction(() => [...document.querySelectorAll("#fs-charts .fs-chart .time-chart")].every((c) => Number(c.dataset.points) > 0));
  const hist = await (await page.request.get(`http://${http}/api/agents/${encodeURIComponent(view.id)}/history?series=net&step=1000&from=${Date.now() - 120000}`)).json();
  const rx = hist.points.filter((p) => p.net_rx_bytes_per_s).length;
  check(rx > 0, `the history API has no network points for alpha: ${JSON.stringify(hist).slice(0, 300)}`);
  check(await page.isVisible("#procs-card"), "no processes table for an agent with --processes");
  const procs = await page.$$eval("#procs .proc:not(.head)", (els) => els.length);
  check(procs > 0 && procs <= 10, `processes table has ${procs} rows`);
  const costText = await page.textContent('#d-info [data-key="cost"] dd');
  check(/RSS/.test(costText) && /ms CPU per sample/.test(costText), `agent cost: ${costText}`);
  const clockText = await page.textContent('#d-info [data-key="clock"] dd');
  check(/ s \(/.test(clockText) && !(await page.$('#d-info [data-key="clock"].warn')), `clock offset on this machine: ${clockText}`);
  check((await page.isVisible("#temps-card")) === ((await alphaView()).temperatures || []).length > 0, "temperature panel shown without sensors, or hidden with them");
  log(`whole machine: load, swap, network, disk and ${mounts.length} filesystem chart(s) from history, ${procs} processes, cost and clock shown`);

  const pressed = (range) => page.getAttribute(`#ranges button[data-range="${range}"]`, "aria-pressed");
  await page.click('#ranges button[data-range="86400000"]');
  check((await pressed(86400000)) === "true", "24 h not selected");
  await page.click('#ranges button[data-range="3600000"]');
  check((await pressed(3600000)) === "true", "1 h not selected");
  // Drag across the last half minute or so of the 1 h CPU chart (where this young server's
  // data is), so the zoomed chart is mostly data.
  const label0 = await page.textContent("#range-label");
  const box = await page.locator("#chart-cpu canvas").boundingBox();
  const y = box.y + box.height / 2;
  await page.mouse.move(box.x + box.width - 28, y); // the plot ends 12 px before the canvas does
  await page.mouse.down();
  await page.mouse.move(box.x + box.width - 2, y, { steps: 5 });
  await page.mouse.up();
  await page.waitForSelector("#zoom-out:not([hidden])");
  await page.waitForFunction((l) => document.getElementById("range-label").textContent !== l, label0);
  check((await pressed(3600000)) === "false", "zoomed in, yet 1 h still shown as selected");
  await page.waitForFunction(() => Number(document.getElementById("chart-cpu").dataset.points) > 2);
  const paintedZoom = await painted();
  check(paintedZoom > painted1h, `zoomed CPU chart: ${paintedZoom} series pixels (1 h: ${painted1h})`);
  log(`range buttons and drag-to-zoom work (${paintedZoom} series pixels zoomed in)`);
  await page.mouse.move(box.x + box.width * 0.8, y); // show the read-out in the picture
  await page.screenshot({ path: path.join(here, "screenshot-detail.png"), fullPage: true });
  await page.click("#zoom-out");
  await page.waitForSelector("#zoom-out[hidden]", { state: "attached" });
  check((await pressed(3600000)) === "true", "reset zoom did not return to 1 h");

  // 6b. A clock more than 2 s off is warned about, and sensors show in the temperature panel,
  // their names as text: the live feed is replaced by one real snapshot with alpha's clock
  // 5 s ahead and a hostile sensor name.
  const fake = await api();
  const fa = fake.agents.find((a) => a.name === "browser-alpha");
  fa.clock_offset_ms = 5000;
  fa.temperatures = [{ sensor: "<img src=x onerror=alert(1)> cpu", temp_c: 47.5 }];
  await page.route("**/api/events", (route) => route.fulfill({
    status: 200,
    headers: { "content-type": "text/event-stream", "cache-control": "no-store" },
    body: `retry: 60000\ndata: ${JSON.stringify(fake)}\n\n`,
  }));
  await page.reload();
  await page.waitForSelector('#d-info [data-key="clock"].warn');
  check(/^\+5 s \(ahead/.test(await page.textContent('#d-info [data-key="clock"] dd')), "clock warning text");
  await page.waitForSelector("#temps-card:not([hidden])");
  check((await page.textContent("#temps .sensor")) === fa.temperatures[0].sensor, "sensor name not shown as text");
  check((await page.$$("#temps img")).length === 0, "a sensor name became markup");
  check(/47\.5 °C/.test(await page.textContent("#temps")), "temperature value");
  await page.unroute("**/api/events");
  await page.reload();
  await page.waitForFunction(() => Number(document.getElementById("chart-cpu").dataset.points) > 0);
  log("clock warning and temperature panel shown (names as text)");

  // 7. Back to the overview.
  await page.click("text=← All agents");
  await page.waitForFunction((sel) => document.querySelectorAll(sel).length === 3, rows);

  // 8. An agent without the token waits for approval; the Approve button enrolls it.
  agent("browser-newcomer", tcpPort, null);
  const pending = '#pending-list .pending[data-name="browser-newcomer"]';
  await page.waitForSelector(pending);
  const fp = await page.getAttribute(pending, "data-fp");
  check(/^SHA256:/.test(fp), `pending fingerprint ${fp}`);
  check(!(await page.$(`${rows}[data-name="browser-newcomer"]`)), "a pending agent is listed as an agent");
  await page.click(`${pending} button.approve`);
  const newcomer = `${rows}[data-name="browser-newcomer"]`;
  await page.waitForSelector(`${newcomer}[data-status="live"]`, { timeout: 45000 });
  await page.waitForSelector("#pending-panel", { state: "hidden" });
  log(`pending agent approved from the dashboard (${fp})`);

  // 9. The Revoke button (detail view) closes it at once.
  page.once("dialog", (d) => d.accept());
  await page.click(`${newcomer} .c-name a`);
  await page.waitForSelector("#d-trust:not([hidden])");
  await page.click("#d-revoke");
  await page.waitForFunction(() => /revoked/.test(document.getElementById("d-status").textContent));
  await page.click("text=← All agents");
  await page.waitForSelector(`#rows .row[data-name="browser-newcomer"].offline`);
  await page.waitForSelector(`#rows .row[data-name="browser-newcomer"][data-auth="revoked"] .badge.revoked:not([hidden])`);
  log("agent revoked from the dashboard: offline at once, marked revoked");

  // Nothing went wrong in the page.
  check(problems.length === 0, `the page had problems:\n  ${problems.join("\n  ")}`);
  log("no console errors, no failed or outside requests");
}

try {
  await main();
  await stopAll();
  log(`PASS: dashboard in Chromium (screenshots in ${path.relative(root, here)}/)`);
  console.log("1 passed, 0 failed");
} catch (e) {
  console.error(`FAIL: ${e.message}`);
  await stopAll();
  console.log("0 passed, 1 failed");
  process.exit(1);
}
