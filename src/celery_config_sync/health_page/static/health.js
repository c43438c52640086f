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
  let failingSince = null;

  async function refresh() {
    if (document.hidden) {
      return; // a tab nobody looks at costs the Pi nothing
    }
    try {
      const response = await fetch(live.dataset.src, {cache: "no-store"});
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
    }
  }

  setInterval(refresh, PERIOD_MS);
  document.addEventListener("visibilitychange", refresh);
})();
