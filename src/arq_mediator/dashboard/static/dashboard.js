// arq-mediator dashboard: keeps the open page current through server-sent events.
// On each change the page re-reads itself and swaps in the regions marked data-live, so what the
// server renders stays the one source of truth. No library, no other origin.
(function () {
  "use strict";

  var REFRESH_GAP_MS = 500;
  // The server's own subscription may still be forming when "hello" arrives: read once more after this.
  var SETTLE_MS = 1500;
  var RETRY_MAX_MS = 10000;
  var status = document.getElementById("connection");
  var refreshing = false;
  var wanted = false;
  var lastRefresh = 0;
  var retryMs = 1000;
  var source = null;
  var planned = false;

  function show(state, text) {
    if (!status) { return; }
    status.setAttribute("data-state", state);
    status.textContent = text;
  }

  function swap(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html");
    var regions = document.querySelectorAll("[data-live][id]");
    for (var i = 0; i < regions.length; i++) {
      var replacement = fresh.getElementById(regions[i].id);
      if (replacement && replacement.innerHTML !== regions[i].innerHTML) {
        regions[i].replaceWith(document.importNode(replacement, true));
      }
    }
  }

  function refresh() {
    wanted = true;
    if (refreshing) { return; }
    var wait = lastRefresh + REFRESH_GAP_MS - Date.now();
    if (wait > 0) { refreshing = true; setTimeout(function () { refreshing = false; refresh(); }, wait); return; }
    wanted = false;
    refreshing = true;
    lastRefresh = Date.now();
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) { if (html !== null) { swap(html); } })
      .catch(function () { /* the event stream reports the outage */ })
      .then(function () { refreshing = false; if (wanted) { refresh(); } });
  }

  function connect() {
    var url = document.body.getAttribute("data-events");
    if (!url || !window.EventSource) { return; }
    source = new EventSource(url);
    source.addEventListener("hello", function () {
      retryMs = 1000;
      planned = false;
      show("live", "live");
      refresh();
      setTimeout(refresh, SETTLE_MS);
    });
    source.addEventListener("change", refresh);
    source.addEventListener("bye", function () { planned = true; });
    source.onerror = function () {
      if (planned) { return; }
      show("disconnected", "disconnected, reconnecting…");
      if (source.readyState === EventSource.CLOSED) {
        // The server refused the stream (or is gone): the browser will not retry by itself.
        setTimeout(connect, retryMs);
        retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
      }
    };
  }

  // A form that may not be undone asks first (bulk actions get a confirmation page from the server).
  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });

  window.addEventListener("pagehide", function () { if (source) { source.close(); } });
  connect();
})();
