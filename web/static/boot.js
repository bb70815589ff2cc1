// boot.js starts the page: it finds out whether a key is needed and which
// loops the caller may see, then opens the first.
"use strict";

(() => {
  const $ = id => document.getElementById(id);
  const select = $("loop");

  D.signin = msg => {
    $("signin").hidden = false;
    $("views").hidden = true;
    D.show($("signin-error"), msg && D.state.key ? msg : "");
  };

  // start asks for the default loop's numbers: that answers whether the
  // key is good and whether it is an admin's; an admin gets every loop.
  async function start() {
    D.state.loop = "";
    let stats;
    try {
      stats = await D.call("GET", "/dashboard");
    } catch (e) {
      if (e.status === 401 || e.status === 403) return D.signin(String(e));
      $("status").textContent = String(e);
      return;
    }
    $("signin").hidden = true;
    $("views").hidden = false;
    $("signout").hidden = !D.state.key;
    D.state.admin = stats.admin;
    await loops(stats.loop);
  }

  // loops fills the loop list (an admin's: every loop) and opens want.
  async function loops(want) {
    let names = [want];
    if (D.state.admin) {
      try { names = (await D.call("GET", "/loops")).loops.map(c => c.loop); } catch (_) { /* not an admin route here */ }
      if (!names.includes(want)) names.unshift(want);
    }
    select.replaceChildren(...names.map(n => D.el("option", { value: n }, n)));
    select.value = want;
    D.state.loop = want;
    D.open();
  }
  D.reloadLoops = loops;

  select.addEventListener("change", () => { D.state.loop = select.value; D.open(); });
  $("signin-form").addEventListener("submit", ev => {
    ev.preventDefault();
    D.state.key = $("key").value.trim();
    sessionStorage.setItem("personalizer-key", D.state.key);
    start();
  });
  $("signout").addEventListener("click", () => {
    sessionStorage.removeItem("personalizer-key");
    D.state.key = "";
    clearTimeout(D.state.timer);
    D.signin("");
  });
  start();
})();
