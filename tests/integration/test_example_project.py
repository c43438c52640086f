"""The example project (examples/orders: a shop that is not our demo) wired through the public
surface only, against a real redis-server, a real ``celery worker``, ``celery beat`` and its own
FastAPI app under uvicorn: publish its source, the worker consumes what the API sends, a queue
and a route published later are consumed and routed without a restart, a new beat entry fires,
``celery-config status`` lists all three in sync and ``celery inspect config_status`` answers
from a plain client.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, RedisServer, require
from tests.polling import wait_for
from tests.redis_process import redis_server_binary
from tests.service_processes import Api, Service, running, start_api, start_beat, start_worker

pytestmark = pytest.mark.integration
EXAMPLE = ROOT / "examples" / "orders"
NS = "celery_config"
# What the example's processes find on their path: the example package, as `pip install
# examples/orders` would give it (the library itself is installed in the venv).
PATH = {"PYTHONPATH": os.pathsep.join(filter(None, [str(EXAMPLE),
                                                    os.environ.get("PYTHONPATH")]))}
LATER = '''
task_queues = task_queues + (
    Queue("urgent", Exchange("urgent", type="direct"), routing_key="urgent"),
)
task_routes = {**task_routes, "orders.invoices.render": {"queue": "urgent"}}
beat_schedule = {**beat_schedule, "reminders": {
    "task": "orders.emails.send_receipt", "schedule": 1.0,
    "args": [0, "beat@example.org"]}}
'''


def cli(server: RedisServer, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "celery_config_sync", "--redis", server.url,
                             *args], cwd=EXAMPLE, capture_output=True, text=True, timeout=60,
                            check=False, env={**os.environ, **PATH})
    assert "Traceback" not in result.stderr, result.stderr
    return result


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    require(redis_server_binary() is not None, "redis-server is not installed")
    own = RedisServer(tmp_path_factory.mktemp("example-redis"))
    own.start()
    yield own
    own.stop()


@pytest.fixture(scope="module")
def stack(server: RedisServer,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Service, Api]]:
    published = cli(server, "publish", "--source", "orders.celeryconfig")
    assert published.returncode == 0, published.stderr
    workdir = tmp_path_factory.mktemp("example")
    extra = {**PATH, "CELERY_CONFIG_HEARTBEAT_INTERVAL": "1",
             "CELERY_CONFIG_BEAT_LOCK_TIMEOUT": "3"}
    worker = start_worker(server.url, workdir, "--concurrency", "2", app="orders.celery_app",
                          cwd=EXAMPLE, **extra)
    beat = start_beat(server.url, workdir, app="orders.celery_app", cwd=EXAMPLE, **extra)
    api = start_api(server.url, workdir, target="orders.api:app", cwd=EXAMPLE, **extra)
    with running(api, beat, worker):
        yield worker, beat, api


def order(api: Api, order_id: int) -> dict[str, Any]:
    response = api.client.post("/orders", json={"order_id": order_id,
                                                "email": "ada@example.org"})
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def result(api: Api, task_id: str) -> dict[str, Any]:
    return api.result(task_id, path="/orders/tasks/{}")


def test_the_api_sends_and_the_worker_consumes_by_the_shared_routes(
        stack: tuple[Service, Service, Api]) -> None:
    _, _, api = stack
    sent = order(api, 42)
    assert sent["queues"] == {"receipt": "emails", "invoice": "invoices"}
    assert result(api, sent["receipt"])["result"]["queue"] == "emails"
    assert result(api, sent["invoice"])["result"] == {"order_id": 42, "invoice": "INV-000042",
                                                      "queue": "invoices"}
    ready = api.get("/readyz")
    assert (ready["ready"], ready["source"], ready["version"]) == (True, "redis", 1)


def test_a_queue_route_and_beat_entry_published_later_apply_without_a_restart(
        server: RedisServer, stack: tuple[Service, Service, Api], tmp_path: Path) -> None:
    worker, beat, api = stack
    pids = (worker.pid, beat.pid, api.pid)
    later = tmp_path / "orders_later.py"
    later.write_text((EXAMPLE / "orders" / "celeryconfig.py").read_text() + LATER)
    published = cli(server, "publish", "--source", str(later))
    assert published.returncode == 0, published.stderr
    wait_for(lambda: api.get("/config/status")["version"] == 2, 30, "the API on version 2")
    wait_for(lambda: worker.lines("consuming from urgent"), 30, "the worker consuming urgent")

    sent = order(api, 7)
    assert sent["queues"]["invoice"] == "urgent"  # the API routes by the new route
    assert result(api, sent["invoice"])["result"]["queue"] == "urgent"  # and it is consumed
    wait_for(lambda: worker.lines(r"orders\.emails\.send_receipt.*succeeded.*beat@example"),
             60, "the beat entry published later, run by the worker")
    assert (worker.pid, beat.pid, api.pid) == pids
    assert all(s.process.poll() is None for s in stack)


def test_status_lists_worker_beat_and_api_in_sync(server: RedisServer,
                                                  stack: tuple[Service, Service, Api]) -> None:
    def in_sync() -> dict[str, Any] | None:
        report: dict[str, Any] = json.loads(cli(server, "status").stdout)
        services = {record["service"] for record in report["fleet"]}
        return report if report["in_sync"] and {"worker", "beat", "api"} <= services else None

    report = wait_for(in_sync, 30, "worker, beat and api in sync", interval=0.5)
    assert {r["version"] for r in report["fleet"]} == {str(report["version"])}


def test_inspect_config_status_answers_a_plain_client(server: RedisServer,
                                                      stack: tuple[Service, Service, Api]
                                                      ) -> None:
    worker, _, _ = stack
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_CONFIG_")}
    inspected = subprocess.run(
        [sys.executable, "-m", "celery", "--app", "orders.celery_app", "inspect",
         "config_status", "--json", "--timeout", "5"],
        cwd=EXAMPLE, capture_output=True, text=True, timeout=60, check=False,
        env={**env, **PATH, "CELERY_BROKER_URL": server.url})
    assert inspected.returncode == 0, inspected.stdout + inspected.stderr
    replies = json.loads(inspected.stdout)
    (answer,) = replies.values()
    assert answer["service"] == "worker" and answer["source"] == "redis"
    assert answer["instance"].endswith(f":{worker.pid}")
