"""Benchmark: the demo API against the minimal FastAPI peer, side by side in one run.

Printed, never asserted (these machines are noisy). One redis-server of its own with the demo
configuration published (config/celery/source.py, rpi overlay), two apps served the way the api
image serves its app (``uvicorn --host ... --port ...``, the app named by ``UVICORN_APP``,
uvicorn's defaults: h11, asyncio, its access log at INFO), with the same environment:

  ours   src/api_service/app.py on celery_config_sync.fastapi: the configuration loaded from
         Redis in its lifespan, the bearer token of CELERY_CONFIG_API_TOKEN_FILE, JSON only,
         the Host check and body limit (protect), the task slots, live routing in send_task
  peer   bench/apps/fastapi_peer.py: a plain Celery app with the same settings and one
         ``POST /tasks/{name}`` doing ``send_task``, as FastAPI's tutorial writes it. No token
         check: a minimal app has none, so issue 18's security is ours to carry within the
         target (the request sends the token and JSON to both; the peer ignores the token)

Start-up: after one untimed start of each, which also posts one task (the bytecode of what it
imports, before ready and at its first request, written into the run's temporary directory,
PYTHONPYCACHEPREFIX, as the images compile theirs at install; page cache warm), each round
starts each app (in turn, the round's first rotating), each alone on the machine: from the
process started to the first 200 of ``GET /readyz`` (polled every 5 ms on a new connection),
then its CPU time (user + system) and RSS (VmRSS) right then, idle; then one task posted, and
the time from the start to its 202 and the RSS right after it; then stops it. The last round's
servers stay up for the requests.

Why both: ours reads its configuration from Redis before it is ready, so it imports redis-py
(about 6 MB and 70 ms here) before /readyz, where the peer imports it at its first send. "Ready"
compares a server that holds redis-py with one that does not yet; "first task answered" compares
both when each can do what it is for. The issue's targets are on the first; the second is
printed beside them. (Without the untimed start's post, whichever server first imported
Celery's result backend and kombu's transport compiled them from source at its first request,
in front of the other, and kept ~10 MB more RSS from it: the single sample of RSS after the
requests moved by that much with the order of the rounds.)

Requests: ``POST /tasks/scan.discovery`` with ``{"args": [], "kwargs": {}}``, each app on a
kept-alive connection of its own (http.client: the client's cost kept small and equal), in
rotating blocks (round r starts with the r-th variant). Each figure is the median of every
call with its spread (the interquartile range, the range of the per-block medians); a ratio is
that of the medians, with the range of the same ratio taken round by round. Also shown: Redis
commands per request (INFO commandstats; the API's watcher and heartbeat included), each
server's CPU time per request (/proc: user + system, every thread; blocks of 100 requests in
rotating order; less sensitive than wall time to the machine's other load), and the RSS of
both after the requests (the peer imports redis-py at its first send).

``--before DIR``: a third variant, ``before``, the demo API of another checkout (its ``src``
first on PYTHONPATH; ``git archive <ref> | tar -x -C DIR`` makes one), measured in the same
rounds, so that a change is judged before and after in one run; the ratios to the peer and
ours / before are printed with the targets.

Targets (issue 20): ``POST /tasks/{name}`` p50 <= 1.05x the peer; start to ready <= 1.10x;
idle RSS right after start <= 1.10x.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.redis_process import RedisServer, free_port  # noqa: E402
from tests.service_processes import service_environment  # noqa: E402

from bench.load_bench import Measured, commands_per_call, measure, ratio  # noqa: E402
from celery_config_sync.publishing import publish  # noqa: E402
from celery_config_sync.source import load_source  # noqa: E402

UVICORN = Path(sys.executable).parent / "uvicorn"
APPS = {"ours": "api_service.app:app", "peer": "bench.apps.fastapi_peer:app",
        "before": "api_service.app:app"}
TASK = "scan.discovery"  # routed by the source to queue "scan"
BODY = json.dumps({"args": [], "kwargs": {}}).encode()
NAMESPACE = "celery_config"
READY_POLL = 0.005  # seconds between two GET /readyz while a server starts


@dataclass
class Server:
    """One uvicorn process serving one of APPS, and a kept-alive connection to it."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    connection: http.client.HTTPConnection | None = None

    def post(self, headers: dict[str, str]) -> None:
        if self.connection is None:
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        self.connection.request("POST", f"/tasks/{TASK}", body=BODY, headers=headers)
        response = self.connection.getresponse()
        body = response.read()
        if response.status != 202:
            sys.exit(f"{self.name}: POST /tasks/{TASK} answered {response.status}: "
                     f"{body[:200]!r}")

    def stop(self) -> None:
        if self.connection is not None:
            self.connection.close()
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def ready(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", "/readyz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` (its threads included) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_request(servers: dict[str, Server], headers: dict[str, str], rounds: int,
                    per_block: int) -> dict[str, Measured]:
    """Each server's CPU seconds per request over blocks of ``per_block`` requests (rotating
    order): less sensitive than wall time to what else the machine runs, and the server's whole
    work (event loop, thread pool, the watcher's and heartbeat's threads) counted."""
    names = list(servers)
    results = {name: Measured([], []) for name in names}
    for round_index in range(rounds):
        first = round_index % len(names)
        for name in names[first:] + names[:first]:
            server = servers[name]
            before = cpu_seconds(server.process.pid)
            for _ in range(per_block):
                server.post(headers)
            value = (cpu_seconds(server.process.pid) - before) / per_block
            results[name].samples.append(value)
            results[name].blocks.append(value)
    return results


def variant_roots(before: Path | None) -> dict[str, Path]:
    """Each variant's source tree (the server's working directory, its ``src`` first on
    PYTHONPATH): this checkout's, and ``before``'s for the variant of that name."""
    roots = {"ours": ROOT, "peer": ROOT}
    if before is not None:
        roots["before"] = before.resolve()
    return roots


@dataclass
class Started:
    """One start: its server, and at its first ready answer: the seconds since it was started,
    the CPU seconds it used (user + system, every thread: less sensitive than the wall time to
    the machine's other load) and its RSS in bytes; then the seconds from the start to its
    first task post answered, and its RSS right after that."""

    server: Server
    seconds: float
    cpu: float
    rss: float
    first_post: float
    rss_after_first_post: float


def start(name: str, env: dict[str, str], work: Path, root: Path, headers: dict[str, str]
          ) -> Started:
    """``name``'s server started from ``root``, once it answers ready and has answered its first
    task post (``headers``: the token and JSON)."""
    port = free_port()
    log = work / f"{name}.log"
    path = os.pathsep.join([str(root / "src"), str(root), *filter(None, [env.get("PYTHONPATH")])])
    with log.open("ab") as output:
        started = time.perf_counter()
        process = subprocess.Popen(
            [str(UVICORN), "--host", "127.0.0.1", "--port", str(port)], cwd=root,
            env={**env, "UVICORN_APP": APPS[name], "PYTHONPATH": path}, stdout=output,
            stderr=subprocess.STDOUT)
    server = Server(name, process, port, log)
    deadline = started + 60
    while not ready(port):
        if process.poll() is not None or time.perf_counter() > deadline:
            server.stop()
            sys.exit(f"{name} did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(READY_POLL)
    elapsed = time.perf_counter() - started
    cpu, rss = cpu_seconds(process.pid), float(rss_bytes(process.pid))
    server.post(headers)
    first_post = time.perf_counter() - started
    return Started(server, elapsed, cpu, rss, first_post, float(rss_bytes(process.pid)))


# The fields of Started measured at each start.
START_FIGURES = ("seconds", "cpu", "rss", "first_post", "rss_after_first_post")


def start_up(env: dict[str, str], work: Path, rounds: int, roots: dict[str, Path],
             headers: dict[str, str]) -> tuple[dict[str, dict[str, Measured]], dict[str, Server]]:
    """Each of START_FIGURES, one sample per round and variant (so each round's "block" is that
    sample); the last round's servers, still running."""
    names = list(roots)
    for name in names:  # untimed: each tree's bytecode written (a task posted), page cache warm
        start(name, env, work, roots[name], headers).server.stop()
    figures = {figure: {name: Measured([], []) for name in names} for figure in START_FIGURES}
    kept: dict[str, Server] = {}
    for round_index in range(rounds):
        first = round_index % len(names)
        for name in names[first:] + names[:first]:
            started = start(name, env, work, roots[name], headers)
            for figure, table in figures.items():
                value = getattr(started, figure)
                table[name].samples.append(value)
                table[name].blocks.append(value)
            if round_index == rounds - 1:
                kept[name] = started.server
            else:
                started.server.stop()
    return figures, kept


def show(title: str, unit: str, scale: float, results: dict[str, Measured],
         extra: Callable[[str], str] = lambda _: "") -> None:
    print(f"\n== {title}")
    print(f"{'variant':<8} {f'p50 {unit}':>10} {f'p25-p75 {unit}':>19} "
          f"{f'block p50s {unit}':>19}")
    for name, measured in results.items():
        low, high = (measured.quartiles() if len(measured.samples) > 1
                     else (measured.p50, measured.p50))
        print(f"{name:<8} {measured.p50 * scale:>10.2f} {low * scale:>9.2f}-{high * scale:<9.2f} "
              f"{min(measured.blocks) * scale:>9.2f}-{max(measured.blocks) * scale:<9.2f}"
              f"{extra(name)}")


def target(what: str, results: dict[str, Measured], limit: float) -> list[str]:
    """The target's line (ours / peer); with a ``before`` variant, before / peer (met or
    missed the same way) and ours / before too."""
    lines = []
    for name in ("before", "ours"):
        if name in results:
            value, low, high = ratio(results, name, "peer")
            lines.append(f"  {what}: {name} / peer: {value:.3f}x ({low:.3f}-{high:.3f})   "
                         f"target <= {limit}x: {'met' if value <= limit else 'MISSED'}")
    if "before" in results:
        value, low, high = ratio(results, "ours", "before")
        lines.append(f"  {what}: ours / before: {value:.3f}x ({low:.3f}-{high:.3f})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start-rounds", type=int, default=5,
                        help="starts of each app (start to ready, RSS)")
    parser.add_argument("--rounds", type=int, default=12, help="rounds of request blocks")
    parser.add_argument("--per-block", type=int, default=25, help="requests per block")
    parser.add_argument("--cpu-rounds", type=int, default=6,
                        help="blocks of 100 requests per app for the server's CPU per request")
    parser.add_argument("--before", type=Path, default=None,
                        help="another checkout's root: its demo API measured as 'before'")
    args = parser.parse_args()
    if args.before is not None and not (args.before / "src" / "api_service" / "app.py").is_file():
        parser.error(f"--before {args.before}: no src/api_service/app.py there")
    with tempfile.TemporaryDirectory() as workdir:
        work = Path(workdir)
        server = RedisServer(work)
        server.start()
        running: dict[str, Server] = {}
        try:
            admin = server.client()
            publish(admin, NAMESPACE, load_source(str(ROOT / "config" / "celery" / "source.py"),
                                                  "rpi"), source="bench")
            token = secrets.token_urlsafe(32)
            (work / "token").write_text(token + "\n")
            env = service_environment(server.url, work,
                                      CELERY_CONFIG_FALLBACK_PATH=str(work / "lkg.json"),
                                      CELERY_CONFIG_API_TOKEN_FILE=str(work / "token"),
                                      PYTHONPYCACHEPREFIX=str(work / "bytecode"))
            # Bytecode as in the images (compiled when the wheels are installed): written by
            # the untimed first start into this run's directory, then read by every start.
            # Without it, every start of ours would compile the library from source.
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            closing = run(args, env, work, token, admin, running)
        finally:
            for kept in running.values():
                kept.stop()
            server.stop()
    print("\ntargets (issue 20):")
    print("\n".join(closing))


def run(args: argparse.Namespace, env: dict[str, str], work: Path, token: str,
        admin: redis.Redis, running: dict[str, Server]) -> list[str]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    figures, kept = start_up(env, work, args.start_rounds, variant_roots(args.before), headers)
    seconds, memory = figures["seconds"], figures["rss"]
    running.update(kept)
    table: dict[str, Callable[[], None]] = {
        name: functools.partial(server.post, headers) for name, server in kept.items()}
    requests = measure(table, args.rounds, args.per_block)
    commands = {name: commands_per_call(admin, fn, 20) for name, fn in table.items()}
    cpu = cpu_per_request(kept, headers, args.cpu_rounds, 100)
    show(f"start to ready: {args.start_rounds} starts of each", "ms", 1e3, seconds)
    show(f"CPU to ready (user + system, every thread): {args.start_rounds} starts of each", "ms",
         1e3, figures["cpu"])
    show(f"idle RSS right after start: {args.start_rounds} starts of each", "MB", 1e-6, memory)
    show(f"start to the first task post answered: {args.start_rounds} starts of each", "ms", 1e3,
         figures["first_post"])
    show(f"RSS right after the first task post: {args.start_rounds} starts of each", "MB", 1e-6,
         figures["rss_after_first_post"])
    show(f"POST /tasks/{TASK}: {args.rounds} rounds x {args.per_block} requests per variant "
         "(Redis commands per request at the right)", "ms", 1e3, requests,
         lambda name: f" {commands[name]:>6.1f}")
    show(f"server CPU per request: {args.cpu_rounds} blocks of 100 requests each "
         "(user + system, all threads)", "ms", 1e3, cpu)
    print("RSS after the requests (one sample): " + ", ".join(
        f"{name} {rss_bytes(server.process.pid) / 1e6:.2f} MB" for name, server in kept.items()))
    for name in ("before", "ours"):
        if name in cpu:
            value, low, high = ratio(cpu, name, "peer")
            print(f"  server CPU per request: {name} / peer: {value:.3f}x ({low:.3f}-{high:.3f})")
    return [*target("POST /tasks/{name} p50", requests, 1.05),
            *target("start to ready, p50", seconds, 1.10),
            *target("CPU to ready, p50 (the same target, less noisy)", figures["cpu"], 1.10),
            *target("idle RSS right after start, p50", memory, 1.10),
            "both holding redis-py (printed beside the targets, see the module's docstring):",
            *target("start to the first task post answered, p50", figures["first_post"], 1.10),
            *target("RSS right after the first task post, p50",
                    figures["rss_after_first_post"], 1.10)]


if __name__ == "__main__":
    main()
