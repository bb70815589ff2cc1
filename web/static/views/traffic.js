// traffic.js: the loop's calls per second, from the counters of
// GET .../dashboard between two polls, and the joiner's shares.
"use strict";

D.view({
  id: "traffic", title: "Traffic",
  init(el) {
    this.box = D.el("div", { class: "chart" });
    this.shares = D.el("p", { id: "traffic-shares" });
    el.append(this.box, this.shares);
    this.chart = D.chart(this.box, [
      { label: "Ranks/s", stroke: "#1f5fd6" },
      { label: "Rewards/s", stroke: "#d67a1f" },
      { label: "Activations/s", stroke: "#2e9e5b" },
    ], { height: 180 });
  },
  loop() { this.prev = null; this.data = [[], [], [], []]; this.chart.setData(this.data); },
  update(s) {
    const t = new Date(s.time).getTime() / 1000;
    if (this.prev && t > this.prev.t) {
      const dt = t - this.prev.t, c = s.calls, p = this.prev.calls;
      const rate = (a, b) => Math.max(0, a - b) / dt;
      const row = [t, rate(c.ranks, p.ranks), rate(c.rewards, p.rewards), rate(c.activations, p.activations)];
      row.forEach((v, i) => this.data[i].push(v));
      if (this.data[0].length > 300) this.data.forEach(a => a.shift());
      this.chart.setData(this.data);
    }
    this.prev = { t, calls: s.calls };
    const j = s.joiner;
    if (!j) {
      this.shares.textContent = "Default-reward, late and dangling shares come from the joiner, which this process does not run.";
      return;
    }
    const pct = (a, b) => b > 0 ? D.fmt(100 * a / b, 1) + "%" : "–";
    this.shares.textContent = `Every loop's joins since the process started: ${D.fmt(j.joined, 0)} events joined; ` +
      `default reward ${pct(j.defaultReward, j.joined)} of them; late outcomes ${D.fmt(j.late, 0)} (${pct(j.late, j.joined)}), dangling ${D.fmt(j.dangling, 0)} (${pct(j.dangling, j.joined)}) per joined event.`;
  },
});
