// Draws the charts of an amexbench page from the JSON in #amexbench-data:
// per section, latency quantiles, throughput and answers by status over
// time, with the run's marks (kills, reloads, upstream faults) as lines.
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const W = 900, H = 220, M = { left: 56, right: 16, top: 34, bottom: 30 };

  function el(name, attrs, parent) {
    const e = document.createElementNS(NS, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }

  function text(parent, x, y, s, attrs) {
    const t = el("text", Object.assign({ x: x, y: y }, attrs || {}), parent);
    t.textContent = s;
    return t;
  }

  function niceStep(span, n) {
    const raw = span / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const f = raw / mag;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
  }

  function fmtMs(v) {
    if (v >= 1000) return (v / 1000) + "s";
    if (v >= 1) return v + "ms";
    return (v * 1000) + "µs";
  }

  // chart draws one SVG: series of [t, v] points (v null for a gap), as
  // lines or stacked areas, on a linear or log y axis, with marks.
  function chart(box, opt) {
    const svg = el("svg", { viewBox: "0 0 " + W + " " + H, class: "chart", role: "img" }, box);
    el("title", {}, svg).textContent = opt.title;
    const pw = W - M.left - M.right, ph = H - M.top - M.bottom;
    const tmax = Math.max(opt.tmax, 1e-9);
    const xs = t => M.left + pw * t / tmax;
    let ymin = 0, ymax = 0;
    const values = [];
    opt.series.forEach(s => s.points.forEach(p => { if (p[1] != null) values.push(p[1]); }));
    if (opt.stacked) {
      const n = opt.series.length ? opt.series[0].points.length : 0;
      for (let i = 0; i < n; i++) {
        let sum = 0;
        opt.series.forEach(s => { sum += s.points[i][1] || 0; });
        ymax = Math.max(ymax, sum);
      }
    } else {
      values.forEach(v => { ymax = Math.max(ymax, v); });
    }
    let ys, ticks = [];
    if (opt.log) {
      const pos = values.filter(v => v > 0);
      ymin = pos.length ? Math.pow(10, Math.floor(Math.log10(Math.min.apply(null, pos)))) : 0.1;
      ymax = pos.length ? Math.pow(10, Math.ceil(Math.log10(Math.max.apply(null, pos)))) : 1;
      if (ymax <= ymin) ymax = ymin * 10;
      const l0 = Math.log10(ymin), l1 = Math.log10(ymax);
      ys = v => M.top + ph - ph * (Math.log10(Math.max(v, ymin)) - l0) / (l1 - l0);
      for (let d = ymin; d <= ymax * 1.0001; d *= 10) ticks.push(Number(d.toPrecision(1)));
    } else {
      if (ymax <= 0) ymax = 1;
      const step = niceStep(ymax, 4);
      ymax = Math.ceil(ymax / step) * step;
      ys = v => M.top + ph - ph * v / ymax;
      for (let v = 0; v <= ymax + step / 2; v += step) ticks.push(Number(v.toPrecision(6)));
    }
    const grid = el("g", { class: "grid" }, svg);
    ticks.forEach(v => {
      const y = ys(v);
      el("line", { x1: M.left, x2: W - M.right, y1: y, y2: y }, grid);
      text(grid, M.left - 6, y + 4, opt.log ? fmtMs(v) : String(v), { "text-anchor": "end" });
    });
    const tstep = niceStep(tmax, 10);
    for (let t = 0; t <= tmax + 1e-9; t += tstep) {
      const x = xs(t);
      el("line", { x1: x, x2: x, y1: M.top + ph, y2: M.top + ph + 4 }, grid);
      text(grid, x, M.top + ph + 18, Number(t.toPrecision(6)) + "s", { "text-anchor": "middle" });
    }
    text(svg, M.left, 16, opt.title, { class: "chart-title" });

    const plot = el("g", { class: "plot" }, svg);
    if (opt.stacked) {
      const n = opt.series.length ? opt.series[0].points.length : 0;
      const base = new Array(n).fill(0);
      opt.series.forEach(s => {
        const top = s.points.map((p, i) => base[i] + (p[1] || 0));
        let d = "";
        s.points.forEach((p, i) => { d += (i ? "L" : "M") + xs(p[0]).toFixed(1) + "," + ys(top[i]).toFixed(1); });
        for (let i = n - 1; i >= 0; i--) d += "L" + xs(s.points[i][0]).toFixed(1) + "," + ys(base[i]).toFixed(1);
        if (n) el("path", { d: d + "Z", fill: s.color, "fill-opacity": 0.75, stroke: "none" }, plot);
        top.forEach((v, i) => { base[i] = v; });
      });
    } else {
      opt.series.forEach(s => {
        let d = "", pen = false;
        s.points.forEach(p => {
          if (p[1] == null) { pen = false; return; }
          d += (pen ? "L" : "M") + xs(p[0]).toFixed(1) + "," + ys(p[1]).toFixed(1);
          pen = true;
        });
        if (d) el("path", { d: d, fill: "none", stroke: s.color, "stroke-width": 1.6 }, plot);
      });
    }

    // Every chart has the mark lines; the first of a section their labels,
    // staggered over three rows and kept inside the plot.
    const marks = el("g", { class: "marks" }, svg);
    opt.marks.forEach((m, i) => {
      const x = xs(m.t);
      const line = el("line", { x1: x, x2: x, y1: M.top, y2: M.top + ph }, marks);
      el("title", {}, line).textContent = m.label + " at " + m.t.toFixed(2) + "s";
      if (!opt.labels) return;
      const right = x > W - M.right - 140;
      const label = text(marks, right ? x - 3 : x + 3, M.top + 10 + (i % 3) * 11, m.label,
        right ? { "text-anchor": "end" } : {});
      el("title", {}, label).textContent = m.label + " at " + m.t.toFixed(2) + "s";
    });

    const legend = el("g", { class: "legend" }, svg);
    let lx = W - M.right;
    opt.series.slice().reverse().forEach(s => {
      text(legend, lx, 16, s.name, { "text-anchor": "end" });
      const w = 7 * s.name.length + 18;
      el("rect", { x: lx - w + 2, y: 8, width: 10, height: 10, fill: s.color }, legend);
      lx -= w + 8;
    });
    return svg;
  }

  function statusColor(code, i) {
    if (code === 0) return "#8a8a8a";
    const shades = {
      2: ["#2e8b57", "#66bb6a", "#1b5e20"],
      3: ["#1e88e5", "#64b5f6"],
      4: ["#fb8c00", "#fdd835", "#f4511e"],
      5: ["#d32f2f", "#ad1457", "#ff5252"],
    }[Math.floor(code / 100)] || ["#6a1b9a"];
    return shades[i % shades.length];
  }

  const data = JSON.parse(document.getElementById("amexbench-data").textContent);
  let drawn = 0;
  data.sections.forEach((sec, si) => {
    const box = document.getElementById("charts-" + si);
    if (!box || !sec.points.length) return;
    const step = sec.step_s;
    const tmax = Math.max(sec.points.length * step, ...sec.marks.map(m => m.t));
    const at = p => p.t + step / 2;
    const ms = v => (v > 0 ? v : null);
    chart(box, {
      title: "Latency per step (log scale)", log: true, labels: true, tmax: tmax, marks: sec.marks,
      series: [
        { name: "p50", color: "#1e88e5", points: sec.points.map(p => [at(p), ms(p.p50_ms)]) },
        { name: "p90", color: "#fb8c00", points: sec.points.map(p => [at(p), ms(p.p90_ms)]) },
        { name: "p99", color: "#d32f2f", points: sec.points.map(p => [at(p), ms(p.p99_ms)]) },
      ],
    });
    chart(box, {
      title: "Throughput (requests/s)", tmax: tmax, marks: sec.marks,
      series: [
        { name: "sent", color: "#8a8a8a", points: sec.points.map(p => [at(p), p.requests / step]) },
        { name: "2xx/3xx", color: "#2e8b57", points: sec.points.map(p => [at(p), p.ok / step]) },
      ],
    });
    const codes = [...new Set(sec.points.flatMap(p => Object.keys(p.status).map(Number)))].sort((a, b) => a - b);
    const perClass = {};
    chart(box, {
      title: "Answers by status (per s, stacked)", stacked: true, tmax: tmax, marks: sec.marks,
      series: codes.map(c => {
        const k = Math.floor(c / 100);
        perClass[k] = (perClass[k] || 0) + 1;
        return {
          name: c === 0 ? "no answer" : String(c), color: statusColor(c, perClass[k] - 1),
          points: sec.points.map(p => [at(p), (p.status[c] || 0) / step]),
        };
      }),
    });
    drawn += 3;
  });
  document.body.dataset.charts = String(drawn);
})();
