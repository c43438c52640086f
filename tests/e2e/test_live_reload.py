"""Live reload in the compose stack (rpi profile, this machine's platform): a configuration
published by a one-off seeder reaches the running worker, beat and API, whose containers are
never restarted; ``celery-config status`` in a container shows the fleet, and both services'
Prometheus metrics say the same.

One stack serves the module, in the order written.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.compose_stack import Stack
from tests.e2e.conftest import MEASUREMENTS, make_stack
from tests.e2e.live_sources import (
    WITH_REPORTS,
    document_of,
    fleet_status,
    publish_from,
    recreate_api,
    source_dir,
    starts,
)
from tests.figures import show
from tests.polling import wait_until
from tests.prometheus_text import Samples, labels_of, parse, value

pytestmark = pytest.mark.e2e
WORKER_METRICS_PORT = 9808  # CELERY_CONFIG_METRICS_PORT in the worker image


@pytest.fixture(scope="module")
def stack(engine: None) -> Iterator[Stack]:
    # A 2 s heartbeat, so that the fleet view follows within the test's patience.
    with make_stack("-live", CELERY_CONFIG_HEARTBEAT_INTERVAL="2") as current:
        current.up(timeout=240)
        yield current


def on_sha(stack: Stack, sha256: str) -> bool:
    code, report = fleet_status(stack)
    return code == 0 and len(report["fleet"]) == 3 and all(
        record["sha256"] == sha256 for record in report["fleet"])


def test_a_new_queue_and_route_apply_without_a_restart(stack: Stack, tmp_path: Path) -> None:
    before = starts(stack)
    code, report = fleet_status(stack)
    assert code == 0, report
    assert sorted(r["service"] for r in report["fleet"]) == ["api", "beat", "worker"]

    directory = source_dir(tmp_path, WITH_REPORTS)
    expected = document_of(directory)
    published = publish_from(stack, directory, "seed-v2")
    assert (published["version"], published["sha256"]) == (2, expected.sha256)
    assert published["change"]["kind"] == "live"
    applied_at = time.monotonic()
    wait_until(lambda: (stack.readyz() or {}).get("version") == 2, 60, "the API on version 2",
               interval=0.05)
    MEASUREMENTS.append(f"live reload in the stack: API on version 2 "
                        f"{time.monotonic() - applied_at:.2f} s after the seeder exited")

    body = stack.enqueue("report.build")
    assert body["queue"] == "reports"
    result = stack.result(body["id"], 30)["result"]
    assert (result["queue"], result["config_version"], result["config_source"]) == (
        "reports", 2, "redis")
    assert stack.enqueue("scan.discovery")["queue"] == "batch"
    forwarded = stack.result(forward(stack, "report.build"), 30)["result"]
    assert (forwarded["config_version"], forwarded["forwarded_queue"]) == (2, "reports")
    assert "stopped consuming from lastfm" in stack.logs("worker")
    assert "[CELERY_API] applied version 2" in stack.logs("api")
    assert starts(stack) == before  # same containers, never restarted
    wait_until(lambda: on_sha(stack, expected.sha256), 30, "the fleet on version 2")


def forward(stack: Stack, task: str) -> str:
    """demo.forward sends ``task`` from inside the worker (a prefork child): its id."""
    response = httpx.post(f"{stack.url}/tasks/demo.forward", json={"args": [task]},
                          headers=stack.auth, timeout=30)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def test_status_exits_1_while_an_instance_drifts(stack: Stack, tmp_path: Path) -> None:
    """The API held back (live reload off), a new version published: status names the drift
    and exits 1; the API back with live reload on is in sync again, status exits 0."""
    recreate_api(stack, "false")
    try:
        directory = source_dir(tmp_path, WITH_REPORTS + '\ntask_routes["report.*"] = '
                                                        '{"queue": "reports"}\n')
        expected = document_of(directory)
        assert publish_from(stack, directory, "seed-v3")["version"] == 3
        wait_until(lambda: fleet_status(stack)[0] == 1, 30, "status to see the drift")
        code, report = fleet_status(stack)
        api = next(r for r in report["fleet"] if r["service"] == "api")
        assert code == 1 and any(p.startswith("drift") for p in api["problems"]), report
        assert (stack.readyz() or {}).get("lagging") is True
    finally:
        recreate_api(stack, "true")
    wait_until(lambda: on_sha(stack, expected.sha256), 60, "the fleet in sync on version 3")


def scrape(stack: Stack, service: str) -> Samples:
    """A service's metrics over HTTP: the API's on its published port, the worker's from
    inside the stack's network (its port is published nowhere), through the api container."""
    if service == "api":
        response = httpx.get(f"{stack.url}/metrics", timeout=10)
        assert response.status_code == 200, response.text
        return parse(response.text)
    script = ("import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("
              f"'http://worker:{WORKER_METRICS_PORT}/metrics', timeout=10).read().decode())")
    return parse(stack.compose("exec", "-T", "api", "python3", "-c", script).stdout)


