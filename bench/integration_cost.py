"""Benchmark: what ``celery_config_sync.celery.attach(app)`` costs a worker and a producer.

Printed, never asserted (these machines are noisy). One run, one redis-server of its own, the
source config/celery/source.py with its rpi overlay, two apps under bench/apps with the same
no-op task (``demo.noop``, result ignored) and the same settings:

  attached  ``attach(app)``; its settings come from ``celery-config publish --overlay rpi``
  plain     ``config_from_object`` of the same source and overlay (bench/apps/rpi_settings.py),
            no celery-config-sync at all

1. Worker throughput: a real ``celery worker`` of each app (``--pool prefork --concurrency 2``
   and ``--pool solo``, log level WARNING, no gossip, mingle or heartbeat) drains the same
   pre-filled queue: N messages sent once by the plain app, saved, and restored byte for byte
   before each run. Timed from outside, the same way for both: this process polls the queue's
   lists and kombu's ``unacked`` hash (one pipelined round trip every 2-5 ms) from the first
   message taken to the last one acked (``task_acks_late``, as the source sets), with the CPU
   time and minor page faults of the worker's process tree over the same span (prefork: its
   main process and its children apart, reaped ones included). Runs alternate the variants,
   and each round starts with the one that ended the previous round. The first round also asks each
   worker what it applies (``celery inspect stats``: prefetch, concurrency, max tasks per
   child), after its timed span, so that a setting the CLI decided on its own shows.
   ``--attached-args`` adds command-line options to the attached worker only.
2. ``send_task`` per call, wall clock and the sending thread's CPU: one producer process per
   app (the attached one after ``sync.start()``: live routing in ``app.amqp``, the watcher
   running; the plain one routes by its static ``task_routes``; and the plain one again with
   its settings as a dict, bench/apps/plain_dict_app.py), the same mix of routed task names,
   ``ignore_result=True``, in rotating blocks, against the same redis-server.
3. The per-task hook of a prefork child (``task_prerun``: adopt what the parent applied),
   timed in this process with an unchanged shared slot; a plain worker has no ``task_prerun``
   receiver, and Celery's tracer then skips the signal entirely.

Targets (issue 16): the integration costs a worker at most 3% of its throughput, and a send at
most 50 us.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kombu
import redis

import celery

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]  # this checkout's library, and bench.apps

from celery.signals import task_prerun  # noqa: E402
from tests.redis_process import RedisServer  # noqa: E402
from tests.service_processes import BIN, service_environment  # noqa: E402

from bench.apps import noop  # noqa: E402
from celery import Celery  # noqa: E402
from celery_config_sync.celery import attach  # noqa: E402
from celery_config_sync.child_slot import SharedSlot  # noqa: E402
from celery_config_sync.environment import Environment  # noqa: E402

SOURCE = ROOT / "config" / "celery" / "source.py"
OVERLAY = "rpi"
VARIANTS = ("plain", "attached")
# send_task also against the plain app with its settings as a dict (bench/apps/plain_dict_app.py)
PRODUCERS = ("plain", "plain-dict", "attached")
POOLS = {"prefork": ("--pool", "prefork", "--concurrency", "2"), "solo": ("--pool", "solo")}
WORKER_FLAGS = ("--loglevel", "WARNING", "--without-gossip", "--without-mingle",
                "--without-heartbeat")
# What a producer sends, in turn: exact routes (one with a topic routing key, one with a
# priority), globs ("maintenance.*", "demo.*") and a name no route matches (default queue).
SEND_NAMES = ("scan.discovery", "covers.fetch_album", "priority.user_request",
              "maintenance.anything", noop.NAME, "unrouted.task")
DRAIN_TIMEOUT = 300.0
SIGNAL = "task_prerun.send() with the handler"
SETTLE = 0.5  # s after the last ack, before the worker's CPU time is read


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] if ordered else math.nan


def environment(server: RedisServer, workdir: Path, name: str, **extra: str) -> dict[str, str]:
    """A service's environment (tests/service_processes), with this checkout on the path."""
    return service_environment(server.url, workdir,
                               CELERY_CONFIG_FALLBACK_PATH=str(workdir / f"{name}-lkg.json"),
                               PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{ROOT}", **extra)


# ------------------------------------------------------------------- 0: the same settings
def same_settings(attached: Celery, plain: Celery) -> list[str]:
    """The published settings on which the two apps disagree (none, when all is well)."""
    sync = attach(attached)
    differ = []
    for name in sorted(sync.current.loaded.settings):
        mine, theirs = attached.conf.get(name), plain.conf.get(name)
        if name == "task_queues":
            mine, theirs = ({q.name: q for q in mine or ()}, {q.name: q for q in theirs or ()})
        if mine != theirs:
            differ.append(f"{name}: attached {mine!r} != plain {theirs!r}")
    # What a worker consumes and how a send routes: app.amqp, which attach() replaces.
    if dict(attached.amqp.queues) != dict(plain.amqp.queues):
        differ.append(f"app.amqp.queues: attached {sorted(attached.amqp.queues)} != plain "
                      f"{sorted(plain.amqp.queues)}")
    for name in SEND_NAMES:
        mine, theirs = (app.amqp.router.route({}, name) for app in (attached, plain))
        if mine != theirs:
            differ.append(f"route of {name}: attached {mine!r} != plain {theirs!r}")
    return differ


# ---------------------------------------------------------------------- 1: worker throughput
@dataclass
class Backlog:
    """The pre-filled queue: each list kombu wrote, saved once, restored before each run."""

    client: redis.Redis
    lists: dict[Any, list[Any]]  # list key -> its messages, head first

    @classmethod
    def fill(cls, client: redis.Redis, app: Celery, count: int) -> Backlog:
        before = {key for key in client.scan_iter() if client.type(key) == b"list"}
        with app.producer_or_acquire() as producer:
            for _ in range(count):
                app.send_task(noop.NAME, ignore_result=True, producer=producer)
        keys = [key for key in client.scan_iter()
                if client.type(key) == b"list" and key not in before]
        lists = {key: client.lrange(key, 0, -1) for key in keys}
        if sum(map(len, lists.values())) != count:
            raise RuntimeError(f"expected {count} messages in {keys}, found "
                               f"{sum(map(len, lists.values()))}")
        return cls(client, lists)

    @property
    def count(self) -> int:
        return sum(map(len, self.lists.values()))

    def restore(self) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(*self.lists, "unacked", "unacked_index")
        for key, values in self.lists.items():
            for start in range(0, len(values), 1000):
                pipe.rpush(key, *values[start:start + 1000])
        pipe.execute()

    def outstanding(self) -> tuple[int, int]:
        """(messages waiting in the lists, messages delivered and not acked yet)."""
        pipe = self.client.pipeline(transaction=False)
        for key in self.lists:
            pipe.llen(key)
        pipe.hlen("unacked")
        found = pipe.execute()
        return sum(found[:-1]), found[-1]


@dataclass(frozen=True)
class TreeSample:
    """A worker's process tree at one instant: CPU seconds and minor page faults of its main
    process (every thread), and of its pool children, live or reaped."""

    cpu: float
    children_cpu: float
    faults: int
    children_faults: int

    def __sub__(self, other: TreeSample) -> TreeSample:
        return TreeSample(self.cpu - other.cpu, self.children_cpu - other.children_cpu,
                          self.faults - other.faults, self.children_faults - other.children_faults)


@dataclass
class Drain:
    startup: float  # worker spawned -> first message taken, s
    seconds: float  # first message taken -> last one acked
    tree: TreeSample  # what the worker's process tree spent over (about) the same span
    tasks: int
    effective: dict[str, Any] | None = None  # what the running worker reports (first round)
    rss_mb: float = math.nan  # its main process's resident memory after the run (first round)

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds

    @property
    def cpu_per_task(self) -> float:
        return (self.tree.cpu + self.tree.children_cpu) / self.tasks


def _stat(pid: int | str) -> list[str]:
    """/proc/<pid>/stat's fields from the third (state) on: field N of proc(5) is [N - 3]."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _thread_ns(pid: int | str) -> int:
    """CPU nanoseconds of every thread of ``pid`` (schedstat: ns, where stat counts ticks)."""
    return sum(int(Path(task, "schedstat").read_text().split()[0])
               for task in Path(f"/proc/{pid}/task").iterdir())


def tree_sample(pid: int) -> TreeSample:
    """The worker ``pid``'s tree now. Its reaped children count through cutime, cstime and
    cminflt (prefork replaces a child every worker_max_tasks_per_child tasks); sampled again
    when a child is reaped while the live ones are read."""
    ticks = os.sysconf("SC_CLK_TCK")
    for _ in range(100):
        try:
            before = _stat(pid)
            cpu, faults = _thread_ns(pid), int(before[7])  # minflt
            children_ns, children_faults = 0, int(before[8])  # cminflt
            for task in Path(f"/proc/{pid}/task").iterdir():
                for child in (task / "children").read_text().split():
                    children_ns += _thread_ns(child)
                    children_faults += int(_stat(child)[7])
            after = _stat(pid)
            if [after[i] for i in (8, 13, 14)] == [before[i] for i in (8, 13, 14)]:
                # nothing reaped meanwhile (cminflt, cutime, cstime unchanged)
                reaped = (int(before[13]) + int(before[14])) / ticks  # cutime + cstime
                return TreeSample(cpu / 1e9, reaped + children_ns / 1e9, faults, children_faults)
        except (FileNotFoundError, ProcessLookupError):
            pass  # a child exited while read: sample again
    raise RuntimeError(f"could not sample the process tree of {pid}")


def effective_settings(control: Celery, hostname: str) -> dict[str, Any]:
    """What a running worker applies (``celery inspect stats``), where the CLI may have
    decided before the app's configuration was read."""
    replies = control.control.inspect(destination=[hostname], timeout=5).stats() or {}
    stats = replies.get(hostname) or {}
    pool = stats.get("pool") or {}
    return {"prefetch_count": stats.get("prefetch_count"),
            "max-concurrency": pool.get("max-concurrency"),
            "max-tasks-per-child": pool.get("max-tasks-per-child")}


def drain(server: RedisServer, workdir: Path, backlog: Backlog, variant: str, pool: str,
          index: int, *, extra: tuple[str, ...] = (), control: Celery | None = None) -> Drain:
    """One worker of ``variant`` drains the restored backlog, then tells what it applies (when
    given ``control``, an app on the same broker) and is stopped (cold shutdown: by then every
    message is acked)."""
    backlog.restore()
    name = f"{variant}-{pool}-{index}"
    hostname = f"{name}@bench"
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        spawned = time.perf_counter()
        process = subprocess.Popen(
            [str(BIN / "celery"), "--app", f"bench.apps.{variant}_app", "worker",
             "--hostname", hostname, *WORKER_FLAGS, *POOLS[pool], *extra],
            cwd=ROOT, env=environment(server, workdir, name), stdout=log,
            stderr=subprocess.STDOUT)
    try:
        def wait(done: Callable[[tuple[int, int]], bool], interval: float) -> float:
            deadline = time.monotonic() + DRAIN_TIMEOUT
            while not done(backlog.outstanding()):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker {name} exited or stalled:\n"
                                       f"{log_path.read_text(errors='replace')[-3000:]}")
                time.sleep(interval)
            return time.perf_counter()

        first = wait(lambda left: left[0] < backlog.count, 0.002)
        at_first = tree_sample(process.pid)
        last = wait(lambda left: left == (0, 0), 0.005)
        # The child that took the last task may be being replaced (max tasks per child): let
        # the tree settle before reading its CPU time (idle, the worker spends next to none).
        time.sleep(SETTLE)
        run = Drain(first - spawned, last - first, tree_sample(process.pid) - at_first,
                    backlog.count)
        if control is not None:
            run.effective = effective_settings(control, hostname)
            run.rss_mb = int(next(line.split()[1] for line in Path(
                f"/proc/{process.pid}/status").read_text().splitlines()
                if line.startswith("VmRSS:"))) / 1024
        return run
    finally:
        process.send_signal(signal.SIGQUIT)  # cold shutdown: every task is acked by now
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def throughput(server: RedisServer, workdir: Path, backlog: Backlog, pools: list[str],
               rounds: int, control: Celery,
               extra: dict[str, tuple[str, ...]]) -> dict[tuple[str, str], list[Drain]]:
    """Every (pool, variant) ``rounds`` times; in each round the variants alternate, and the
    round starts with the variant the previous round ended with (A B, B A, A B...). The
    first round also asks each worker what it applies (after its timed span)."""
    runs: dict[tuple[str, str], list[Drain]] = {(p, v): [] for p in pools for v in VARIANTS}
    order = list(VARIANTS)
    for index in range(rounds):
        for pool in pools:
            for variant in order:
                run = drain(server, workdir, backlog, variant, pool, index,
                            extra=extra.get(variant, ()), control=control if not index else None)
                runs[pool, variant].append(run)
                print(f"  round {index + 1}/{rounds} {pool:<8} {variant:<9} "
                      f"{run.rate:7.0f} tasks/s  {run.cpu_per_task * 1e6:6.0f} us CPU/task  "
                      f"({run.tasks} in {run.seconds:5.2f} s, first taken "
                      f"{run.startup:4.2f} s after spawn)", flush=True)
            order.reverse()
    return runs


