// capacity.js: whether the process keeps up, from its GET /capacity
// sample (in GET .../dashboard): lags, input rate, size and headroom.
"use strict";

D.view({
  id: "capacity", title: "Keeping up",
  init(el) {
    this.box = D.el("div", { class: "chart" });
    this.info = D.el("dl");
    el.append(this.box, this.info);
    this.chart = D.chart(this.box, [
      { label: "Joiner lag (s)", stroke: "#1f5fd6" },
      { label: "Learner lag (s)", stroke: "#d67a1f" },
    ], { height: 160 });
  },
  loop() { this.data = [[], [], []]; this.chart.setData(this.data); this.at = ""; },
  update(s) {
    const c = s.capacity;
    if (!c) {
      this.info.replaceChildren(D.el("dt", {}, "Capacity"), D.el("dd", {}, "not sampled (--capacity-interval 0)"));
      return;
    }
    const maxLag = ps => ps && ps.length ? Math.max(...ps.map(p => p.lag_seconds)) : null;
    const sumRec = ps => ps && ps.length ? ps.reduce((a, p) => a + p.lag_records, 0) : null;
    const lr = (c.learners || []).find(l => l.loop === s.loop);
    if (c.sampled_at !== this.at) {
      this.at = c.sampled_at;
      this.data[0].push(new Date(c.sampled_at).getTime() / 1000);
      this.data[1].push(c.joiner ? maxLag(c.joiner.partitions) : null);
      this.data[2].push(lr ? maxLag(lr.partitions) : null);
      if (this.data[0].length > 300) this.data.forEach(a => a.shift());
      this.chart.setData(this.data);
    }
    const rows = [["Sampled", `${D.ago(c.sampled_at)}, every ${D.fmt(c.interval_seconds, 0)} s (${c.role} process)`]];
    if (c.joiner) rows.push(["Joiner lag", `${D.fmt(sumRec(c.joiner.partitions), 0)} records, ${D.fmt(maxLag(c.joiner.partitions), 1)} s`]);
    if (lr) rows.push(["Learner lag", `${D.fmt(sumRec(lr.partitions), 0)} records, ${D.fmt(maxLag(lr.partitions), 1)} s; ${D.fmt(lr.examples_per_second, 1)} examples/s`]);
    if (c.input) rows.push(["Input", `${D.fmt((c.input.bytes_per_second || 0) / 1e6, 3)} MB/s, ${D.fmt(c.input.records_per_second, 1)} records/s`],
      ["Bytes per event", D.fmt(c.input.bytes_per_event, 0)]);
    rows.push(["CPU", `${D.fmt(c.cpu.busy_cores, 2)} cores busy of ${c.cpu.usable_cores}`], ["Headroom", c.headroom]);
    this.info.replaceChildren(...rows.flatMap(([k, v]) => [D.el("dt", {}, k), D.el("dd", {}, v)]));
  },
});
