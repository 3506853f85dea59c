// The worklist keeps itself current: it polls its live part and swaps it in when the
// server says it changed (ETag), but never while the clinician is writing a note or has
// an action form open. Polls are marked so they do not keep an idle session alive.
(function () {
  "use strict";
  var live = document.getElementById("worklist-live");
  if (!live || !window.fetch) { return; }
  var INTERVAL_MS = 15000;
  var announce = document.getElementById("worklist-announce");
  var timer = null;

  function busy() {
    if (live.querySelector("details[open]")) { return true; }
    var el = document.activeElement;
    return !!(el && live.contains(el) && /^(TEXTAREA|INPUT|SELECT)$/.test(el.tagName));
  }

  function updateTabs() {
    var meta = live.querySelector("[data-live-counts]");
    if (!meta) { return; }
    ["clinical", "technical"].forEach(function (tab) {
      var target = document.querySelector('[data-count="' + tab + '"]');
      if (target) { target.textContent = meta.getAttribute("data-" + tab); }
    });
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(poll, INTERVAL_MS);
  }

  function poll() {
    if (document.hidden || busy()) { schedule(); return; }
    fetch(live.getAttribute("data-src"), {
      credentials: "same-origin",
      cache: "no-store",
      headers: { "X-Egenmon-Poll": "1", "If-None-Match": live.getAttribute("data-etag") || "" }
    }).then(function (r) {
      if (r.status === 401 || r.redirected) { window.location.reload(); return null; }
      if (r.status !== 200) { return null; }
      var etag = r.headers.get("ETag");
      return r.text().then(function (html) {
        if (busy()) { return; }
        live.innerHTML = html;
        if (etag) { live.setAttribute("data-etag", etag); }
        live.setAttribute("data-refreshed", String(Date.now()));
        updateTabs();
        var stamp = document.getElementById("worklist-updated");
        if (announce && stamp) { announce.textContent = stamp.textContent; }
      });
    }).catch(function () {
      // Offline or restarting: keep the list as it is and try again later.
    }).then(schedule);
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) { poll(); }
  });
  schedule();
})();
