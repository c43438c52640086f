"""The health page and /docs in a real browser: Debian's chromium, driven headless by Playwright
(never ``playwright install``), against the real compose stack (profile rpi).

Every request the browser makes is recorded, and any that does not go to the API is aborted
and fails the case: the page must work on a Pi without internet. Console errors (a script
error, a Content-Security-Policy refusal) fail the case too.

One stack and one browser serve the module, in the order written. Screenshots land in
.artifacts/ (git-ignored); docs/health-page.png in the README is one of them.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from celery_config_sync.fleet import record_key
from tests.compose_stack import Stack, docker
from tests.conftest import ROOT, require
from tests.e2e.conftest import MEASUREMENTS, NAMESPACE, make_stack, up_measured
from tests.e2e.live_sources import (
    WITH_REPORTS,
    document_of,
    publish_from,
    recreate_api,
    source_dir,
)

pytestmark = pytest.mark.e2e
# Debian's package; elsewhere (a GitHub runner's Chrome) name another build of Chromium.
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / ".artifacts"
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


@pytest.fixture(scope="module")
def stack(engine: None) -> Iterator[Stack]:
    # A 2 s heartbeat, so that the fleet view follows within a few seconds.
    with make_stack("-page", CELERY_CONFIG_HEARTBEAT_INTERVAL="2") as current:
        up_measured(current, "health page stack")
        current.redis_cli("ACL", "LOG", "RESET")
        yield current


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require(shutil.which(CHROMIUM) is not None or Path(CHROMIUM).is_file(),
            f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)")
    with sync_playwright() as playwright:
        # As root, Chromium's sandbox cannot start: --no-sandbox (a test browser, local pages).
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Visit:
    """A browser page that records what it asks for and what goes wrong in it."""

    page: Any
    host: str
    requests: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def check(self) -> None:
        assert self.requests, "the browser made no request at all"
        assert not self.foreign, f"requests leaving the stack: {self.foreign}"
        assert not self.errors, f"errors in the page: {self.errors}"


@pytest.fixture
def visit(browser: Any, stack: Stack) -> Iterator[Visit]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    current = Visit(page, urlsplit(stack.url).netloc)

    def route(route: Any) -> None:
        url = route.request.url
        current.requests.append(url)
        if urlsplit(url).netloc != current.host:
            current.foreign.append(url)
            route.abort()  # never let it out: the failure says which it was
        else:
            route.continue_()

    context.route("**/*", route)
    page.on("console", lambda message: message.type == "error"
            and current.errors.append(message.text))
    page.on("pageerror", lambda error: current.errors.append(str(error)))
    try:
        yield current
    finally:
        context.close()


def fleet_rows(visit: Visit) -> dict[str, str]:
    """service -> the class of its row (``ok``, ``problem``, ``drift problem``)."""
    rows = visit.page.locator("#fleet tbody tr[data-service]")
    return {rows.nth(i).get_attribute("data-service"): rows.nth(i).get_attribute("class")
            for i in range(rows.count())}


def screenshot(visit: Visit, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    visit.page.screenshot(path=str(path), full_page=True)
    return path


def memory_mb(stack: Stack, service: str) -> float:
    """The container's memory as `docker stats` counts it (without the page cache), in MB."""
    used = docker("stats", "--no-stream", "--format", "{{.MemUsage}}",
                  stack.container(service)).stdout.split("/")[0].strip()
    number, unit = re.fullmatch(r"([\d.]+)\s*([KMG]i?B)", used).groups()  # type: ignore[union-attr]
    return float(number) * {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}[unit] * 1.048576


def test_the_page_loads_from_the_api_alone_and_shows_the_fleet(stack: Stack,
                                                               visit: Visit) -> None:
    idle = memory_mb(stack, "api")
    started = time.monotonic()
    visit.page.goto(f"{stack.url}/health")
    visit.page.wait_for_selector("#fleet tbody tr[data-service]")
    loaded = time.monotonic() - started
    # The worker's first heartbeat may follow the page's load: the script brings it.
    expect(visit.page.locator("#fleet tbody tr[data-service]")).to_have_count(3, timeout=20_000)
    assert sorted(fleet_rows(visit)) == ["api", "beat", "worker"]
    assert visit.page.inner_text("#published-version") == "1"
    assert set(fleet_rows(visit).values()) == {"ok"}
    assert "instances run the published version" in visit.page.inner_text("#summary")
    # Every declared queue, with its depth read in the broker's Redis as the api user.
    # (the depth is each row's first number; the live consumers follow it)
    depths = visit.page.locator("#queues tbody tr td.num:nth-child(2)").all_inner_texts()
    assert len(depths) == len(document_of(ROOT / "config" / "celery").queues)
    assert all(depth.isdigit() for depth in depths), depths
    # The page's script refreshes it: the line under the title says when it last did.
    expect(visit.page.locator("#refresh")).to_contain_text("Updated", timeout=10_000)
    visit.check()
    screenshot(visit, "health-page-in-sync.png")
    renders = []
    for _ in range(20):
        began = time.perf_counter()
        assert httpx.get(f"{stack.url}/health", timeout=10).status_code == 200
        renders.append(time.perf_counter() - began)
    MEASUREMENTS.append(f"health page: first load in the browser {loaded:.2f} s; GET /health "
                        f"median {statistics.median(renders) * 1000:.1f} ms over 20; api "
                        f"memory {idle:.1f} MB before the first page, "
                        f"{memory_mb(stack, 'api'):.1f} MB after 21")


