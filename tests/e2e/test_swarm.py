"""Docker Swarm on two engines: compose/base.yaml + compose/swarm.yaml deployed with
`docker stack deploy`, the same services compose runs from compose/compose.yaml.

The first case reads both models, offline: compose and Swarm get the same images,
environment, secrets, healthchecks and limits from the files they share. The others run one
stack on a two-node swarm (tests/swarm_cluster.py: this engine as manager, a node container
with its own dockerd joined to it; only on an engine in no swarm: one already in a swarm is
not ours to leave, so that skips loudly, and fails under CI=true), the Redis passwords from
the stack's own make-secrets.sh folder as Swarm secrets. Three worker replicas spread over
both nodes, one API replica and one beat on each; then a publish, a scale to four and back, a
replica killed, the active beat killed (the other takes over its lock and its schedule),
Redis' service down (the fallbacks), and at the end `docker stack rm` leaves nothing on
either node, and the swarm is left. In the order written.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from celery_config_sync.source import load_source
from tests.compose_stack import COMPOSE_FILE, TLS_FILE, demo_tasks, docker
from tests.conftest import SOURCE, free_port, require
from tests.e2e.conftest import MEASUREMENTS
from tests.e2e.live_sources import WITH_REPORTS, document_of, source_dir
from tests.figures import show
from tests.polling import wait_until
from tests.swarm_cluster import (
    REDIS_LABEL,
    STACK_FILES,
    ZONE_LABEL,
    Cluster,
    SwarmStack,
    SwarmUnavailable,
    clean_env,
    run,
    stack_args,
    swarm_cluster,
)

pytestmark = pytest.mark.e2e

COMPOSE_DIR = COMPOSE_FILE.parent
ENCRYPTED_FILE = COMPOSE_DIR / "swarm-encrypted.yaml"
SERVICES = ("redis", "config-seeder", "worker", "beat", "api")
WORKERS = 3  # over two nodes: the spread preference puts two in one zone, one in the other
APIS = 2  # one per node (host-mode port)
BEATS = 2  # one per node (max_replicas_per_node): one schedules, the other stands by
BEAT_LOCK = "celery_config:beat:lock"
BEAT_LAST_RUN = "celery_config:beat:last_run"
DEMO_ENTRY = "demo-echo-every-30s"  # config/celery/source.py: demo.echo every 30 s
# The beat lock's TTL in this stack (30 s by default): short enough that the other node's beat,
# ticking every third of it, takes over before Swarm's replacement of the killed one (5 s
# restart delay, then its start) is up, long enough that a busy machine's pause (renewed every
# 2.7 s at most) does not lose it.
BEAT_LOCK_TIMEOUT = 8
# Redis's ACL file goes to /tmp under Swarm, whose tmpfs mounts cannot be given a mode
# (compose/swarm.yaml): the one variable only one orchestrator sets.
SWARM_ONLY_ENV = {"redis": {"REDIS_ACL_FILE": "/tmp/users.acl"}}


# ------------------------------------------------------------------- one source, two readers
def test_compose_and_swarm_read_the_same_services(tmp_path: Path) -> None:
    """Both files check (`docker compose config -q`, `docker stack config`), and what they
    share comes out the same: images, environment, secrets, healthchecks; the limits, which
    each writes in its own syntax, are equal too."""
    require(docker("--version", check=False).returncode == 0, "no docker CLI")
    require(docker("compose", "version", check=False).returncode == 0,
            "the docker compose plugin is missing")
    secrets = tmp_path / "secrets"
    subprocess.run(["sh", str(COMPOSE_DIR / "make-secrets.sh"), str(secrets)], check=True,
                   capture_output=True)
    subprocess.run(["sh", str(COMPOSE_DIR / "make-tls.sh"), str(secrets)], check=True,
                   capture_output=True)
    env = clean_env(CELERY_SECRETS_DIR=str(secrets))
    compose = ["docker", "compose", "--project-directory", str(COMPOSE_DIR), "-f",
               str(COMPOSE_FILE)]
    for extra in ([], ["-f", str(TLS_FILE)]):
        for profile in ("rpi", "dev"):
            checked = run([*compose, *extra, "--profile", profile, "config", "-q"], env)
            assert checked.returncode == 0, (extra, profile, checked.stderr)
    for files in (STACK_FILES, (*STACK_FILES, ENCRYPTED_FILE)):
        checked = run(["docker", "stack", "config", *stack_args(*files)], env)
        assert checked.returncode == 0, (files, checked.stderr)

    composed = json.loads(run([*compose, "--profile", "rpi", "config", "--format", "json"],
                              env).stdout)["services"]
    swarm_model = yaml.safe_load(run(["docker", "stack", "config", *stack_args(*STACK_FILES)],
                                     env).stdout)
    swarm = swarm_model["services"]
    assert set(composed) == set(swarm) == set(SERVICES)
    for name in SERVICES:
        ours, theirs = composed[name], swarm[name]
        for key in ("image", "read_only", "cap_drop", "stop_grace_period", "logging"):
            assert ours.get(key) == theirs.get(key), (name, key)
        assert {**(ours.get("environment") or {}), **SWARM_ONLY_ENV.get(name, {})} == \
            (theirs.get("environment") or {}), name
        # compose prints a literal $ escaped ($$), so that its output reads back the same.
        assert [word.replace("$$", "$") for word in
                (ours.get("healthcheck") or {}).get("test", [])] == \
            (theirs.get("healthcheck") or {}).get("test", []), name
        assert {(s["source"], Path("/run/secrets", s["target"]).as_posix())
                for s in ours["secrets"]} == {
            (s["source"], Path("/run/secrets", s["target"]).as_posix())
            for s in theirs["secrets"]}, name
        limits = theirs["deploy"]["resources"]["limits"]
        assert (int(ours["mem_limit"]), float(ours["cpus"]), ours["pids_limit"]) == (
            int(limits["memory"]), float(limits["cpus"]), limits["pids"]), name
        # What Swarm needs and compose does not have: no VIP, no service tmpfs (dropped).
        assert theirs["deploy"]["endpoint_mode"] == "dnsrr", name
        assert "tmpfs" not in theirs, name
        for secret in theirs["secrets"]:
            assert (secret["mode"], secret["uid"]) == (0o400, "999" if name == "redis"
                                                       else "10001"), (name, secret)
    assert swarm["config-seeder"]["deploy"]["mode"] == "replicated-job"
    assert swarm["api"]["ports"] == [{"mode": "host", "target": 8000, "published": 8000,
                                      "protocol": "tcp"}]
    assert swarm["redis"]["deploy"]["placement"]["constraints"] == [
        f"node.labels.{REDIS_LABEL} == true"]
    assert swarm["worker"]["deploy"]["placement"]["preferences"] == [
        {"spread": f"node.labels.{ZONE_LABEL}"}]
    assert swarm["beat"]["deploy"]["replicas"] == BEATS
    assert swarm["beat"]["deploy"]["placement"] == {
        "max_replicas_per_node": 1, "preferences": [{"spread": f"node.labels.{ZONE_LABEL}"}]}
    assert swarm["beat"]["image"] == swarm["worker"]["image"]
    assert swarm["beat"]["command"][:2] == ["celery", "beat"]  # the app: the image's CELERY_APP
    assert swarm_model["networks"]["default"] == {"driver": "overlay", "attachable": True}


# -------------------------------------------------------------------------- the running stack
@pytest.fixture(scope="module")
def cluster(engine: None) -> Iterator[Cluster]:
    try:
        with swarm_cluster(extra_nodes=1) as built:
            yield built
    except SwarmUnavailable as missing:
        require(False, str(missing))


@pytest.fixture(scope="module")
def swarm(cluster: Cluster) -> Iterator[SwarmStack]:
    # A short gate: replicas replaced while Redis is down start on a fallback within seconds.
    stack = SwarmStack(f"ccs-swarm-{os.getpid()}", free_port(),
                       {"CELERY_CONFIG_HEARTBEAT_INTERVAL": "2",
                        "CELERY_CONFIG_WAIT_TIMEOUT": "8",
                        "CELERY_CONFIG_BEAT_LOCK_TIMEOUT": str(BEAT_LOCK_TIMEOUT)},
                       cluster=cluster, workers=WORKERS, apis=APIS, beats=BEATS)
    try:
        yield stack
    finally:
        MEASUREMENTS.append(f"swarm: `docker stack rm` to containers and network gone from "
                            f"both nodes {stack.remove():.1f} s")


def ready_on(stack: SwarmStack, cluster: Cluster, timeout: float) -> dict[str, dict[str, Any]]:
    """/readyz of the API replica on each node, once every one answers ready."""
    found: dict[str, dict[str, Any]] = {}

    def every_node() -> bool:
        for node in cluster.nodes:
            body = stack.on(node).readyz(timeout=2)
            if body is not None:
                found[node.hostname] = body
        return len(found) == len(cluster.nodes)

    wait_until(every_node, timeout, lambda: f"the API ready on every node (so far {found})\n"
               f"{stack.logs()}\n{stack.logs('api')}", interval=0.3)
    return found


def test_deploy_on_two_nodes_the_seeder_job_publishes_and_every_replica_is_ready(
        swarm: SwarmStack, cluster: Cluster) -> None:
    source = load_source(str(SOURCE), "rpi")
    started = time.monotonic()
    swarm.deploy()
    ready = ready_on(swarm, cluster, 300)
    MEASUREMENTS.append(f"swarm: `docker stack deploy` -> /readyz ready on both nodes "
                        f"{time.monotonic() - started:.1f} s ({WORKERS} workers, {APIS} APIs; "
                        f"the second node pulls the images from the registry)")
    for body in ready.values():
        assert (body["source"], body["version"], body["sha256"]) == ("redis", 1, source.sha256)

    # The seeder ran as a job, once, and exited 0 after publishing version 1.
    task = swarm.job_done("config-seeder", swarm.job_iteration("config-seeder"))
    assert task is not None, swarm.tasks("config-seeder")
    assert task["Status"]["ContainerStatus"]["ExitCode"] == 0
    printed = [json.loads(line) for line in swarm.logs("config-seeder").splitlines()
               if line.startswith("{")]
    assert {"version": 1, "sha256": source.sha256, "changed": True} in printed, printed

    # Every running replica reports, on version 1: workers on both nodes, an API and a beat
    # on each.
    swarm.wait_in_sync(180, version=1)
    nodes = {node.hostname for node in cluster.nodes}
    assert set(swarm.running("worker").values()) == nodes, swarm.running("worker")
    assert sorted(swarm.running("api").values()) == sorted(nodes)
    assert sorted(swarm.running("beat").values()) == sorted(nodes)

    # Swarm secrets on the second node as on the first: the service's own, its user's, 0400.
    second = cluster.workers[0]
    worker = next(c for c, n in swarm.running("worker").items() if n == second.hostname)
    owner = second.docker("exec", worker, "stat", "-c", "%u %g %a",
                          "/run/secrets/redis-password").stdout.split()
    assert owner == ["10001", "10001", "400"]
    status = second.docker("exec", worker, "cat", "/proc/1/status").stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert int(fields["CapEff"], 16) == 0 and fields["Uid"].split()[0] == "10001"
    touched = second.docker("exec", worker, "touch", "/etc/x", check=False)
    assert touched.returncode != 0 and "Read-only file system" in touched.stderr


def test_tasks_posted_to_either_api_are_consumed_on_both_nodes(swarm: SwarmStack,
                                                               cluster: Cluster) -> None:
    workers = swarm.running("worker")

    def consuming(container: str) -> bool:
        logs = cluster.node(workers[container]).docker("logs", container, check=False)
        return " ready." in logs.stdout + logs.stderr

    wait_until(lambda: all(consuming(c) for c in workers), 180, "every worker's ready line")
    seen: set[str] = set()
    tasks = [task for task in demo_tasks() if task != "monitoring.heartbeat"]
    for _ in range(8):  # the broker hands tasks to whichever worker asks first
        for node in cluster.nodes:
            api = swarm.on(node)
            for task_id in [api.enqueue(task)["id"] for task in tasks]:
                status = api.result(task_id, 60)
                assert status["state"] == "SUCCESS", status
                seen.add(status["result"]["worker"])
        if {workers[c] for c in seen} == set(workers.values()):
            break
    assert seen <= set(workers), (seen, workers)
    assert {workers[c] for c in seen} == {node.hostname for node in cluster.nodes}, seen


def test_a_publish_reaches_every_replica_on_both_nodes_live(swarm: SwarmStack,
                                                            tmp_path: Path) -> None:
    """The seeder job run again (`docker service update --force`, here with a changed source
    bind-mounted): every worker replica and both APIs, on both nodes, apply it without a
    restart."""
    directory = source_dir(tmp_path, WITH_REPORTS)
    expected = document_of(directory)
    before = {name: swarm.running(name) for name in ("worker", "beat", "api")}
    iteration = swarm.job_iteration("config-seeder")
    started = time.monotonic()
    # The changed source is a folder on this machine: the job runs here, where it is (the
    # usual way is a new seeder image: `docker service update --image`).
    docker("service", "update", "--detach", "--force", "--mount-add",
           f"type=bind,source={directory},target=/etc/celery-config,readonly",
           "--constraint-add", "node.role == manager", swarm.service("config-seeder"),
           timeout=120)
    wait_until(lambda: swarm.job_iteration("config-seeder") > iteration, 30,
               "a new iteration of the seeder job")
    wait_until(lambda: swarm.job_done("config-seeder", iteration + 1) is not None, 120,
               f"the seeder job again\n{swarm.tasks('config-seeder')}")
    task = swarm.job_done("config-seeder", iteration + 1)
    assert task is not None and task["Status"]["ContainerStatus"]["ExitCode"] == 0

    report = swarm.wait_in_sync(60, version=2)
    MEASUREMENTS.append(f"swarm: seeder job re-run -> both nodes' fleet in sync on version 2 "
                        f"{time.monotonic() - started:.1f} s")
    assert {r["sha256"] for r in report["fleet"]} == {expected.sha256}
    assert before == {name: swarm.running(name) for name in ("worker", "beat", "api")}
    for node in swarm.cluster.nodes if swarm.cluster else []:
        api = swarm.on(node)
        body = api.enqueue("report.build")
        assert body["queue"] == "reports"
        result = api.result(body["id"], 60)["result"]
        assert (result["queue"], result["config_version"]) == ("reports", 2)


def per_node(running: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in running.values():
        counts[node] = counts.get(node, 0) + 1
    return counts


def test_scale_the_workers_to_four_and_back(swarm: SwarmStack, cluster: Cluster) -> None:
    """Four replicas: two per zone (the spread preference, not the scheduler's own balance,
    which would favour the node without Redis and the seeder); every one on version 2."""
    docker("service", "scale", "--detach", f"{swarm.service('worker')}=4")
    swarm.workers = 4
    try:
        swarm.wait_in_sync(180, version=2)
        assert per_node(swarm.running("worker")) == {n.hostname: 2 for n in cluster.nodes}
    finally:
        docker("service", "scale", "--detach", f"{swarm.service('worker')}={WORKERS}")
        swarm.workers = WORKERS
    swarm.wait_in_sync(120, version=2)
    assert sorted(per_node(swarm.running("worker")).values()) == [1, 2]


def test_a_killed_worker_replica_is_replaced_and_starts_on_the_current_version(
        swarm: SwarmStack, cluster: Cluster) -> None:
    second = cluster.workers[0].hostname
    victim = next(c for c, n in swarm.running("worker").items() if n == second)
    swarm.kill("worker", victim)
    started = time.monotonic()
    wait_until(lambda: victim not in swarm.running("worker")
               and len(swarm.running("worker")) == WORKERS, 120, "a replacement replica")
    report = swarm.wait_in_sync(120, version=2)
    MEASUREMENTS.append(f"swarm: worker replica SIGKILLed -> its replacement in the fleet on "
                        f"the current version {time.monotonic() - started:.1f} s")
    assert victim not in {r["hostname"] for r in report["fleet"]}


def redis_get(swarm: SwarmStack, *command: str) -> str:
    """A read as Redis' admin (``GET key`` by default), in the Redis replica where it runs."""
    ((container, node),) = swarm.started("redis").items()
    args = command if len(command) > 1 else ("GET", *command)
    return node.docker("exec", container, "redis-admin", *args).stdout.strip()


