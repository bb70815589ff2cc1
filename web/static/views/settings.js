// settings.js: the loop's configuration and policy (view and edit, with
// the API's validation messages), its model (export, import, reset) and
// its logs (properties, delete). Destructive actions ask to confirm.
"use strict";

D.view({
  id: "settings", title: "Configuration and policy", wide: true,
  init(el) {
    const $ = D.el;
    this.service = $("form", { class: "grid", id: "service-form" });
    this.serviceMsg = $("span", { id: "service-msg" });
    this.service.addEventListener("submit", ev => { ev.preventDefault(); this.saveService(); });
    this.policyName = $("input", { id: "policy-name", type: "text", size: 30 });
    this.policyArgs = $("input", { id: "policy-args", type: "text", size: 80 });
    this.policyMsg = $("span", { id: "policy-msg" });
    const policy = $("form", { class: "grid", id: "policy-form", onsubmit: ev => { ev.preventDefault(); this.savePolicy(); } },
      $("label", { for: "policy-name" }, "Name"), this.policyName,
      $("label", { for: "policy-args" }, "Arguments"), this.policyArgs,
      $("span"), $("span", {}, $("button", { type: "submit", id: "policy-save" }, "Save policy"), " ",
        D.confirmed($("button", { type: "button", class: "danger", id: "policy-reset" }, "Reset policy"), "Go back to the default policy (the learner retrains)?",
          () => this.act(this.policyMsg, () => D.call("DELETE", "/configurations/policy"), "policy reset to the default")), " ", this.policyMsg));
    this.modelMsg = $("span", { id: "model-msg" });
    this.importFile = $("input", { type: "file", id: "model-file" });
    const model = $("div", { class: "row" },
      $("button", { id: "model-export", onclick: () => this.exportModel() }, "Export model"),
      this.importFile,
      D.confirmed($("button", { class: "danger", id: "model-import" }, "Import model"), "Replace the loop's model with the chosen file?", () => this.importModel()),
      D.confirmed($("button", { class: "danger", id: "model-reset" }, "Reset model"), "Forget everything the loop's model learned?",
        () => this.act(this.modelMsg, () => D.call("DELETE", "/model"), "model reset: the loop starts again from the uniform policy")),
      this.modelMsg);
    this.logs = $("span", { id: "logs-range" });
    this.logsMsg = $("span", { id: "logs-msg" });
    const logs = $("div", { class: "row" }, this.logs,
      D.confirmed($("button", { class: "danger", id: "logs-delete" }, "Delete logs"), "Delete every stored event of the loop (evaluations and retraining lose them)?",
        () => this.act(this.logsMsg, () => D.call("DELETE", "/logs"), "logs deleted").then(() => this.loadLogs())),
      this.logsMsg);
    el.append($("h3", {}, "Service configuration"), this.service, $("h3", {}, "Learning policy"), policy,
      $("h3", {}, "Model"), model, $("h3", {}, "Logs"), logs);
  },
  loop() { this.load(); },
  async act(msg, f, ok) {
    try { await f(); D.show(msg, null, ok); } catch (e) { D.show(msg, e); }
  },
  async load() {
    D.show(this.serviceMsg, null, "");
    try {
      this.renderService(await D.call("GET", "/configurations/service"));
      const p = await D.call("GET", "/configurations/policy");
      this.policyName.value = p.name;
      this.policyArgs.value = p.arguments;
    } catch (e) { D.show(this.serviceMsg, e); this.service.replaceChildren(this.serviceMsg); }
    this.loadLogs();
  },
  async loadLogs() {
    try {
      const p = await D.call("GET", "/logs/properties");
      this.logs.textContent = `Events stored from ${new Date(p.dateRange.from).toLocaleString()} to ${new Date(p.dateRange.to).toLocaleString()}.`;
    } catch (e) { this.logs.textContent = e.code === "LogsPropertiesNotFound" ? "No events stored." : String(e); }
  },
  // renderService makes an input for each field of the configuration as
  // the API answered it; saving sends them all back, typed as they came.
  renderService(svc) {
    this.svc = svc;
    const rows = [];
    for (const [k, v] of Object.entries(svc)) {
      const id = "svc-" + k;
      const input = typeof v === "boolean" ? D.el("input", { id, type: "checkbox", checked: v })
        : D.el("input", { id, type: typeof v === "number" ? "number" : "text", step: "any", value: v, size: 40, readonly: k === "lastConfigurationEditDate" });
      input.dataset.field = k;
      rows.push(D.el("label", { for: id }, k), input);
    }
    this.service.replaceChildren(...rows, D.el("span"), D.el("span", {}, D.el("button", { type: "submit", id: "service-save" }, "Save configuration"), " ", this.serviceMsg));
  },
  async saveService() {
    const out = {};
    for (const input of this.service.querySelectorAll("input[data-field]")) {
      const k = input.dataset.field, old = this.svc[k];
      out[k] = typeof old === "boolean" ? input.checked : typeof old === "number" ? Number(input.value) : input.value;
    }
    try {
      this.renderService(await D.call("PUT", "/configurations/service", out));
      D.show(this.serviceMsg, null, "saved");
    } catch (e) { D.show(this.serviceMsg, e); }
  },
  async savePolicy() {
    try {
      const p = await D.call("PUT", "/configurations/policy", { name: this.policyName.value, arguments: this.policyArgs.value });
      this.policyArgs.value = p.arguments;
      D.show(this.policyMsg, null, "saved: the learner retrains the model for it");
    } catch (e) { D.show(this.policyMsg, e); }
  },
  async exportModel() {
    try {
      const resp = await D.call("GET", "/model", undefined, { raw: true });
      const url = URL.createObjectURL(await resp.blob());
      const a = D.el("a", { href: url, download: `${D.state.loop}.model` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      D.show(this.modelMsg, null, "exported");
    } catch (e) { D.show(this.modelMsg, e); }
  },
  async importModel() {
    const f = this.importFile.files[0];
    if (!f) return D.show(this.modelMsg, "choose a model file first");
    await this.act(this.modelMsg, () => D.call("PUT", "/model", f, { type: "application/octet-stream" }), `imported ${f.name}`);
  },
});
