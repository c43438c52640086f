"""A web page of another origin, as a hostile site serves it: the ways such a page can make a
user's browser post to the API without a CORS preflight (a form it submits, fetch() in no-cors
mode). Served by an HTTP server of the test's own on loopback (another port: another origin);
used by the integration tier (tests/integration/test_cross_site.py, a uvicorn of its own) and
the e2e tier (tests/e2e/test_hostile_clients.py, the compose stack)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.conftest import require

# Debian's chromium, driven by Playwright (never `playwright install`: no download).
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

# What a browser sends without a preflight: a form in each of the three encodings a form may
# use (one page each), and two no-cors fetches (text/plain, and no body at all).
FORM_ENCODINGS = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")
PAGE = """<!doctype html><html><body>
<form id="f" method="post" action="{api}/tasks/{task}" target="sink"
      enctype="{enctype}"><input name="args" value="1"></form>
<iframe name="sink"></iframe>
<script>
  fetch("{api}/tasks/{task}", {{method: "POST", mode: "no-cors",
        headers: {{"Content-Type": "text/plain"}}, body: "{{}}"}});
  fetch("{api}/tasks/{task}", {{method: "POST", mode: "no-cors"}});
  document.getElementById("f").submit();
</script></body></html>"""
POSTS_PER_PAGE = 3  # the form and the two fetches


def hostile_pages(api: str, task: str) -> dict[str, str]:
    """path -> page, one per form encoding, each posting to ``api``'s ``/tasks/<task>``."""
    return {f"/{enctype.replace('/', '-')}": PAGE.format(api=api, task=task, enctype=enctype)
            for enctype in FORM_ENCODINGS}


@contextmanager
def other_origin(pages: dict[str, str]) -> Iterator[str]:
    """An HTTP server on a free loopback port serving ``pages`` (path -> HTML): its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, "").encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def visit_hostile_pages(api: str, task: str,
                        after_each: Callable[[], None] = lambda: None) -> list[tuple[str, int]]:
    """Serve :func:`hostile_pages` for ``api`` on another origin and open each in headless
    chromium, giving its posts 1.5 s, then ``after_each()``: the (method, status) of every
    answer from ``/tasks/`` the browser saw (a no-cors answer it cannot read is not among them;
    the API's own log tells what reached it)."""
    require(shutil.which(CHROMIUM) is not None or Path(CHROMIUM).is_file(),
            f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)")
    require(importlib.util.find_spec("playwright") is not None, "playwright is not installed")
    from playwright import sync_api

    pages = hostile_pages(api, task)
    answers: list[tuple[str, int]] = []
    with other_origin(pages) as site, sync_api.sync_playwright() as playwright:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            for path in pages:
                page = browser.new_page()
                page.on("response", lambda response: "/tasks/" in response.url
                        and answers.append((response.request.method, response.status)))
                page.goto(f"{site}{path}")
                page.wait_for_timeout(1500)
                after_each()
                page.close()
        finally:
            browser.close()
    return answers
