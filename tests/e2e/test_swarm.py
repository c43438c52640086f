"""Docker Swarm on this engine (one node): compose/base.yaml + compose/swarm.yaml deployed with
`docker stack deploy`, the same services compose runs from compose/compose.yaml.

The first case reads both models, offline: compose and Swarm get the same images,
environment, secrets, healthchecks and limits from the files they share. The others run one
stack: `docker swarm init --advertise-addr 127.0.0.1` (only on an engine in no swarm: an
engine already in one is not ours to leave, so that skips loudly, and fails under CI=true),
the Redis passwords from this module's own make-secrets.sh folder as Swarm secrets, then
`docker stack deploy`; at the end `docker stack rm`, its containers, network and volumes
gone, and `docker swarm leave --force`, leaving the engine as found. In the order written.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from celery_config_sync.source import load_source
from tests.compose_stack import (
    COMPOSE_FILE,
    FOREIGN,
    REGISTRY,
    TAG,
    TLS_FILE,
    Stack,
    demo_tasks,
    docker,
    image_ref,
    wait_until,
)
from tests.conftest import SOURCE, free_port, require
from tests.e2e.conftest import MEASUREMENTS
from tests.e2e.live_sources import WITH_REPORTS, document_of, source_dir

pytestmark = pytest.mark.e2e

COMPOSE_DIR = COMPOSE_FILE.parent
STACK_FILES = (COMPOSE_DIR / "base.yaml", COMPOSE_DIR / "swarm.yaml")
ENCRYPTED_FILE = COMPOSE_DIR / "swarm-encrypted.yaml"
SERVICES = ("redis", "config-seeder", "worker", "api")
WORKERS = 2
LABEL = "celery-config-sync.redis"
# Redis's ACL file goes to /tmp under Swarm, whose tmpfs mounts cannot be given a mode
# (compose/swarm.yaml): the one variable only one orchestrator sets.
SWARM_ONLY_ENV = {"redis": {"REDIS_ACL_FILE": "/tmp/users.acl"}}


def run(command: list[str], env: dict[str, str],
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env,
                          check=False)


def clean_env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in FOREIGN}
    return {**base, "REGISTRY": REGISTRY, "TAG": TAG, **extra}


def stack_args(*files: Path) -> list[str]:
    return [arg for path in files for arg in ("-c", str(path))]


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
    assert swarm["redis"]["deploy"]["placement"]["constraints"] == [f"node.labels.{LABEL} == true"]
    assert swarm_model["networks"]["default"] == {"driver": "overlay", "attachable": True}


# -------------------------------------------------------------------------- the running stack
@dataclass
class SwarmStack(Stack):
    """A stack of this engine's swarm, reached like a compose Stack: the API on its
    host-mode port, the Redis passwords in its own make-secrets.sh folder."""

    def environ(self, **extra: str) -> dict[str, str]:
        return clean_env(API_PORT=str(self.api_port), CELERY_SECRETS_DIR=str(self.secrets),
                         WORKER_REPLICAS=str(WORKERS), **self.env, **extra)

    def service(self, name: str) -> str:
        return f"{self.project}_{name}"

    @property
    def network(self) -> str:
        return f"{self.project}_default"

    def deploy(self) -> None:
        result = run(["docker", "stack", "deploy", "--detach=true",
                      *stack_args(*STACK_FILES), self.project], self.environ())
        assert result.returncode == 0, (result.stdout, result.stderr)

    def logs(self, service: str | None = None, *, timestamps: bool = False) -> str:
        """One service's log (every task's), or where every task stands: one call, since
        the compose Stack's helpers build their failure message before each wait."""
        if service is None:
            result = docker("stack", "ps", "--no-trunc", self.project, check=False)
        else:
            result = docker("service", "logs", "--raw", self.service(service), check=False)
        return (result.stdout + result.stderr)[-8000:]

    def containers(self, name: str) -> list[str]:
        """The running containers of one service (12-character ids: their hostnames)."""
        out = docker("ps", "--quiet", "--filter", "status=running", "--filter",
                     f"label=com.docker.swarm.service.name={self.service(name)}").stdout
        return sorted(out.split())

    def job_tasks(self, name: str) -> list[dict[str, Any]]:
        ids = docker("service", "ps", "--quiet", "--no-trunc", self.service(name)).stdout.split()
        return [json.loads(docker("inspect", "--type", "task", task).stdout)[0]
                for task in ids] if ids else []

    def job_done(self, name: str, iteration: int) -> dict[str, Any] | None:
        """The task of job iteration ``iteration`` once it completed, else None."""
        for task in self.job_tasks(name):
            if task.get("JobIteration", {}).get("Index", 0) == iteration and \
                    task["Status"]["State"] == "complete":
                return task
        return None

    def job_iteration(self, name: str) -> int:
        service = json.loads(docker("service", "inspect", self.service(name)).stdout)[0]
        return int(service["JobStatus"]["JobIteration"].get("Index", 0))  # 0 is left out

    def fleet(self) -> tuple[int, dict[str, Any]]:
        """`celery-config status` in a one-off container on the stack's attachable network,
        as the seeder's Redis user (its password file bind-mounted, as `make swarm-status`)."""
        result = docker("run", "--rm", "--network", self.network, "--read-only",
                        "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
                        "--volume", f"{self.secrets}/redis-seeder:/run/secrets/redis-password:ro",
                        "--env", "CELERY_CONFIG_REDIS_URL=redis://seeder@redis:6379/0",
                        "--env", "CELERY_CONFIG_REDIS_PASSWORD_FILE=/run/secrets/redis-password",
                        image_ref("config-seeder"), "status", check=False, timeout=120)
        assert "Traceback" not in result.stderr, result.stderr
        lines = result.stdout.strip().splitlines()
        assert lines, (result.returncode, result.stderr)
        report: dict[str, Any] = json.loads(lines[-1])
        return result.returncode, report

    def remove(self) -> float:
        """`docker stack rm`, then wait until its containers and network are gone, and remove
        its volumes (stack rm keeps them): the seconds it took."""
        started = time.monotonic()
        docker("stack", "rm", self.project, check=False)
        label = f"label=com.docker.stack.namespace={self.project}"

        def gone() -> bool:
            left = docker("ps", "--all", "--quiet", "--filter", label).stdout.split()
            nets = docker("network", "ls", "--quiet", "--filter", label).stdout.split()
            return not left and not nets

        wait_until(gone, 120, f"stack {self.project}'s containers and network to go")
        took = time.monotonic() - started
        volumes = docker("volume", "ls", "--quiet", "--filter", label).stdout.split()
        if volumes:
            docker("volume", "rm", *volumes)
        return took


