"""The dev profile of compose/compose.yaml, which holds only what dev changes over rpi: it
comes up healthy (the worker's own probe, `celery inspect ping` over the broker, as the worker
Redis user), publishes and serves overlay dev, runs Celery at DEBUG, and publishes Redis and the API
on loopback only."""

from __future__ import annotations

import pytest

from celery_config_sync.source import load_source
from tests.compose_stack import demo_tasks, docker
from tests.conftest import SOURCE, free_port
from tests.e2e.conftest import make_stack, up_measured

pytestmark = pytest.mark.e2e


def test_the_dev_profile_serves_overlay_dev_with_debug_logs(engine: None) -> None:
    dev = load_source(str(SOURCE), "dev")
    assert dev.sha256 != load_source(str(SOURCE), "rpi").sha256
    with make_stack("-dev", profile="dev", REDIS_DEV_PORT=str(free_port())) as stack:
        up_measured(stack, "dev profile")  # --wait: every healthcheck passed, the worker's too
        assert {name: stack.health(name) for name in ("redis", "worker", "beat", "api")} == {
            "redis": "healthy", "worker": "healthy", "beat": "healthy", "api": "healthy"}
        ready = stack.wait_ready(30)
        assert (ready["source"], ready["sha256"]) == ("redis", dev.sha256)
        for name in demo_tasks():
            if name != "monitoring.heartbeat":  # fanout: no result to wait for
                status = stack.result(stack.enqueue(name)["id"], 60)
                assert status["state"] == "SUCCESS", (name, status)
        assert "DEBUG/MainProcess" in stack.logs("worker")  # Celery's own, at --loglevel=DEBUG
        assert "DEBUG/MainProcess" in stack.logs("beat")
        for name, port in (("redis", "6379/tcp"), ("api", "8000/tcp")):
            bound = stack.inspect(name)["HostConfig"]["PortBindings"][port]
            assert [b["HostIp"] for b in bound] == ["127.0.0.1"], (name, bound)
        mounts = {m["Destination"]: m["Type"] for m in stack.inspect("worker")["Mounts"]}
        assert "/var/lib/celery-config" not in mounts  # a tmpfs: every dev start is fresh
        tmpfs = stack.inspect("worker")["HostConfig"]["Tmpfs"]
        assert "/var/lib/celery-config" in tmpfs, tmpfs
        assert docker("ps", "--quiet", "--filter", f"name={stack.project}-worker-1").stdout == ""