def report_throughput(runs: dict[tuple[str, str], list[Drain]]) -> dict[str, float]:
    """Print the medians side by side; return each pool's cost (1 - attached / plain rate)."""
    pools = list(dict.fromkeys(pool for pool, _ in runs))
    costs = {}
    print(f"\n  {'tasks/s, median':<16} {'plain':>8} {'attached':>9} {'ratio':>6} {'cost':>6}  "
          f"{'per round (attached/plain)':<27} {'plain spread':>12}")
    for pool in pools:
        plain, attached = ([r.rate for r in runs[pool, v]] for v in VARIANTS)
        ratio = statistics.median(attached) / statistics.median(plain)
        costs[pool] = 1 - ratio
        paired = " ".join(f"{a / p:.3f}" for a, p in zip(attached, plain, strict=True))
        print(f"  {pool:<16} {statistics.median(plain):>8.0f} {statistics.median(attached):>9.0f} "
              f"{ratio:>6.3f} {costs[pool]:>6.1%}  {paired:<27} "
              f"{max(plain) / min(plain) - 1:>12.1%}")
    print(f"\n  {'CPU us per task':<16} {'plain':>8} {'attached':>9} {'ratio':>6} {'extra':>6}  "
          f"{'per round (attached/plain)':<27}")
    for pool in pools:
        plain, attached = ([r.cpu_per_task * 1e6 for r in runs[pool, v]] for v in VARIANTS)
        ratio = statistics.median(attached) / statistics.median(plain)
        paired = " ".join(f"{a / p:.3f}" for a, p in zip(attached, plain, strict=True))
        print(f"  {pool:<16} {statistics.median(plain):>8.0f} {statistics.median(attached):>9.0f} "
              f"{ratio:>6.3f} {ratio - 1:>6.1%}  {paired:<27}")
        if any(r.tree.children_cpu for r in runs[pool, "plain"]):
            for part, of_run in (
                    ("main CPU", lambda r: r.tree.cpu * 1e6),
                    ("children CPU", lambda r: r.tree.children_cpu * 1e6),
                    ("main faults", lambda r: r.tree.faults),
                    ("child faults", lambda r: r.tree.children_faults)):
                plain, attached = ([of_run(r) / r.tasks for r in runs[pool, v]] for v in VARIANTS)
                ratio = statistics.median(attached) / statistics.median(plain)
                print(f"    {part:<14} {statistics.median(plain):>8.1f} "
                      f"{statistics.median(attached):>9.1f} {ratio:>6.3f} {ratio - 1:>6.1%}")
    print(f"\n  {'applied (inspect stats)':<34} {'plain':>8} {'attached':>9}")
    differ = []
    for pool in pools:
        applied = {v: runs[pool, v][0].effective or {} for v in VARIANTS}
        for key in applied["plain"]:
            mine, theirs = applied["attached"].get(key), applied["plain"].get(key)
            print(f"  {pool + ' ' + key:<34} {theirs!s:>8} {mine!s:>9}"
                  + ("  DIFFERS" if mine != theirs else ""))
            if mine != theirs:
                differ.append(key)
    if differ:
        print("  THE WORKERS DO NOT APPLY THE SAME SETTINGS, and the figures above include that.")
    if "prefetch_count" in differ:
        print("  Celery's CLI reads the default of --prefetch-multiplier from app.conf while it\n"
              "  parses the worker's options, before attach() loads the shared configuration:\n"
              "  the attached worker runs with Celery's default worker_prefetch_multiplier (4),\n"
              "  not the published one (--attached-args=\"--prefetch-multiplier N\" gives it N).")
    startup = {v: statistics.median(r.startup for p in pools for r in runs[p, v])
               for v in VARIANTS}
    rss = {v: runs[pools[0], v][0].rss_mb for v in VARIANTS}
    print("  cost = 1 - ratio; spread = plain's fastest run / its slowest - 1 (the noise);\n"
          f"  CPU: the worker's process tree, first message taken -> {SETTLE:g} s after the last "
          "ack;\n  prefork's main process forks the children (one per "
          "worker_max_tasks_per_child\n  tasks) and feeds them; faults: minor page faults per "
          "task (after a fork, each\n  side copies the pages it writes).\n"
          f"  Start-up, spawn -> first task taken, median: plain {startup['plain']:.2f} s, "
          f"attached {startup['attached']:.2f} s;\n  main process RSS after a {pools[0]} run: "
          f"plain {rss['plain']:.1f} MB, attached {rss['attached']:.1f} MB")
    return costs


