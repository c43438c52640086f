"""The rpi profile of compose/compose.yaml as one real stack, on this machine's platform.

One stack serves every case of this module, in the order written (pytest keeps it): each case
leaves the stack as it found it (redis up, config version 1 published, worker and api on it),
except the last, which stops and removes it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celery_config_sync.codec import ConfigDocument
from celery_config_sync.source import load_source
from tests.compose_stack import Stack, containers_of, demo_tasks, docker, parse_docker_time
from tests.conftest import ROOT, SOURCE
from tests.e2e.conftest import (
    MEASUREMENTS,
    NAMESPACE,
    expected_queue,
    make_stack,
    now_utc,
    up_measured,
)
from tests.figures import show
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

KEYS = {f"{NAMESPACE}:{name}": kind for name, kind in (
    ("queues", "hash"), ("routes", "hash"), ("base", "hash"), ("meta", "hash"),
    ("version", "string"))}
CHANNEL = "celery_config_updates"
# The fallback cases: how long the gate waits for Redis (the time to ready is printed).
FALLBACK_WAIT = 5
# docker's grace between SIGTERM and SIGKILL when the stack is stopped: a clean stop is exit 0
# whatever the time it takes; one that ignores SIGTERM is still killed (137), only later.
STOP_GRACE = 60


@pytest.fixture(scope="module")
def source() -> ConfigDocument:
    """What the seeder publishes: the source with the overlay the rpi profile selects."""
    return load_source(str(SOURCE), "rpi")


@pytest.fixture(scope="module")
def stack(engine: None) -> Iterator[Stack]:
    with make_stack() as current:
        up_measured(current, "amd64 stack")
        yield current


def seed(stack: Stack, name: str, *options: str) -> tuple[int, str, str]:
    """Run the seeder once more (``compose run``, no dependencies): exit code, stdout, stderr
    of the container itself (not compose's), then remove it."""
    container = f"{stack.project}-{name}"
    try:
        stack.compose("run", "--no-deps", "-T", "--name", container, *options,
                      "config-seeder", check=False, timeout=120)
        state = json.loads(docker("inspect", "--format", "{{json .State}}", container).stdout)
        logs = docker("logs", container)
        return int(state["ExitCode"]), logs.stdout, logs.stderr
    finally:
        docker("rm", "--force", "--volumes", container, check=False)


def published(stack: Stack) -> tuple[str, str]:
    return (stack.redis_cli("GET", f"{NAMESPACE}:version"),
            stack.redis_cli("HGET", f"{NAMESPACE}:meta", "sha256"))


# ------------------------------------------------------------------------------------ a
def test_happy_path_every_queue_family_runs_on_its_routed_queue(stack: Stack,
                                                                source: ConfigDocument) -> None:
    seeder = stack.inspect("config-seeder")["State"]
    assert (seeder["Status"], seeder["ExitCode"]) == ("exited", 0), stack.logs("config-seeder")
    printed = json.loads(docker("logs", stack.container("config-seeder")).stdout.splitlines()[0])
    assert printed == {"version": 1, "sha256": source.sha256, "changed": True}

    ready = stack.wait_ready(30)
    assert (ready["source"], ready["version"], ready["sha256"]) == ("redis", 1, source.sha256)
    # The worker's concurrency comes from the published overlay rpi, not from its command line.
    assert source.base["worker_concurrency"] == 2
    assert "concurrency: 2 (prefork)" in stack.logs("worker")

    tasks = demo_tasks()
    assert len(tasks) == 14
    sent = {}
    for task in tasks:
        body = stack.enqueue(task)
        assert body["queue"] == expected_queue(source, task), body
        sent[task] = body["id"]
    for task, task_id in sent.items():
        status = stack.result(task_id, 60)
        assert status["state"] == "SUCCESS", status
        result: dict[str, Any] = status["result"]
        assert result["task"] == task
        assert result["queue"] == expected_queue(source, task), (task, result)
        assert (result["config_source"], result["config_version"]) == ("redis", 1)

    # The specification's redis-cli checks.
    assert stack.redis_cli("EXISTS", f"{NAMESPACE}:version") == "1"
    for key, kind in KEYS.items():
        assert stack.redis_cli("TYPE", key) == kind, key
    assert stack.redis_cli("HLEN", f"{NAMESPACE}:queues") == "14" == str(len(source.queues))
    assert stack.redis_cli("HLEN", f"{NAMESPACE}:routes") == "60" == str(len(source.routes))
    assert stack.redis_cli("HLEN", f"{NAMESPACE}:base") == str(len(source.base))
    assert published(stack) == ("1", ready["sha256"])


def test_every_service_runs_unprivileged_on_a_read_only_root(stack: Stack) -> None:
    """What compose.yaml promises for the rpi profile, checked in the running processes."""
    limits = {"redis": 300, "config-seeder": 128, "worker": 512, "beat": 128, "api": 192}
    for service, limit in limits.items():
        host = stack.inspect(service)["HostConfig"]
        assert host["ReadonlyRootfs"] is True, service
        assert host["CapDrop"] == ["ALL"] and not host["CapAdd"], service
        assert "no-new-privileges:true" in host["SecurityOpt"], service
        assert host["Memory"] == limit * 2**20, service
    for service in ("redis", "worker", "beat", "api"):
        status = stack.compose("exec", "-T", service, "cat", "/proc/1/status").stdout
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(fields[cap], 16) == 0, (service, cap, fields[cap])
        assert fields["NoNewPrivs"].strip() == "1", service
        assert fields["Uid"].split()[0] != "0", service
        touched = stack.compose("exec", "-T", service, "touch", "/etc/x", check=False)
        assert touched.returncode != 0 and "Read-only file system" in touched.stderr, service
    ports = {service: stack.inspect(service)["NetworkSettings"]["Ports"]
             for service in ("redis", "api")}
    assert not any(ports["redis"].values()), ports["redis"]  # Redis is not published
    assert ports["api"]["8000/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(stack.api_port)}]


# ------------------------------------------------------------------------------------ e
def test_reseeding_the_same_source_publishes_nothing(stack: Stack,
                                                     source: ConfigDocument) -> None:
    # A subscriber inside the redis container for the whole reseed, then a sentinel of ours:
    # it must receive the sentinel and nothing else. The worker, beat and the API are
    # subscribed already (their live-reload watchers): one each.
    def subscribers() -> int:
        return int(stack.redis_cli("PUBSUB", "NUMSUB", CHANNEL).split()[1])

    services = subscribers()
    assert services == 3
    window = 15
    subscriber = subprocess.Popen(
        stack.command("exec", "-T", "redis", "timeout", str(window), "redis-admin", "SUBSCRIBE",
                      CHANNEL),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=stack.environ())
    try:
        wait_until(lambda: subscribers() == services + 1, 10, "the subscriber", interval=0.1)
        code, out, err = seed(stack, "seed-again")
        assert code == 0, err
        assert json.loads(out.strip().splitlines()[-1]) == {
            "version": 1, "sha256": source.sha256, "changed": False}
        assert "unchanged" in err
        assert stack.redis_cli("PUBLISH", CHANNEL, "sentinel") == str(services + 1)
        output, _ = subscriber.communicate(timeout=window + 15)
    finally:
        if subscriber.poll() is None:
            subscriber.kill()
    words = output.split()
    assert words[:3] == ["subscribe", CHANNEL, "1"], output
    messages = [words[i + 2] for i, word in enumerate(words) if word == "message"]
    assert messages == ["sentinel"], output
    assert published(stack) == ("1", source.sha256)


# ------------------------------------------------------------------------------------ c
def test_invalid_source_is_refused_and_redis_keeps_the_published_one(
        stack: Stack, source: ConfigDocument, tmp_path: Path) -> None:
    before = published(stack)
    config = tmp_path / "celery"
    shutil.copytree(ROOT / "config" / "celery", config)
    with (config / "source.py").open("a") as text:
        text.write('\ntask_routes["scan.nowhere"] = {"queue": "no_such_queue"}\n')
    for path in (config, *config.rglob("*")):  # readable by the seeder's uid 10001
        path.chmod(0o755 if path.is_dir() else 0o644)

    code, out, err = seed(stack, "seed-invalid", "--volume", f"{config}:/etc/celery-config:ro")
    assert code == 2, (out, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("celery-config: error:") and "no_such_queue" in lines[0], err
    assert "Traceback" not in err

    assert published(stack) == before == ("1", source.sha256)
    ready = stack.readyz()
    assert ready is not None and (ready["version"], ready["sha256"]) == (1, source.sha256)


# ------------------------------------------------------------------------------------ d
def test_redis_restart_keeps_the_keys_and_the_api_serving(stack: Stack,
                                                          source: ConfigDocument) -> None:
    before = {key: stack.redis_cli("TYPE", key) for key in KEYS}
    lengths = {key: stack.redis_cli("HLEN", key) for key in KEYS if KEYS[key] == "hash"}
    started_before = stack.inspect("redis")["State"]["StartedAt"]

    answers: list[bool] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            answers.append(stack.readyz(timeout=2) is not None)
            time.sleep(0.2)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        stack.compose("restart", "--timeout", "10", "redis")
        wait_until(lambda: stack.health("redis") == "healthy", 60, "redis healthy again")
    finally:
        stop.set()
        poller.join(10)
    assert stack.inspect("redis")["State"]["StartedAt"] != started_before
    assert answers and all(answers), f"/readyz failed {answers.count(False)}/{len(answers)}"

    # The keys came back from the AOF in the volume (the root filesystem is read-only).
    assert {key: stack.redis_cli("TYPE", key) for key in KEYS} == before
    assert {key: stack.redis_cli("HLEN", key) for key in lengths} == lengths
    assert published(stack) == ("1", source.sha256)
    assert "appendonly.aof" in stack.compose("exec", "-T", "redis", "ls",
                                             "/data/appendonlydir").stdout

    body = stack.enqueue("covers.fetch_album")
    status = stack.result(body["id"], 90)
    assert status["state"] == "SUCCESS" and status["result"]["queue"] == "covers", status


# ------------------------------------------------------------------------------------ b
def back_on_redis(stack: Stack) -> None:
    stack.compose("up", "--detach", "--wait", "--no-deps", "redis")
    stack.compose("up", "--detach", "--wait", "--no-deps", "--force-recreate", "worker", "api")
    assert stack.wait_ready(30)["source"] == "redis"


def check_fallback(stack: Stack, expected: str, version: int, source: ConfigDocument) -> None:
    """Worker and api recreated with Redis stopped: each starts on ``expected``, ``version``,
    the source's content, and says so. How long it took is printed, never asserted (the
    gate's wait plus start-up, on a machine as busy as it is)."""
    api_s, worker_s, ready = stack.start_without_redis(FALLBACK_WAIT)
    line = (f"fallback to {expected} (gate timeout {FALLBACK_WAIT} s): api ready "
            f"{api_s:.2f} s, worker loaded {worker_s:.2f} s after container start")
    MEASUREMENTS.append(line)
    show(line)
    assert (ready["source"], ready["version"], ready["sha256"]) == (
        expected, version, source.sha256), ready
    for service in ("api", "worker"):
        logs = stack.logs(service)
        assert "starting on the fallback" in logs, logs
        assert f"Celery configuration loaded from {expected}" in logs, logs
    worker_line = next(line for line in stack.logs("worker").splitlines()
                       if "Celery configuration loaded from" in line)
    assert "[CELERY_WORKER]" in worker_line
    # The worker on the same version and content as the api (its sha256 is logged, cut to 12).
    assert f"from {expected}: version {version}, sha256 {source.sha256[:12]}," in worker_line, (
        worker_line)


def test_redis_unreachable_services_start_on_last_known_good(stack: Stack,
                                                             source: ConfigDocument) -> None:
    """Their last-known-good volumes hold version 1, written when they loaded it from Redis."""
    stack.compose("stop", "redis")
    try:
        check_fallback(stack, "last-known-good", 1, source)
    finally:
        back_on_redis(stack)


def test_redis_unreachable_and_no_last_known_good_services_start_on_the_snapshot(
        stack: Stack, source: ConfigDocument) -> None:
    stack.compose("stop", "redis")
    try:
        stack.compose("rm", "--stop", "--force", "worker", "api")
        docker("volume", "rm", f"{stack.project}_worker-lkg", f"{stack.project}_api-lkg")
        # The snapshot baked into the image has version 0 and the same content.
        check_fallback(stack, "snapshot", 0, source)
    finally:
        back_on_redis(stack)


def test_without_compose_ordering_the_gate_waits_for_redis(stack: Stack,
                                                           source: ConfigDocument) -> None:
    """worker and api started before redis (--no-deps: no depends_on at all) wait in their
    gate, then load from Redis once it is back: the ordering in compose.yaml is a courtesy."""
    stack.compose("stop", "redis")
    try:
        stack.compose("up", "--detach", "--no-deps", "--force-recreate", "worker", "api",
                      env={"CELERY_CONFIG_WAIT_TIMEOUT": "120"})
        time.sleep(4)
        assert stack.readyz(timeout=1) is None  # still in the gate
        stack.compose("up", "--detach", "--no-deps", "redis")
        ready = stack.wait_ready(60)
        assert (ready["source"], ready["version"], ready["sha256"]) == ("redis", 1, source.sha256)
        wait_until(lambda: "Celery configuration loaded from redis" in stack.logs("worker"), 60,
                   "the worker loading from redis")
        for service in ("worker", "api"):
            assert "starting on the fallback" not in stack.logs(service), service
    finally:
        back_on_redis(stack)


# ------------------------------------------------------------------------------------ f
def test_down_stops_every_container_on_sigterm_with_exit_0(stack: Stack) -> None:
    """Exit 0 for all: redis, supervisord (the worker), celery beat and uvicorn (the api) each
    end cleanly on SIGTERM. A 143 would be a process killed by the SIGTERM it does not handle;
    137, one killed by docker when the grace ran out: neither is accepted here. The grace is
    generous (STOP_GRACE, not the 10 s stop_grace_period of compose/base.yaml) so that a busy
    machine does not turn a clean stop into a kill; how long each took is printed, never
    asserted."""
    started = now_utc()
    stack.compose("stop", "--timeout", str(STOP_GRACE), timeout=STOP_GRACE + 120)
    elapsed = (now_utc() - started).total_seconds()
    containers = containers_of(stack.project)
    assert {c["Labels"].split("com.docker.compose.service=")[1].split(",")[0]
            for c in containers} == {"redis", "config-seeder", "worker", "beat", "api"}
    stopped_after = {}
    for container in containers:
        state = json.loads(docker("inspect", "--format", "{{json .State}}",
                                  container["Names"]).stdout)
        assert state["Status"] == "exited", (container["Names"], state)
        assert state["ExitCode"] == 0, (container["Names"], state,
                                        docker("logs", "--tail", "30", container["Names"]).stderr)
        if not container["Names"].endswith("config-seeder-1"):
            stopped_after[container["Names"].removeprefix(f"{stack.project}-")] = (
                parse_docker_time(state["FinishedAt"]) - started).total_seconds()
    line = (f"compose stop (timeout {STOP_GRACE}): {elapsed:.1f} s for the whole stack; "
            + ", ".join(f"{name} {s:.1f} s" for name, s in sorted(stopped_after.items())))
    MEASUREMENTS.append(line)
    show(line)

    stack.compose("down", "--volumes", "--timeout", "10")
    assert containers_of(stack.project) == []
    volumes = docker("volume", "ls", "--quiet", "--filter",
                     f"label=com.docker.compose.project={stack.project}").stdout
    assert volumes.strip() == ""
