"""Queues that nobody consumes, at run time (issue 17): a real ``celery worker`` started with a
``-Q`` list that leaves the routed queue ``vectorization`` out, a real API, a real
redis-server. ``celery-config status`` (exit 1, naming the queue, table and JSON), the API's
/readyz detail, its health page (a red row) and both services' ``queue_consumers`` gauge say
so; a second worker consuming the queue makes every one of them clean, and takes the task that
waited. Then the same through the workers' remote control (cancel_consumer, add_consumer) and
through a live publish that adds a routed queue no -Q list names.

One redis-server and the services serve the module, in the order written.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from kombu import Exchange, Queue

from celery import Celery
from celery_config_sync.codec import ConfigDocument, queue_to_dict
from celery_config_sync.fleet import delete_record, write_record
from celery_config_sync.publishing import publish
from celery_config_sync.source import load_source
from tests.conftest import ROOT, SOURCE, RedisServer, require
from tests.figures import figure
from tests.polling import wait_for
from tests.prometheus_text import parse, value
from tests.redis_process import free_port, redis_server_binary
from tests.service_processes import Api, Service, start_api, start_worker

pytestmark = pytest.mark.integration
V1 = load_source(str(SOURCE), "rpi")
LEFT_OUT = "vectorization"
FIXED_Q = ",".join(name for name in V1.queues if name != LEFT_OUT)
FAST = {"CELERY_CONFIG_HEARTBEAT_INTERVAL": "1"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    require(redis_server_binary() is not None, "redis-server is not installed")
    own = RedisServer(tmp_path_factory.mktemp("consumers-redis"))
    own.start()
    yield own
    own.stop()


@pytest.fixture(scope="module")
def client(server: RedisServer) -> Iterator[redis.Redis]:
    own = server.client()
    own.flushall()
    publish(own, "celery_config", V1, source="v1")
    yield own
    own.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("consumers")


@pytest.fixture(scope="module")
def fixed_worker(server: RedisServer, client: redis.Redis,
                 workdir: Path) -> Iterator[tuple[Service, int]]:
    """The origin project's mistake: a fixed -Q list without a routed queue."""
    port = free_port()
    worker = start_worker(server.url, workdir, "--concurrency", "1", "-Q", FIXED_Q,
                          name="fixed", CELERY_CONFIG_METRICS_PORT=str(port), **FAST)
    yield worker, port
    worker.stop()


@pytest.fixture(scope="module")
def api(server: RedisServer, client: redis.Redis, workdir: Path,
        fixed_worker: tuple[Service, int]) -> Iterator[Api]:
    service = start_api(server.url, workdir, **FAST)
    yield service
    service.stop()


