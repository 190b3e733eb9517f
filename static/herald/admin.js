/* Herald's admin script (a static file: the pages allow no inline script).
 *
 * 1. Time zone: keeps the browser's zone in the `herald_tz` cookie so the server shows times in
 *    it (messaging/admin/timezone.py); pages say which zone they use.
 * 2. Live message page: while a message is not final, asks its live.json every few seconds and
 *    swaps in the summary and timeline the server rendered; stops once the message is final.
 */
(function () {
  "use strict";

  try {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone && document.cookie.indexOf("herald_tz=" + zone) === -1) {
      document.cookie = "herald_tz=" + zone + "; path=/admin/; max-age=31536000; SameSite=Lax";
    }
  } catch (e) { /* no Intl: the server keeps UTC */ }

  function live(panel) {
    var url = panel.getAttribute("data-live-url");
    var interval = parseInt(panel.getAttribute("data-live-interval"), 10) || 3000;
    var state = document.getElementById("herald-live-state");
    var failures = 0;

    function say(text) { if (state) { state.textContent = text; } }

    function tick() {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (response) {
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.json();
        })
        .then(function (data) {
          failures = 0;
          var summary = document.getElementById("herald-summary");
          var timeline = document.getElementById("herald-timeline");
          if (summary && summary.getAttribute("data-updated") !== data.updated_at) {
            summary.outerHTML = data.summary_html;
          }
          if (timeline && timeline.getAttribute("data-count") !== String(data.event_count)) {
            timeline.outerHTML = data.timeline_html;
          }
          document.body.setAttribute("data-herald-status", data.status);
          if (data.final) {
            panel.setAttribute("data-live", "final");
            say("Final status: " + data.status + ". This page no longer updates.");
            return;
          }
          say("Updating every " + Math.round(interval / 1000) + " s while the message is in flight.");
          window.setTimeout(tick, interval);
        })
        .catch(function () {
          failures += 1;
          say("Could not check for updates (" + failures + "); trying again.");
          window.setTimeout(tick, Math.min(interval * Math.pow(2, failures), 60000));
        });
    }
    window.setTimeout(tick, interval);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var panel = document.getElementById("herald-live");
    if (panel && panel.getAttribute("data-live") === "polling") { live(panel); }
  });
})();
