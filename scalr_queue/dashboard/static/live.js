// Live refresh, as progressive enhancement: every page works without it. With "live" ticked (remembered in
// localStorage), the page's <main> is fetched again every 5 s and swapped in, unless the operator is typing in
// a form or has text selected.
(function () {
  "use strict";
  var PERIOD_MS = 5000;
  var KEY = "scalr_queue.live";
  var toggle = document.getElementById("live-toggle");
  if (!toggle || !window.fetch || !window.DOMParser) return;
  toggle.parentElement.hidden = false;
  toggle.checked = window.localStorage.getItem(KEY) === "1";
  toggle.addEventListener("change", function () {
    window.localStorage.setItem(KEY, toggle.checked ? "1" : "0");
  });

  function busy() {
    var active = document.activeElement;
    if (active && active.closest && active.closest("main form")) return true;
    var selection = window.getSelection && window.getSelection();
    return Boolean(selection && String(selection).length);
  }

  function refresh() {
    if (!toggle.checked || document.hidden || busy()) return;
    window.fetch(window.location.href, { credentials: "same-origin", headers: { "X-Requested-With": "live" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (!html || busy()) return;
        var fresh = new window.DOMParser().parseFromString(html, "text/html").getElementById("main");
        var main = document.getElementById("main");
        if (fresh && main) main.innerHTML = fresh.innerHTML;
      })
      .catch(function () { /* the next tick tries again */ });
  }

  window.setInterval(refresh, PERIOD_MS);
})();