def last_run(swarm: SwarmStack) -> datetime:
    """When the active beat last sent the demo entry, as it recorded it in Redis."""
    return datetime.fromisoformat(redis_get(swarm, "HGET", BEAT_LAST_RUN, DEMO_ENTRY))


def beat_log(swarm: SwarmStack, container: str) -> str:
    assert swarm.cluster is not None
    node = swarm.cluster.node(swarm.running("beat")[container])
    logs = node.docker("logs", container, check=False)
    return logs.stdout + logs.stderr


def sends(log: str) -> list[str]:
    return [line for line in log.splitlines() if "Scheduler: Sending due task" in line]


def test_one_beat_schedules_and_the_other_takes_over_when_it_is_killed(
        swarm: SwarmStack, cluster: Cluster) -> None:
    """Two beats, one per node: exactly one holds the lock (its instance, <hostname>:<pid>)
    and alone sends the schedule (the demo entry, every 30 s). SIGKILL its container: its lock
    expires (CELERY_CONFIG_BEAT_LOCK_TIMEOUT, 30 s by default), another beat takes it and
    sends the next due entry from the last run times in Redis: not before its interval after
    the killed beat's last send (no entry twice per due time). Swarm meanwhile replaces the
    killed one on its node (restart policy, 5 s delay); the lock's TTL here (BEAT_LOCK_TIMEOUT)
    lets the other node's beat expect to win, but "another" may be that replacement if it
    ticks first after the expiry: both prove the takeover; which one it was, and how long it
    took, is printed."""
    beats = swarm.running("beat")
    assert sorted(beats.values()) == sorted(n.hostname for n in cluster.nodes), beats
    holder: dict[str, str] = {}

    def held() -> bool:
        value = redis_get(swarm, BEAT_LOCK)
        holder["value"] = value
        return value.split(":")[0] in beats

    def one_sends() -> tuple[str, str] | None:
        """(active, standby) once the holder sent a due entry while the other sent nothing;
        None when the lock changed hands meanwhile (a machine too loaded to renew in time:
        look again, the counts are taken from that moment on)."""
        wait_until(held, 120, f"a beat holding {BEAT_LOCK} (last: {holder})")
        active, pid = holder["value"].split(":")
        assert pid == "1", holder  # the gate execs celery beat: PID 1 of its container
        (standby,) = set(beats) - {active}
        counts = {name: len(sends(beat_log(swarm, name))) for name in beats}
        wait_until(lambda: (len(sends(beat_log(swarm, active))) > counts[active]
                            or not held() or holder["value"].split(":")[0] != active),
                   120, "the active beat sending")
        if not held() or holder["value"].split(":")[0] != active:
            return None
        assert len(sends(beat_log(swarm, standby))) == counts[standby], \
            beat_log(swarm, standby)[-3000:]
        return active, standby

    found = None
    for _ in range(3):
        found = found or one_sends()
    assert found is not None, "the beat lock kept changing hands"
    active, standby = found
    assert "active beat" in beat_log(swarm, active)
    standby_sends = len(sends(beat_log(swarm, standby)))

    before = last_run(swarm)
    swarm.kill("beat", active)
    killed = time.monotonic()
    killed_at = datetime.now(UTC)
    taken: dict[str, str] = {}

    def taken_over() -> bool:
        value = redis_get(swarm, BEAT_LOCK)
        taken["value"] = value
        return bool(value) and value.split(":")[0] != active

    wait_until(taken_over, 120, f"another beat taking {BEAT_LOCK} (last: {taken})",
               interval=0.2)
    takeover = time.monotonic() - killed
    successor = taken["value"].split(":")[0]
    # The successor may be Swarm's replacement, which can take the lock before Swarm counts
    # its task running (its healthcheck has not answered yet): wait for it to be listed.
    wait_until(lambda: successor in swarm.running("beat"), 120,
               f"the new lock holder {successor} listed running")
    running = swarm.running("beat")
    wait_until(lambda: sends(beat_log(swarm, successor)), 120,
               f"the new active beat sending a due entry\n{beat_log(swarm, successor)[-3000:]}")
    first_send = time.monotonic() - killed
    wait_until(lambda: last_run(swarm) > before, 60, "the new active beat's run in Redis")
    after = last_run(swarm)
    # The successor resumed from the killed one's last run: the entry's next run came one
    # interval after it at the earliest (Celery wakes 10 ms early), never at once.
    assert (after - before).total_seconds() >= 30 - 0.5, (before, after)
    who = "the other node's beat" if successor == standby else "Swarm's replacement"
    line = (f"swarm: active beat SIGKILLed -> {who} holds the lock {takeover:.1f} s later "
            f"(lock TTL {BEAT_LOCK_TIMEOUT} s), its first due send seen {first_send:.1f} s "
            f"after the kill; {DEMO_ENTRY} last sent {(killed_at - before).total_seconds():.1f}"
            f" s before the kill by the killed beat, then {(after - before).total_seconds():.1f}"
            f" s after that by the new one")
    MEASUREMENTS.append(line)
    show(line)
    log = beat_log(swarm, successor)
    assert "active beat" in log, log[-3000:]
    # One lock, one holder: whichever of the running beats did not take it sends nothing.
    for other in set(running) - {successor}:
        before_kill = standby_sends if other == standby else 0  # a replacement's log is new
        assert len(sends(beat_log(swarm, other))) == before_kill, \
            beat_log(swarm, other)[-3000:]
    wait_until(lambda: len(swarm.running("beat")) == BEATS, 120, "the killed beat replaced")
    swarm.wait_in_sync(120, version=2)


