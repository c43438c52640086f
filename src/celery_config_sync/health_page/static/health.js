// The health page refreshes itself: every few seconds it fetches the live fragment, rendered
// and escaped by the server (celery_config_sync/health_page/render.py), and swaps it in. No framework, no
// build step, nothing fetched from outside the API (its Content-Security-Policy forbids it).
"use strict";
(function () {
  const PERIOD_MS = 3000;
  const live = document.getElementById("live");
  const line = document.getElementById("refresh");
  if (!live || !line) {
    return;
  }
  const TIMEOUT_MS = 10000; // a request that hangs is abandoned, and the next one scheduled
  let failingSince = null;
  let inFlight = false;
  let timer = null;

  // One request at a time: the next refresh is scheduled once the previous one has ended
  // (answered, failed or timed out), never on a fixed interval, so that a slow API is not sent
  // a new request every few seconds on top of the ones it has not answered yet.
  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, PERIOD_MS);
  }

  async function refresh() {
    if (inFlight) {
      return; // the one in flight schedules the next
    }
    if (document.hidden) {
      schedule(); // a tab nobody looks at costs the Pi nothing
      return;
    }
    inFlight = true;
    const abort = new AbortController();
    const deadline = setTimeout(function () { abort.abort(); }, TIMEOUT_MS);
    try {
      const response = await fetch(live.dataset.src, {cache: "no-store", signal: abort.signal});
      if (!response.ok) {
        throw new Error("HTTP " + response.status);
      }
      const fragment = await response.text();
      if (fragment !== live.innerHTML) {
        live.innerHTML = fragment;
      }
      failingSince = null;
      line.textContent = "Updated " + new Date().toLocaleTimeString() +
        "; refreshes every " + PERIOD_MS / 1000 + " s.";
      line.className = "";
    } catch (error) {
      failingSince = failingSince || new Date();
      line.textContent = "The API does not answer (" + error.message + ") since " +
        failingSince.toLocaleTimeString() + ": what is shown may be stale.";
      line.className = "stale";
    } finally {
      clearTimeout(deadline);
      inFlight = false;
      schedule();
    }
  }

  schedule();
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) {
      refresh();
    }
  });
})();
