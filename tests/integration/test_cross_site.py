"""A page of another origin, in a real browser (Debian's chromium, headless, Playwright), tries
to queue a task through the demo API (real uvicorn, real redis-server) the ways a hostile page
can without a preflight: a form it submits, and fetch() in no-cors mode. Nothing is queued
(issue 18: an empty form post was accepted as ``{}``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from celery_config_sync.publishing import publish
from celery_config_sync.source import load_source
from tests.conftest import SOURCE, RedisServer
from tests.figures import figure
from tests.other_origin import FORM_ENCODINGS, visit_hostile_pages
from tests.service_processes import running, start_api

pytestmark = pytest.mark.integration


def test_a_page_of_another_origin_cannot_queue_a_task(
        redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path) -> None:
    publish(redis_client, "celery_config", load_source(str(SOURCE), "rpi"), source="v1")
    api = start_api(redis_server.url, tmp_path)
    with running(api):
        # The API as the user's browser knows it: localhost (an allowed Host name).
        answers = visit_hostile_pages(api.url.replace("127.0.0.1", "localhost"),
                                      "scan.discovery")
        # The API saw every attempt (the test would catch a browser that sent nothing)...
        sent = api.lines(r'"POST /tasks/scan\.discovery HTTP/1\.1" (401|415)')
        # ... and queued nothing: the scan queue is empty, no task meta was written.
        queued = redis_client.llen("scan")
        # A request with the token, from the test, does queue one: the check can fail.
        api.enqueue("scan.discovery")
        after = redis_client.llen("scan")
    figure(f"cross-site attempts: {len(sent)} posts reached the API, answered "
           f"{sorted({status for _, status in answers})}; {queued} task(s) queued by them")
    assert len(sent) >= 2 * len(FORM_ENCODINGS), api.log()[-3000:]
    assert all(status in (401, 415) for _, status in answers), answers
    assert queued == 0
    assert after == 1
