// lanmon dashboard: small dependency-free canvas charts.
//
// Sparkline(canvas)  — a tiny line of recent values (overview rows).
// CoreBars(canvas)   — one vertical bar per CPU core.
// TimeChart(el, opt) — a time series chart: for each series an avg line and, when the points
//                      carry min/max, a min–max band; time and value axes, a hover read-out,
//                      and drag-to-zoom (opt.onZoom(from, to)).
"use strict";

(function () {
  // Theme colours (CSS variables), read once: getComputedStyle after DOM writes forces a style
  // recalculation, which per row of a large table is what makes a page slow.
  let palette = new Map();
  const css = (name) => {
    let v = palette.get(name);
    if (v === undefined) {
      v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
      palette.set(name, v);
    }
    return v;
  };
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => (palette = new Map()));

  /// Sizes a canvas for its CSS box (`size`, when the caller knows it, saves a layout read)
  /// and the screen's pixel ratio; returns its 2D context scaled to CSS pixels, or null while
  /// it has no size (hidden).
  function fit(canvas, size) {
    const dpr = window.devicePixelRatio || 1;
    const w = size ? size.w : canvas.clientWidth, h = size ? size.h : canvas.clientHeight;
    if (!w || !h) return null;
    const pw = Math.round(w * dpr), ph = Math.round(h * dpr);
    if (canvas.width !== pw || canvas.height !== ph) {
      canvas.width = pw;
      canvas.height = ph;
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    return { ctx, w, h };
  }

  function loadColor(v) {
    return v >= 85 ? css("--bad") : v >= 60 ? css("--warn") : css("--ok");
  }

  /// points: [[ts_ms, value 0..100], …]; from/to: the time window shown.
  function drawSparkline(canvas, points, from, to, offline, size) {
    const f = fit(canvas, size);
    if (!f) return;
    const { ctx, w, h } = f;
    ctx.strokeStyle = css("--grid");
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(0, h - 0.5);
    ctx.lineTo(w, h - 0.5);
    ctx.stroke();
    if (!points.length) return;
    const x = (t) => ((t - from) / (to - from)) * w;
    const y = (v) => h - 1 - (Math.min(100, Math.max(0, v)) / 100) * (h - 3);
    const color = offline ? css("--muted") : css("--accent");
    // Area, then the line on top; a gap of more than 30 s breaks the line.
    ctx.beginPath();
    let open = false, startX = 0, lastX = 0, lastT = 0;
    const closeArea = () => {
      ctx.lineTo(lastX, h);
      ctx.lineTo(startX, h);
      ctx.closePath();
    };
    for (const [t, v] of points) {
      if (t < from) continue;
      const px = x(t), py = y(v);
      if (!open || t - lastT > 30000) {
        if (open) closeArea();
        ctx.moveTo(px, py);
        startX = px;
        open = true;
      } else {
        ctx.lineTo(px, py);
      }
      lastX = px;
      lastT = t;
    }
    if (open) closeArea();
    ctx.globalAlpha = 0.18;
    ctx.fillStyle = color;
    ctx.fill();
    ctx.globalAlpha = 1;
    ctx.beginPath();
    open = false;
    for (const [t, v] of points) {
      if (t < from) continue;
      const px = x(t), py = y(v);
      if (!open || t - lastT > 30000) ctx.moveTo(px, py);
      else ctx.lineTo(px, py);
      open = true;
      lastT = t;
    }
    ctx.strokeStyle = color;
    ctx.lineWidth = 1.25;
    ctx.stroke();
  }

  /// values: per-core percentages.
  function drawCoreBars(canvas, values, offline, size) {
    const f = fit(canvas, size);
    if (!f) return;
    const { ctx, w, h } = f;
    const n = values.length;
    if (!n) return;
    const gap = n > 32 ? 0 : 1;
    const bw = Math.max(1, (w - gap * (n - 1)) / n);
    for (let i = 0; i < n; i++) {
      const v = Math.min(100, Math.max(0, values[i]));
      const bx = i * (bw + gap);
      ctx.fillStyle = css("--track");
      ctx.fillRect(bx, 0, bw, h);
      const bh = Math.max(1, (v / 100) * h);
      ctx.fillStyle = offline ? css("--muted") : loadColor(v);
      ctx.fillRect(bx, h - bh, bw, bh);
    }
  }

  // ---- time axis ------------------------------------------------------------------------

  const SEC = 1000, MIN = 60 * SEC, HOUR = 60 * MIN, DAY = 24 * HOUR;
  const TIME_STEPS = [
    5 * SEC, 10 * SEC, 15 * SEC, 30 * SEC, MIN, 2 * MIN, 5 * MIN, 10 * MIN, 15 * MIN, 30 * MIN,
    HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY,
  ];
  const pad2 = (n) => String(n).padStart(2, "0");

  function timeTicks(from, to, width) {
    const wanted = Math.max(2, Math.floor(width / 90));
    const step = TIME_STEPS.find((s) => (to - from) / s <= wanted) || 14 * DAY;
    // Align to local time so ticks fall on round hours/days.
    const offset = new Date(from).getTimezoneOffset() * MIN;
    const ticks = [];
    for (let t = Math.ceil((from - offset) / step) * step + offset; t <= to; t += step) ticks.push(t);
    return { ticks, step };
  }

  function timeLabel(t, step) {
    const d = new Date(t);
    const hm = `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
    if (step < MIN) return `${hm}:${pad2(d.getSeconds())}`;
    if (step < DAY && !(d.getHours() === 0 && d.getMinutes() === 0)) return hm;
    return dayFormat.format(d);
  }

  // One formatter, made once (toLocaleDateString builds a new one per call, which is slow).
  const dayFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
  function fullTime(t) {
    const d = new Date(t);
    return `${dayFormat.format(d)} ${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  }

  // ---- time chart -----------------------------------------------------------------------

  /// A chart of one or more series over [from, to].
  ///   opt.yMax:    fixed top of the value axis (else from the data)
  ///   opt.format:  value → label
  ///   opt.onZoom:  (from, to) → called after a drag-select
  ///   opt.marginLeft: room for the value labels in px (default 56)
  class TimeChart {
    constructor(el, opt) {
      this.el = el;
      this.opt = opt || {};
      this.canvas = document.createElement("canvas");
      this.tip = document.createElement("div");
      this.tip.className = "chart-tip";
      this.tip.hidden = true;
      el.classList.add("time-chart");
      el.append(this.canvas, this.tip);
      this.data = { from: 0, to: 1, series: [], lines: [] };
      this.hover = null;
      this.drag = null;
      this.margin = { l: this.opt.marginLeft || 56, r: 12, t: 10, b: 22 };
      this.canvas.addEventListener("pointerdown", (e) => this.onDown(e));
      this.canvas.addEventListener("pointermove", (e) => this.onMove(e));
      this.canvas.addEventListener("pointerup", (e) => this.onUp(e));
      this.canvas.addEventListener("pointerleave", () => {
        this.hover = null;
        if (!this.drag) this.draw();
      });
      new ResizeObserver(() => this.draw()).observe(el);
    }

    /// data: { from, to, step, series: [{ label, color, points: [{ t, avg, min?, max? }] }],
    ///         lines: [{ label, color, value }] (horizontal reference lines) }
    set(data) {
      this.data = Object.assign({ series: [], lines: [] }, data);
      const n = this.data.series.reduce((acc, s) => acc + s.points.length, 0);
      this.el.dataset.points = String(n);
      this.draw();
    }

    yMax() {
      if (this.opt.yMax) return this.opt.yMax;
      let m = 0;
      for (const s of this.data.series) for (const p of s.points) m = Math.max(m, p.max ?? p.avg);
      for (const l of this.data.lines) m = Math.max(m, l.value);
      return m > 0 ? m * 1.08 : 1;
    }

    frame() {
      const w = this.canvas.clientWidth, h = this.canvas.clientHeight, m = this.margin;
      const { from, to } = this.data;
      const top = this.yMax();
      return {
        w, h, m, top,
        x: (t) => m.l + ((t - from) / (to - from)) * (w - m.l - m.r),
        t: (px) => from + ((px - m.l) / (w - m.l - m.r)) * (to - from),
        y: (v) => m.t + (1 - v / top) * (h - m.t - m.b),
      };
    }

    draw() {
      const f = fit(this.canvas);
      if (!f) return;
      const { ctx } = f;
      const fr = this.frame();
      const { w, h, m, x, y, top } = fr;
      const { from, to } = this.data;
      const fmt = this.opt.format || ((v) => v.toFixed(0));
      ctx.font = `11px ${css("--font")}`;
      ctx.lineWidth = 1;
      // Value grid.
      ctx.textAlign = "right";
      ctx.textBaseline = "middle";
      const yTicks = niceTicks(top, Math.max(2, Math.floor((h - m.t - m.b) / 40)));
      for (const v of yTicks) {
        const py = Math.round(y(v)) + 0.5;
        ctx.strokeStyle = css("--grid");
        ctx.beginPath();
        ctx.moveTo(m.l, py);
        ctx.lineTo(w - m.r, py);
        ctx.stroke();
        ctx.fillStyle = css("--muted");
        ctx.fillText(fmt(v), m.l - 6, py);
      }
      // Time grid.
      const { ticks, step } = timeTicks(from, to, w - m.l - m.r);
      ctx.textAlign = "center";
      ctx.textBaseline = "top";
      for (const t of ticks) {
        const px = Math.round(x(t)) + 0.5;
        ctx.strokeStyle = css("--grid");
        ctx.beginPath();
        ctx.moveTo(px, m.t);
        ctx.lineTo(px, h - m.b);
        ctx.stroke();
        // A label that would stick out of the chart is left out (its grid line stays).
        const label = timeLabel(t, step);
        const half = ctx.measureText(label).width / 2;
        if (px - half < m.l - 8 || px + half > w) continue;
        ctx.fillStyle = css("--muted");
        ctx.fillText(label, px, h - m.b + 5);
      }
      ctx.save();
      ctx.beginPath();
      ctx.rect(m.l, m.t - 1, w - m.l - m.r, h - m.t - m.b + 2);
      ctx.clip();
      // Reference lines (e.g. memory total).
      for (const l of this.data.lines) {
        ctx.strokeStyle = l.color;
        ctx.setLineDash([4, 4]);
        ctx.beginPath();
        ctx.moveTo(m.l, Math.round(y(l.value)) + 0.5);
        ctx.lineTo(w - m.r, Math.round(y(l.value)) + 0.5);
        ctx.stroke();
        ctx.setLineDash([]);
      }
      // A gap longer than this breaks lines and bands (missing data is not interpolated).
      const maxGap = Math.max((this.data.step || 0) * 2.5, 30000);
      for (const s of this.data.series) {
        const runs = splitRuns(s.points, maxGap);
        if (s.points.some((p) => p.min !== undefined)) {
          ctx.fillStyle = s.color;
          ctx.globalAlpha = 0.2;
          for (const run of runs) {
            ctx.beginPath();
            run.forEach((p, i) => (i ? ctx.lineTo : ctx.moveTo).call(ctx, x(p.t), y(p.max)));
            for (let i = run.length - 1; i >= 0; i--) ctx.lineTo(x(run[i].t), y(run[i].min));
            ctx.closePath();
            ctx.fill();
            if (run.length === 1) ctx.fillRect(x(run[0].t) - 1, y(run[0].max), 2, y(run[0].min) - y(run[0].max));
          }
          ctx.globalAlpha = 1;
        }
        ctx.strokeStyle = s.color;
        ctx.lineWidth = s.width || 1.5;
        ctx.lineJoin = "round";
        for (const run of runs) {
          ctx.beginPath();
          run.forEach((p, i) => (i ? ctx.lineTo : ctx.moveTo).call(ctx, x(p.t), y(p.avg)));
          if (run.length === 1) ctx.lineTo(x(run[0].t) + 1, y(run[0].avg));
          ctx.stroke();
        }
        ctx.lineWidth = 1;
      }
      ctx.restore();
      // Drag selection.
      if (this.drag && Math.abs(this.drag.x1 - this.drag.x0) > 2) {
        const a = Math.min(this.drag.x0, this.drag.x1), b = Math.max(this.drag.x0, this.drag.x1);
        ctx.fillStyle = css("--accent");
        ctx.globalAlpha = 0.15;
        ctx.fillRect(a, m.t, b - a, h - m.t - m.b);
        ctx.globalAlpha = 1;
      }
      this.drawHover(ctx, fr, fmt);
    }

    drawHover(ctx, fr, fmt) {
      const { m, h, x, y } = fr;
      if (!this.hover || this.drag) {
        this.tip.hidden = true;
        return;
      }
      const t = fr.t(this.hover.px);
      const rows = [];
      let lineX = null;
      for (const s of this.data.series) {
        const p = nearest(s.points, t);
        if (!p || Math.abs(x(p.t) - this.hover.px) > 24) continue;
        lineX = x(p.t);
        rows.push({ s, p });
      }
      if (lineX === null) {
        this.tip.hidden = true;
        return;
      }
      ctx.strokeStyle = css("--muted");
      ctx.beginPath();
      ctx.moveTo(Math.round(lineX) + 0.5, m.t);
      ctx.lineTo(Math.round(lineX) + 0.5, h - m.b);
      ctx.stroke();
      for (const { s, p } of rows) {
        ctx.fillStyle = s.color;
        ctx.beginPath();
        ctx.arc(x(p.t), y(p.avg), 3, 0, 2 * Math.PI);
        ctx.fill();
      }
      const shown = rows.slice(0, 8);
      this.tip.replaceChildren();
      const head = document.createElement("div");
      head.className = "tip-time";
      head.textContent = fullTime(rows[0].p.t);
      this.tip.append(head);
      for (const { s, p } of shown) {
        const row = document.createElement("div");
        const sw = document.createElement("i");
        sw.style.background = s.color;
        row.append(sw, `${s.label}: ${fmt(p.avg)}`);
        if (p.min !== undefined && p.max !== undefined && p.max !== p.min) {
          const range = document.createElement("span");
          range.textContent = ` (${fmt(p.min)} – ${fmt(p.max)})`;
          row.append(range);
        }
        this.tip.append(row);
      }
      if (rows.length > shown.length) this.tip.append(`… ${rows.length - shown.length} more`);
      this.tip.hidden = false;
      const left = lineX + 12 + this.tip.offsetWidth > fr.w ? lineX - 12 - this.tip.offsetWidth : lineX + 12;
      this.tip.style.left = `${left}px`;
      this.tip.style.top = `${m.t + 4}px`;
    }

    onDown(e) {
      if (!this.opt.onZoom || e.button !== 0) return;
      this.canvas.setPointerCapture(e.pointerId);
      this.drag = { x0: e.offsetX, x1: e.offsetX };
    }

    onMove(e) {
      if (this.drag) this.drag.x1 = e.offsetX;
      else this.hover = { px: e.offsetX };
      this.draw();
    }

    onUp(e) {
      const d = this.drag;
      this.drag = null;
      if (!d) return;
      const fr = this.frame();
      const a = Math.min(d.x0, e.offsetX), b = Math.max(d.x0, e.offsetX);
      if (b - a >= 5) {
        const from = Math.max(this.data.from, fr.t(a)), to = Math.min(this.data.to, fr.t(b));
        if (to - from >= 10 * SEC) this.opt.onZoom(Math.round(from), Math.round(to));
      }
      this.draw();
    }
  }

  function splitRuns(points, maxGap) {
    const runs = [];
    let run = [];
    for (const p of points) {
      if (run.length && p.t - run[run.length - 1].t > maxGap) {
        runs.push(run);
        run = [];
      }
      run.push(p);
    }
    if (run.length) runs.push(run);
    return runs;
  }

  function nearest(points, t) {
    let lo = 0, hi = points.length - 1;
    if (hi < 0) return null;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (points[mid].t < t) lo = mid + 1;
      else hi = mid;
    }
    if (lo > 0 && Math.abs(points[lo - 1].t - t) < Math.abs(points[lo].t - t)) lo--;
    return points[lo];
  }

  /// Round tick values from 0 to `top` (about `count` of them).
  function niceTicks(top, count) {
    const raw = top / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((k) => k * mag).find((s) => top / s <= count) || 10 * mag;
    const out = [];
    for (let v = 0; v <= top + 1e-9; v += step) out.push(v);
    return out;
  }

  window.LanmonChart = { drawSparkline, drawCoreBars, TimeChart, loadColor, fullTime, css };
})();
