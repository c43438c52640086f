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
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "compose" / "compose.yaml"
MB = 10**6
FALLBACK_WAIT = 5
# A Raspberry Pi 4 with 4 GB: what each long-running service may use at idle.
MEMORY_BUDGET = {"api": 120 * MB, "worker": 300 * MB, "redis": 50 * MB}
# One task per queue family, as the worker's DEMO_TASKS (its module is not imported here:
# importing it loads a configuration).
TASKS = ("scan.discovery", "metadata.extract_batch", "batch.process_entities",
         "insert.direct_batch", "priority.user_request", "covers.fetch_album",
         "audio.analyze_track", "vectorization.track", "enrichment.musicbrainz",
         "lastfm.sync_scrobbles", "deferred.retry_failed", "maintenance.cleanup_orphans",
         "monitoring.heartbeat", "demo.echo")
FOREIGN = ("COMPOSE_FILE", "COMPOSE_PROJECT_NAME", "COMPOSE_PROFILES", "DOCKER_DEFAULT_PLATFORM",
           "API_PORT", "API_BIND", "CELERY_CONFIG_WAIT_TIMEOUT", "CELERY_CONFIG_ON_TIMEOUT")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def docker_time(text: str) -> datetime:
    """RFC 3339 with nanoseconds -> aware datetime (microseconds)."""
    match = re.fullmatch(r"(\S+?T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text.strip())
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    head, fraction, zone = match.groups()
    zone = "+00:00" if zone == "Z" else zone
    return datetime.fromisoformat(f"{head}.{((fraction or '') + '000000')[:6]}{zone}")


@dataclass
class Stack:
    project: str
    api_port: int
    client: Any  # docker.DockerClient

    def compose(self, *args: str, timeout: float = 300, **env: str) -> str:
        base = {k: v for k, v in os.environ.items() if k not in FOREIGN}
        command = ["docker", "compose", "--project-directory", str(ROOT), "-f",
                   str(COMPOSE_FILE), "-p", self.project, "--profile", "rpi", *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                check=False, env={**base, "API_PORT": str(self.api_port),
                                                  "API_BIND": "127.0.0.1", **env})
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} -> {result.returncode}\n{result.stderr}")
        return result.stdout

    def container(self, service: str) -> Any:
        return self.client.containers.get(f"{self.project}-{service}-1")

    def state(self, service: str) -> dict[str, Any]:
        container = self.container(service)
        container.reload()
        state: dict[str, Any] = container.attrs["State"]
        return state

    def api(self, method: str, path: str, timeout: float = 5) -> dict[str, Any] | None:
        """The JSON body of a 2xx answer, else None (also when nothing answers)."""
        data = b"{}" if method == "POST" else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.api_port}{path}", data=data,
                                         method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # loopback only
                body: dict[str, Any] = json.load(response)
                return body
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def wait_ready(self, timeout: float) -> tuple[datetime, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.api("GET", "/readyz", timeout=2)
            if body and body.get("ready"):
                return datetime.now(UTC), body
            time.sleep(0.05)
        raise RuntimeError(f"/readyz not ready after {timeout:g} s")

    def down(self) -> None:
        try:
            self.compose("down", "--volumes", "--remove-orphans", "--timeout", "10")
        except RuntimeError as exc:
            print(f"warning: {exc}", file=sys.stderr)


def cold_start(stack: Stack) -> tuple[float, float]:
    """Seconds from `compose up` to /readyz ready, and the seeder's own run time."""
    stack.down()
    started = datetime.now(UTC)
    stack.compose("up", "--detach")
    ready_at, body = stack.wait_ready(180)
    if body.get("source") != "redis":
        raise RuntimeError(f"cold start came up on {body.get('source')}, not redis")
    seeder = stack.state("config-seeder")
    deadline = time.monotonic() + 60
    while seeder["Status"] != "exited" and time.monotonic() < deadline:
        time.sleep(0.2)
        seeder = stack.state("config-seeder")
    seeder_s = (docker_time(seeder["FinishedAt"]) - docker_time(seeder["StartedAt"]))
    return (ready_at - started).total_seconds(), seeder_s.total_seconds()


def worker_ready(stack: Stack, timeout: float) -> None:
    """Until Celery says "ready": a fanout (monitoring) message sent before the worker
    subscribed is lost by design, and /readyz only speaks for the API."""
    worker = stack.container("worker")
    deadline = time.monotonic() + timeout
    while b" ready." not in worker.logs():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not get ready within {timeout:g} s")
        time.sleep(0.2)


def run_tasks(stack: Stack) -> list[str]:
    """One task per queue family through the API; the names of those that did not succeed."""
    worker_ready(stack, 120)
    sent = {task: body["id"] for task in TASKS
            if (body := stack.api("POST", f"/tasks/{task}", timeout=30)) is not None}
    failed = [task for task in TASKS if task not in sent]
    deadline = time.monotonic() + 120
    for task, task_id in sent.items():
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = stack.api("GET", f"/tasks/{task_id}", timeout=10) or {}
            if status.get("state") in ("SUCCESS", "FAILURE"):
                break
            time.sleep(0.2)
        if status.get("state") != "SUCCESS":
            failed.append(task)
    return failed


def memory(stack: Stack, service: str) -> int:
    """The container cgroup's memory as `docker stats` shows it: usage minus inactive files."""
    stats = stack.container(service).stats(stream=False)["memory_stats"]
    detail = stats.get("stats", {})
    cache = detail.get("inactive_file", detail.get("total_inactive_file", 0))
    return int(stats["usage"]) - int(cache)


def fallback_start(stack: Stack) -> tuple[float, float, str]:
    """Redis stopped; worker and api recreated alone with a short gate timeout."""
    stack.compose("stop", "redis")
    stack.compose("up", "--detach", "--no-deps", "--force-recreate", "worker", "api",
                  CELERY_CONFIG_WAIT_TIMEOUT=str(FALLBACK_WAIT))
    ready_at, body = stack.wait_ready(FALLBACK_WAIT + 60)
    api_s = (ready_at - docker_time(stack.state("api")["StartedAt"])).total_seconds()
    marker = b"Celery configuration loaded from"
    worker = stack.container("worker")
    deadline = time.monotonic() + 60
    while marker not in worker.logs() and time.monotonic() < deadline:
        time.sleep(0.2)
    line = next(line for line in worker.logs(timestamps=True).splitlines() if marker in line)
    worker_s = (docker_time(line.split()[0].decode())
                - docker_time(stack.state("worker")["StartedAt"])).total_seconds()
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
    stack = Stack(f"ccs-e2e-report-{os.getpid()}", free_port(), client)
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
                usage[service] = max(usage.get(service, 0), memory(stack, service))
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