def status(server: RedisServer, fmt: str = "json") -> subprocess.CompletedProcess[str]:
    """``celery-config status``, the depths read in the broker (the same redis-server)."""
    result = subprocess.run([sys.executable, "-m", "celery_config_sync", "--redis", server.url,
                             "status", "--format", fmt, "--broker", server.url], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def report_when(server: RedisServer, unconsumed: list[str], what: str) -> dict[str, Any]:
    """The status report (JSON) once it names exactly ``unconsumed``, with its exit code, and
    every running worker's record says what it consumes (a fake older one, ``old:``, never)."""
    def seen() -> dict[str, Any] | None:
        result = status(server)
        report: dict[str, Any] = json.loads(result.stdout)
        report["exit_code"] = result.returncode
        workers = [r for r in report["fleet"]
                   if r["service"] == "worker" and not r["instance"].startswith("old:")]
        settled = workers and all(r["consumes"] is not None for r in workers)
        return report if settled and report["unconsumed_queues"] == unconsumed else None

    found: dict[str, Any] = wait_for(seen, 60, what, interval=0.3)
    return found


def consumers(url: str, queue: str) -> float | None:
    return value(parse(httpx.get(url, timeout=5).text), "celery_config_queue_consumers",
                 queue=queue)


def row(api: Api, queue: str) -> str:
    """The queue's row on the health page: its opening tag."""
    page = api.client.get("/health").text
    start = page.index(f'data-queue="{queue}"')
    return page[page.rindex("<tr", 0, start):start]


def test_a_routed_queue_left_out_of_q_is_reported_everywhere(
        server: RedisServer, fixed_worker: tuple[Service, int], api: Api) -> None:
    _, port = fixed_worker
    sent = api.enqueue("vectorization.track")
    assert sent["queue"] == LEFT_OUT  # routed there by the published configuration

    report = report_when(server, [LEFT_OUT], "status naming the queue the -Q list left out")
    assert report["exit_code"] == 1 and report["in_sync"]  # versions agree: not a drift
    (record,) = [r for r in report["fleet"] if r["service"] == "worker"]
    assert record["consumes"] == sorted(FIXED_Q.split(","))
    queues = {q["name"]: q for q in report["queues"]}
    assert queues[LEFT_OUT] | {"senders": None} == {
        "name": LEFT_OUT, "routed": True, "senders": None, "consumers": 0, "unknown": 0,
        "depth": 1, "state": "no consumer", "consumed_by": []}
    assert "route 'vectorization.track'" in queues[LEFT_OUT]["senders"]
    assert queues["scan"]["consumers"] == 1 and queues["scan"]["state"] == "consumed"

    table = status(server, "table")
    assert table.returncode == 1
    line = next(x for x in table.stdout.splitlines() if x.startswith(LEFT_OUT))
    assert "NO CONSUMER (sent to by route 'vectorization.track'" in line, table.stdout
    assert line.split()[1:3] == ["0", "1"], line  # consumers, waiting

    ready = wait_for(lambda: (body := api.get("/readyz"))["unconsumed_queues"] and body, 30,
                     "/readyz's detail")
    assert ready["ready"] is True and ready["unconsumed_queues"] == [LEFT_OUT]
    assert api.client.get("/readyz").status_code == 200  # a detail, not unreadiness

    worker_metrics = f"http://127.0.0.1:{port}/metrics"
    for url in (api.url + "/metrics", worker_metrics):
        wait_for(lambda u=url: consumers(u, "scan") == 1, 30, f"the gauge on {url}")  # type: ignore[misc]
        assert consumers(url, LEFT_OUT) == 0
        samples = parse(httpx.get(url, timeout=5).text)["celery_config_queue_consumers"]
        assert {labels["routed"] for labels, _ in samples if labels["queue"] == LEFT_OUT} == {
            "true"}

    assert 'class="unconsumed"' in row(api, LEFT_OUT) and 'class="ok"' in row(api, "scan")
    summary = api.client.get("/health/live").text
    assert f"no live worker consumes {LEFT_OUT}" in summary and 'summary bad' in summary
    (entry,) = [q for q in api.get("/health.json")["queues"] if q["name"] == LEFT_OUT]
    assert entry["state"] == "no consumer" and entry["depth"] == 1


def test_a_worker_consuming_it_makes_everything_clean(
        server: RedisServer, workdir: Path, fixed_worker: tuple[Service, int],
        api: Api) -> None:
    _, port = fixed_worker
    started = time.monotonic()
    second = start_worker(server.url, workdir, "--concurrency", "1", "-Q", LEFT_OUT,
                          name="vectors", **FAST)
    try:
        ready = time.monotonic()
        report = report_when(server, [], "a clean status once the second worker runs")
        figure(f"status clean {time.monotonic() - ready:.2f} s after the second worker's "
               f"ready line ({ready - started:.1f} s to start it)")
        assert report["exit_code"] == 0
        queues = {q["name"]: q for q in report["queues"]}
        assert queues[LEFT_OUT]["consumers"] == 1 and queues[LEFT_OUT]["state"] == "consumed"
        assert queues[LEFT_OUT]["consumed_by"] == [
            r["instance"] for r in report["fleet"] if r["consumes"] == [LEFT_OUT]]
        # The task that waited is taken (the demo worker does not know it: it is dropped).
        wait_for(lambda: json.loads(status(server).stdout)["queues"][
            list(V1.queues).index(LEFT_OUT)]["depth"] == 0, 30, "the waiting task taken")

        wait_for(lambda: api.get("/readyz")["unconsumed_queues"] == [], 30, "/readyz clean")
        for url in (api.url + "/metrics", f"http://127.0.0.1:{port}/metrics"):
            wait_for(lambda u=url: consumers(u, LEFT_OUT) == 1, 30, f"the gauge on {url}")  # type: ignore[misc]
        assert 'class="ok"' in row(api, LEFT_OUT)
        assert "no live worker consumes" not in api.client.get("/health/live").text
    finally:
        second.stop()
    # The second worker gone (its record deleted as it stops): the problem is back.
    report_when(server, [LEFT_OUT], "the problem again once the second worker stopped")


def test_a_worker_record_of_an_older_release_reads_as_unknown(
        server: RedisServer, client: redis.Redis, fixed_worker: tuple[Service, int]) -> None:
    """A record without ``consumes`` (written before the field existed) reads fine: its worker
    may consume anything, so the queue is unknown, not unconsumed; gone, the problem is back."""
    old = {"service": "worker", "instance": "old:1", "hostname": "old", "pid": "1",
           "version": "1", "sha256": V1.sha256, "source": "redis", "applied_at": "",
           "restart_required": "", "last_error": "", "live_reload": "true"}
    write_record(client, "celery_config", old, ttl=60)
    try:
        report = report_when(server, [], "the queue unknown while an old worker lives")
        assert report["exit_code"] == 0
        (record,) = [r for r in report["fleet"] if r["instance"] == "old:1"]
        assert record["consumes"] is None and record["problems"] == []
        (queue,) = [q for q in report["queues"] if q["name"] == LEFT_OUT]
        assert (queue["consumers"], queue["unknown"], queue["state"]) == (0, 1, "unknown")
        line = next(x for x in status(server, "table").stdout.splitlines()
                    if x.startswith(LEFT_OUT))
        assert line.split()[1] == "0+1?" and line.endswith("unknown"), line
    finally:
        delete_record(client, "celery_config", "worker", "old:1")
    report_when(server, [LEFT_OUT], "the problem again without the old worker")


def test_status_without_broker_reports_no_depth_and_a_bad_broker_url_is_one_line(
        server: RedisServer, fixed_worker: tuple[Service, int]) -> None:
    base = [sys.executable, "-m", "celery_config_sync", "--redis", server.url, "status"]
    plain = subprocess.run(base, cwd=ROOT, capture_output=True, text=True, timeout=60,
                           check=False)
    report = json.loads(plain.stdout)
    assert plain.returncode == 1 and report["unconsumed_queues"] == [LEFT_OUT]
    assert {q["depth"] for q in report["queues"]} == {None}
    bad = subprocess.run([*base, "--broker", "amqp://guest@rabbit//"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [
        "celery-config: error: --broker 'amqp://guest@rabbit//': expected redis://, rediss:// "
        "or unix://"]


def control(server: RedisServer, command: str, queue: str) -> None:
    app = Celery("probe", broker=server.url, set_as_current=False)
    try:
        replies = getattr(app.control, command)(queue, destination=["fixed@" + _host()],
                                                reply=True, timeout=5)
    finally:
        app.close()
    assert replies, f"no worker answered {command}"


def _host() -> str:
    import socket

    return socket.gethostname()


def test_cancel_consumer_and_add_consumer_show_within_a_heartbeat(
        server: RedisServer, fixed_worker: tuple[Service, int], api: Api) -> None:
    control(server, "cancel_consumer", "scan")
    report = report_when(server, ["scan", LEFT_OUT], "scan unconsumed after cancel_consumer")
    assert report["exit_code"] == 1
    control(server, "add_consumer", "scan")
    report_when(server, [LEFT_OUT], "scan consumed again after add_consumer")


def test_a_live_publish_adding_a_routed_queue_no_q_names(
        server: RedisServer, client: redis.Redis, fixed_worker: tuple[Service, int],
        api: Api) -> None:
    queues = {**V1.queues, "reports": queue_to_dict(
        Queue("reports", Exchange("reports", type="direct"), routing_key="reports"))}
    v2 = ConfigDocument(queues, {**V1.routes, "report.build": {"queue": "reports"}},
                        dict(V1.base))
    publish(client, "celery_config", v2, source="v2")
    report = report_when(server, [LEFT_OUT, "reports"], "the new routed queue unconsumed")
    assert report["version"] == 2 and report["exit_code"] == 1
    wait_for(lambda: api.get("/readyz")["unconsumed_queues"] == [LEFT_OUT, "reports"], 30,
             "/readyz on version 2")
