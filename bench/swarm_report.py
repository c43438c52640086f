"""Swarm report: how the stack's start-up grows with the number of worker replicas (1, 2, 4),
on a swarm of two engines (tests/swarm_cluster.py: this machine's engine and a node container
with its own dockerd), printed side by side, never asserted (exit 0 whenever it ran).

For each count, a stack of its own is deployed from nothing (`docker stack deploy` of
compose/base.yaml + compose/swarm.yaml, fresh volumes, images already on both nodes) and timed
to three points: every API replica (one per node) answers /readyz ready; the fleet holds every
worker, beat and API replica on the published version (`celery-config status` in a one-off
container, polled, which adds up to a second); Swarm counts every replica running (its
healthcheck passed). Then `docker stack rm`. A first, untimed deploy puts the images on the
second node (its pull is reported apart: a Pi that joins pays it once per release).

Both engines share this machine's two cores: on a cluster of Pis each node starts its own
replicas on its own CPU, so the growth measured here is an upper bound of a real cluster's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.polling import wait_until  # noqa: E402
from tests.redis_process import free_port  # noqa: E402
from tests.swarm_cluster import (  # noqa: E402
    Cluster,
    SwarmStack,
    SwarmUnavailable,
    swarm_cluster,
)

COUNTS = (1, 2, 4)
ENV = {"CELERY_CONFIG_HEARTBEAT_INTERVAL": "1"}


def deploy_timed(cluster: Cluster, name: str, workers: int) -> tuple[float, ...]:
    """Seconds from `docker stack deploy` to: every API ready; the fleet reporting every
    replica on version 1; Swarm counting every replica running (healthy); and
    `docker stack rm` to nothing left."""
    stack = SwarmStack(name, free_port(), dict(ENV), cluster=cluster, workers=workers,
                       apis=len(cluster.nodes))
    stack.beats = min(stack.beats, len(cluster.nodes))  # one per node at most
    wanted = sorted(["api"] * stack.apis + ["beat"] * stack.beats + ["worker"] * workers)

    last: dict[str, object] = {}

    def fleet_in_sync() -> bool:
        code, report = stack.fleet()
        last.update(code=code, report=report)
        return code == 0 and report["version"] == 1 and \
            sorted(r["service"] for r in report["fleet"]) == wanted

    def swarm_running() -> bool:
        return len(stack.running("worker")) == workers and \
            len(stack.running("api")) == stack.apis and \
            len(stack.running("beat")) == stack.beats

    try:
        started = time.monotonic()
        stack.deploy()
        apis = [stack.on(node) for node in cluster.nodes]
        marks = []
        for predicate, what in ((lambda: all(api.readyz(timeout=2) for api in apis), "APIs"),
                                (fleet_in_sync, "the fleet in sync"),
                                (swarm_running, "every task running")):
            def failed(what: str = what) -> str:  # lazily: `docker stack ps` would count
                return f"{what} (last status: {last})\n{stack.logs()}"

            wait_until(predicate, 300, failed, interval=0.1)
            marks.append(time.monotonic() - started)
    finally:
        removed = stack.remove()
    return (*marks, removed)


def attempt(cluster: Cluster, name: str, workers: int,
            failures: list[str]) -> tuple[float, ...] | None:
    """One timed deploy, or None when it did not converge: then what was seen goes to
    ``failures``, printed loudly with the figures (the swarm e2e tier asserts convergence;
    a report keeps measuring the other deploys)."""
    try:
        return deploy_timed(cluster, name, workers)
    except AssertionError as error:
        failures.append(f"{name} ({workers} workers): {error}"[:3000])
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="deploys per replica count")
    args = parser.parse_args()
    rows: dict[int, list[tuple[float, ...]]] = {workers: [] for workers in COUNTS}
    failures: list[str] = []
    try:
        with swarm_cluster(extra_nodes=1) as cluster:
            pid = os.getpid()
            cold = attempt(cluster, f"ccs-report-{pid}-cold", 1, failures)
            for run in range(args.runs):
                for workers in COUNTS:
                    timed = attempt(cluster, f"ccs-report-{pid}-{workers}-{run}", workers,
                                    failures)
                    if timed is not None:
                        rows[workers].append(timed)
    except SwarmUnavailable as missing:
        print(f"swarm report: cannot build the cluster: {missing}", file=sys.stderr)
        return 2
    for failure in failures:
        print(f"swarm report: DID NOT CONVERGE: {failure}", file=sys.stderr)
    if not all(rows.values()):
        print("swarm report: no figure for some replica count", file=sys.stderr)
        return 1
    print(f"Swarm start-up vs worker replicas: 2 engines on this machine, 2 API replicas, "
          f"median of {args.runs} deploys (seconds from `docker stack deploy`)"
          + (f"; {len(failures)} deploy(s) did not converge (above)" if failures else ""))
    if cold is not None:
        print(f"  first deploy (the second node pulls the images): APIs ready {cold[0]:.1f}, "
              f"fleet in sync {cold[1]:.1f}, every task running {cold[2]:.1f}")
    base = statistics.median(r[1] for r in rows[COUNTS[0]])
    print(f"  {'workers':>7}  {'APIs ready':>10}  {'fleet in sync':>13}  {'vs 1 worker':>11}  "
          f"{'per extra worker':>16}  {'tasks running':>13}  {'stack rm':>8}")
    for workers in COUNTS:
        ready, in_sync, running, removed = (statistics.median(r[i] for r in rows[workers])
                                            for i in range(4))
        extra = (in_sync - base) / (workers - 1) if workers > 1 else 0.0
        print(f"  {workers:>7}  {ready:>10.1f}  {in_sync:>13.1f}  {in_sync / base:>10.2f}x  "
              f"{extra:>16.2f}  {running:>13.1f}  {removed:>8.1f}")
    print("  fleet in sync: every replica reports version 1 (celery-config status, polled); "
          "tasks running: Swarm counts every replica healthy. An engine older than 25 (here "
          "the second node's 20.10) ignores the healthchecks' start_interval, so its replicas "
          "stay 'starting' until the first probe, one interval (30 s) after they start.")
    return 0

if __name__ == "__main__":
    sys.exit(main())
