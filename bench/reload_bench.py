"""Benchmark: live reload, end to end, against a real redis-server, ``celery worker`` and API.

Printed, never asserted (these machines are noisy). One run, one redis-server of its own:

  API reload      publish() returning -> the API's "applied version N" log line (1 ms stamps),
                  cross-checked on some publishes by polling GET /config/status
  worker reload   publish() returning -> the worker's "applied version N" line, and its
                  "consuming from reports" line for the publishes that add that queue
  first message   publish() adding "reports" -> report.build, sent through the API, received
                  by the worker (its log) and SUCCESS (API result, polled every 50 ms)
  decode          in this process: cold decode, the raw floor (read_snapshot alone), the memo,
                  build_routing, and one round trip (PING)
  idle            per process: Redis connections, RSS, CPU over an idle window
  burst           50 publishes in a tight loop: how many times each service applies
  beat reload     publish() returning -> ``celery beat``'s "applied version N" line and its
                  "beat schedule applied live" line (each publish adds or removes an entry)

Publishes alternate between the source (rpi overlay) and the same plus queue "reports" with
route "report.build", so every publish is a real change. Targets (live reload issue): API p99
< 20 ms, worker p99 < 100 ms, cold decode <= floor + one round trip, watching costs at most one
Redis connection and 5 MB RSS per service and no measurable CPU when idle.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis
from kombu.entity import Exchange, Queue

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.polling import wait_for  # noqa: E402
from tests.redis_process import RedisServer  # noqa: E402
from tests.service_processes import Api, Service, start_api, start_beat, start_worker  # noqa: E402

from celery_config_sync.codec import ConfigDocument, queue_to_dict  # noqa: E402
from celery_config_sync.connection import make_client  # noqa: E402
from celery_config_sync.loader import LoadedConfig, RedisReader, remember  # noqa: E402
from celery_config_sync.publishing import publish  # noqa: E402
from celery_config_sync.routing import build_routing  # noqa: E402
from celery_config_sync.snapshot_decoding import Published, decode_snapshot  # noqa: E402
from celery_config_sync.snapshot_reading import read_snapshot  # noqa: E402
from celery_config_sync.source import load_source  # noqa: E402
from celery_config_sync.watcher import ConfigWatcher  # noqa: E402

NS = "celery_config"
TIMEOUT = 5.0  # per wait for a service to apply a version
# Our format (logging's default asctime, local time) and Celery's own ("[stamp: INFO/...]").
STAMP = re.compile(r"^\[?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})[ :]")
CONSUMING = r"\] consuming from reports"
STOPPED = r"\] stopped consuming from reports"
APPLIED = r"\] applied version (\d+) \(sha256"
PLAIN = load_source(str(ROOT / "config" / "celery" / "source.py"), "rpi")
REPORTS = ConfigDocument(
    {**PLAIN.queues, "reports": queue_to_dict(Queue("reports", Exchange("reports", "direct"),
                                                    routing_key="reports"))},
    {**PLAIN.routes, "report.build": {"queue": "reports"}},
    {**PLAIN.base, "beat_schedule": {**PLAIN.base.get("beat_schedule", {}), "hourly-report": {
        "task": "report.build", "schedule": 3600.0}}})
MERGED = r"\] beat schedule applied live"


def stamp_at(service: Service, pattern: str, index: int, timeout: float) -> float | None:
    """time.time() of the ``index``-th log line matching ``pattern``; None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = [STAMP.match(line) for line in service.lines(pattern)]
        stamps = [m.group(1) for m in found if m]
        if len(stamps) > index:
            return datetime.strptime(stamps[index], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if time.monotonic() > deadline:
            return None
        time.sleep(0.005)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan when there is no sample."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] if ordered else math.nan


# ------------------------------------------------------------------ 1-3: reload latencies
def latencies(client: redis.Redis, worker: Service, api: Api, beat: Service,
              rounds: int) -> tuple[dict[str, list[float]], int]:
    """Seconds from publish() returning to each observation, and how many waits timed out.
    Even publishes add queue "reports", odd ones remove it; one in six is also polled through
    /config/status, one in six (an addition) sends report.build as soon as the API applied."""
    got: dict[str, list[float]] = {name: [] for name in (
        "API (applied line)", "API by polling /config/status", "API (applied line), same ones",
        "worker (applied line)", "worker consuming reports", "first message received",
        "first message SUCCESS", "beat (applied line)", "beat schedule merged")}
    missed = 0
    # Api.get builds a new httpx client per call (~17 ms here, its SSL context): poll with one.
    with httpx.Client(base_url=api.url, timeout=10) as http:
        for index in range(rounds):
            adds = index % 2 == 0
            switch = CONSUMING if adds else STOPPED
            seen = len(worker.lines(switch))
            merged = len(beat.lines(MERGED))
            version = publish(client, NS, REPORTS if adds else PLAIN,
                              source=f"bench {index}").version
            published = time.time()
            applied = rf"\] applied version {version} \(sha256"
            if index % 6 == 3:
                while time.time() - published < TIMEOUT:
                    if http.get("/config/status").json()["version"] == version:
                        got["API by polling /config/status"].append(time.time() - published)
                        got["API (applied line), same ones"].append(
                            (stamp_at(api, applied, 0, TIMEOUT) or math.nan) - published)
                        break
            if index % 6 == 0 and stamp_at(api, applied, 0, TIMEOUT) is not None:
                sent = api.enqueue("report.build")
                if api.result(sent["id"])["state"] == "SUCCESS":
                    got["first message SUCCESS"].append(time.time() - published)
                received = stamp_at(worker, rf"report\.build\[{sent['id']}\] received", 0,
                                    TIMEOUT)
                if received is not None:
                    got["first message received"].append(received - published)
            for name, service, pattern, skip in (
                    ("API (applied line)", api, applied, 0),
                    ("worker (applied line)", worker, applied, 0),
                    ("worker consuming reports" if adds else "", worker, switch, seen),
                    ("beat (applied line)", beat, applied, 0),
                    ("beat schedule merged", beat, MERGED, merged)):
                at = stamp_at(service, pattern, skip, TIMEOUT)
                missed += at is None
                if at is not None and name:
                    got[name].append(at - published)
    return got, missed


# ------------------------------------------------------------------ 4: what a reload costs
def decode_costs(client: redis.Redis, workdir: Path, rounds: int,
                 per_round: int) -> dict[str, float]:
    """p50 seconds of each in-process step, interleaved round by round."""
    reader = RedisReader(client, NS)
    published = reader.load()
    variants: dict[str, Callable[[], Any]] = {
        "PING (one round trip)": client.ping,
        "floor: read_snapshot": lambda: read_snapshot(client, NS),
        "cold: decode_snapshot(read_snapshot)": lambda: decode_snapshot(
            read_snapshot(client, NS)),
        "memo: RedisReader.load, same bytes": reader.load,
        "build_routing(from_published)": lambda: build_routing(
            LoadedConfig.from_published(published)),
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            for _ in range(per_round):
                started = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    # Every apply also writes last-known-good (two fsyncs) and its digest: time it too.
    path, timings = str(workdir / "bench-lkg.json"), []
    for index in range(max(10, per_round // 2)):
        document = REPORTS if index % 2 else PLAIN
        loaded = LoadedConfig(document, index + 1, document.sha256, "redis")
        started = time.perf_counter()
        remember(path, loaded)
        timings.append(time.perf_counter() - started)
    medians["remember: last-known-good (2 fsyncs) and its digest"] = statistics.median(timings)
    return medians


# ------------------------------------------------------------------------ 5: idle cost
def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a worker's pool processes)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            pids += tree(int(child))
    return pids


def redis_connections(client: redis.Redis, pids: list[int]) -> tuple[int, int]:
    """(connections, of which subscribed) of ``pids`` in CLIENT LIST: a connection is theirs
    when its client port is the local port of a socket open in one of them (/proc fds matched
    to /proc/net/tcp inodes)."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd) if fd.is_symlink() else ""
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    mine = [c for c in client.client_list() if int(c["addr"].rsplit(":", 1)[1]) in ports]
    return len(mine), sum(1 for c in mine if int(c.get("sub", 0)) + int(c.get("psub", 0)))


def rss_mb(pids: list[int]) -> float:
    status = [Path(f"/proc/{pid}/status").read_text() for pid in pids]
    return sum(int(line.split()[1]) for text in status for line in text.splitlines()
               if line.startswith("VmRSS:")) / 1024


def cpu_ms(tasks: list[str]) -> float:
    """CPU time of threads (/proc/<pid>/task/<tid>), from schedstat: nanoseconds, where
    /proc/<pid>/stat counts 10 ms clock ticks."""
    return sum(int(Path(task, "schedstat").read_text().split()[0]) for task in tasks) / 1e6


def idle_costs(server: RedisServer, client: redis.Redis, workdir: Path, worker: Service,
               seconds: float) -> list[tuple[str, int, int, float, float]]:
    """(row, connections, subscribed, RSS MB, CPU ms over the window) per process; the last row
    is a ConfigWatcher started in this process: what it adds, its own thread's CPU."""
    services = [worker]
    reader = RedisReader(make_client(server.url), NS)
    watcher: ConfigWatcher[Published] = ConfigWatcher(
        reader.load, NS, server.url, on_read=lambda _: None, on_failure=lambda _: None)
    try:
        for live in ("on", "off"):
            services.append(start_api(server.url, workdir, name=f"api-idle-{live}",
                                      CELERY_CONFIG_LIVE_RELOAD=str(live == "on").lower()))
        reader.load()  # the reader a service has anyway: its connection is not the watcher's
        me = [os.getpid()]
        (conns, subs), rss = redis_connections(client, me), rss_mb(me)
        watcher.start()
        wait_for(lambda: watcher.rereads, 10, "the watcher's first read")
        thread = [f"/proc/self/task/{t.native_id}" for t in threading.enumerate()
                  if t.name == "celery-config-watcher"]
        rows = [(f"{s.name} (live reload {'off' if s.name.endswith('off') else 'on'})",
                 tree(s.pid)) for s in services]
        tasks = {name: [str(t) for p in pids for t in Path(f"/proc/{p}/task").iterdir()]
                 for name, pids in rows}
        time.sleep(1.0)  # let start-up settle
        start = {name: cpu_ms(paths) for name, paths in tasks.items()}
        start_thread = cpu_ms(thread)
        time.sleep(seconds)
        result = [(name, *redis_connections(client, pids), rss_mb(pids),
                   cpu_ms(tasks[name]) - start[name]) for name, pids in rows]
        (conns_after, subs_after), rss_after = redis_connections(client, me), rss_mb(me)
        return [*result, ("ConfigWatcher alone (added)", conns_after - conns, subs_after - subs,
                          rss_after - rss, cpu_ms(thread) - start_thread)]
    finally:
        watcher.stop()
        reader.client.close()
        for service in services[1:]:
            service.stop()


# ----------------------------------------------------------------------------- 6: burst
def burst(client: redis.Redis, worker: Service, api: Api, count: int) -> list[str]:
    before = {s.name: len(s.lines(APPLIED)) for s in (worker, api)}
    last = 0
    for index in range(count):
        last = publish(client, NS, PLAIN if index % 2 else REPORTS, source=f"burst {index}").version
    report = []
    for service in (worker, api):
        stamp_at(service, rf"\] applied version {last} \(sha256", 0, 10.0)
        applied = service.lines(APPLIED)
        final = re.search(APPLIED, applied[-1])
        report.append(f"  {service.name:<7} applied {len(applied) - before[service.name]:>2} "
                      f"times for {count} publishes, ended on version "
                      f"{final.group(1) if final else '?'} (last published {last})")
    return report


# ------------------------------------------------------------------------------ report
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60, help="publishes timed end to end")
    parser.add_argument("--decode-rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=100)
    parser.add_argument("--idle", type=float, default=10.0, help="idle window, seconds")
    parser.add_argument("--burst", type=int, default=50)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        server = RedisServer(workdir)
        server.start()
        services: list[Service] = []
        try:
            client = server.client()
            publish(client, NS, PLAIN, source="bench start")
            worker = start_worker(server.url, workdir, "--concurrency", "2")
            services.append(worker)
            api = start_api(server.url, workdir)
            services.append(api)
            beat = start_beat(server.url, workdir)
            services.append(beat)
            run(args, server, client, workdir, worker, api, beat)
        finally:
            for service in reversed(services):
                service.stop()
            server.stop()


def run(args: argparse.Namespace, server: RedisServer, client: redis.Redis, workdir: Path,
        worker: Service, api: Api, beat: Service) -> None:
    ms = 1e3
    print(f"config: {len(REPORTS.queues)} queues, {len(REPORTS.routes)} routes, "
          f"{len(REPORTS.base)} settings; worker --concurrency 2, API under uvicorn, celery beat, "
          f"{os.cpu_count()} CPUs, redis-server on loopback\n")
    got, missed = latencies(client, worker, api, beat, args.rounds)
    print(f"reload latency: {args.rounds} publishes, each waited for (timeouts: {missed}); "
          "from publish() returning, ms")
    print(f"  {'observed':<32} {'n':>3} {'p50':>7} {'p99':>7} {'max':>7}")
    for name, values in got.items():
        print(f"  {name:<32} {len(values):>3} {pct(values, 50) * ms:>7.1f} "
              f"{pct(values, 99) * ms:>7.1f} {pct(values, 100) * ms:>7.1f}")
    print("  log stamps have 1 ms resolution (truncated); polling adds one HTTP round trip on a\n"
          "  kept-alive connection; the log line comes after the switch (and the last-known-good\n"
          "  write), so the polled value can be the lower one.\n"
          "  first message: kombu's redis transport picks an added queue up at its next BRPOP\n"
          "  (1 s cycle), so up to ~1 s is expected; SUCCESS adds api.result's polling (50 ms\n"
          "  sleeps, and ~17 ms per Api.get, which builds a new httpx client each call).\n")

    costs = decode_costs(client, workdir, args.decode_rounds, args.per_round)
    trip = costs["PING (one round trip)"]
    floor = costs["floor: read_snapshot"]
    cold = costs["cold: decode_snapshot(read_snapshot)"]
    print(f"what every reload pays in-process: p50 of {args.decode_rounds} x {args.per_round}")
    for name, value in costs.items():
        print(f"  {name:<40} {value * 1e6:>8.1f} us")
    print(f"  cold / floor {cold / floor:.2f}x; cold - floor = {(cold - floor) * 1e6:.1f} us "
          f"= {(cold - floor) / trip:.2f} round trips\n")

    idle = idle_costs(server, client, workdir, worker, args.idle)
    print(f"idle for {args.idle:g} s, whole process trees; a CLIENT LIST entry is a process's when"
          "\nits port is a socket the process holds (/proc/<pid>/fd -> /proc/net/tcp inode)")
    print(f"  {'process':<32} {'redis conns':>11} {'subscribed':>10} {'RSS MB':>7} "
          f"{'CPU ms':>7}")
    for name, conns, subs, rss, cpu in idle:
        print(f"  {name:<32} {conns:>11} {subs:>10} {rss:>7.1f} {cpu:>7.1f}")
    print("  live reload off still runs the watcher (heartbeat, subscriber, re-reads), so on vs\n"
          "  off differ by nothing; the watcher's own cost is the last row (its thread's CPU).\n")

    print(f"burst: {args.burst} publishes in a tight loop")
    print("\n".join(burst(client, worker, api, args.burst)) + "\n")

    watcher = idle[-1]
    print(f"{'target (live reload issue)':<30} {'measured':>10} {'target':>9}  {'unit':<12} "
          f"{'measured/target':>15}")
    for name, value, target, unit in (
            ("API reload p99", pct(got["API (applied line)"], 99) * ms, 20.0, "ms"),
            ("worker reload p99 (applied)", pct(got["worker (applied line)"], 99) * ms, 100.0,
             "ms"),
            ("worker consuming p99", pct(got["worker consuming reports"], 99) * ms, 100.0, "ms"),
            ("beat schedule merged p99", pct(got["beat schedule merged"], 99) * ms, 100.0,
             "ms"),
            ("cold decode - floor", (cold - floor) / trip, 1.0, "round trips"),
            ("watching: extra redis conns", float(watcher[1]), 1.0, "conns"),
            ("watching: extra RSS", watcher[3], 5.0, "MB"),
            ("watching: idle CPU", watcher[4], 0.0, f"ms/{args.idle:g}s")):
        ratio = f"{value / target:.2f}" if target else f"{value / args.idle / 10:.3f}% CPU"
        print(f"{name:<30} {value:>10.2f} {'<= ' + f'{target:g}':>9}  {unit:<12} {ratio:>15}")


if __name__ == "__main__":
    main()
