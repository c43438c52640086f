"""The health page's script in a real browser (Debian's chromium, headless, Playwright) against
a real uvicorn and a real redis-server that is paused: the page never has two refreshes in
flight (issue 18: it fetched every 3 s whether or not the previous request had ended)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from celery_config_sync.publishing import publish
from celery_config_sync.source import load_source
from tests.conftest import SOURCE, RedisServer, require
from tests.figures import figure
from tests.service_processes import running, start_api

pytestmark = pytest.mark.integration
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def test_the_page_never_overlaps_its_own_refreshes(own_redis: RedisServer,
                                                   tmp_path: Path) -> None:
    require(shutil.which(CHROMIUM) is not None or Path(CHROMIUM).is_file(),
            f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)")
    require(importlib.util.find_spec("playwright") is not None, "playwright is not installed")
    from playwright import sync_api
    publish(own_redis.client(), "celery_config", load_source(str(SOURCE)), source="v1")
    api = start_api(own_redis.url, tmp_path)
    lock = threading.Lock()
    in_flight, most, started, ended = 0, 0, 0, 0

    def begun(request: Any) -> None:
        nonlocal in_flight, most, started
        if "/health/live" in request.url:
            with lock:
                in_flight, started = in_flight + 1, started + 1
                most = max(most, in_flight)

    def over(request: Any) -> None:
        nonlocal in_flight, ended
        if "/health/live" in request.url:
            with lock:
                in_flight, ended = in_flight - 1, ended + 1

    with running(api), sync_api.sync_playwright() as playwright:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page()
            page.on("request", begun)
            page.on("requestfinished", over)
            page.on("requestfailed", over)
            page.goto(api.url + "/health")
            deadline = time.monotonic() + 30
            while ended < 1 and time.monotonic() < deadline:  # one refresh answered
                page.wait_for_timeout(200)
            assert ended >= 1, "the page never refreshed"
            assert own_redis.process is not None
            os.kill(own_redis.process.pid, signal.SIGSTOP)  # /health/live now hangs
            paused_from = started
            page.wait_for_timeout(15_000)
            during = started - paused_from
            os.kill(own_redis.process.pid, signal.SIGCONT)
            before = ended
            deadline = time.monotonic() + 30
            while ended <= before and time.monotonic() < deadline:
                page.wait_for_timeout(200)
            assert ended > before, "the page stopped refreshing after Redis came back"
        finally:
            browser.close()
    figure(f"health page, Redis paused 15 s: {during} refresh(es) started meanwhile, at most "
           f"{most} in flight at once (a fixed 3 s interval would have had about 5)")
    assert most == 1
    assert during >= 1
