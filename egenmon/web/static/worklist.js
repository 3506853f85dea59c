// The worklist keeps itself current: the server tells it when an alert of its care unit
// changed (server-sent events from /api/v1/alerts/stream); it then fetches its live part
// and swaps it in when the server says it changed (ETag), but never while the clinician
// is writing a note or has an action form open. Without the event stream (not supported,
// or the connection lost) it polls every 15 s, as before, and tries the stream again.
// Its requests are marked so they do not keep an idle session alive (the stream is too).
(function () {
  "use strict";
  var live = document.getElementById("worklist-live");
  if (!live || !window.fetch) { return; }
  var POLL_MS = 15000;        // without events
  var SAFETY_MS = 120000;     // with events: a slow poll all the same
  var RETRY_STREAM_MS = 60000;
  var BUSY_RETRY_MS = 2000;
  var announce = document.getElementById("worklist-announce");
  var timer = null;
  var source = null;
  var streaming = false;
  var pending = null;

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

  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(poll, ms || (streaming ? SAFETY_MS : POLL_MS));
  }

  function poll() {
    if (document.hidden) { schedule(); return; }
    if (busy()) { schedule(streaming ? BUSY_RETRY_MS : POLL_MS); return; }
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
    }).then(function () { schedule(); });
  }

  // Several changes close together make one fetch.
  function changed() {
    if (pending) { return; }
    pending = setTimeout(function () { pending = null; poll(); }, 250);
  }

  function openStream() {
    if (!window.EventSource) { return; }
    source = new EventSource("/api/v1/alerts/stream");
    source.addEventListener("ready", function () {
      streaming = true;
      live.setAttribute("data-live", "events");
      changed();  // whatever changed while the stream was away
    });
    source.addEventListener("alerts", changed);
    source.onerror = function () {
      // Until the stream is back ("ready"), poll. EventSource reconnects by itself while
      // it can (the server ends a stream every few minutes); a refusal closes it: then
      // try the stream again later.
      if (streaming) {
        streaming = false;
        live.setAttribute("data-live", "poll");
        schedule(POLL_MS);
      }
      if (source && source.readyState === EventSource.CLOSED) {
        source = null;
        setTimeout(openStream, RETRY_STREAM_MS);
      }
    };
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) { poll(); }
  });
  live.setAttribute("data-live", "poll");
  openStream();
  schedule(POLL_MS);
})();
