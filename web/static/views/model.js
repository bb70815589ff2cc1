// model.js: the loop's model versions over time, the version this server
// serves and its age, the servers of the loop (this one and those watching
// its learner) with the version each serves and its age, the versions the learner keeps (GET /model/history)
// and a rollback to one of them.
"use strict";

D.view({
  id: "model", title: "Model",
  init(el) {
    this.box = D.el("div", { class: "chart" });
    this.info = D.el("dl", { id: "model-info" });
    this.servers = D.el("table", { id: "model-servers" });
    this.rollbackTo = D.el("input", { id: "rollback-version", type: "number", min: 1, step: 1, placeholder: "version" });
    this.rollbackMsg = D.el("span", { id: "rollback-msg" });
    this.rollbackButton = D.confirmed(D.el("button", { class: "danger", id: "model-rollback" }, "Roll back"), "Serve that version's model again (what was learned since is dropped)?", () => this.rollback());
    this.history = D.el("table", { id: "model-history" });
    this.historyMsg = D.el("p", { class: "muted", id: "model-history-msg" });
    el.append(this.box, this.info, D.el("h3", {}, "Servers"), this.servers, D.el("h3", {}, "Kept versions"), this.history, this.historyMsg,
      D.el("div", { class: "row" }, D.el("label", { for: "rollback-version" }, "Roll back to"), this.rollbackTo,
        this.rollbackButton, this.rollbackMsg),
      D.el("p", { class: "muted" }, "The learner keeps its last versions (--model-history, 20 by default); the rollback publishes the old model as the next version."));
    this.chart = D.chart(this.box, [
      { label: "Version served", stroke: "#1f5fd6" },
      { label: "Examples in the model", stroke: "#d67a1f", scale: "r" },
    ], { height: 180 });
  },
  async rollback() {
    D.show(this.rollbackMsg, null, "rolling back…");
    try {
      const r = await D.call("POST", "/model/rollback", { version: this.rollbackTo.value.trim() });
      D.show(this.rollbackMsg, null, `version ${r.version} serves version ${r.rollbackOf}'s model`);
      this.loadHistory();
    } catch (e) {
      if (!(e instanceof D.ApiError)) throw e;
      D.show(this.rollbackMsg, e);
    }
  },
  loop() {
    D.show(this.rollbackMsg, null);
    this.data = [[], [], []];
    this.chart.setData(this.data);
    this.listed = -1;
    this.loadHistory();
  },
  // loadHistory lists the kept versions, newest first, each with a
  // button that asks to roll back to it, and draws the older ones into
  // the chart, before the points polled since the page opened.
  async loadHistory() {
    let list;
    try {
      list = (await D.call("GET", "/model/history")).versions;
    } catch (e) {
      if (!(e instanceof D.ApiError)) throw e;
      D.show(this.historyMsg, e);
      return;
    }
    D.show(this.historyMsg, null, list.length ? "" : "none yet");
    this.history.replaceChildren(D.el("tr", {}, ["Version", "Made", "Examples", "Rollback of", ""].map(h => D.el("th", {}, h))),
      ...list.map(v => D.el("tr", { "data-version": v.version },
        D.el("td", {}, v.version), D.el("td", {}, new Date(v.lastModifiedTime).toLocaleString()), D.el("td", {}, D.fmt(v.examples, 0)),
        D.el("td", {}, v.rollbackOf || "–"),
        D.el("td", {}, D.el("button", { onclick: () => { this.rollbackTo.value = v.version; this.rollbackButton.click(); } }, "Roll back")))));
    const first = this.data[0].length ? this.data[0][0] : Infinity;
    const older = list.map(v => [new Date(v.lastModifiedTime).getTime() / 1000, +v.version, v.examples]).filter(p => p[0] < first).reverse();
    this.data = this.data.map((a, i) => older.map(p => p[i]).concat(a));
    this.chart.setData(this.data);
  },
  update(s) {
    const t = new Date(s.time).getTime() / 1000;
    const served = s.served ? s.served.version : 0;
    this.data[0].push(t);
    this.data[1].push(served);
    this.data[2].push(s.learner ? s.learner.examples : (s.served ? s.served.examples : null));
    if (this.data[0].length > 300) this.data.forEach(a => a.shift());
    this.chart.setData(this.data);
    const rows = [
      ["Served by this server", s.served ? `version ${s.served.version}, made ${D.ago(s.served.created)}, ${D.fmt(s.served.examples, 0)} examples` : "none yet: the uniform policy"],
    ];
    if (s.learner) {
      rows.push(["Learner's latest", `version ${s.learner.version}${s.learner.retraining ? " (retraining for a policy change)" : ""}`],
        ["Learned live, all time", D.fmt(s.learner.learned, 0)],
        ["Current model", `${D.fmt(s.learner.examples, 0)} examples since ${s.learner.modelCreated && !s.learner.modelCreated.startsWith("0001") ? new Date(s.learner.modelCreated).toLocaleString() : "–"}`]);
    }
    this.info.replaceChildren(...rows.flatMap(([k, v]) => [D.el("dt", {}, k), D.el("dd", {}, v)]));
    this.info.dataset.version = served;
    this.servers.replaceChildren(D.el("tr", {}, ["Server", "Serves", "Model made"].map(h => D.el("th", {}, h))),
      ...(s.servers || []).map(v => D.el("tr", { "data-server": v.server, "data-version": v.version, "data-self": v.self },
        D.el("td", {}, v.server + (v.self ? " (this server)" : "")),
        D.el("td", {}, v.version ? `version ${v.version}` : "none yet: the uniform policy"),
        D.el("td", {}, v.created ? D.ago(v.created) : "–"))));
    const latest = s.learner ? s.learner.version : served;
    if (latest !== this.listed) { this.listed = latest; this.loadHistory(); }
  },
});
