// The dashboard's core: the API key and the loop in use, calls to the REST
// API, the views and the live poll. Each view is a file in views/ that
// calls D.view({...}) once; boot.js starts the page.
"use strict";

const D = (() => {
  const API = "/personalizer/v1.0";
  const POLL_MS = 2000;
  const state = { key: sessionStorage.getItem("personalizer-key") || "", loop: "", admin: false, last: null, timer: 0 };
  const views = [];

  // ApiError is a failed call: Personalizer's error code and message.
  class ApiError extends Error {
    constructor(status, code, message, target) {
      super(message);
      this.status = status;
      this.code = code;
      this.target = target;
    }
    toString() { return `${this.code || this.status}: ${this.message}${this.target ? " (" + this.target + ")" : ""}`; }
  }

  // call makes a REST call for the loop in use, with the key; it returns
  // the parsed JSON answer (the Response itself with raw), or throws an
  // ApiError with the API's own message.
  async function call(method, path, body, { raw = false, type = "application/json" } = {}) {
    const headers = {};
    if (state.key) headers["Ocp-Apim-Subscription-Key"] = state.key;
    if (state.loop) headers["X-Personalizer-Loop"] = state.loop;
    if (body !== undefined) {
      headers["Content-Type"] = type;
      if (type === "application/json") body = JSON.stringify(body);
    }
    const resp = await fetch(API + path, { method, headers, body });
    if (!resp.ok) {
      let e = {};
      try { e = (await resp.json()).error || {}; } catch (_) { /* not JSON */ }
      throw new ApiError(resp.status, e.code || String(resp.status), e.message || resp.statusText, e.target);
    }
    if (raw) return resp;
    if (resp.status === 204) return null;
    const text = await resp.text();
    return text ? JSON.parse(text) : null;
  }

  // view registers a view: id, title, wide (a full row), admin (shown to
  // admin callers only), init(el) once, loop() when the loop changes,
  // update(stats) with every poll's answer.
  function view(v) { views.push(v); }

  function el(tag, attrs = {}, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (v !== false && v !== undefined && v !== null) e.setAttribute(k, v === true ? "" : v);
    }
    for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
    return e;
  }

  // confirmed asks, in place of button, to confirm a destructive action:
  // the action runs only after a second click on "Yes, ...".
  function confirmed(button, question, action) {
    button.addEventListener("click", () => {
      const box = el("span", { class: "confirm" }, question + " ",
        el("button", { class: "danger", "data-confirm": button.id || "", onclick: async () => { box.replaceWith(button); await action(); } }, "Yes, " + button.textContent.toLowerCase()),
        " ", el("button", { onclick: () => box.replaceWith(button) }, "Cancel"));
      button.replaceWith(box);
    });
    return button;
  }

  // show writes err (or "") to the element msg, as the API worded it.
  function show(msg, err, ok) {
    msg.className = err ? "error" : "ok";
    msg.textContent = err ? String(err) : (ok || "");
  }

  // chart makes a uPlot chart in el: series are [{label, stroke, scale}].
  function chart(el, series, { height = 220, yRange, scales } = {}) {
    const opts = {
      width: Math.max(el.clientWidth || 520, 300), height,
      series: [{}].concat(series.map(s => Object.assign({ width: 2, points: { size: 5 }, spanGaps: true }, s))),
      scales: Object.assign({ x: { time: true } }, scales || {}, yRange ? { y: { range: yRange } } : {}),
      axes: [{}, { size: 60 }].concat(series.some(s => s.scale === "r") ? [{ scale: "r", side: 1, grid: { show: false }, size: 50 }] : []),
      legend: { live: false },
    };
    const data = [[]].concat(series.map(() => []));
    const u = new uPlot(opts, data, el);
    new ResizeObserver(() => u.setSize({ width: Math.max(el.clientWidth, 300), height })).observe(el);
    return u;
  }

  // intervals draws, in el, an estimate with its interval per label:
  // a dot at the value and a bar from lower to upper (null: none).
  function intervals(el, labels, values, lowers, uppers, colors, height = 200) {
    const xs = labels.map((_, i) => i);
    const lo = Math.min(...values.concat(lowers).filter(v => v !== null)), hi = Math.max(...values.concat(uppers).filter(v => v !== null));
    const pad = (hi - lo) * 0.1 || 0.05;
    const u = new uPlot({
      width: Math.max(el.clientWidth || 520, 300), height,
      scales: { x: { time: false, range: [-0.5, labels.length - 0.5] }, y: { range: [lo - pad, hi + pad] } },
      series: [{}, { label: "estimate", stroke: "transparent", points: { show: true, size: 9, fill: "#1d2330" } }],
      axes: [{ values: (_, ticks) => ticks.map(t => Number.isInteger(t) ? labels[t] || "" : ""), splits: () => xs }, { size: 60 }],
      legend: { show: false },
      hooks: { draw: [u => {
        const c = u.ctx;
        c.save();
        c.lineWidth = 3 * devicePixelRatio;
        xs.forEach(i => {
          if (lowers[i] === null || uppers[i] === null) return;
          const x = u.valToPos(i, "x", true);
          c.strokeStyle = colors[i];
          c.beginPath();
          c.moveTo(x, u.valToPos(lowers[i], "y", true));
          c.lineTo(x, u.valToPos(uppers[i], "y", true));
          c.stroke();
        });
        c.restore();
      }] },
    }, [xs, values], el);
    new ResizeObserver(() => u.setSize({ width: Math.max(el.clientWidth, 300), height })).observe(el);
    return u;
  }

  function fmt(v, digits = 2) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    return Number(v).toLocaleString(undefined, { maximumFractionDigits: digits });
  }
  function ago(t) {
    if (!t) return "–";
    const s = Math.max(0, (Date.now() - new Date(t).getTime()) / 1000);
    return s < 90 ? `${s.toFixed(0)} s ago` : s < 5400 ? `${(s / 60).toFixed(0)} min ago` : `${(s / 3600).toFixed(1)} h ago`;
  }

  // poll asks for the loop's live numbers and hands them to every view.
  async function poll() {
    clearTimeout(state.timer);
    try {
      const since = views.map(v => v.since && v.since()).filter(Boolean).sort()[0];
      const stats = await call("GET", "/dashboard" + (since ? "?since=" + encodeURIComponent(since) : ""));
      state.last = stats;
      document.getElementById("status").textContent = "live · " + new Date(stats.time).toLocaleTimeString();
      for (const v of views) if (v.update && v.section && !v.off) v.update(stats);
    } catch (e) {
      if (!(e instanceof ApiError)) console.error(e); // a bug of the page: the tests fail on it
      document.getElementById("status").textContent = "not updating: " + e;
      if (e.status === 401) return D.signin(String(e));
    }
    if (!document.hidden) state.timer = setTimeout(poll, POLL_MS);
  }
  document.addEventListener("visibilitychange", () => { if (!document.hidden && state.loop) poll(); });

  // open builds the views for the loop in use and starts polling.
  function open() {
    for (const v of views) {
      if (!v.section) {
        v.section = el("section", { id: v.id, class: v.wide ? "wide" : "" }, el("h2", {}, v.title));
        document.getElementById("views").append(v.section);
        v.init(v.section);
      }
      v.off = !!v.admin && !state.admin; // a view may hide itself too (start.js)
      v.section.hidden = v.off;
      if (v.loop && !v.off) v.loop();
    }
    poll();
  }

  return { API, state, call, view, el, confirmed, show, chart, intervals, fmt, ago, poll, open, views, ApiError };
})();
