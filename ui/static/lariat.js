// Lariat's only script: keeps a page's #live part current. A run page follows the run's
// event stream (SSE); lists refresh on a timer. Everything else works without it.
(function () {
  "use strict";
  var main = document.getElementById("main");
  if (!main) return;
  var busy = false, again = false, timer = null;

  // Never replace a form the operator is typing into, nor one they have edited and not
  // sent yet (a retry's input, say): its page waits until it is sent or reloaded.
  var edited = false;
  document.addEventListener("input", function (e) {
    var live = document.getElementById("live");
    if (live && live.contains(e.target)) { edited = true; main.dataset.held = "edited"; }
  });
  function typing() {
    if (edited) return true;
    var a = document.activeElement;
    var live = document.getElementById("live");
    return a && live && live.contains(a) && /^(INPUT|TEXTAREA|SELECT)$/.test(a.tagName);
  }

  function refresh() {
    if (busy) { again = true; return; }
    if (typing()) { if (!edited) schedule(1000); return; }
    busy = true;
    fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html", "X-Lariat-Refresh": "1" } })
      .then(function (r) {
        if (r.redirected || !r.ok) throw new Error("status " + r.status);
        return r.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("live"), old = document.getElementById("live");
        if (fresh && old && !typing()) {
          var open = {};
          old.querySelectorAll("details[open]").forEach(function (d, i) { open[i] = true; });
          old.innerHTML = fresh.innerHTML;
          old.querySelectorAll("details").forEach(function (d, i) { if (open[i]) d.open = true; });
          main.dataset.updates = String(Number(main.dataset.updates || "0") + 1);
        }
      })
      .catch(function () { /* the next event or tick tries again */ })
      .then(function () {
        busy = false;
        if (again) { again = false; schedule(300); }
      });
  }

  function schedule(ms) {
    if (timer) return;
    timer = setTimeout(function () { timer = null; refresh(); }, ms);
  }

  var stream = main.dataset.stream;
  if (stream && window.EventSource) {
    var es = new EventSource(stream);
    es.onmessage = function () { schedule(250); };
    ["run", "step", "event"].forEach(function (k) { es.addEventListener(k, function () { schedule(250); }); });
    es.onopen = function () { main.dataset.live = "open"; };
    es.onerror = function () { main.dataset.live = "retrying"; };
  }
  var every = Number(main.dataset.refresh || 0);
  if (every > 0) {
    setInterval(function () { if (!document.hidden) refresh(); }, every);
  }
})();