def swarm_state() -> str:
    return docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()


@pytest.fixture(scope="module")
def swarm(engine: None) -> Iterator[SwarmStack]:
    state = swarm_state()
    require(state == "inactive",
            f"the engine is already in a swarm (LocalNodeState {state!r}) that this test did "
            f"not create: it will not deploy into it nor leave it")
    networks_before = set(docker("network", "ls", "--format", "{{.Name}}").stdout.split())
    docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    stack = SwarmStack(f"ccs-swarm-{os.getpid()}", free_port(),
                       {"CELERY_CONFIG_HEARTBEAT_INTERVAL": "2"})
    try:
        node = docker("info", "--format", "{{.Swarm.NodeID}}").stdout.strip()
        docker("node", "update", "--label-add", f"{LABEL}=true", node)
        yield stack
    finally:
        try:
            MEASUREMENTS.append(f"swarm: `docker stack rm` to containers and network gone "
                                f"{stack.remove():.1f} s")
        finally:
            docker("swarm", "leave", "--force", check=False)
            # Leaving keeps the bridge the swarm created: the engine as found.
            if "docker_gwbridge" not in networks_before:
                docker("network", "rm", "docker_gwbridge", check=False)
    assert swarm_state() == "inactive"


def test_deploy_the_seeder_job_publishes_and_the_api_is_ready_on_redis(
        swarm: SwarmStack) -> None:
    source = load_source(str(SOURCE), "rpi")
    started = time.monotonic()
    swarm.deploy()
    try:
        wait_until(lambda: swarm.readyz(timeout=2) is not None, 240, "the API ready",
                   interval=0.2)
    except AssertionError as error:
        raise AssertionError("\n".join([str(error), swarm.logs(), *map(swarm.logs, SERVICES)])
                             ) from None
    MEASUREMENTS.append(f"swarm: `docker stack deploy` -> /readyz ready "
                        f"{time.monotonic() - started:.1f} s (one node, {WORKERS} workers)")
    ready = swarm.readyz()
    assert ready is not None, swarm.logs("api")
    assert (ready["source"], ready["version"], ready["sha256"]) == ("redis", 1, source.sha256)

    # The seeder ran as a job, once, and exited 0 after publishing version 1.
    task = swarm.job_done("config-seeder", swarm.job_iteration("config-seeder"))
    assert task is not None, swarm.job_tasks("config-seeder")
    assert task["Status"]["ContainerStatus"]["ExitCode"] == 0
    printed = [json.loads(line) for line in swarm.logs("config-seeder").splitlines()
               if line.startswith("{")]
    assert {"version": 1, "sha256": source.sha256, "changed": True} in printed, printed

    # Swarm secrets: each service's own, owned by its user, 0400.
    (worker, *_) = swarm.containers("worker")
    owner = docker("exec", worker, "stat", "-c", "%u %g %a",
                   "/run/secrets/redis-password").stdout.split()
    assert owner == ["10001", "10001", "400"]
    status = docker("exec", worker, "cat", "/proc/1/status").stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert int(fields["CapEff"], 16) == 0 and fields["Uid"].split()[0] == "10001"
    touched = docker("exec", worker, "touch", "/etc/x", check=False)
    assert touched.returncode != 0 and "Read-only file system" in touched.stderr


