// rewards.js: the loop's reward over time, from its learner's live
// estimates (GET .../dashboard's rewards; a server in its own process
// asks its learner for them): the realized average reward
// per bucket, the Baseline and Random policies' IPS estimates and the
// share of exploratory decisions.
"use strict";

D.view({
  id: "rewards", title: "Reward over time", wide: true,
  init(el) {
    this.note = D.el("p", { class: "muted" });
    this.box = D.el("div", { class: "chart", id: "rewards-chart" });
    this.last = D.el("p", { id: "rewards-last" });
    el.append(this.note, this.box, this.last);
    this.chart = D.chart(this.box, [
      { label: "Reward (realized)", stroke: "#1f5fd6" },
      { label: "Baseline (IPS)", stroke: "#d67a1f", dash: [6, 4] },
      { label: "Random (IPS)", stroke: "#8a8f99", dash: [2, 4] },
      { label: "Exploratory share", stroke: "#2e9e5b", scale: "r", width: 1 },
    ], { scales: { r: { range: [0, 1] } } });
  },
  loop() { this.points = new Map(); this.chart.setData([[], [], [], [], []]); this.last.textContent = ""; },
  // since asks again for the last 15 minutes of buckets: rewards join
  // up to the reward wait after their rank, so recent buckets still grow.
  since() {
    const starts = [...this.points.keys()];
    if (!starts.length) return "";
    return new Date(Math.max(...starts) * 1000 - 15 * 60 * 1000).toISOString().replace(/\.\d+Z$/, "Z");
  },
  update(s) {
    if (!s.rewards) {
      this.note.textContent = s.rewardsError ? `No reward over time: ${s.rewardsError}.` : "The loop's learner has no reward over time for it yet.";
      return;
    }
    this.note.textContent = `Buckets of ${s.rewards.bucketSeconds} s by decision time, the last hour; Baseline always shows the first action, Random picks uniformly (estimated from the logged decisions). Exploratory: the chosen action was not the most probable.`;
    for (const p of s.rewards.points) this.points.set(new Date(p.start).getTime() / 1000, p);
    const cut = Date.now() / 1000 - 3600;
    for (const t of this.points.keys()) if (t < cut) this.points.delete(t);
    const ts = [...this.points.keys()].sort((a, b) => a - b);
    const ps = ts.map(t => this.points.get(t));
    this.chart.setData([ts, ps.map(p => p.reward), ps.map(p => p.baseline.value), ps.map(p => p.random.value), ps.map(p => p.explored)]);
    this.box.dataset.points = ts.length;
    this.box.dataset.rewards = JSON.stringify(ps.map(p => p.reward));
    const p = ps[ps.length - 1];
    if (p) {
      const iv = e => e.interval ? ` [${D.fmt(e.interval.lower, 3)}, ${D.fmt(e.interval.upper, 3)}]` : "";
      this.last.textContent = `Latest bucket (${p.events} events): reward ${D.fmt(p.reward, 3)}, Baseline ${D.fmt(p.baseline.value, 3)}${iv(p.baseline)}, Random ${D.fmt(p.random.value, 3)}${iv(p.random)}, exploratory ${D.fmt(100 * p.explored, 1)}%`;
    }
  },
});
