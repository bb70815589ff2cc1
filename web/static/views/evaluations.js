// evaluations.js: the loop's offline evaluations (the REST API's
// /evaluations): list, create (time range, custom policies, policy
// search), the result chart and Apply.
"use strict";

D.view({
  id: "evaluations", title: "Evaluations", wide: true,
  init(el) {
    const $ = (tag, attrs, ...k) => D.el(tag, attrs, ...k);
    const now = new Date();
    const local = d => new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
    this.form = $("form", { class: "grid", id: "evaluation-form" },
      $("label", { for: "eval-name" }, "Name"), $("input", { id: "eval-name", type: "text", value: "evaluation", size: 30 }),
      $("label", { for: "eval-start" }, "From"), $("input", { id: "eval-start", type: "datetime-local", value: local(new Date(now - 3600e3)) }),
      $("label", { for: "eval-end" }, "To"), $("input", { id: "eval-end", type: "datetime-local", value: local(new Date(now.getTime() + 3600e3)) }),
      $("label", { for: "eval-policies" }, "Custom policies"),
      $("textarea", { id: "eval-policies", rows: 3, placeholder: "one per line: name | VW arguments, e.g.\nlow rate | --cb_explore_adf --epsilon 0.2 -l 0.0001 -q ::" }),
      $("label", { for: "eval-search" }, "Policy search"),
      $("span", {}, $("input", { id: "eval-search", type: "checkbox" }), " also search for a better policy around the loop's current one"),
      $("span"), $("span", {}, $("button", { type: "submit", id: "eval-create" }, "Create evaluation"), " ", this.msg = $("span", { id: "eval-msg" })));
    this.form.addEventListener("submit", ev => { ev.preventDefault(); this.create(); });
    this.list = $("table", { id: "eval-list" });
    this.detail = $("div", { id: "eval-detail" });
    el.append($("h3", {}, "New"), this.form, $("h3", {}, "Evaluations"), this.list, this.detail);
  },
  loop() { this.selected = ""; this.n = 0; this.detail.replaceChildren(); this.refresh(); },
  async create() {
    const lines = document.getElementById("eval-policies").value.split("\n").map(l => l.trim()).filter(Boolean);
    const policies = lines.map(l => { const i = l.indexOf("|"); return i < 0 ? { name: "", arguments: l } : { name: l.slice(0, i).trim(), arguments: l.slice(i + 1).trim() }; });
    const body = {
      name: document.getElementById("eval-name").value,
      startTime: new Date(document.getElementById("eval-start").value).toISOString(),
      endTime: new Date(document.getElementById("eval-end").value).toISOString(),
      policies, enableOfflineExperimentation: document.getElementById("eval-search").checked,
    };
    try {
      const e = await D.call("POST", "/evaluations", body);
      D.show(this.msg, null, `created ${e.id}`);
      this.selected = e.id;
      await this.refresh();
    } catch (e) { D.show(this.msg, e); }
  },
  async refresh() {
    let list = [];
    try { list = await D.call("GET", "/evaluations"); } catch (e) { this.list.replaceChildren(D.el("tr", {}, D.el("td", { class: "error" }, String(e)))); return; }
    list = list || [];
    const row = e => D.el("tr", { class: e.id === this.selected ? "selected" : "", "data-id": e.id, "data-status": e.status },
      D.el("td", {}, D.el("a", { href: "#", onclick: ev => { ev.preventDefault(); this.selected = e.id; this.refresh(); } }, e.name || e.id)),
      D.el("td", {}, e.evaluationType), D.el("td", {}, e.status + (e.error ? ": " + e.error : "")),
      D.el("td", {}, `${new Date(e.startTime).toLocaleString()} – ${new Date(e.endTime).toLocaleString()}`),
      D.el("td", {}, `${D.fmt(e.progress ? e.progress.evaluated : 0, 0)} events`));
    this.list.replaceChildren(D.el("tr", {}, ["Name", "Type", "Status", "Range", "Evaluated"].map(h => D.el("th", {}, h))), ...list.slice().reverse().map(row));
    if (!list.length) this.list.append(D.el("tr", {}, D.el("td", { colspan: 5, class: "muted" }, "none yet")));
    const sel = list.find(e => e.id === this.selected);
    if (sel) this.show(await D.call("GET", "/evaluations/" + encodeURIComponent(sel.id)).catch(() => sel));
  },
  // show draws an evaluation: every policy's IPS per time bucket, and a
  // table of its totals with their intervals, with Apply for the
  // policies that have learning arguments.
  show(e) {
    const msg = D.el("span", { id: "apply-msg" });
    const parts = [D.el("h3", {}, `${e.name} (${e.status})`)];
    const results = e.policyResults || [];
    if (e.status === "completed" && results.length) {
      const colors = ["#1f5fd6", "#d67a1f", "#8a8f99", "#2e9e5b", "#b3261e", "#7b3fbf", "#0e8c8c", "#c2a100", "#d63fa0", "#4d6b00"];
      const color = i => colors[i % colors.length];
      const est = (s, name) => (s.estimates || []).find(x => x.estimator === name) || {};
      const iv = x => x.gaussian || x.cressieRead || null;
      const total = D.el("div", { class: "chart", id: "eval-chart" });
      const over = D.el("div", { class: "chart", id: "eval-time-chart" });
      parts.push(D.el("p", { class: "muted" }, "Doubly robust estimate of each policy's average reward over the whole range, with its 95% interval:"), total,
        D.el("p", { class: "muted" }, "IPS estimate per time bucket:"), over);
      const rows = results.map((r, i) => {
        const ips = est(r.totalSummary, "IPS"), dr = est(r.totalSummary, "DR"), cr = est(r.totalSummary, "CR");
        const cell = x => x && x.value !== null && x.value !== undefined ? D.fmt(x.value, 4) + (iv(x) ? ` [${D.fmt(iv(x).lower, 4)}, ${D.fmt(iv(x).upper, 4)}]` : "") : "–";
        const apply = r.arguments ? D.confirmed(D.el("button", { id: "apply-" + i, "data-policy": r.name }, "Apply"),
          `Make "${r.name}" the loop's policy (the learner retrains)?`, async () => {
            try {
              await D.call("POST", "/configurations/applyFromEvaluation", { evaluationId: e.id, policyName: r.name });
              D.show(msg, null, `applied "${r.name}": the loop's policy is now ${r.arguments}`);
            } catch (err) { D.show(msg, err); }
          }) : "";
        const picked = e.optimalPolicy && r.arguments === e.optimalPolicy ? " (the search's pick)" : "";
        return D.el("tr", { "data-policy": r.name }, D.el("td", { style: `color:${color(i)}` }, r.name + picked),
          D.el("td", {}, r.policySource), D.el("td", {}, cell(ips)), D.el("td", {}, cell(dr)), D.el("td", {}, cell(cr)),
          D.el("td", {}, D.el("code", {}, r.arguments || "")), D.el("td", {}, apply));
      });
      parts.push(D.el("table", { id: "eval-results" }, D.el("tr", {}, ["Policy", "Source", "IPS [95%]", "DR [95%]", "CR [95%]", "Arguments", ""].map(h => D.el("th", {}, h))), ...rows), msg, D.el("p", {}, this.deleteButton(e)));
      this.detail.replaceChildren(...parts);
      const drs = results.map(r => est(r.totalSummary, "DR"));
      D.intervals(total, results.map(r => r.name), drs.map(x => x.value ?? null), drs.map(x => iv(x) ? iv(x).lower : null), drs.map(x => iv(x) ? iv(x).upper : null), results.map((_, i) => color(i)));
      const times = [...new Set(results.flatMap(r => r.summary.map(s => new Date(s.timeStamp).getTime() / 1000)))].sort((a, b) => a - b);
      total.dataset.series = results.length;
      total.dataset.points = times.length;
      if (times.length < 2) {
        over.replaceChildren(D.el("p", { class: "muted" }, "The events fall in one time bucket: the chart above is all there is."));
        return;
      }
      const u = D.chart(over, results.map((r, i) => ({ label: r.name, stroke: color(i) })), { height: 200 });
      u.setData([times, ...results.map(r => { const m = new Map(r.summary.map(s => [new Date(s.timeStamp).getTime() / 1000, est(s, "IPS").value])); return times.map(t => m.has(t) ? m.get(t) : null); })]);
      return;
    }
    parts.push(D.el("p", { class: e.status === "failed" ? "error" : "muted" }, e.status === "failed" ? e.error : `reading the log: ${D.fmt(e.progress ? e.progress.lines : 0, 0)} lines so far`));
    this.detail.replaceChildren(...parts, this.deleteButton(e));
  },
  deleteButton(e) {
    return D.confirmed(D.el("button", { class: "danger", id: "eval-delete" }, "Delete evaluation"), `Delete evaluation "${e.name}"?`, async () => {
      await D.call("DELETE", "/evaluations/" + encodeURIComponent(e.id)).catch(() => {});
      this.selected = ""; this.detail.replaceChildren(); this.refresh();
    });
  },
  update() {
    // Pending and running evaluations move on; look again every few polls.
    this.n = (this.n + 1) % 3;
    const busy = this.list.querySelector('tr[data-status="pending"], tr[data-status="running"]');
    if (busy && this.n === 0) this.refresh();
  },
});
