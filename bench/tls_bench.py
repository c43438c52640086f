"""Benchmark: what TLS between a service and Redis costs, printed, never asserted.

Two redis-servers started by the redis image's own entrypoint (ACL users; one with the TLS
material of compose/make-tls.sh), measured interleaved round by round in one process:

  connect   a new connection: TCP (+ TLS handshake), AUTH, PING; what a (re)connect pays
  re-read   RedisReader.load() of an unchanged config on a kept connection (one round trip
            of ~20 KB and a comparison): what the watcher pays per hint and per poll
  publish   a full publish (WATCH, MULTI/EXEC of every hash, PUBLISH) on a kept connection
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.redis_process import AclRedis, start_acl_redis  # noqa: E402

from celery_config_sync.loader import RedisReader  # noqa: E402
from celery_config_sync.publishing import publish  # noqa: E402
from celery_config_sync.source import load_source  # noqa: E402

NS = "celery_config"
ROUNDS = 300


def measures(server: AclRedis) -> dict[str, Callable[[], object]]:
    seeder = redis.Redis.from_url(server.url("seeder"), password=server.password("seeder"))
    document = load_source(str(ROOT / "config" / "celery" / "source.py"), "rpi")
    publish(seeder, NS, document, source="bench", force=True)
    reader = RedisReader(redis.Redis.from_url(server.url("worker"),
                                              password=server.password("worker")), NS)

    def connect() -> object:
        client = redis.Redis.from_url(server.url("worker"), password=server.password("worker"))
        try:
            return client.ping()
        finally:
            client.close()

    return {"connect": connect, "re-read": reader.load,
            "publish": lambda: publish(seeder, NS, document, source="bench", force=True)}


def main() -> None:
    with tempfile.TemporaryDirectory() as plain_dir, tempfile.TemporaryDirectory() as tls_dir:
        servers = {"plain": start_acl_redis(Path(plain_dir)),
                   "tls": start_acl_redis(Path(tls_dir), tls=True)}
        try:
            runs = {name: measures(server) for name, server in servers.items()}
            times: dict[tuple[str, str], list[float]] = {}
            for _ in range(ROUNDS):
                for name, actions in runs.items():
                    for what, action in actions.items():
                        started = time.perf_counter()
                        action()
                        times.setdefault((name, what), []).append(time.perf_counter() - started)
        finally:
            for server in servers.values():
                server.process.terminate()
                server.process.wait(10)
    print(f"TLS cost, this machine ({ROUNDS} rounds, interleaved; median, p99 in ms)")
    print(f"{'measure':<10}{'plain':>18}{'tls':>18}{'ratio':>8}")
    for what in ("connect", "re-read", "publish"):
        plain, tls = times[("plain", what)], times[("tls", what)]

        def show(samples: list[float]) -> str:
            ordered = sorted(samples)
            p99 = ordered[int(len(ordered) * 0.99) - 1]
            return f"{statistics.median(samples) * 1e3:.3f} / {p99 * 1e3:.3f}"

        ratio = statistics.median(tls) / statistics.median(plain)
        print(f"{what:<10}{show(plain):>18}{show(tls):>18}{ratio:>7.2f}x")


if __name__ == "__main__":
    main()
