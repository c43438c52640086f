"""Swarm report: how the stack's start-up grows with the number of worker replicas (1, 2, 4),
on a swarm of two engines (tests/swarm_cluster.py: this machine's engine and a node container
with its own dockerd), printed side by side, never asserted (exit 0 whenever it ran).

For each count, a stack of its own is deployed from nothing (`docker stack deploy` of
compose/base.yaml + compose/swarm.yaml, fresh volumes, images already on both nodes) and timed
to two points: every API replica (one per node) answers /readyz ready, and the fleet holds
every worker and API replica on the published version (`celery-config status`, polled, which
adds up to a second). Then `docker stack rm`. A first, untimed deploy puts the images on the
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

from tests.compose_stack import wait_until  # noqa: E402
from tests.redis_process import free_port  # noqa: E402
from tests.swarm_cluster import (  # noqa: E402
    Cluster,
    SwarmStack,
    SwarmUnavailable,
    swarm_cluster,
)

COUNTS = (1, 2, 4)
ENV = {"CELERY_CONFIG_HEARTBEAT_INTERVAL": "1"}


def deploy_timed(cluster: Cluster, name: str, workers: int) -> tuple[float, float, float]:
    """Seconds from `docker stack deploy` to every API ready, to the fleet in sync; and
    `docker stack rm` to nothing left."""
    stack = SwarmStack(name, free_port(), dict(ENV), cluster=cluster, workers=workers,
                       apis=len(cluster.nodes))
    try:
        started = time.monotonic()
        stack.deploy()
        apis = [stack.on(node) for node in cluster.nodes]
        wait_until(lambda: all(api.readyz(timeout=2) is not None for api in apis), 300,
                   "the API on every node", interval=0.1)
        ready = time.monotonic() - started
        stack.wait_in_sync(300, version=1)
        in_sync = time.monotonic() - started
    finally:
        removed = stack.remove()
    return ready, in_sync, removed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="deploys per replica count")
    args = parser.parse_args()
    rows: dict[int, list[tuple[float, float, float]]] = {}
    try:
        with swarm_cluster(extra_nodes=1) as cluster:
            pid = os.getpid()
            cold = deploy_timed(cluster, f"ccs-report-{pid}-cold", 1)
            for run in range(args.runs):
                for workers in COUNTS:
                    rows.setdefault(workers, []).append(
                        deploy_timed(cluster, f"ccs-report-{pid}-{workers}-{run}", workers))
    except SwarmUnavailable as missing:
        print(f"swarm report: cannot build the cluster: {missing}", file=sys.stderr)
        return 2
    print(f"Swarm start-up vs worker replicas: 2 engines on this machine, 2 API replicas, "
          f"median of {args.runs} deploys (seconds)")
    print(f"  first deploy (the second node pulls the images): APIs ready {cold[0]:.1f}, "
          f"fleet in sync {cold[1]:.1f}")
    base = statistics.median(r[1] for r in rows[COUNTS[0]])
    print(f"  {'workers':>7}  {'APIs ready':>10}  {'fleet in sync':>13}  {'vs 1 worker':>11}  "
          f"{'per extra worker':>16}  {'stack rm':>8}")
    for workers in COUNTS:
        ready, in_sync, removed = (statistics.median(r[i] for r in rows[workers])
                                   for i in range(3))
        extra = (in_sync - base) / (workers - 1) if workers > 1 else 0.0
        print(f"  {workers:>7}  {ready:>10.1f}  {in_sync:>13.1f}  {in_sync / base:>10.2f}x  "
              f"{extra:>16.2f}  {removed:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
