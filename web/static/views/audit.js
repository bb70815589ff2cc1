// audit.js: the decision lookup. An event id (and an optional time at or
// before its Rank) is looked up with GET /events/{eventId}: the model
// version that served it, the ranking exactly as Rank returned it, the
// chosen action and exploration, the join's outcome, the request's
// features and each action's score with its top features.
"use strict";

D.view({
  id: "audit", title: "Decision lookup", wide: true,
  init(el) {
    const $ = D.el;
    this.id = $("input", { id: "audit-event", type: "text", size: 40, placeholder: "event id", autocomplete: "off" });
    this.at = $("input", { id: "audit-at", type: "text", size: 24, placeholder: "optional: 2026-12-03T10:30:00Z" });
    this.msg = $("span", { id: "audit-msg" });
    this.body = $("div", { id: "audit-body" });
    el.append(
      $("form", { id: "audit-form", class: "row", onsubmit: ev => { ev.preventDefault(); this.lookup(); } },
        $("label", { for: "audit-event" }, "Event id"), this.id,
        $("label", { for: "audit-at" }, "Ranked at or after"), this.at,
        $("button", { type: "submit", id: "audit-lookup" }, "Look up"), this.msg),
      $("p", { class: "muted" }, "The time is a hint for events far back in their partition: the search then reads forwards from it."),
      this.body);
  },
  loop() { this.body.replaceChildren(); D.show(this.msg, null); },
  async lookup() {
    const id = this.id.value.trim();
    if (!id) return D.show(this.msg, "Enter an event id, as Rank returned it (eventId).");
    const at = this.at.value.trim();
    D.show(this.msg, null, "looking up…");
    this.body.replaceChildren();
    try {
      const d = await D.call("GET", "/events/" + encodeURIComponent(id) + (at ? "?at=" + encodeURIComponent(at) : ""));
      D.show(this.msg, null);
      this.render(d);
    } catch (e) {
      if (!(e instanceof D.ApiError)) throw e;
      D.show(this.msg, e.message);
    }
  },
  render(d) {
    const $ = D.el;
    const o = d.outcome || {};
    const yes = b => (b ? "yes" : "no");
    let outcome = o.status;
    if (o.status === "joined") {
      outcome += `: reward ${D.fmt(o.reward, 4)}` + (o.defaultReward ? " (the default reward: none came)" : `, rewards received [${(o.rewards || []).join(", ")}]`) +
        `, activated ${yes(o.activated)}, learnable ${yes(o.learnable)}`;
    } else {
      outcome += `: no joined line yet; rewards so far [${(o.rewards || []).join(", ")}], activated ${yes(o.activated)}`;
    }
    const unjoined = (o.unjoined || []).map(u => `${u.reason}${u.value !== undefined ? " reward " + u.value : ""} at ${new Date(u.timestamp).toLocaleString()}`);
    const info = [
      ["Ranked", new Date(d.timestamp).toLocaleString()],
      ["Model version", d.modelVersion || "none: the uniform policy"],
      ["Learning mode", d.learningMode + (d.deferred ? ", activation deferred" : "")],
      ["Reward action", d.rewardActionId],
      ["Chosen by the model", d.chosenActionId + (d.bestActionId ? ` (best scored: ${d.bestActionId})` : "")],
      ["Explored", yes(d.exploratory)],
      ["Outcome", outcome],
    ];
    if (unjoined.length) info.push(["Not joined", unjoined.join("; ")]);
    const dl = $("dl", { id: "audit-info", "data-version": d.modelVersion }, ...info.flatMap(([k, v]) => [$("dt", {}, k), $("dd", {}, v)]));

    // The ranking as Rank returned it: the probabilities as the API wrote
    // them, with a bar each.
    const ranking = $("table", { id: "audit-ranking" },
      $("tr", {}, $("th", {}, "Action"), $("th", {}, "Probability"), $("th", {})),
      ...d.ranking.map(a => $("tr", { "data-id": a.id, "data-probability": String(a.probability) },
        $("td", {}, $("code", {}, a.id), a.id === d.rewardActionId ? " ← reward action" : ""),
        $("td", {}, String(a.probability)),
        $("td", { class: "bar-cell" }, $("div", { class: "bar", style: `width:${(a.probability * 100).toFixed(1)}%` })))));

    // Scores and their top features, in ranking order.
    let breakdown;
    if (d.breakdownUnavailable) {
      breakdown = $("p", { id: "audit-breakdown", class: "muted" }, "No breakdown: " + d.breakdownUnavailable);
    } else {
      const ex = Object.fromEntries((d.explanations || []).map(e => [e.id, e.features || []]));
      breakdown = $("table", { id: "audit-breakdown" },
        $("tr", {}, $("th", {}, "Action"), $("th", {}, "Predicted reward"), $("th", {}, "Top features (positive: raise the predicted reward)")),
        ...(d.scores || []).map(s => $("tr", { "data-id": s.id },
          $("td", {}, $("code", {}, s.id)), $("td", {}, D.fmt(s.score, 4)),
          $("td", {}, (ex[s.id] || []).map(f => $("div", {}, $("code", {}, f.name), " ", D.fmt(f.score, 4)))))));
    }

    // The request's features: context, then each action's.
    const req = d.request || {};
    const feats = nss => (nss || []).map(ns => (ns.name ? ns.name + ": " : "") + (ns.features || []).map(f =>
      f.name + "=" + (f.stringValue !== undefined ? f.stringValue : f.numberValue !== undefined ? f.numberValue : f.boolValue !== undefined ? f.boolValue : "")).join(" ")).join(" | ");
    const request = d.request ? $("table", { id: "audit-request" },
      $("tr", {}, $("th", {}, "Context"), $("td", {}, $("code", {}, feats(req.contextFeatures) || "none"))),
      ...(req.actions || []).map(a => $("tr", {}, $("th", {}, $("code", {}, a.id)), $("td", {}, $("code", {}, feats(a.features) || "none")))))
      : $("p", { class: "muted" }, "The rank record does not carry the request (it was written before records did).");

    this.body.replaceChildren(dl, $("h3", {}, "Ranking returned"), ranking,
      $("h3", {}, "Scores and top features"), breakdown, $("h3", {}, "Request"), request);
  },
});