def test_with_redis_down_replicas_start_on_their_fallbacks_then_catch_up(
        swarm: SwarmStack, cluster: Cluster) -> None:
    """Redis' service scaled to 0 (its node's Redis gone): an API replica replaced on the
    second node starts, after the gate's timeout, on that node's last-known-good (version 2),
    and so does a worker replica killed; API replicas whose last-known-good volume is swapped
    for an empty one start on the image's snapshot. Redis back: every replica returns to
    Redis' version 2, live."""
    second = cluster.workers[0]
    docker("service", "scale", "--detach", f"{swarm.service('redis')}=0")
    try:
        wait_until(lambda: not swarm.running("redis"), 60, "Redis' replica gone")
        (victim,) = [c for c, n in swarm.running("api").items() if n == second.hostname]
        swarm.kill("api", victim)
        wait_until(lambda: (swarm.on(second).readyz(timeout=2) or {}).get("source")
                   == "last-known-good", 120,
                   lambda: f"the new API replica on last-known-good\n{swarm.logs('api')}",
                   interval=0.5)
        body = swarm.on(second).readyz()
        assert body is not None and body["version"] == 2, body

        # A worker replica too: its replacement (on whichever node the spread picks; each
        # has a worker's last-known-good) loads version 2 from that node's file.
        before = swarm.started("worker")
        swarm.kill("worker", next(iter(before)))
        marker = "Celery configuration loaded from last-known-good: version 2"
        replacement: dict[str, str] = {}

        def replaced() -> bool:
            for container, node in swarm.started("worker").items():
                logs = node.docker("logs", container, check=False)
                if container not in before and marker in logs.stdout + logs.stderr:
                    replacement[container] = node.hostname
            return bool(replacement)

        wait_until(replaced, 120,
                   lambda: f"a worker replica on last-known-good\n{swarm.logs('worker')}")

        docker("service", "update", "--detach", "--mount-rm", "/var/lib/celery-config",
               "--mount-add", "type=tmpfs,destination=/var/lib/celery-config",
               swarm.service("api"), timeout=120)
        for node in cluster.nodes:
            wait_until(lambda node=node: (swarm.on(node).readyz(timeout=2) or {}).get("source")
                       == "snapshot", 180, lambda node=node: f"the API on {node.hostname} "
                       f"on the snapshot\n{swarm.logs('api')}", interval=0.5)
    finally:
        docker("service", "scale", "--detach", f"{swarm.service('redis')}=1")
    started = time.monotonic()
    for node in cluster.nodes:
        wait_until(lambda node=node: (swarm.on(node).readyz(timeout=2) or {}).get("source")
                   == "redis", 120, f"the API on {node.hostname} back on Redis", interval=0.3)
    MEASUREMENTS.append(f"swarm: Redis' service back -> both API replicas from snapshot to "
                        f"Redis' version, live {time.monotonic() - started:.1f} s")
    swarm.wait_in_sync(120, version=2)
