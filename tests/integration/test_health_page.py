"""The health page served by a real API (uvicorn) against a real redis-server: what it shows,
that hostile bytes in Redis stay text, its security headers, and /docs without a CDN.

The real browser cases run in the e2e tier (tests/e2e/test_health_page.py); these need no
engine and run with ``make test-fast``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from celery_config_sync.codec import ConfigDocument
from celery_config_sync.fleet import record_key
from celery_config_sync.publishing import publish
from celery_config_sync.redis_keys import Keys
from celery_config_sync.source import load_source
from tests.conftest import SOURCE, RedisServer, require
from tests.polling import wait_for
from tests.redis_process import redis_server_binary
from tests.service_processes import Api, start_api

pytestmark = pytest.mark.integration
NS = "celery_config"
V1 = load_source(str(SOURCE), "rpi")
# Markup in every field an attacker holding a service's password could write.
HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The module's own redis-server: a case below stops it."""
    require(redis_server_binary() is not None, "redis-server is not installed")
    own = RedisServer(tmp_path_factory.mktemp("health-redis"))
    own.start()
    yield own
    own.stop()


@pytest.fixture(scope="module")
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    own = redis_server.client()
    own.flushall()
    publish(own, NS, V1, source="v1", publisher=f"pi{HOSTILE}")
    yield own
    own.close()


@pytest.fixture(scope="module")
def api(redis_server: RedisServer, client: redis.Redis,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    workdir: Path = tmp_path_factory.mktemp("health")
    service = start_api(redis_server.url, workdir, CELERY_CONFIG_HEARTBEAT_INTERVAL="1")
    try:
        yield service
    finally:
        service.stop()


def hostile_record(client: redis.Redis) -> None:
    """A fleet record full of markup and bytes that are not UTF-8, on another sha256."""
    key = record_key(NS, "worker", f"evil{HOSTILE}:1")
    client.hset(key, mapping={"service": "worker", "instance": f"evil{HOSTILE}:1",
                              "version": "1", "sha256": "0" * 64, "source": HOSTILE,
                              "last_error": b"\xff\xfe" + HOSTILE.encode(), "ttl": "60"})
    client.expire(key, 60)


def test_the_page_shows_the_published_version_and_the_fleet(api: Api) -> None:
    wait_for(lambda: api.get("/health.json")["fleet"], 60, "the API's fleet record")
    response = api.client.get("/health")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert 'id="published-version">1<' in page
    assert V1.sha256 in page
    assert f'data-instance="{api.get("/config/status")["instance"]}"' in page
    for queue in V1.queues:
        assert f'data-queue="{queue}"' in page
    assert "all 1 instances run the published version" in page


def test_queues_show_the_messages_waiting(api: Api) -> None:
    """No worker runs here: a task sent by the API waits in its queue's Redis list."""
    before = {q["name"]: q["depth"] for q in api.get("/health.json")["queues"]}
    assert list(before) == list(V1.queues)
    queue = api.enqueue("scan.discovery")["queue"]
    after = {q["name"]: q["depth"] for q in api.get("/health.json")["queues"]}
    assert after == {**before, queue: before[queue] + 1}
    assert re.search(rf'data-queue="{queue}"><td>{queue}</td><td class="num">{after[queue]}<',
                     api.client.get("/health/live").text)


def test_hostile_bytes_from_redis_stay_text(api: Api, client: redis.Redis) -> None:
    hostile_record(client)
    for path in ("/health", "/health/live"):
        page = api.client.get(path).text
        assert "<script>alert" not in page and "<img" not in page, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img src=x" in page, path
        assert "\ufffd" in page  # the bytes that are not UTF-8, replaced, not dropped
        row = re.search(r'<tr class="([^"]*)" data-service="worker"', page)
        assert row and "drift" in row.group(1), page
    body = api.get("/health.json")
    evil = next(r for r in body["fleet"] if r["instance"].startswith("evil"))
    assert any(p.startswith("drift") for p in evil["problems"])
    assert not body["in_sync"]
    assert body["published"]["publisher"] == f"pi{HOSTILE}"
    client.delete(*client.keys(f"{Keys(NS).applied_prefix}worker:*"))


def test_history_and_the_diff_of_two_versions(api: Api, client: redis.Redis) -> None:
    dropped = next(iter(V1.routes))
    v2 = ConfigDocument(dict(V1.queues), {k: v for k, v in V1.routes.items() if k != dropped},
                        dict(V1.base))
    assert publish(client, NS, v2, source=f"v2{HOSTILE}", publisher="pi").version == 2
    live = api.client.get("/health/live").text
    assert re.findall(r'<tr data-version="(\d+)"', live) == ["2", "1"]  # newest first
    assert 'href="health?from=1&amp;to=2#diff"' in live
    assert "&lt;script&gt;" in live and "<script>" not in live  # the source, escaped
    page = api.client.get("/health", params={"from": 1, "to": 2}).text
    result = page[page.index('id="diff-result"'):]
    assert "1 change(s), live" in result
    assert f">{html.escape(dropped)}</code>" in result and 'class="diff-removed"' in result
    assert '<option value="1" selected>' in page and '<option value="2" selected>' in page
    assert api.get("/health/diff.json?from=1&to=2")["changes"] == [
        {"kind": "removed", "section": "routes", "key": dropped, "from": V1.routes[dropped],
         "to": None, "applies": "live"}]
    same = api.client.get("/health", params={"from": 2, "to": 2}).text
    assert "hold the same configuration" in same
    missing = api.client.get("/health", params={"from": 1, "to": 9})
    assert missing.status_code == 200 and "version 9 is not in the history" in missing.text
    assert api.client.get("/health", params={"from": "x", "to": 1}).status_code == 422


def test_the_page_forbids_inline_and_foreign_scripts(api: Api) -> None:
    for path in ("/health", "/health/live"):
        headers = api.client.get(path).headers
        policy = headers["content-security-policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy
        assert "unsafe-inline" not in policy
        assert headers["x-content-type-options"] == "nosniff"
    page = api.client.get("/health").text
    assert "<script>" not in page  # the only script is a file of the API
    for asset in re.findall(r'(?:src|href)="(static/[^"]+)"', page):
        assert api.client.get(f"/{asset}").status_code == 200, asset


def test_the_root_leads_to_the_page(api: Api) -> None:
    response = api.client.get("/", follow_redirects=True)
    assert response.status_code == 200 and response.url.path == "/health"


def test_docs_and_redoc_load_nothing_from_outside(api: Api) -> None:
    for path in ("/docs", "/redoc"):
        page = api.client.get(path).text
        urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", page)
        assert urls, page
        assert all(not re.match(r"(?i)(https?:)?//", url) for url in urls), (path, urls)
        for url in urls:
            if url.startswith("/static-offline-docs/"):
                assert api.client.get(url).status_code == 200, url


def test_redis_down_the_page_still_says_what_this_instance_applies(
        api: Api, redis_server: RedisServer) -> None:
    """Not a 500: the error and this instance's own state (redis_server is restarted)."""
    redis_server.stop()
    try:
        response = httpx.get(f"{api.url}/health", timeout=30)
        assert response.status_code == 200
        assert "Redis did not answer" in response.text
        assert api.get("/health.json")["this_instance"]["version"] == 2
    finally:
        redis_server.start()  # empty: the last case of the module
