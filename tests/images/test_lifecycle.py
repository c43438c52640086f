"""How the images start and stop: the seeder's exit codes, the gate, and `docker stop`."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.figures import figure
from tests.images.conftest import Stack, health
from tests.polling import wait_until

pytestmark = pytest.mark.images
# docker's grace between SIGTERM and SIGKILL in the stop case: a clean stop is exit 0 whatever
# the time it takes; an image that ignores SIGTERM is still killed (137), only later.
STOP_GRACE = 60


def finished(container: object, timeout: float = 60) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of a container that runs to completion, then removed."""
    result = container.wait(timeout=timeout)  # type: ignore[attr-defined]
    out = container.logs(stdout=True, stderr=False).decode()  # type: ignore[attr-defined]
    err = container.logs(stdout=False, stderr=True).decode()  # type: ignore[attr-defined]
    container.remove(v=True)  # type: ignore[attr-defined]
    return int(result["StatusCode"]), out, err


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line.lower()]


def test_reseeding_the_same_source_changes_nothing(stack: Stack) -> None:
    version = stack.redis_cli("GET", "celery_config:version")
    seeder = stack.run("config-seeder", environment={**stack.env, "CELERY_CONFIG_OVERLAY": "rpi"})
    code, out, _ = finished(seeder)
    assert code == 0 and '"changed": false' in out
    assert stack.redis_cli("GET", "celery_config:version") == version


def test_seeder_refuses_an_invalid_source_and_leaves_redis_alone(stack: Stack,
                                                                 tmp_path: Path) -> None:
    before = stack.redis_cli("HGET", "celery_config:meta", "sha256")
    config = tmp_path / "celery"
    shutil.copytree(ROOT / "config" / "celery", config)
    config.chmod(0o755)
    with (config / "source.py").open("a") as source:
        source.write('\ntask_routes["scan.nowhere"] = {"queue": "no_such_queue"}\n')
    (config / "source.py").chmod(0o644)
    seeder = stack.run("config-seeder", environment=stack.env,
                       volumes={str(config): {"bind": "/etc/celery-config", "mode": "ro"}})
    code, _, err = finished(seeder)
    assert code == 2
    assert "Traceback" not in err
    assert len(error_lines(err)) == 1 and "no_such_queue" in error_lines(err)[0], err
    assert stack.redis_cli("HGET", "celery_config:meta", "sha256") == before


def test_seeder_gives_up_when_redis_stays_unreachable(stack: Stack) -> None:
    env = {**stack.env, "CELERY_CONFIG_REDIS_URL": "redis://nowhere.invalid:6379/0",
           "CELERY_CONFIG_WAIT_TIMEOUT": "2"}
    # Gives up, exit 3, once its 2 s ran out: a seeder that never did fails in finished()
    # (it waits up to 60 s for the container to end); how long it took is printed.
    started = time.monotonic()
    code, _, err = finished(stack.run("config-seeder", environment=env))
    assert code == 3, err
    figure(f"the seeder gave up (CELERY_CONFIG_WAIT_TIMEOUT=2) and its container ended "
           f"{time.monotonic() - started:.1f} s after it was run")
    assert "Traceback" not in err and "unreachable" in err.strip().splitlines()[-1]


def test_gate_exits_3_on_timeout_when_told_to_fail(stack: Stack) -> None:
    env = {**stack.env, "CELERY_CONFIG_REDIS_URL": "redis://nowhere.invalid:6379/0",
           "CELERY_CONFIG_WAIT_TIMEOUT": "1", "CELERY_CONFIG_ON_TIMEOUT": "fail"}
    code, _, err = finished(stack.run("api", environment=env))
    assert code == 3
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("celery-config-gate: no published configuration")


def test_gate_falls_back_to_the_snapshot(stack: Stack) -> None:
    env = {**stack.env, "CELERY_CONFIG_REDIS_URL": "redis://nowhere.invalid:6379/0",
           "CELERY_CONFIG_WAIT_TIMEOUT": "1"}
    api = stack.run("api", environment=env)
    try:
        wait_until(lambda: b"Application startup complete" in api.logs(), 60, "api started")
        logs = api.logs().decode()
        assert "starting on the fallback" in logs
        assert "source snapshot" in logs or "from snapshot" in logs, logs
        code, out = api.exec_run(["python3", "-c", "import urllib.request; print(urllib.request"
                                  ".urlopen('http://127.0.0.1:8000/readyz').read().decode())"])
        assert code == 0 and '"source":"snapshot"' in out.decode()
    finally:
        api.remove(force=True, v=True)


