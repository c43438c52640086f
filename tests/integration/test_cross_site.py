"""A page of another origin, in a real browser (Debian's chromium, headless, Playwright), tries
to queue a task through the demo API (real uvicorn, real redis-server) the ways a hostile page
can without a preflight: a form it submits, and fetch() in no-cors mode. Nothing is queued
(issue 18: an empty form post was accepted as ``{}``)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest
import redis

from celery_config_sync.publishing import publish
from celery_config_sync.source import load_source
from tests.conftest import SOURCE, RedisServer, require
from tests.figures import figure
from tests.other_origin import hostile_pages, other_origin
from tests.service_processes import running, start_api

pytestmark = pytest.mark.integration
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def test_a_page_of_another_origin_cannot_queue_a_task(
        redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path) -> None:
    require(shutil.which(CHROMIUM) is not None or Path(CHROMIUM).is_file(),
            f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)")
    require(importlib.util.find_spec("playwright") is not None, "playwright is not installed")
    from playwright import sync_api

    publish(redis_client, "celery_config", load_source(str(SOURCE), "rpi"), source="v1")
    api = start_api(redis_server.url, tmp_path)
    # The API as the user's browser knows it: localhost (an allowed Host name).
    pages = hostile_pages(api.url.replace("127.0.0.1", "localhost"), "scan.discovery")
    answers: list[tuple[str, int]] = []
    with running(api), other_origin(pages) as site, sync_api.sync_playwright() as playwright:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            for path in pages:
                page = browser.new_page()
                page.on("response", lambda response: "/tasks/" in response.url
                        and answers.append((response.request.method, response.status)))
                page.goto(f"{site}{path}")
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
    assert len(sent) >= 2 * len(pages), api.log()[-3000:]
    assert all(status in (401, 415) for _, status in answers), answers
    assert queued == 0
    assert after == 1