def test_both_worker_replicas_consume_and_the_fleet_shows_them(swarm: SwarmStack) -> None:
    wait_until(lambda: len(swarm.containers("worker")) == WORKERS, 120, "two worker replicas")
    workers = set(swarm.containers("worker"))
    def consuming(container: str) -> bool:
        logs = docker("logs", container, check=False)
        return " ready." in logs.stdout + logs.stderr

    wait_until(lambda: all(consuming(c) for c in workers), 180, "both workers' ready line")

    seen: set[str] = set()
    tasks = demo_tasks()
    for _ in range(6):  # the broker hands tasks to whichever worker asks first
        ids = [swarm.enqueue(task)["id"] for task in tasks if task != "monitoring.heartbeat"]
        for task_id in ids:
            status = swarm.result(task_id, 60)
            assert status["state"] == "SUCCESS", status
            seen.add(status["result"]["worker"])
        if seen == workers:
            break
    assert seen == workers, (seen, workers)

    last: dict[str, Any] = {}

    def fleet_ready() -> bool:
        code, report = swarm.fleet()
        last.update(report)
        return code == 0 and len(report["fleet"]) == WORKERS + 1

    try:
        wait_until(fleet_ready, 60, "the fleet (2 workers, the API) in sync")
    except AssertionError as error:
        raise AssertionError(f"{error}: {last}") from None
    report = last
    assert sorted(r["service"] for r in report["fleet"]) == ["api", *["worker"] * WORKERS]
    assert {r["hostname"] for r in report["fleet"] if r["service"] == "worker"} == workers
    assert {r["hostname"] for r in report["fleet"] if r["service"] == "api"} == \
        set(swarm.containers("api"))


def test_a_publish_reaches_every_replica_live(swarm: SwarmStack, tmp_path: Path) -> None:
    """The seeder job run again (`docker service update --force`, here with a changed source
    bind-mounted): every worker replica and the API apply it without a restart."""
    directory = source_dir(tmp_path, WITH_REPORTS)
    expected = document_of(directory)
    before = {name: swarm.containers(name) for name in ("worker", "api")}
    iteration = swarm.job_iteration("config-seeder")
    started = time.monotonic()
    docker("service", "update", "--detach", "--force", "--mount-add",
           f"type=bind,source={directory},target=/etc/celery-config,readonly",
           swarm.service("config-seeder"), timeout=120)
    wait_until(lambda: swarm.job_iteration("config-seeder") > iteration, 30,
               "a new iteration of the seeder job")
    wait_until(lambda: swarm.job_done("config-seeder", iteration + 1) is not None, 120,
               f"the seeder job again\n{swarm.job_tasks('config-seeder')}")
    task = swarm.job_done("config-seeder", iteration + 1)
    assert task is not None and task["Status"]["ContainerStatus"]["ExitCode"] == 0

    last: dict[str, Any] = {}

    def in_sync() -> bool:
        code, report = swarm.fleet()
        last.update(report)
        return code == 0 and len(report["fleet"]) == WORKERS + 1 and all(
            r["sha256"] == expected.sha256 and int(r["version"]) == 2 for r in report["fleet"])

    try:
        wait_until(in_sync, 60, "every replica on version 2")
    except AssertionError as error:
        raise AssertionError(f"{error}: {last}\n{swarm.logs('config-seeder')}") from None
    MEASUREMENTS.append(f"swarm: seeder job re-run -> fleet in sync on version 2 "
                        f"{time.monotonic() - started:.1f} s")
    ready = swarm.readyz()
    assert ready is not None and (ready["version"], ready["sha256"]) == (2, expected.sha256)
    assert before == {name: swarm.containers(name) for name in ("worker", "api")}
    body = swarm.enqueue("report.build")
    assert body["queue"] == "reports"
    result = swarm.result(body["id"], 60)["result"]
    assert (result["queue"], result["config_version"]) == ("reports", 2)
