// loops.js: the loops (admin keys only): list, create, delete.
"use strict";

D.view({
  id: "loops", title: "Loops", admin: true,
  init(el) {
    this.table = D.el("table", { id: "loops-table" });
    this.name = D.el("input", { id: "loop-name", type: "text", placeholder: "new loop name", size: 24 });
    this.msg = D.el("span", { id: "loops-msg" });
    el.append(this.table, D.el("form", { class: "row", onsubmit: ev => { ev.preventDefault(); this.create(); } },
      this.name, D.el("button", { type: "submit", id: "loop-create" }, "Create loop"), this.msg));
  },
  loop() { this.refresh(); },
  async refresh() {
    let loops = [];
    try { loops = (await D.call("GET", "/loops")).loops; } catch (e) { return D.show(this.msg, e); }
    this.table.replaceChildren(D.el("tr", {}, D.el("th", {}, "Loop"), D.el("th", {}, "Config version"), D.el("th", {}, "Policy"), D.el("th")),
      ...loops.map(c => D.el("tr", {}, D.el("td", {}, c.loop), D.el("td", {}, c.version), D.el("td", {}, D.el("code", {}, c.policy.arguments)),
        D.el("td", {}, D.confirmed(D.el("button", { class: "danger" }, "Delete"), `Delete loop ${c.loop} (its servers stop answering for it)?`, async () => {
          try { await D.call("DELETE", "/loops/" + encodeURIComponent(c.loop)); D.show(this.msg, null, `deleted ${c.loop}`); } catch (e) { D.show(this.msg, e); }
          this.refresh();
        })))));
  },
  async create() {
    try {
      const c = await D.call("POST", "/loops", { loop: this.name.value.trim() });
      D.show(this.msg, null, `created ${c.loop}`);
      this.name.value = "";
      this.refresh();
      D.reloadLoops(D.state.loop);
    } catch (e) { D.show(this.msg, e); }
  },
});
