// autoopt.js: the loop's auto-optimization: its setting and the history
// of its runs (the evaluations of type Auto), each with its outcome,
// Online's Cressie-Read estimate and lower bound against the search's
// pick's, and the policy applied.
"use strict";

D.view({
  id: "autoopt", title: "Auto-optimization", wide: true,
  init(el) {
    this.setting = D.el("dl", { id: "autoopt-setting" });
    this.next = D.el("p", { id: "autoopt-next" });
    this.runs = D.el("table", { id: "autoopt-runs" });
    el.append(this.setting, this.next, D.el("h3", {}, "Runs"), this.runs);
  },
  loop() { this.n = 0; this.svc = null; this.list = null; this.load(true); },
  update() {
    // The setting may change elsewhere; the runs are read again only
    // when it changed, a run is due or one is still running.
    this.n = (this.n + 1) % 3;
    if (this.n === 0) this.load(false);
  },
  async load(all) {
    const edited = this.svc && this.svc.lastConfigurationEditDate;
    try { this.svc = await D.call("GET", "/configurations/service"); } catch (e) { this.next.replaceChildren(D.el("span", { class: "error" }, String(e))); return; }
    const busy = this.list && this.list.some(e => e.status === "pending" || e.status === "running");
    if (all || busy || edited !== this.svc.lastConfigurationEditDate || this.due(Date.now())) {
      try { this.list = ((await D.call("GET", "/evaluations")) || []).filter(e => e.evaluationType === "Auto"); } catch (e) { this.runs.replaceChildren(D.el("tr", {}, D.el("td", { class: "error" }, String(e)))); return; }
    }
    this.render();
  },
  // schedule mirrors the server's (autoSchedule): the period due at now,
  // or when the next is due; periods run from the start date (none: the
  // last run's, or now) every frequency.
  schedule(now) {
    const s = this.svc, every = this.duration(s.autoOptimizationFrequency) || 28 * 86400e3;
    const last = this.list && this.list.length ? this.period(this.list[this.list.length - 1]) : 0;
    let start = s.autoOptimizationStartDate ? new Date(s.autoOptimizationStartDate).getTime() : 0;
    if (!start) {
      if (!last) return { due: true };
      start = last;
    }
    if (now < start) return { due: false, next: start };
    const p = start + Math.floor((now - start) / every) * every;
    return p > last ? { due: true } : { due: false, next: p + every };
  },
  due(now) { return !!this.svc && this.svc.isAutoOptimizationEnabled && !!this.list && this.schedule(now).due; },
  // period is a run's period start, from its name ("Auto-optimization
  // <period>"), else its end.
  period(e) { return new Date(e.name.replace(/^Auto-optimization /, "")).getTime() || new Date(e.endTime).getTime(); },
  // duration reads an ISO 8601 duration as the API writes one
  // (PnWnDTnHnMnS) in milliseconds; 0 if it is not one.
  duration(s) {
    const m = /^P(?:([\d.]+)W)?(?:([\d.]+)D)?(?:T(?:([\d.]+)H)?(?:([\d.]+)M)?(?:([\d.]+)S)?)?$/.exec(s || "");
    if (!m) return 0;
    const [w, d, h, min, sec] = m.slice(1).map(x => Number(x || 0));
    return ((((w * 7 + d) * 24 + h) * 60 + min) * 60 + sec) * 1000;
  },
  render() {
    const s = this.svc, on = s.isAutoOptimizationEnabled;
    const start = s.autoOptimizationStartDate ? new Date(s.autoOptimizationStartDate).toLocaleString() : "none (from when it is turned on)";
    this.setting.replaceChildren(
      D.el("dt", {}, "isAutoOptimizationEnabled"), D.el("dd", {}, on ? "on" : "off"),
      D.el("dt", {}, "autoOptimizationFrequency"), D.el("dd", {}, s.autoOptimizationFrequency || "P28D"),
      D.el("dt", {}, "autoOptimizationStartDate"), D.el("dd", {}, start));
    this.setting.dataset.enabled = on;
    const edit = D.el("a", { href: "#settings" }, "Configuration and policy");
    if (!on) {
      this.next.replaceChildren(`Off: turn it on with isAutoOptimizationEnabled in `, edit,
        ` below (with its frequency and start date). Each run is a policy search over the loop's last 14 days of events; a pick whose Cressie-Read estimate and lower bound beat Online's becomes the loop's policy, with its model.`);
    } else {
      const sc = this.schedule(Date.now());
      this.next.replaceChildren(sc.due ? "A run is due now: the process that learns the loop (dev, or the learner role) starts it. " : `Next run due ${new Date(sc.next).toLocaleString()}. `, "Change the setting in ", edit, ".");
    }
    const list = this.list || [];
    const cr = r => { const x = r && (r.totalSummary.estimates || []).find(x => x.estimator === "CR"); return x && x.value !== null && x.value !== undefined ? x : null; };
    const cell = x => x ? `${D.fmt(x.value, 4)} (lower ${D.fmt(x.cressieRead ? x.cressieRead.lower : null, 4)})` : "–";
    const rows = list.slice().reverse().map(e => {
      const results = e.policyResults || [];
      const online = results.find(r => r.name === "Online");
      const pick = e.optimalPolicy ? results.find(r => r.arguments === e.optimalPolicy && r.policySource === "OfflineExperimentation") : null;
      const applied = e.status === "optimalPolicyApplied" ? D.el("span", {}, `${pick ? pick.name : ""} `, D.el("code", {}, e.optimalPolicy))
        : e.status === "onlinePolicyRetained" ? "none: the loop's policy kept" : "–";
      return D.el("tr", { "data-id": e.id, "data-status": e.status },
        D.el("td", {}, new Date(this.period(e)).toLocaleString()),
        D.el("td", { class: e.status === "failed" ? "error" : e.status === "optimalPolicyApplied" ? "ok" : "" }, e.status + (e.error ? ": " + e.error : "")),
        D.el("td", {}, D.fmt(e.counts ? e.counts.evaluated : (e.progress ? e.progress.evaluated : 0), 0)),
        D.el("td", {}, cell(cr(online))), D.el("td", {}, pick ? `${pick.name}: ${cell(cr(pick))}` : (e.status === "pending" || e.status === "running" ? "–" : "none above Online's bound")),
        D.el("td", {}, applied));
    });
    this.runs.replaceChildren(D.el("tr", {}, ["Period", "Outcome", "Events", "Online: CR (lower)", "Search's pick: CR (lower)", "Policy applied"].map(h => D.el("th", {}, h))), ...rows);
    if (!rows.length) this.runs.append(D.el("tr", {}, D.el("td", { colspan: 6, class: "muted" }, "no run yet")));
  },
});