# ------------------------------------------------------------------- 2: send_task per call
def send_child(variant: str) -> None:
    """``--send-child``: a producer process. Reads a count per line, sends that many tasks
    (SEND_NAMES in turn), answers one JSON line of nanoseconds per call (wall clock, and CPU
    of the sending thread); 0 ends it."""
    if variant == "attached":
        from bench.apps.attached_app import app, sync

        sync.start("bench-producer")
    elif variant == "plain-dict":
        from bench.apps.plain_dict_app import app
    else:
        from bench.apps.plain_app import app
    for name in SEND_NAMES * 20:  # warm: the app finalized, the producer pool connected
        app.send_task(name, ignore_result=True)
    print("ready", flush=True)
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    sent = 0
    for line in sys.stdin:
        count = int(line)
        if not count:
            break
        wall, cpu = [], []
        for _ in range(count):
            name = SEND_NAMES[sent % len(SEND_NAMES)]
            started, cpu_started = clock(), cpu_clock()
            app.send_task(name, ignore_result=True)
            cpu.append(cpu_clock() - cpu_started)
            wall.append(clock() - started)
            sent += 1
        print(json.dumps({"wall": wall, "cpu": cpu}), flush=True)
    if variant == "attached":
        sync.stop()


def send_costs(server: RedisServer, workdir: Path, calls: int,
               block: int) -> dict[tuple[str, str], list[float]]:
    """Seconds per send_task call of each variant, wall clock and CPU of the sending thread
    (keyed by (variant, "wall" or "cpu")), in blocks that rotate between the variants."""
    children: dict[str, subprocess.Popen[str]] = {}
    try:
        for variant in PRODUCERS:
            with (workdir / f"send-{variant}.log").open("wb") as log:
                children[variant] = subprocess.Popen(
                    [sys.executable, __file__, "--send-child", variant], cwd=ROOT,
                    env=environment(server, workdir, f"send-{variant}",
                                    CELERY_BROKER_URL=server.url.rsplit("/", 1)[0] + "/2"),
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
        for variant, child in children.items():
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError(f"the {variant} producer did not start:\n"
                                   f"{(workdir / f'send-{variant}.log').read_text()[-3000:]}")
        samples: dict[tuple[str, str], list[float]] = {
            (variant, clock): [] for variant in PRODUCERS for clock in ("wall", "cpu")}
        order = list(PRODUCERS)
        for _ in range(max(1, calls // block)):
            for variant in order:
                child = children[variant]
                assert child.stdin is not None and child.stdout is not None
                child.stdin.write(f"{block}\n")
                child.stdin.flush()
                for clock, values in json.loads(child.stdout.readline()).items():
                    samples[variant, clock] += [ns / 1e9 for ns in values]
            order = order[1:] + order[:1]
        return samples
    finally:
        for child in children.values():
            if child.stdin is not None and child.poll() is None:
                child.stdin.write("0\n")
                child.stdin.close()
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)


# --------------------------------------------------------------------- 3: the prerun hook
def hook_costs(app: Celery) -> dict[str, float]:
    """Seconds per call: the handler alone (unchanged slot), and task_prerun.send with it."""
    sync = attach(app)
    sync.slot = SharedSlot()
    sync.slot.write(sync.current.loaded)
    task = app.tasks[noop.NAME]
    assert task.app is app  # the handler goes past its first check, as in a worker's child
    receivers = len(task_prerun.receivers)
    if receivers != 1:
        raise RuntimeError(f"expected the one task_prerun receiver of attach(), found {receivers}")

    def per_call(fn: Callable[[], Any], number: int = 20000) -> float:
        return statistics.median(timeit.repeat(fn, number=number, repeat=9)) / number

    return {
        "handler alone (_follow_parent, slot unchanged)": per_call(
            lambda: sync._follow_parent(sender=task)),
        "of which slot.read_if_newer()": per_call(sync.slot.read_if_newer),
        SIGNAL: per_call(lambda: task_prerun.send(
            sender=task, task_id="x", task=task, args=(), kwargs={})),
    }


# ---------------------------------------------------------------------------------- report
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3000, help="no-op tasks per worker run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant per pool")
    parser.add_argument("--pools", default=",".join(POOLS),
                        help=f"comma-separated, among {', '.join(POOLS)}")
    parser.add_argument("--sends", type=int, default=4000, help="send_task calls per variant")
    parser.add_argument("--block", type=int, default=200, help="calls per rotating block")
    parser.add_argument("--attached-args", default="",
                        help="more command-line options for the attached worker only "
                        "(e.g. \"--prefetch-multiplier 1\")")
    parser.add_argument("--send-child", choices=PRODUCERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.send_child:
        send_child(args.send_child)
        return

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        server = RedisServer(workdir)
        server.start()
        try:
            run(args, server, workdir)
        finally:
            server.stop()


def run(args: argparse.Namespace, server: RedisServer, workdir: Path) -> None:
    started = time.monotonic()
    env = environment(server, workdir, "publisher")
    subprocess.run([str(BIN / "celery-config"), "publish", "--source", str(SOURCE),
                    "--overlay", OVERLAY], cwd=ROOT, env=env, check=True, capture_output=True)
    os.environ["CELERY_BROKER_URL"] = server.url  # the plain app's, to fill the queue
    from bench.apps.plain_app import app as plain

    attached = Celery("bench_in_process", set_as_current=False)
    noop.register(attached)
    attach(attached, log_setup=False, env=Environment(
        redis_url=server.url, fallback_path=str(workdir / "in-process-lkg.json"),
        snapshot_path=str(workdir / "no-snapshot.json"))).load()
    differ = same_settings(attached, plain)
    print(f"source {SOURCE.relative_to(ROOT)} + overlay {OVERLAY}: "
          f"{len(attached.conf.task_queues)} queues, {len(attached.conf.task_routes)} routes; "
          f"celery {celery.__version__}, kombu {kombu.__version__}, redis-py "
          f"{redis.__version__}; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f} at start")
    print("attached and plain apps: " + ("the same published settings" if not differ else
                                          "SETTINGS DIFFER:\n  " + "\n  ".join(differ)))
    client = server.client()
    backlog = Backlog.fill(client, plain, args.tasks)

    print(f"\n1. worker throughput: {args.tasks} no-op tasks per run, {args.rounds} runs per "
          f"variant and pool (flags: {' '.join(WORKER_FLAGS)}"
          + (f"; the attached worker's own: {args.attached_args}" if args.attached_args else "")
          + ")")
    pools = [pool for pool in args.pools.split(",") if pool]
    if not set(pools) <= set(POOLS):
        raise SystemExit(f"--pools: choose among {', '.join(POOLS)}")
    extra = {"attached": tuple(shlex.split(args.attached_args))}
    runs = throughput(server, workdir, backlog, pools, args.rounds, plain, extra)
    costs = report_throughput(runs)

    samples = send_costs(server, workdir, args.sends, args.block)
    us = 1e6
    print(f"\n2. send_task per call: {len(samples['plain', 'wall'])} calls per producer in "
          f"rotating blocks of {args.block}, one producer process each;\n"
          f"  names in turn: {', '.join(SEND_NAMES)}")
    print(f"  {'us per call':<42} {'wall p50':>8} {'p99':>7} {'mean':>7}   {'CPU p50':>7} "
          f"{'p99':>7} {'mean':>7}")
    for variant, label in (("plain", "plain (config_from_object, static routes)"),
                           ("plain-dict", "plain, the same settings as a dict"),
                           ("attached", "attached (live routing, watcher running)")):
        print(f"  {label:<42} " + "   ".join(
            f"{pct(samples[variant, clock], 50) * us:>8.1f} "
            f"{pct(samples[variant, clock], 99) * us:>7.1f} "
            f"{statistics.mean(samples[variant, clock]) * us:>7.1f}" for clock in ("wall", "cpu")))
    diff = {(base, clock, q): (pct(samples["attached", clock], q)
                               - pct(samples[base, clock], q)) * us
            for base in ("plain", "plain-dict") for clock in ("wall", "cpu") for q in (50, 99)}
    for base, label in (("plain", "attached - plain"),
                        ("plain-dict", "attached - plain as a dict")):
        print(f"  {label:<42} " + "   ".join(
            f"{diff[base, clock, 50]:>8.1f} {diff[base, clock, 99]:>7.1f} {'':>7}"
            for clock in ("wall", "cpu")))
    print("  CPU: the sending thread's own (thread_time): waiting for Redis, or for a CPU taken\n"
          "  by another process, does not count. A config_from_object module costs Celery an\n"
          "  AttributeError and a KeyError per setting it leaves out, at every lookup (the dict\n"
          "  row is the same app without that); the attached app's settings are a dict.")
    send_diff = {q: diff["plain", "wall", q] for q in (50, 99)}

    hooks = hook_costs(attached)
    signal_send = hooks[SIGNAL]
    cpu = {pool: statistics.median(r.cpu_per_task for r in runs[pool, "plain"]) for pool in pools}
    print("\n3. per-task hook of a prefork child (task_prerun), in this process, median of 9 x "
          "20000 calls")
    for label, seconds in hooks.items():
        print(f"  {label:<48} {seconds * us:>6.2f} us")
    print("  a plain worker has no task_prerun receiver, and its tracer then skips the signal;\n"
          f"  so the attached worker pays the send with its handler, {signal_send * us:.1f} us a "
          "task: " + ", ".join(f"{signal_send / cpu[pool]:.2%} of a plain {pool} task's CPU"
                               for pool in pools))

    print(f"\n{'target (issue 16)':<44} {'measured':>10} {'target':>8}  verdict")
    for pool in pools:
        print(f"{f'integration costs throughput, {pool}':<44} {costs[pool]:>10.1%} "
              f"{'<= 3%':>8}  {'OK' if costs[pool] <= 0.03 else 'MISSED'}")
    for q in (50, 99):
        print(f"{f'integration costs per send, p{q}':<44} {send_diff[q]:>8.1f}us "
              f"{'<= 50us':>8}  {'OK' if send_diff[q] <= 50 else 'MISSED'}")
    print(f"\nrun time {time.monotonic() - started:.0f} s; load average "
          f"{os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
