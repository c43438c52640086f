"""Benchmark: ``load`` against the specification's loader and against the raw floor.

Printed, never asserted (these machines are noisy): every variant runs in the same process,
against the same redis-server, interleaved round by round, so the ratios are comparable.

  spec-style  new connection, PING, GET version, three HGETALL, per-field decode into kombu
  load        RedisReader.load(): one MULTI/EXEC round trip, sha256 check, full validation and
              decode (memo off: every call parses, like a first load)
  load+memo   the same reader as a service keeps it: decoding memoized on the exact bytes
  floor       one raw pipelined round trip of the same keys, no decoding at all

Targets (issue 2): load >= 3x faster than spec-style, within 1.5x of the floor, and exactly one
round trip per load (counted from the client socket and from INFO commandstats).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.redis_process import RedisServer  # noqa: E402

from celery_config_sync.codec import queue_from_dict  # noqa: E402
from celery_config_sync.loader import RedisReader  # noqa: E402
from celery_config_sync.redis_layout import Keys, publish, read_snapshot  # noqa: E402
from celery_config_sync.source import load_source  # noqa: E402

NS = "celery_config"
KEYS = Keys(NS)


class CountingConnection(redis.Connection):
    """Counts writes to the socket: one per round trip (a pipeline is sent in one write)."""

    round_trips = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.round_trips += 1
        super().send_packed_command(command, check_health)

    def on_connect(self) -> None:
        CountingConnection.round_trips += 1  # the TCP handshake is a round trip too
        super().on_connect()


def _str(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key


def spec_style_loader(port: int) -> Callable[[], Any]:
    """The specification's loader: a new client each call, PING, GET, three HGETALL, decode."""

    def load() -> dict[str, Any]:
        pool = redis.ConnectionPool(port=port, connection_class=CountingConnection)
        client = redis.Redis(connection_pool=pool, decode_responses=False)
        try:
            client.ping()
            version = client.get(KEYS.version)
            queues = client.hgetall(KEYS.queues)
            routes = client.hgetall(KEYS.routes)
            base = client.hgetall(KEYS.base)
            return {
                "version": int(version or 0),
                "task_queues": [queue_from_dict(json.loads(v)) for v in queues.values()],
                "task_routes": {_str(k): json.loads(v) for k, v in routes.items()},
                **{_str(k): json.loads(v) for k, v in base.items()},
            }
        finally:
            client.close()
            pool.disconnect()

    return load


def ours(client: redis.Redis, memo: bool) -> Callable[[], Any]:
    reader = RedisReader(client, NS)

    def load() -> Any:
        if not memo:
            reader._last = None  # force a full parse: the cost of a first load
        published = reader.load()
        return published.document.to_celery_settings() if not memo else published

    return load


def floor(client: redis.Redis) -> Callable[[], Any]:
    """The library's own one-round-trip read, nothing decoded."""
    return lambda: read_snapshot(client, NS)


def commands_per_call(client: redis.Redis, fn: Callable[[], Any], calls: int) -> float:
    def total() -> int:
        stats = client.info("commandstats")
        return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")

    before = total()
    for _ in range(calls):
        fn()
    return (total() - before - 1) / calls  # minus the INFO itself


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=200)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir:
        server = RedisServer(Path(workdir))
        server.start()
        try:
            run(server, args.rounds, args.per_round)
        finally:
            server.stop()


def run(server: RedisServer, rounds: int, per_round: int) -> None:
    document = load_source(str(ROOT / "config" / "celery" / "source.py"))
    admin = server.client()
    publish(admin, NS, document, source="bench")
    pool = redis.ConnectionPool(port=server.port, connection_class=CountingConnection)
    client = redis.Redis(connection_pool=pool)
    variants: dict[str, Callable[[], Any]] = {
        "spec-style": spec_style_loader(server.port),
        "load": ours(client, memo=False),
        "load+memo": ours(client, memo=True),
        "floor": floor(client),
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    trips: dict[str, float] = {}
    for fn in variants.values():
        fn()  # warm up: imports, connections, first decode
    for _ in range(rounds):
        for name, fn in variants.items():
            timings = samples[name]
            for _ in range(per_round):
                started = time.perf_counter()
                fn()
                timings.append(time.perf_counter() - started)
    for name, fn in variants.items():
        CountingConnection.round_trips = 0
        for _ in range(100):
            fn()
        trips[name] = CountingConnection.round_trips / 100
    commands = {name: commands_per_call(admin, fn, 100) for name, fn in variants.items()}

    def p(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100)[int(q) - 1] * 1e6

    print(f"config: {len(document.queues)} queues, {len(document.routes)} routes, "
          f"{len(document.base)} settings, {len(document.canonical())} bytes canonical")
    print(f"{rounds} interleaved rounds x {per_round} loads per variant, "
          "redis-server on loopback\n")
    print(f"{'variant':<12} {'loads/s':>9} {'p50 us':>8} {'p99 us':>8} {'round trips':>12} "
          f"{'commands':>9}")
    medians = {}
    for name, values in samples.items():
        medians[name] = statistics.median(values)
        print(f"{name:<12} {1 / statistics.mean(values):>9.0f} {p(values, 50):>8.1f} "
              f"{p(values, 99):>8.1f} {trips[name]:>12.2f} {commands[name]:>9.2f}")
    print("\nratios (p50):")
    for name in ("load", "load+memo"):
        speedup = medians["spec-style"] / medians[name]
        over_floor = medians[name] / medians["floor"]
        print(f"  {name:<10} {speedup:5.1f}x faster than spec-style (target >= 3x: "
              f"{'met' if speedup >= 3 else 'MISSED'}), {over_floor:4.2f}x the floor "
              f"(target <= 1.5x: {'met' if over_floor <= 1.5 else 'MISSED'})")
    print(f"  round trips per load: {trips['load']:.2f} (target 1: "
          f"{'met' if trips['load'] == 1 else 'MISSED'})")


if __name__ == "__main__":
    main()