def heartbeat_since(stack: Stack, service: str, since: float) -> bool:
    """Whether ``service`` wrote a heartbeat after ``since`` (this process's time.monotonic()):
    the heartbeat age its metrics report is shorter than the time elapsed since then, measured
    before the scrape was asked for (one monotonic clock for every container of this host)."""
    elapsed = time.monotonic() - since
    age = value(scrape(stack, service), "celery_config_heartbeat_age_seconds")
    return age is not None and 0 <= age < elapsed


def test_metrics_show_the_published_version_applied_and_count_a_publish(
        stack: Stack, tmp_path: Path) -> None:
    """Both services' metrics, scraped over HTTP and parsed: each applies the published sha256
    from Redis; a new version counts one apply in each and shows on both."""
    before: dict[str, Samples] = {}
    since = time.monotonic()
    for service in ("api", "worker"):
        samples = before[service] = scrape(stack, service)
        applied = labels_of(samples, "celery_config_applied_info")
        published = labels_of(samples, "celery_config_published_info")
        assert (applied["sha256"], applied["source"], applied["service"]) == (
            published["sha256"], "redis", service)
        assert value(samples, "celery_config_applied_version") == value(
            samples, "celery_config_published_version") == int(published["version"])
        assert value(samples, "celery_config_fallback_in_use", source="redis") == 0
        age = value(samples, "celery_config_heartbeat_age_seconds")
        assert age is not None and age >= 0
        show(f"metrics: the {service}'s heartbeat age {age:.2f} s (heartbeat every 2 s)")
        depths = {labels["queue"] for labels, _ in samples["celery_config_queue_depth"]}
        assert "reports" in depths and "lastfm" not in depths  # what the version declares
    version = int(labels_of(before["api"], "celery_config_published_info")["version"]) + 1

    directory = source_dir(tmp_path, WITH_REPORTS + '\ntask_routes["report.pdf"] = '
                                                    '{"queue": "reports"}\n')
    expected = document_of(directory)
    assert publish_from(stack, directory, "seed-metrics")["version"] == version
    for service in ("api", "worker"):
        wait_until(lambda s=service: value(scrape(stack, s),  # type: ignore[misc]
                                           "celery_config_applied_version") == version,
                   60, f"the {service}'s metrics on version {version}")
        samples = scrape(stack, service)
        assert labels_of(samples, "celery_config_applied_info")["sha256"] == expected.sha256
        assert labels_of(samples, "celery_config_published_info")["sha256"] == expected.sha256
        for counter in ("celery_config_applies_total", "celery_config_reload_seconds_count"):
            assert value(samples, counter) == (value(before[service], counter) or 0) + 1, (
                service, counter)
        assert value(samples, "celery_config_rejections_total") == 0
        seconds = (value(samples, "celery_config_reload_seconds_sum") or 0) - (
            value(before[service], "celery_config_reload_seconds_sum") or 0)
        MEASUREMENTS.append(f"metrics: the {service}'s reload of version {version}, hint to "
                            f"switch: {seconds * 1000:.1f} ms")
    # The heartbeat age counts from the last heartbeat, and heartbeats keep coming: each
    # service reports one written since this test began.
    for service in ("api", "worker"):
        wait_until(lambda s=service: heartbeat_since(stack, s, since), 60,  # type: ignore[misc]
                   f"the {service}'s metrics to show a heartbeat since the test began")