@pytest.mark.parametrize("image", ("worker", "api"))
def test_gate_refuses_a_snapshot_exported_from_another_source(stack: Stack, image: str) -> None:
    """An image built on ours for another project (its own CELERY_CONFIG_SOURCE) that kept the
    demo's snapshot: the gate exits 2 in one line before anything starts, Redis up or not,
    rather than fall back one day to the demo's queues."""
    env = {**stack.env, "CELERY_CONFIG_SOURCE": "orders.celeryconfig"}
    code, _, err = finished(stack.run(image, environment=env))
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.startswith("celery-config")]
    assert "Traceback" not in err and len(lines) == 1, err
    assert "exported from '/etc/celery-config/source.py+rpi'" in lines[0], lines
    assert "not from this service's source 'orders.celeryconfig'" in lines[0], lines


@pytest.mark.parametrize("image", ("redis", "worker", "api"))
def test_docker_stop_ends_on_sigterm_with_exit_0(stack: Stack, image: str) -> None:
    """Exit 0: PID 1 handles SIGTERM and ends cleanly (143: killed by the SIGTERM it does not
    handle; 137: killed when docker's grace ran out). The grace is generous (STOP_GRACE) so
    that a busy machine does not turn a clean stop into a kill; the time is printed."""
    environment = {} if image == "redis" else stack.env
    container = stack.run(image, environment=environment)
    try:
        wait_until(lambda: health(container) == "healthy", 90, f"{image} healthy")
        started = time.monotonic()
        container.stop(timeout=STOP_GRACE)
        elapsed = time.monotonic() - started
        container.reload()
        assert container.attrs["State"]["ExitCode"] == 0, container.logs().decode()[-2000:]
        figure(f"docker stop {image}: exit 0 after {elapsed:.1f} s (grace {STOP_GRACE} s)")
    finally:
        container.remove(force=True, v=True)


def test_worker_that_cannot_start_ends_its_container(stack: Stack) -> None:
    """supervisord gives up after its retries (FATAL); the container then exits, so a restart
    policy can act, instead of running on with no worker in it."""
    worker = stack.run("worker", environment={**stack.env, "CELERY_BROKER_URL": "nosuch://x"})
    try:
        code = worker.wait(timeout=90)["StatusCode"]
        logs = worker.logs().decode()
        assert "celery-worker entered FATAL: stopping supervisord" in logs, logs[-3000:]
        assert code == 0  # supervisord's own exit on SIGTERM; the restart policy still applies
    finally:
        worker.remove(force=True, v=True)


def test_redis_without_its_password_files_stops_with_one_line(stack: Stack) -> None:
    """No Redis without its users: a start with a password file missing is exit 2, one line."""
    from tests.images.conftest import HARDENING, image_ref

    redis = stack.client.containers.run(
        image_ref("redis"), detach=True, network=stack.network,
        tmpfs={"/run/redis": "size=1m,uid=999,gid=999,mode=0700"}, **HARDENING)
    code, _, err = finished(redis, timeout=30)
    assert code == 2
    assert err.strip().splitlines() == [
        "redis-entrypoint: error: /run/secrets/redis-health: missing, empty or unreadable "
        "(the password of Redis user health)"]


def test_redis_runs_a_command_that_is_not_a_flag_as_given(stack: Stack) -> None:
    """docker-library's convention: `docker run redis-image redis-cli --version` runs redis-cli
    (no password file needed, no server started); flags still go to redis-server."""
    from tests.images.conftest import HARDENING, image_ref

    cli = stack.client.containers.run(image_ref("redis"), ["redis-cli", "--version"],
                                      detach=True, network=stack.network, **HARDENING)
    code, out, err = finished(cli, timeout=30)
    assert code == 0, err
    assert out.startswith("redis-cli "), out
    # A flag: redis-server's set-up runs first (and refuses to start without its users).
    flagged = stack.client.containers.run(
        image_ref("redis"), ["--loglevel", "verbose"], detach=True, network=stack.network,
        tmpfs={"/run/redis": "size=1m,uid=999,gid=999,mode=0700"}, **HARDENING)
    code, _, err = finished(flagged, timeout=30)
    assert code == 2 and "redis-entrypoint: error:" in err, err
