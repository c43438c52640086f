"""The example project's own images (examples/orders/Dockerfile, the README's recipe, built by
`docker buildx bake example`) running as the rpi stack of its own compose file
(examples/orders/compose.yaml, an include of ours with IMAGES=orders): an order through the
example's API to the example's worker, a live change published by the example's seeder, a
beat entry of the example's firing, `celery-config status` in sync, the hardening of the
stack on the example's services."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.compose_stack import REGISTRY, TAG, Stack, containers_of, docker
from tests.conftest import ROOT, free_port, require
from tests.e2e.conftest import MEASUREMENTS
from tests.e2e.live_sources import fleet_status
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

EXAMPLE = ROOT / "examples" / "orders"
EXAMPLE_IMAGES = ("config-seeder", "worker", "api")
# A live change: e-mails move to the default queue, and beat renders a batch every 3 s.
CHANGED_SOURCE = EXAMPLE / "orders" / "celeryconfig.py"
CHANGE = '''
task_routes = {**task_routes, "orders.emails.*": {"queue": "default"}}
beat_schedule = {**beat_schedule, "quick-batch": {
    "task": "orders.invoices.render_batch", "schedule": 3.0, "args": ("live",)}}
'''


def example_ref(name: str) -> str:
    return f"{REGISTRY}/orders/{name}:{TAG}"


@pytest.fixture(scope="module")
def stack(engine: None) -> Iterator[Stack]:
    for name in EXAMPLE_IMAGES:
        found = docker("image", "inspect", "--format", "{{.Id}}", example_ref(name), check=False)
        require(found.returncode == 0,
                f"image {example_ref(name)} is missing; run `make bake` (group example)")
    project = f"ccs-e2e-{os.getpid()}-orders"
    example = Stack(project, free_port(), {"CELERY_CONFIG_HEARTBEAT_INTERVAL": "2"},
                    compose_file=EXAMPLE / "compose.yaml")
    example.down()
    started = time.monotonic()
    try:
        example.up(timeout=240)
        MEASUREMENTS.append(f"example stack (orders images): `up --wait` returned after "
                            f"{time.monotonic() - started:.1f} s")
        yield example
    finally:
        example.down()
        assert not containers_of(project)


def place_order(stack: Stack, order_id: int) -> dict[str, Any]:
    response = httpx.post(f"{stack.url}/orders", json={"order_id": order_id,
                                                       "email": "ada@example.org"},
                          headers=stack.auth, timeout=30)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def finished(stack: Stack, task_id: str, timeout: float = 90) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def done() -> bool:
        response = httpx.get(f"{stack.url}/orders/tasks/{task_id}", headers=stack.auth,
                             timeout=10)
        last.clear()
        last.update(response.json())
        return last.get("state") in ("SUCCESS", "FAILURE")

    wait_until(done, timeout, lambda: f"task {task_id} (last {last})\n{stack.logs()}",
               interval=0.2)
    return last


def test_the_stack_runs_the_example_images_and_its_source(stack: Stack) -> None:
    ready = stack.wait_ready(60)
    assert ready["source"] == "redis"
    for service, image in (("worker", "worker"), ("beat", "worker"), ("api", "api"),
                           ("config-seeder", "config-seeder")):
        assert stack.inspect(service)["Config"]["Image"] == example_ref(image), service
    config = httpx.get(f"{stack.url}/config", timeout=10).json()
    assert set(config["queues"]) == {"default", "emails", "invoices"}, config
    # The seeder published the example's module (its source label), nothing of the demo's.
    meta = stack.redis_cli("HGET", "celery_config:meta", "source")
    assert meta.startswith("orders.celeryconfig"), meta


def test_an_order_goes_through_the_example_api_to_the_example_worker(stack: Stack) -> None:
    # The example's own endpoints are behind the stack's API token too (TaskAccess).
    order = {"order_id": 9, "email": "eve@example.org"}
    assert httpx.post(f"{stack.url}/orders", json=order, timeout=30).status_code == 401
    placed = place_order(stack, 1)
    assert placed["queues"] == {"receipt": "emails", "invoice": "invoices"}, placed
    receipt, invoice = finished(stack, placed["receipt"]), finished(stack, placed["invoice"])
    assert receipt["state"] == invoice["state"] == "SUCCESS", (receipt, invoice)
    assert invoice["result"]["invoice"] == "INV-000001"
    assert invoice["result"]["queue"] == "invoices"


def test_a_live_change_and_a_beat_entry_of_the_example(stack: Stack, tmp_path: Path) -> None:
    source = tmp_path / "celeryconfig.py"
    source.write_text(CHANGED_SOURCE.read_text() + CHANGE)
    tmp_path.chmod(0o755)
    source.chmod(0o644)
    before = {service: stack.inspect(service)["State"]["StartedAt"]
              for service in ("worker", "beat", "api")}
    container = f"{stack.project}-publish"
    published_at = time.monotonic()
    try:
        result = stack.compose("run", "--no-deps", "-T", "--name", container, "--volume",
                               f"{source}:/tmp/changed/celeryconfig.py:ro", "config-seeder",
                               "publish", "--source", "/tmp/changed/celeryconfig.py",
                               check=False, timeout=300)
    finally:
        docker("rm", "--force", "--volumes", container, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["version"] == 2

    def routed_live() -> bool:
        return bool(place_order(stack, 2)["queues"]["receipt"] == "default")

    wait_until(routed_live, 30, "the API routing e-mails to default", interval=0.5)
    receipt = finished(stack, place_order(stack, 3)["receipt"])
    assert receipt["state"] == "SUCCESS", receipt
    marker = "Task orders.invoices.render_batch["
    wait_until(lambda: marker in stack.logs("worker") and "succeeded" in stack.logs("worker"),
               60, "the worker running the live beat entry")
    MEASUREMENTS.append(f"example stack: live beat entry (every 3 s) run by the worker "
                        f"{time.monotonic() - published_at:.1f} s after the publish began")
    after = {service: stack.inspect(service)["State"]["StartedAt"]
             for service in ("worker", "beat", "api")}
    assert after == before  # live: nothing restarted

    def in_sync() -> bool:
        code, report = fleet_status(stack)
        services = {record["service"] for record in report["fleet"]}
        return code == 0 and report["version"] == 2 and {"worker", "beat", "api"} <= services

    wait_until(in_sync, 60, "celery-config status in sync on version 2", interval=1)


def test_the_example_services_run_unprivileged_on_a_read_only_root(stack: Stack) -> None:
    for service in ("worker", "beat", "api"):
        host = stack.inspect(service)["HostConfig"]
        assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"], service
        status = stack.compose("exec", "-T", service, "cat", "/proc/1/status").stdout
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        assert int(fields["CapEff"], 16) == 0 and fields["Uid"].split()[0] == "10001", service
        touched = stack.compose("exec", "-T", service, "touch", "/etc/x", check=False)
        assert touched.returncode != 0, service
        for tool in ("pip", "gcc", "cc"):
            which = stack.compose("exec", "-T", service, "sh", "-c", f"command -v {tool}",
                                  check=False)
            assert which.returncode != 0, (service, tool, which.stdout)


def test_a_routed_queue_no_worker_consumes_is_shown_then_cleared(stack: Stack) -> None:
    """The bug class this project exists to end, at run time: the stack's worker replaced by
    one started with a -Q that leaves the routed queue "invoices" out. status exits 1 naming
    it, /readyz and the metrics show it; the stack's worker back, it is clean again."""
    stack.compose("stop", "worker")
    partial = f"{stack.project}-partial-worker"
    try:
        stack.compose("run", "--detach", "--no-deps", "--name", partial, "worker", "celery",
                      "worker", "--loglevel=INFO", "-Q", "default,emails", "-n", "partial@%h")

        def flagged() -> bool:
            code, report = fleet_status(stack)
            return code == 1 and report["unconsumed_queues"] == ["invoices"]

        wait_until(flagged, 90, lambda: f"status naming invoices\n{stack.logs()}", interval=1)
        body = httpx.get(f"{stack.url}/readyz", timeout=10).json()
        wait_until(lambda: httpx.get(f"{stack.url}/readyz", timeout=10).json().get(
            "unconsumed_queues") == ["invoices"], 30, f"/readyz naming invoices ({body})")
        metrics = httpx.get(f"{stack.url}/metrics", timeout=10).text
        assert 'celery_config_queue_consumers{queue="invoices",routed="true"} 0.0' in metrics
    finally:
        docker("rm", "--force", "--volumes", partial, check=False)
        stack.compose("start", "worker")

    def clean() -> bool:
        code, report = fleet_status(stack)
        return code == 0 and report["unconsumed_queues"] == []

    wait_until(clean, 90, "status clean with the stack's worker back", interval=1)
