// start.js: what to do next when the loop has no data yet.
"use strict";

D.view({
  id: "start", title: "No data yet", wide: true,
  init(el) {
    this.el = el;
    this.body = D.el("div");
    el.append(this.body);
  },
  loop() { this.el.hidden = true; this.shown = false; },
  update(s) {
    const empty = s.calls.ranks === 0 && !s.served && !(s.learner && s.learner.learned > 0) && !(s.rewards && s.rewards.points.length);
    this.el.hidden = !empty;
    if (!empty || this.shown) return;
    this.shown = true;
    const key = D.state.key ? ` \\\n  -H 'Ocp-Apim-Subscription-Key: YOUR-KEY'` : "";
    const loopH = s.admin && D.state.key ? ` \\\n  -H 'X-Personalizer-Loop: ${s.loop}'` : "";
    const base = `${location.origin}${D.API}`;
    const simKey = D.state.key ? " --api-key YOUR-KEY" : "";
    this.body.replaceChildren(
      D.el("p", {}, `Loop ${s.loop} has answered no Rank call yet. Feed it simulated users (from a checkout, with the default gRPC address):`),
      D.el("pre", {}, `bin/personalizer simulate --loop ${s.loop}${simKey} --events 20000`),
      D.el("p", {}, "or rank and reward from your own code; with curl:"),
      D.el("pre", {}, `curl -s -X POST ${base}/rank -H 'Content-Type: application/json'${key}${loopH} \\\n  -d '{"eventId": "e1", "contextFeatures": [{"time": "morning"}],\n       "actions": [{"id": "news", "features": [{"topic": "news"}]},\n                   {"id": "sports", "features": [{"topic": "sports"}]}]}'\n` +
        `curl -s -X POST ${base}/events/e1/reward -H 'Content-Type: application/json'${key}${loopH} -d '{"value": 1}'`),
      D.el("p", { class: "muted" }, "The charts below fill in as the events are joined and learned."));
  },
});
