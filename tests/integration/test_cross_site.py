"""A page of another origin, in a real browser (Debian's chromium, headless, Playwright), tries
to queue a task through the demo API (real uvicorn, real redis-server) the ways a hostile page
can without a preflight: a form it submits, and fetch() in no-cors mode. Nothing is queued
(issue 18: an empty form post was accepted as ``{}``)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis

from celery_config_sync.publishing import publish
from celery_config_sync.source import load_source
from tests.conftest import SOURCE, RedisServer, require
from tests.figures import figure
from tests.service_processes import running, start_api

pytestmark = pytest.mark.integration
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

PAGE = """<!doctype html><html><body>
<form id="f" method="post" action="{api}/tasks/scan.discovery" target="sink"
      enctype="{enctype}"><input name="args" value="1"></form>
<iframe name="sink"></iframe>
<script>
  fetch("{api}/tasks/scan.discovery", {{method: "POST", mode: "no-cors",
        headers: {{"Content-Type": "text/plain"}}, body: "{{}}"}});
  fetch("{api}/tasks/scan.discovery", {{method: "POST", mode: "no-cors"}});
  document.getElementById("f").submit();
</script></body></html>"""


@pytest.fixture
def hostile_site() -> Iterator[tuple[str, dict[str, str]]]:
    """An HTTP server of its own (another origin: another port), serving ``pages``."""
    pages: dict[str, str] = {}

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
        yield f"http://127.0.0.1:{server.server_address[1]}", pages
    finally:
        server.shutdown()
        server.server_close()


def test_a_page_of_another_origin_cannot_queue_a_task(
        redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path,
        hostile_site: tuple[str, dict[str, str]]) -> None:
    require(shutil.which(CHROMIUM) is not None or Path(CHROMIUM).is_file(),
            f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)")
    require(importlib.util.find_spec("playwright") is not None, "playwright is not installed")
    from playwright import sync_api

    publish(redis_client, "celery_config", load_source(str(SOURCE), "rpi"), source="v1")
    api = start_api(redis_server.url, tmp_path)
    site, pages = hostile_site
    # The API as the user's browser knows it: localhost (an allowed Host name).
    api_url = api.url.replace("127.0.0.1", "localhost")
    answers: list[tuple[str, int]] = []
    with running(api), sync_api.sync_playwright() as playwright:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            for enctype in ("application/x-www-form-urlencoded", "multipart/form-data",
                            "text/plain"):
                pages[f"/{enctype.replace('/', '-')}"] = PAGE.format(api=api_url,
                                                                     enctype=enctype)
                page = browser.new_page()
                page.on("response", lambda response: "/tasks/" in response.url
                        and answers.append((response.request.method, response.status)))
                page.goto(f"{site}/{enctype.replace('/', '-')}")
                page.wait_for_timeout(1500)
                page.close()
        finally:
            browser.close()
        # The API saw every attempt (the test would catch a browser that sent nothing)...
        sent = api.lines(r'"POST /tasks/scan\.discovery HTTP/1\.1" (401|415)')
        # ... and queued nothing: the scan queue is empty, no task meta was written.
        queued = redis_client.llen("scan")
        # A request with the token, from the test, does queue one: the check can fail.
        api.enqueue("scan.discovery")
        after = redis_client.llen("scan")
    figure(f"cross-site attempts: {len(sent)} posts reached the API, answered "
           f"{sorted({status for _, status in answers})}; {queued} task(s) queued by them")
    assert len(sent) >= 6, api.log()[-3000:]
    assert all(status in (401, 415) for _, status in answers), answers
    assert queued == 0
    assert after == 1
