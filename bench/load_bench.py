"""Benchmark: ``load_config(env)`` against the new-connection floor and against the peer.

Printed, never asserted (these machines are noisy). Every variant runs in the same process,
against the same redis-server, in rotating blocks (round r starts with the r-th variant), so
that a slow moment of the machine falls on every variant alike; each figure is the median of
every call, with its spread: the interquartile range and the range of the per-block medians.
A ratio is that of the medians, with the range of the same ratio taken round by round; beside
it, the ratio of the median CPU time this process spent per call (time.thread_time), which
leaves out the waits for Redis and for the other jobs of a shared machine (on a loaded one,
the wall-time ratios swing from run to run, the CPU ratios much less).

Two configurations: ``realistic`` (config/celery/source.py, the demo's) and ``big`` (200
queues, 2,000 routes, 60 settings: bench/big_config.py, written as a settings module).

  load_config   ``load_config(env)`` as a service (re)starts on the configuration it ran: a
                new client, one read, sha256 and field layout matched against the record of
                validated content beside last-known-good (validated_content.py), the text
                parsed whole, last-known-good found up to date
  +settings     the same and its ``.settings`` (kombu Queues built): what the peer delivers
  new release   ``load_config(env)`` when that record is another release's (the first start
                after an upgrade, or a config this service never validated): strict decoding
                of every field and validation in full, then the record written (digest only)
  live re-read  the watcher's re-read of a new version on its kept client: read, checks,
                decoding (nothing memoized), kombu Queues built
  1 route       the same when the new version changes one route of the last one: the whole is
                hashed, one field parsed and validated (proportional re-read), Queues built
  unchanged     the watcher's re-read when nothing changed (memoized on the exact bytes)
  floor         a new redis-py client with the same handshake as ours (connection.py:
                LEAN_HANDSHAKE), one pipelined read of the same keys, nothing decoded, closed
  floor kept    the same read on a kept connection: the floor of a live re-read
  floor default the floor with redis-py's default client: it looks its own version up in the
                package metadata on every new connection, sends HELLO and two CLIENT SETINFO
  spec-style    the specification's loader: new client, PING, GET, three HGETALL, json.loads
  peer          what a Celery user runs without us: a fresh import of the same settings module
                and ``config_from_object`` on a new app, its settings read once

Targets (issue 20): load_config <= 1.3x the floor, and with its settings <= 2.5x the peer, on
the realistic source; the big configuration's load_config <= 3x its floor. Also shown: Redis
commands per call (INFO commandstats), the parser (hiredis when installed), and what a process
pays once for the rules' fingerprint (validated_content.rules_fingerprint), which every variant
here has already paid.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import redis
from redis.utils import HIREDIS_AVAILABLE

from celery import Celery

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.redis_process import RedisServer  # noqa: E402

from bench.big_config import big_source  # noqa: E402
from celery_config_sync.codec import ConfigDocument, queue_from_dict  # noqa: E402
from celery_config_sync.connection import LEAN_HANDSHAKE  # noqa: E402
from celery_config_sync.environment import Environment  # noqa: E402
from celery_config_sync.fallback_files import digest_path  # noqa: E402
from celery_config_sync.loader import RedisReader, load_config  # noqa: E402
from celery_config_sync.publishing import publish  # noqa: E402
from celery_config_sync.redis_keys import Keys  # noqa: E402
from celery_config_sync.snapshot_decoding import Decoded  # noqa: E402
from celery_config_sync.snapshot_reading import read_snapshot  # noqa: E402
from celery_config_sync.source import load_source  # noqa: E402
from celery_config_sync.validated_content import rules_fingerprint  # noqa: E402

Variant = Callable[[], Any]
# Every client here, ours and the floors, connects to the same address: redis-py's default host,
# "localhost", costs a name lookup on each new connection (about 0.06 ms here) that our load,
# given 127.0.0.1, does not pay; the floors of issue 20's first two rounds paid it.
HOST = "127.0.0.1"
NEXT_ROUTE = "bench.one_more_route"  # the route the "1 route" variant's new version adds


@dataclass(frozen=True)
class Case:
    """One configuration to measure: its settings module and how many calls per block."""

    name: str
    source: Path
    per_block: int


def _str(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key


def fresh_import(path: Path) -> ModuleType:
    """The module at ``path`` imported anew (its cached bytecode used, as at a process start)."""
    spec = importlib.util.spec_from_file_location("peer_settings", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def variants(case: Case, env: Environment, port: int, kept: redis.Redis,
             previous: Decoded) -> tuple[dict[str, Variant], dict[str, Variant]]:
    """The variants, and what runs untimed before each call of some of them."""
    namespace = env.namespace
    keys = Keys(namespace)
    reader = RedisReader(kept, namespace)
    watcher = RedisReader(kept, namespace)
    following = RedisReader(kept, f"{namespace}_next")
    digest = digest_path(env.fallback_path)

    def ours() -> Any:
        return load_config(env)

    def ours_with_settings() -> Any:
        return load_config(env).settings

    def another_release() -> None:
        recorded = json.loads(digest.read_text())
        recorded["validated"]["release"] = "another release"
        digest.write_text(json.dumps(recorded))

    def live_reread() -> Any:
        reader._last = None  # a new version: nothing to reuse
        return reader.load().document.to_celery_settings()

    def one_route() -> Any:
        following._last = previous  # the version before: all but one route the same
        return following.load().document.to_celery_settings()

    def floor(options: dict[str, Any]) -> Variant:
        def read() -> Any:
            client = redis.Redis(host=HOST, port=port, **options)
            try:
                return read_snapshot(client, namespace)
            finally:
                client.close()
        return read

    def spec_style() -> Any:
        client = redis.Redis(host=HOST, port=port)
        try:
            client.ping()
            version = client.get(keys.version)
            queues, routes, base = (client.hgetall(keys.section(name))
                                    for name in ("queues", "routes", "base"))
            return {"version": int(version or 0),
                    "task_queues": [queue_from_dict(json.loads(v)) for v in queues.values()],
                    "task_routes": {_str(k): json.loads(v) for k, v in routes.items()},
                    **{_str(k): json.loads(v) for k, v in base.items()}}
        finally:
            client.close()

    def peer() -> Any:
        app = Celery("peer", set_as_current=False)
        app.config_from_object(fresh_import(case.source))
        return app.conf.task_routes

    table: dict[str, Variant] = {
        "load_config": ours,
        "+settings": ours_with_settings,
        "new release": ours,
        "live re-read": live_reread,
        "1 route": one_route,
        "unchanged": watcher.load,
        "floor": floor(LEAN_HANDSHAKE),
        "floor kept": lambda: read_snapshot(kept, namespace),
        "floor default": floor({}),
        "spec-style": spec_style,
        "peer": peer,
    }
    if case.name != "realistic":  # the specification's layout comparison is issue 2's, once
        del table["spec-style"], table["floor default"]
    return table, {"new release": another_release}


def commands_per_call(admin: redis.Redis, fn: Variant, calls: int,
                      prepare: Variant | None = None) -> float:
    def total() -> int:
        stats = admin.info("commandstats")
        return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")

    before = total()
    for _ in range(calls):
        if prepare is not None:
            prepare()
        fn()
    return (total() - before) / calls


@dataclass
class Measured:
    samples: list[float]
    blocks: list[float]  # the median of each block, round by round
    # This thread's CPU time per call (time.thread_time): no waiting in it. Left empty by
    # benches that share this class and measure the CPU elsewhere (api_bench: the server's).
    cpu: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return statistics.median(self.samples)

    def quartiles(self) -> tuple[float, float]:
        q = statistics.quantiles(self.samples, n=4)
        return q[0], q[2]


def measure(table: dict[str, Variant], rounds: int, per_block: int,
            prepare: dict[str, Variant] | None = None) -> dict[str, Measured]:
    """Each variant's calls in rotating blocks; ``prepare``'s (untimed) before each call."""
    names = list(table)
    results = {name: Measured([], [], []) for name in names}
    for fn in table.values():
        fn()  # warm up: imports, first connection, last-known-good written
    for round_index in range(rounds):
        start = round_index % len(names)
        for name in names[start:] + names[:start]:
            fn, block, cpu = table[name], [], []
            setup = (prepare or {}).get(name)
            for _ in range(per_block):
                if setup is not None:
                    setup()  # untimed
                started, cpu_started = time.perf_counter(), time.thread_time()
                fn()
                block.append(time.perf_counter() - started)
                cpu.append(time.thread_time() - cpu_started)
            results[name].samples.extend(block)
            results[name].cpu.extend(cpu)
            results[name].blocks.append(statistics.median(block))
    return results


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def ratio(results: dict[str, Measured], a: str, b: str) -> tuple[float, float, float]:
    """p50(a) / p50(b), and the least and greatest of the same ratio round by round."""
    per_round = [x / y for x, y in zip(results[a].blocks, results[b].blocks, strict=True)]
    return results[a].p50 / results[b].p50, min(per_round), max(per_round)


def report(case: Case, document_sizes: str, results: dict[str, Measured],
           commands: dict[str, float], rounds: int) -> list[str]:
    print(f"\n== {case.name}: {document_sizes}; {rounds} rounds x {case.per_block} calls "
          "per variant")
    print(f"{'variant':<14} {'p50 ms':>8} {'p25-p75 ms':>17} {'block p50s ms':>17} "
          f"{'cpu p50 ms':>10} {'commands':>9}")
    for name, measured in results.items():
        low, high = measured.quartiles()
        print(f"{name:<14} {ms(measured.p50):>8} {ms(low):>8}-{ms(high):<8} "
              f"{ms(min(measured.blocks)):>8}-{ms(max(measured.blocks)):<8} "
              f"{ms(statistics.median(measured.cpu)):>10} {commands[name]:>9.1f}")
    targets = [("load_config", "floor", 3.0 if case.name == "big" else 1.3),
               ("+settings", "floor", None), ("new release", "floor", None),
               ("new release", "load_config", None), ("live re-read", "floor kept", None),
               ("1 route", "floor kept", None), ("1 route", "live re-read", None),
               ("unchanged", "floor kept", None)]
    if case.name == "realistic":
        targets += [("+settings", "peer", 2.5), ("spec-style", "+settings", None),
                    ("floor default", "floor", None)]
    else:
        targets += [("+settings", "peer", None)]
    lines = []
    print("ratios, p50 (range over rounds) [the same ratio of this process's CPU per call]:")
    for a, b, target in targets:
        value, low, high = ratio(results, a, b)
        cpu = statistics.median(results[a].cpu) / statistics.median(results[b].cpu)
        verdict = "" if target is None else (
            f"   target <= {target}x: {'met' if value <= target else 'MISSED'}")
        line = (f"  {case.name}: {a} / {b}: {value:.2f}x ({low:.2f}-{high:.2f}) "
                f"[cpu {cpu:.2f}x]{verdict}")
        print(line)
        if target is not None:
            lines.append(line)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--per-block", type=int, default=25,
                        help="calls per block for the realistic configuration")
    parser.add_argument("--big-per-block", type=int, default=4,
                        help="calls per block for the big configuration")
    args = parser.parse_args()
    print(f"redis-py {redis.__version__}, parser: "
          f"{'hiredis' if HIREDIS_AVAILABLE else 'pure Python'}; figures in ms")
    print(fingerprint_cost())
    with tempfile.TemporaryDirectory() as workdir:
        work = Path(workdir)
        (work / "big_settings.py").write_text(big_source())
        cases = [Case("realistic", ROOT / "config" / "celery" / "source.py", args.per_block),
                 Case("big", work / "big_settings.py", args.big_per_block)]
        server = RedisServer(work)
        server.start()
        try:
            closing = [line for case in cases
                       for line in run_case(case, server, work, args.rounds)]
        finally:
            server.stop()
    print("\ntargets (issue 20):")
    print("\n".join(closing))


def run_case(case: Case, server: RedisServer, work: Path, rounds: int) -> list[str]:
    document = load_source(str(case.source))
    namespace = f"bench_{case.name}"
    admin = server.client()
    publish(admin, namespace, document, source="bench")
    env = Environment(redis_url=f"redis://{HOST}:{server.port}/0", namespace=namespace,
                      fallback_path=str(work / f"{case.name}-lkg.json"),
                      snapshot_path=str(work / "absent.json"))
    kept = redis.Redis(host=HOST, port=server.port, **LEAN_HANDSHAKE)
    previous = following_version(admin, kept, f"{namespace}_next", document)
    table, prepare = variants(case, env, server.port, kept, previous)
    results = measure(table, rounds, case.per_block, prepare)
    commands = {name: commands_per_call(admin, fn, 10, prepare.get(name))
                for name, fn in table.items()}
    sizes = (f"{len(document.queues)} queues, {len(document.routes)} routes, "
             f"{len(document.base)} settings, {len(document.canonical())} bytes canonical")
    return report(case, sizes, results, commands, rounds)


def following_version(admin: redis.Redis, kept: redis.Redis, namespace: str,
                      document: ConfigDocument) -> Decoded:
    """Publish ``document`` under ``namespace`` and decode it, then publish it again with one
    route more (to its first queue): the "1 route" variant re-reads that version from this
    one, as a watcher does after a publish that changes one route."""
    publish(admin, namespace, document, source="bench")
    reader = RedisReader(kept, namespace)
    reader.load()
    assert reader._last is not None
    queue = next(iter(document.queues))
    publish(admin, namespace, ConfigDocument(
        document.queues, {**document.routes, NEXT_ROUTE: {"queue": queue}}, document.base,
        document.app), source="bench")
    return reader._last


def fingerprint_cost(calls: int = 50) -> str:
    """What the first load of a process pays once for the rules' fingerprint."""
    samples = []
    for _ in range(calls):
        rules_fingerprint.cache_clear()
        started = time.perf_counter()
        rules_fingerprint()
        samples.append(time.perf_counter() - started)
    return (f"rules fingerprint, once per process: {ms(statistics.median(samples))} ms "
            f"(median of {calls}, p25-p75 "
            f"{' - '.join(ms(q) for q in statistics.quantiles(samples, n=4)[::2])} ms)")


if __name__ == "__main__":
    main()
