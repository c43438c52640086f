"""Live reload against a real redis-server, a real ``celery worker`` (prefork, 2 children) and a
real API under uvicorn: a published change reaches both without a restart (same PIDs).

One worker and one API serve the module, in the order written: each case leaves them running.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Exchange, Queue

from celery import Celery
from celery_config_sync.codec import ConfigDocument, canonical_json, queue_to_dict
from celery_config_sync.publishing import publish
from celery_config_sync.redis_keys import Keys
from celery_config_sync.source import load_source
from tests.conftest import ROOT, SOURCE, RedisServer, require
from tests.figures import figure
from tests.polling import wait_for
from tests.redis_process import redis_server_binary
from tests.service_processes import Api, Service, start_api, start_worker
from tests.tamper import reseal

pytestmark = pytest.mark.integration
NS = "celery_config"
KEYS = Keys(NS)
V1 = load_source(str(SOURCE), "rpi")


def with_reports(document: ConfigDocument) -> ConfigDocument:
    """v2: adds queue ``reports`` (route report.build), removes ``lastfm`` and its routes, and
    moves scan.discovery to the batch queue."""
    queues = {k: v for k, v in document.queues.items() if k != "lastfm"}
    queues["reports"] = queue_to_dict(Queue("reports", Exchange("reports", type="direct"),
                                            routing_key="reports"))
    routes = {k: v for k, v in document.routes.items() if not k.startswith("lastfm.")}
    routes["report.build"] = {"queue": "reports"}
    routes["scan.discovery"] = {"queue": "batch"}
    return ConfigDocument(queues, routes, dict(document.base))


V2 = with_reports(V1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    require(redis_server_binary() is not None, "redis-server is not installed")
    own = RedisServer(tmp_path_factory.mktemp("live-redis"))  # restarted by a case below
    own.start()
    yield own
    own.stop()


@pytest.fixture(scope="module")
def client(server: RedisServer) -> redis.Redis:
    return server.client()


@pytest.fixture(scope="module")
def services(server: RedisServer, client: redis.Redis,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Api]]:
    client.flushall()
    publish(client, NS, V1, source="v1")
    workdir = tmp_path_factory.mktemp("live")
    worker = start_worker(server.url, workdir, "--concurrency", "2",
                          CELERY_CONFIG_HEARTBEAT_INTERVAL="1")
    try:
        api = start_api(server.url, workdir, CELERY_CONFIG_HEARTBEAT_INTERVAL="1")
    except BaseException:
        worker.stop()
        raise
    try:
        yield worker, api
    finally:
        api.stop()
        worker.stop()


def status(server: RedisServer, *args: str) -> tuple[int, dict[str, Any]]:
    result = subprocess.run([sys.executable, "-m", "celery_config_sync", "--redis", server.url,
                             "status", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=30, check=False)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def fleet_versions(server: RedisServer) -> dict[str, str]:
    return {r["service"]: r["version"] for r in status(server)[1]["fleet"]}


def on_version(api: Api, version: int) -> bool:
    return bool(api.get("/config/status")["version"] == version)


def worker_status(server: RedisServer) -> dict[str, Any]:
    """The worker's answer to the inspect-style query ``config_status`` (asked again while it
    does not answer: after a Redis restart its broker connection comes back on its own time)."""

    def ask() -> list[dict[str, Any]]:
        app = Celery("probe", broker=server.url, set_as_current=False)
        try:
            with app.connection_for_write() as connection:  # not a pooled one Redis closed
                replies: list[dict[str, Any]] = app.control.broadcast(
                    "config_status", reply=True, timeout=2, connection=connection)
        except (redis.RedisError, OSError):
            return []
        finally:
            app.close()
        return replies

    replies = wait_for(ask, 30, "the worker's config_status reply", interval=0.2)
    assert len(replies) == 1, replies
    answer: dict[str, Any] = next(iter(replies[0].values()))
    return answer


# ------------------------------------------------------------------------------ the cases
def test_both_start_on_version_1_and_log_it_with_their_own_tag(
        services: tuple[Service, Api], server: RedisServer) -> None:
    worker, api = services
    assert api.get("/readyz")["version"] == 1
    assert api.lines(r"INFO \[CELERY_API\] Celery configuration loaded from redis: version 1")
    assert worker.lines(r"INFO \[CELERY_WORKER\] Celery configuration loaded from redis: "
                        r"version 1")
    assert "concurrency: 2 (prefork)" in worker.log()
    wait_for(lambda: fleet_versions(server) == {"api": "1", "worker": "1"}, 60, "the fleet")
    code, report = status(server)
    assert code == 0 and report["in_sync"], report


def test_a_published_change_applies_live_without_a_restart(
        services: tuple[Service, Api], server: RedisServer, client: redis.Redis) -> None:
    worker, api = services
    pids = (worker.pid, api.pid)
    published = time.monotonic()
    assert publish(client, NS, V2, source="v2").version == 2
    wait_for(lambda: on_version(api, 2), 60, "the API on version 2")
    api_s = time.monotonic() - published
    wait_for(lambda: worker.lines("consuming from reports"), 60, "the worker consuming reports")
    figure(f"publish -> API on version 2 in {api_s:.3f} s, worker consuming the new queue "
           f"{time.monotonic() - published:.3f} s after the publish")

    sent = api.enqueue("report.build")
    assert (sent["queue"], sent["config_version"]) == ("reports", 2)
    result = api.result(sent["id"])["result"]
    assert (result["queue"], result["config_version"], result["config_source"]) == (
        "reports", 2, "redis")
    # The changed route is followed, the removed one answers 404.
    moved = api.enqueue("scan.discovery")
    assert moved["queue"] == "batch"
    assert api.result(moved["id"])["result"]["queue"] == "batch"
    api.enqueue("lastfm.sync_scrobbles", expect=404)
    # A task sent from inside a task (a prefork child) routes by version 2 too.
    forwarded = api.result(api.enqueue("demo.forward", args=["report.build"])["id"])["result"]
    assert (forwarded["config_version"], forwarded["forwarded_queue"]) == (2, "reports")
    assert api.result(forwarded["forwarded"])["result"]["queue"] == "reports"
    # The removed queue is no longer consumed, and nothing was deleted: a message sent to it
    # stays in Redis.
    assert worker.lines("stopped consuming from lastfm")
    sender = Celery("sender", broker=server.url, set_as_current=False)
    sender.send_task("lastfm.sync_scrobbles",
                     queue=Queue("lastfm", Exchange("lastfm", type="direct"),
                                 routing_key="lastfm"))
    sender.close()
    time.sleep(1.5)  # more than a BRPOP cycle of the worker
    assert client.llen("lastfm") == 1
    assert (worker.pid, api.pid) == pids and worker.process.poll() is None
    # One line per apply, naming what changed, in each service.
    for service, tag in ((worker, "CELERY_WORKER"), (api, "CELERY_API")):
        applied = service.lines(rf"\[{tag}\] applied version 2 ")
        assert len(applied) == 1 and "queues +reports -lastfm" in applied[0], applied
    assert worker_status(server)["version"] == 2
    wait_for(lambda: fleet_versions(server) == {"api": "2", "worker": "2"}, 60, "the fleet on 2")


def test_an_invalid_version_is_never_applied_and_is_reported(
        services: tuple[Service, Api], server: RedisServer, client: redis.Redis) -> None:
    worker, api = services
    # v3 written straight into Redis, with a valid sha256: a route to an undeclared queue.
    client.hset(KEYS.routes, "report.build", canonical_json({"queue": "ghost"}))
    sha = reseal(client)
    client.hset(KEYS.meta, "version", "3")
    client.incr(KEYS.version)
    client.publish(KEYS.channel, canonical_json({"version": 3, "sha256": sha}))

    problem = "rejected version 3: routes['report.build'].queue: routes to queue 'ghost'"

    def rejected() -> bool:
        code, report = status(server)
        errors = [r["last_error"] for r in report["fleet"]]
        return code == 2 and len(errors) == 2 and all(e.startswith(problem) for e in errors)

    wait_for(rejected, 60, "both services to report the rejection")
    assert api.get("/config/status")["version"] == 2 and api.get("/readyz")["lagging"]
    assert api.enqueue("report.build")["queue"] == "reports"
    assert worker_status(server)["version"] == 2
    for service in (worker, api):
        assert len(service.lines(r"ERROR .*rejected version 3")) == 1, service.log()[-2000:]
    # A valid publish replaces it: both apply it and the error clears.
    assert publish(client, NS, V2, source="v2 again").version == 4
    wait_for(lambda: status(server)[0] == 0, 60, "the fleet in sync on version 4")


def test_a_restart_required_change_is_reported_not_ignored(
        services: tuple[Service, Api], server: RedisServer, client: redis.Redis) -> None:
    worker, _ = services
    v5 = ConfigDocument(V2.queues, V2.routes, {**V2.base, "worker_concurrency": 3,
                                               "task_default_priority": 4})
    publish(client, NS, v5, source="v5")
    wait_for(lambda: status(server)[0] == 1, 60, "status to report the restart")
    records = {r["service"]: r for r in status(server)[1]["fleet"]}
    assert records["worker"]["restart_required"] == "task_default_priority,worker_concurrency"
    assert records["api"]["restart_required"] == "task_default_priority"  # not a worker setting
    assert status(server)[1]["change"] == {
        "kind": "restart-required",
        "restart_required": ["task_default_priority", "worker_concurrency"]}
    assert worker.lines("restart required for task_default_priority, worker_concurrency")
    # Back to what they started with: nothing waits for a restart any more.
    publish(client, NS, V2, source="v2 once more")
    wait_for(lambda: status(server)[0] == 0, 60, "the fleet in sync again")


def test_redis_restarted_both_resubscribe_and_catch_up(
        services: tuple[Service, Api], server: RedisServer, client: redis.Redis) -> None:
    worker, api = services
    server.stop()  # no persistence: Redis comes back empty, versions start again at 1
    time.sleep(1.0)
    server.start()
    client.connection_pool.disconnect()  # the test's own connection died with the server
    # Published at once, while the watchers are still backing off: only the resubscribe
    # confirmation can tell them. The version goes backwards (1): the sha256 decides.
    v6 = ConfigDocument(V1.queues, {**V1.routes, "demo.*": {"queue": "maintenance"}}, V1.base)
    assert publish(client, NS, v6, source="after the restart").version == 1
    wait_for(lambda: api.get("/config/status")["sha256"] == v6.sha256, 60, "the API to catch up")
    wait_for(lambda: worker_status(server)["sha256"] == v6.sha256, 60, "the worker to catch up")
    echo = api.enqueue("demo.echo")
    assert echo["queue"] == "maintenance"
    result = api.result(echo["id"], timeout=30)["result"]
    assert (result["queue"], result["config_version"]) == ("maintenance", 1)
    assert worker.process.poll() is None and api.process.poll() is None


BURST = 50
APPLIED = r"applied version (\d+) \(sha256 "


def applied_versions(service: Service) -> list[int]:
    """The versions ``service`` applied live, in the order of its log."""
    return [int(re.search(APPLIED, line).group(1))  # type: ignore[union-attr]
            for line in service.lines(APPLIED)]


def publish_burst(client: redis.Redis, label: str) -> list[int]:
    """BURST publishes in a row, each a different content (its own route, and the default
    queue flipping between two): the versions they got, in order."""
    versions = []
    for index in range(BURST):
        base = {**V1.base, "task_default_queue": "celery" if index % 2 else "maintenance"} \
            if index < BURST - 1 else V1.base
        versions.append(publish(client, NS, ConfigDocument(
            V1.queues, {**V1.routes, f"{label}.t{index}": {"queue": "celery"}}, base),
            source=f"{label} {index}").version)
    return versions


def check_applied_in_order(service: Service, before: int, versions: list[int]) -> list[int]:
    """What ``service`` applied since its ``before``-th apply: only versions of the burst, each
    newer than the one before it (never an older one after a newer one, never one twice), the
    last one last."""
    applied = applied_versions(service)[before:]
    assert applied, (service.name, "applied nothing of the burst")
    assert set(applied) <= set(versions), (service.name, applied, versions)
    assert applied == sorted(set(applied)), (service.name, "applied out of order", applied)
    assert applied[-1] == versions[-1], (service.name, applied)
    return applied


def test_a_burst_of_publishes_is_applied_in_order_and_ends_on_the_last_version(
        services: tuple[Service, Api], server: RedisServer, client: redis.Redis) -> None:
    """A burst as fast as this machine publishes: how many of them each service applies
    depends on the machine (the watcher drains hints that come less than 5 ms apart), so the
    count is printed; the order and the end are asserted."""
    worker, api = services
    before = {s.name: len(applied_versions(s)) for s in (worker, api)}
    started = time.monotonic()
    versions = publish_burst(client, "burst")
    burst_s = time.monotonic() - started
    assert versions == list(range(versions[0], versions[0] + BURST))
    wait_for(lambda: api.get("/config/status")["version"] == versions[-1], 60, "the API")
    wait_for(lambda: worker_status(server)["version"] == versions[-1], 60, "the worker")
    # The status is the one in place, and its log line is written right after the switch.
    for service in (worker, api):
        wait_for(lambda s=service: versions[-1] in applied_versions(s), 60,  # type: ignore[misc]
                 f"the {service.name}'s line for version {versions[-1]}")
    counts = {s.name: len(check_applied_in_order(s, before[s.name], versions))
              for s in (worker, api)}
    figure(f"{BURST} publishes in {burst_s:.3f} s ({burst_s / BURST * 1000:.1f} ms each): "
           f"worker applied {counts['worker']}, API applied {counts['api']}")


def stopped(pid: int) -> bool:
    """Every thread of ``pid`` stopped (state T in /proc): none is in the middle of anything."""
    states = [(task / "stat").read_text().rsplit(")", 1)[1].split()[0]
              for task in Path(f"/proc/{pid}/task").iterdir()]
    return all(state == "T" for state in states)


def test_a_burst_heard_while_paused_is_coalesced_into_the_last_version(
        services: tuple[Service, Api], server: RedisServer, client: redis.Redis) -> None:
    """The same burst while worker and API are paused (SIGSTOP): every hint waits in their
    subscription, and whatever they read once resumed is the last version. So they apply
    fewer versions than were published whatever the machine's speed: the last one, and at
    most one other, older one if a read was under way when they were paused."""
    worker, api = services
    before = {s.name: len(applied_versions(s)) for s in (worker, api)}
    try:
        for service in (worker, api):
            os.kill(service.pid, signal.SIGSTOP)
            wait_for(lambda s=service: stopped(s.pid), 60,  # type: ignore[misc]
                     f"every thread of the {service.name} stopped")
        versions = publish_burst(client, "paused")
    finally:
        for service in (worker, api):
            os.kill(service.pid, signal.SIGCONT)
    wait_for(lambda: api.get("/config/status")["version"] == versions[-1], 60, "the API")
    wait_for(lambda: worker_status(server)["version"] == versions[-1], 60, "the worker")
    for service in (worker, api):
        wait_for(lambda s=service: versions[-1] in applied_versions(s), 60,  # type: ignore[misc]
                 f"the {service.name}'s line for version {versions[-1]}")
    counts = {}
    for service in (worker, api):
        applied = check_applied_in_order(service, before[service.name], versions)
        assert len(applied) <= 2, (service.name, applied)  # of BURST published
        counts[service.name] = len(applied)
    figure(f"{BURST} publishes while paused: worker applied {counts['worker']}, "
           f"API applied {counts['api']}")


def test_live_reload_can_be_turned_off(server: RedisServer, client: redis.Redis,
                                       tmp_path: Path) -> None:
    client.flushall()
    publish(client, NS, V1, source="v1")
    api = start_api(server.url, tmp_path, name="api-static", CELERY_CONFIG_LIVE_RELOAD="false",
                    CELERY_CONFIG_HEARTBEAT_INTERVAL="1")
    try:
        assert api.lines("live reload off")
        publish(client, NS, V2, source="v2")
        wait_for(lambda: api.get("/config/status")["lagging"], 60, "the API to see it lags")
        assert api.get("/config/status")["version"] == 1
        api.enqueue("report.build", expect=404)
        code, report = status(server)
        assert code == 1 and any("drift" in p for r in report["fleet"] for p in r["problems"])
    finally:
        api.stop()


def test_on_restart_required_exit_lets_the_worker_finish_and_exit(
        server: RedisServer, client: redis.Redis, tmp_path: Path) -> None:
    client.flushall()
    publish(client, NS, V1, source="v1")
    worker = start_worker(server.url, tmp_path, "--concurrency", "1", name="exiting",
                          CELERY_CONFIG_ON_RESTART_REQUIRED="exit")
    try:
        publish(client, NS, ConfigDocument(V1.queues, V1.routes,
                                           {**V1.base, "worker_concurrency": 1}), source="v2")
        assert worker.process.wait(30) == 0
        assert worker.lines("CELERY_CONFIG_ON_RESTART_REQUIRED=exit")
    finally:
        worker.stop()
