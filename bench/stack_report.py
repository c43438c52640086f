"""Stack report: the rpi profile of compose/compose.yaml on this machine, beside a Pi 4 budget.

Printed, never asserted (exit 0 whenever it ran). It brings up a compose project of its own
(``ccs-e2e-report-<pid>``, the API on a free loopback port) and always removes it with its
volumes. Figures:

  cold start      `compose up` (fresh volumes, images already local) -> /readyz answers ready;
                  median of --runs runs, each from nothing
  seeder run      the config-seeder container's StartedAt .. FinishedAt (median)
  fallback start  redis stopped, worker and api recreated alone with CELERY_CONFIG_WAIT_TIMEOUT=5:
                  container start -> /readyz ready (api) or its "configuration loaded" log line
                  (worker); budget = the wait + 2 s
  idle memory     each container's cgroup as `docker stats` counts it (usage - inactive file
                  cache), so the worker includes supervisord and every Celery child; sampled
                  after a task went through every queue family and the stack settled, max of 3

Memory is this machine's platform (amd64 here): the arm64 images on a Pi use a similar amount,
while arm64 under qemu emulation would not (qemu adds its own), so that is not measured here.
MB = 10**6 bytes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.compose_stack import Stack, demo_tasks, parse_docker_time  # noqa: E402
from tests.polling import wait_until  # noqa: E402
from tests.redis_process import free_port  # noqa: E402

MB = 10**6
FALLBACK_WAIT = 5
# A Raspberry Pi 4 with 4 GB: what each long-running service may use at idle.
MEMORY_BUDGET = {"api": 120 * MB, "worker": 300 * MB, "beat": 80 * MB, "redis": 50 * MB}
TASKS = demo_tasks()


def ready_at(stack: Stack, timeout: float) -> tuple[datetime, dict[str, Any]]:
    body = stack.wait_ready(timeout)
    return datetime.now(UTC), body


def cold_start(stack: Stack) -> tuple[float, float]:
    """Seconds from `compose up` to /readyz ready, and the seeder's own run time."""
    stack.down()
    started = datetime.now(UTC)
    stack.compose("up", "--detach", timeout=300)
    ready, body = ready_at(stack, 180)
    if body.get("source") != "redis":
        raise RuntimeError(f"cold start came up on {body.get('source')}, not redis")
    wait_until(lambda: stack.inspect("config-seeder")["State"]["Status"] == "exited", 60,
               "the seeder to exit")
    seeder = stack.inspect("config-seeder")["State"]
    seeder_s = parse_docker_time(seeder["FinishedAt"]) - parse_docker_time(seeder["StartedAt"])
    return (ready - started).total_seconds(), seeder_s.total_seconds()


def run_tasks(stack: Stack) -> list[str]:
    """One task per queue family through the API; the names of those that did not succeed."""
    # Until Celery says "ready": a fanout (monitoring) message sent before the worker
    # subscribed is lost by design, and /readyz only speaks for the API.
    wait_until(lambda: " ready." in stack.logs("worker"), 120, "the worker's ready line")
    failed = []
    for task in TASKS:
        try:
            status = stack.result(stack.enqueue(task)["id"], timeout=60)
        except AssertionError:  # not accepted, or not finished in time
            status = {}
        if status.get("state") != "SUCCESS":
            failed.append(task)
    return failed


def memory(client: docker.DockerClient, stack: Stack, service: str) -> int:
    """The container cgroup's memory as `docker stats` shows it: usage minus inactive files."""
    stats = client.containers.get(stack.container(service)).stats(stream=False)["memory_stats"]
    detail = stats.get("stats", {})
    cache = detail.get("inactive_file", detail.get("total_inactive_file", 0))
    return int(stats["usage"]) - int(cache)


def fallback_start(stack: Stack) -> tuple[float, float, str]:
    """Redis stopped; worker and api recreated alone with a short gate timeout."""
    stack.compose("stop", "redis")
    api_s, worker_s, body = stack.start_without_redis(FALLBACK_WAIT)
    return api_s, worker_s, str(body.get("source"))


def row(what: str, measured: str, budget: str = "-", ratio: float | None = None) -> str:
    verdict = "" if ratio is None else ("  within" if ratio <= 1 else "  OVER")
    shown = "-" if ratio is None else f"{ratio:.2f}"
    return f"{what:<44}{measured:>12}{budget:>12}{shown:>8}{verdict}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="cold starts to take the median of")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds of idleness before the memory is sampled")
    options = parser.parse_args()

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        print(f"stack report: no Docker engine ({exc})", file=sys.stderr)
        return 2
    stack = Stack(f"ccs-e2e-report-{os.getpid()}", free_port())
    try:
        starts, seeders = [], []
        for _ in range(max(1, options.runs)):
            start_s, seeder_s = cold_start(stack)
            starts.append(start_s)
            seeders.append(seeder_s)
        failed = run_tasks(stack)
        time.sleep(options.settle)
        usage: dict[str, int] = {}
        for _ in range(3):
            for service in MEMORY_BUDGET:
                usage[service] = max(usage.get(service, 0), memory(client, stack, service))
            time.sleep(1)
        api_s, worker_s, source = fallback_start(stack)
    finally:
        stack.down()

    budget = FALLBACK_WAIT + 2.0
    print(f"stack report: compose profile rpi, {stack.project}, this machine "
          f"({os.uname().machine}, {os.cpu_count()} CPUs); "
          f"{len(TASKS) - len(failed)}/{len(TASKS)} tasks ran"
          + (f" (not: {', '.join(failed)})" if failed else ""))
    print(f"{'measure':<44}{'measured':>12}{'Pi 4 budget':>12}{'ratio':>8}")
    print(row(f"cold start: up -> /readyz (median/{len(starts)})",
              f"{statistics.median(starts):.2f} s"))
    print(row("seeder run (StartedAt..FinishedAt)", f"{statistics.median(seeders):.2f} s"))
    print(row(f"fallback start api ({source})", f"{api_s:.2f} s", f"{budget:.2f} s",
              api_s / budget))
    print(row(f"fallback start worker ({source})", f"{worker_s:.2f} s", f"{budget:.2f} s",
              worker_s / budget))
    for service, limit in MEMORY_BUDGET.items():
        label = "worker + children" if service == "worker" else service
        print(row(f"idle memory {label}", f"{usage[service] / MB:.1f} MB",
                  f"{limit / MB:.0f} MB", usage[service] / limit))
    print(f"cold starts: {', '.join(f'{s:.2f}' for s in starts)} s; seeder runs: "
          f"{', '.join(f'{s:.2f}' for s in seeders)} s; fallback budget = "
          f"CELERY_CONFIG_WAIT_TIMEOUT={FALLBACK_WAIT} + 2 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