def test_a_new_version_and_the_drift_appear_without_a_reload(stack: Stack, visit: Visit,
                                                             tmp_path: Path) -> None:
    """The page open, the API held back (live reload off), a version published: the page
    shows it and the API's drift by itself; the API back with live reload, all in sync."""
    visit.page.goto(f"{stack.url}/health")
    visit.page.evaluate("window.__loadedOnce = true")  # gone if the page were reloaded
    recreate_api(stack, "false")
    try:
        directory = source_dir(tmp_path, WITH_REPORTS)
        assert publish_from(stack, directory, "page-v2")["version"] == 2
        expect(visit.page.locator("#published-version")).to_have_text("2", timeout=20_000)
        visit.page.wait_for_selector("#fleet tr.drift[data-service='api']", timeout=20_000)
        assert "drift" in visit.page.inner_text("#fleet tr[data-service='api']")
        assert "drift" not in (fleet_rows(visit)["worker"] or "")
        assert "need attention" in visit.page.inner_text("#summary")
        assert visit.page.evaluate("window.__loadedOnce") is True
        screenshot(visit, "health-page-drift.png")
    finally:
        recreate_api(stack, "true")
    expect(visit.page.locator("#fleet tr.drift")).to_have_count(0, timeout=30_000)
    expect(visit.page.locator("#summary")).to_have_class(re.compile(r"\bok\b"), timeout=30_000)
    assert document_of(directory).sha256 in visit.page.inner_text("#published")
    assert visit.page.evaluate("window.__loadedOnce") is True
    # The API was away while it was recreated: the page said so, and recovered by itself.
    visit.errors.clear()  # the failed fetches of that moment, logged by the browser
    visit.check()


def test_the_diff_of_two_versions(stack: Stack, visit: Visit) -> None:
    """Versions 1 and 2 (the previous case) picked in the form: the page lists the changes."""
    visit.page.goto(f"{stack.url}/health")
    expect(visit.page.locator("#history tbody tr[data-version]")).to_have_count(2)
    visit.page.select_option("select[name=from]", "1")
    visit.page.select_option("select[name=to]", "2")
    visit.page.click("form.diff button")
    result = visit.page.locator("#diff-result")
    expect(result).to_contain_text("From version 1 to version 2")
    added = result.locator("tr.diff-added").all_inner_texts()
    removed = result.locator("tr.diff-removed").all_inner_texts()
    assert any("reports" in row for row in added), added  # WITH_REPORTS: queue and route
    assert any("lastfm" in row for row in removed), removed
    assert re.search(r"[?&]from=1&to=2", visit.page.url), visit.page.url
    # The history's own link leads to the same view.
    visit.page.goto(f"{stack.url}/health")
    visit.page.click("#history tr[data-version='2'] a")
    expect(visit.page.locator("#diff-result")).to_contain_text("From version 1 to version 2")
    visit.check()
    screenshot(visit, "health-page-diff.png")


def test_hostile_bytes_in_redis_show_as_text(stack: Stack, visit: Visit) -> None:
    """A fleet record written with markup (as anyone holding a service's password could):
    shown as text, nothing runs, nothing is injected."""
    key = record_key(NAMESPACE, "worker", "evil:1")
    stack.redis_cli("HSET", key, "service", "worker", "instance", f"evil{HOSTILE}:1",
                    "version", "1", "sha256", "0" * 64, "source", HOSTILE,
                    "last_error", HOSTILE, "ttl", "60")
    stack.redis_cli("EXPIRE", key, "60")
    try:
        visit.page.goto(f"{stack.url}/health")
        visit.page.wait_for_selector("#fleet tr[data-instance^='evil']")
        row = visit.page.locator("#fleet tr[data-instance^='evil']")
        assert HOSTILE in row.inner_text()
        assert "drift" in (row.get_attribute("class") or "")
        # Also after a refresh by the script (the fragment is swapped in).
        visit.page.evaluate("document.getElementById('live').innerHTML = ''")
        visit.page.wait_for_selector("#fleet tr[data-instance^='evil']", timeout=10_000)
        assert visit.page.evaluate("window.__pwned") is None
        assert visit.page.locator("#live img, #live script").count() == 0
        visit.check()
    finally:
        stack.redis_cli("DEL", key)


def test_docs_render_offline(stack: Stack, visit: Visit) -> None:
    """Swagger UI's own DOM, built by its script served by the API, with no outside request."""
    visit.page.goto(f"{stack.url}/docs")
    visit.page.wait_for_selector(".swagger-ui .information-container .title", timeout=20_000)
    assert "celery-config-sync API" in visit.page.inner_text(".swagger-ui .title")
    visit.page.wait_for_selector(".swagger-ui .opblock-summary-path[data-path='/tasks/{name}']")
    visit.check()
    assert any(re.search(r"/static-offline-docs/swagger-ui-bundle\.js$", url)
               for url in visit.requests), visit.requests


def test_everything_the_page_reads_is_allowed_by_the_acl(stack: Stack) -> None:
    """The page's reads (fleet SCAN + HGETALL, LLEN of the queues, history) as the api user:
    ACL LOG stays empty over the whole module."""
    assert httpx.get(f"{stack.url}/health", timeout=10).status_code == 200
    assert stack.redis_cli("ACL", "LOG") == "", "the api user was refused something"
