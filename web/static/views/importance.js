// importance.js: feature importance. It adds the option to the
// evaluations view's form (enableFeatureImportance) and draws the
// featureScores of the evaluation shown there as horizontal bars, the most
// important first.
"use strict";

D.view({
  id: "importance", title: "Feature importance", wide: true,
  init(el) {
    // The option, in the evaluations form before its buttons.
    this.option = D.el("input", { id: "eval-importance", type: "checkbox" });
    const form = document.getElementById("evaluation-form");
    const buttons = form.lastElementChild.previousElementSibling;
    form.insertBefore(D.el("label", { for: "eval-importance" }, "Feature importance"), buttons);
    form.insertBefore(D.el("span", {}, this.option, " also evaluate the loop's policy without each namespace and each of its 20 most frequent features (not with policy search)"), buttons);
    this.body = D.el("div", { id: "importance-body" });
    el.append(this.body);
  },
  loop() { this.evaluation(null); },
  // contract is added to the body of the evaluations view's POST.
  contract() { return { enableFeatureImportance: this.option.checked }; },
  // evaluation is told by the evaluations view which one it shows (null:
  // none).
  evaluation(e) {
    const hint = D.el("p", { class: "muted" }, "Create an evaluation with feature importance (the option in the form above), or select one, to see which features matter: each row is how much the loop's policy's IPS estimate drops without that namespace or feature.");
    if (!e) return this.body.replaceChildren(hint);
    const scores = e.featureScores || [];
    if (!scores.length) {
      const running = e.status === "pending" || e.status === "running";
      const mine = (e.policyResults || []).some(r => r.name === "Current");
      return this.body.replaceChildren(running && mine ? D.el("p", { class: "muted" }, `"${e.name}" is ${e.status}: the scores come when it completes.`) : hint);
    }
    // Scores are relative within their kind: namespaces, then features.
    const kinds = [["Namespaces", scores.filter(s => !s.featureName)], ["Features", scores.filter(s => s.featureName)]];
    const rows = [];
    for (const [kind, list] of kinds) {
      if (!list.length) continue;
      rows.push(D.el("tr", {}, D.el("th", {}, kind), D.el("th", {}, "Score"), D.el("th", {}), D.el("th", {}, "Change of the IPS estimate [95%]")));
      for (const s of list.slice().sort((a, b) => b.score - a.score || b.change - a.change)) {
        const name = s.featureName ? (s.namespace ? `${s.namespace}^${s.featureName}` : s.featureName) : s.namespace;
        const change = D.fmt(s.change, 4) + (s.interval ? ` [${D.fmt(s.interval.lower, 4)}, ${D.fmt(s.interval.upper, 4)}]` : "");
        rows.push(D.el("tr", { "data-name": name, "data-score": s.score, title: `${name}: score ${D.fmt(s.score, 3)}, change ${change}` },
          D.el("td", {}, D.el("code", {}, name)),
          D.el("td", { class: "bar-cell" }, D.el("div", { class: "bar", style: `width:${(Math.min(Math.max(s.score, 0), 1) * 100).toFixed(1)}%` })),
          D.el("td", {}, D.fmt(s.score, 3)), D.el("td", {}, change)));
      }
    }
    const tiers = (e.featureImportance || []).map(g => "[" + g.join(", ") + "]").join(" > ");
    this.body.replaceChildren(
      D.el("p", { class: "muted" }, `"${e.name}": a score is the change without it divided by the largest of its kind (0: removing it costs nothing); positive changes help.`),
      D.el("table", { id: "importance-bars" }, ...rows),
      tiers ? D.el("p", {}, "featureImportance: ", D.el("code", {}, tiers)) : "");
  },
});
