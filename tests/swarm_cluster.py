"""A Docker Swarm of two engines on one machine, and a stack of compose/base.yaml +
compose/swarm.yaml on it: used by the swarm e2e tier (tests/e2e/test_swarm.py) and the
replica start-up report (bench/swarm_report.py), as tests/compose_stack.py serves the compose
tier and the stack report.

The manager is this machine's engine: `docker swarm init` advertised on its bridge address
(the other engines reach it there). Each further node is a privileged container running its
own dockerd (tests/swarm_node, Debian's docker.io on the local base image), joined with
`docker swarm join`: a second Raspberry Pi as far as Swarm can tell. The project's images go
to the local registry first, and a node pulls them from there by the same names
(localhost:5000/...): inside the node, socat carries its loopback port 5000 to a forwarder
this module runs on the manager's bridge address, which reaches the registry on 127.0.0.1.

Nodes are labelled as a household's Pis would be (README, "A cluster of Pis"): the manager
keeps Redis (celery-config-sync.redis=true), and each node is its own zone
(celery-config-sync.zone), over which the worker replicas spread. On exit the stack, the
node containers (and their image stores), the forwarder and the swarm are gone: the engine
as it was found (`docker swarm leave --force`).
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.compose_stack import (
    COMPOSE_FILE,
    FOREIGN,
    IMAGES,
    REGISTRY,
    TAG,
    Deployment,
    docker,
    image_ref,
)
from tests.polling import wait_until

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_DIR = COMPOSE_FILE.parent
STACK_FILES = (COMPOSE_DIR / "base.yaml", COMPOSE_DIR / "swarm.yaml")
NODE_DIR = ROOT / "tests" / "swarm_node"
NODE_IMAGE = "ccs-swarm-node:test"
BASE_IMAGE = os.environ.get("BASE_IMAGE", "127.0.0.1:5000/debian:bookworm-slim")
REDIS_LABEL = "celery-config-sync.redis"
ZONE_LABEL = "celery-config-sync.zone"
# Put on the manager right after `swarm init`: a swarm that carries it was made by this module,
# and one found at start can only be left by a run that was killed (it is left, not refused).
MADE_HERE_LABEL = "celery-config-sync.test-cluster"


class SwarmUnavailable(Exception):
    """What this machine lacks to build the cluster (the caller skips, or fails in CI)."""


def run(command: list[str], env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env,
                          check=False)


def clean_env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in FOREIGN}
    return {**base, "REGISTRY": REGISTRY, "TAG": TAG, **extra}


def stack_args(*files: Path) -> list[str]:
    return [arg for path in files for arg in ("-c", str(path))]


def swarm_state() -> str:
    return docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()


@dataclass(frozen=True)
class Node:
    """One engine of the swarm: this machine's (container None) or a node container's."""

    hostname: str
    address: str  # where its host-mode published ports answer from this machine
    container: str | None = None

    def docker(self, *args: str, timeout: float = 60,
               check: bool = True) -> subprocess.CompletedProcess[str]:
        if self.container is None:
            return docker(*args, timeout=timeout, check=check)
        return docker("exec", self.container, "docker", *args, timeout=timeout, check=check)


@dataclass
class Cluster:
    manager: Node
    workers: list[Node] = field(default_factory=list)

    @property
    def nodes(self) -> list[Node]:
        return [self.manager, *self.workers]

    def node(self, hostname: str) -> Node:
        (found,) = [n for n in self.nodes if n.hostname == hostname]
        return found


def _bridge_gateway() -> str:
    gateway = docker("network", "inspect", "bridge", "--format",
                     "{{(index .IPAM.Config 0).Gateway}}").stdout.strip()
    if not gateway:
        raise SwarmUnavailable("the engine's bridge network has no gateway address")
    return gateway


def _free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def _registry_forwarder(address: str) -> Iterator[str]:
    """The registry (127.0.0.1 only, as .ci/start-engine.sh runs it) on ``address`` too, for
    as long as the cluster lives: host:port for the nodes."""
    registry_port = REGISTRY.rsplit(":", 1)[-1]
    port = _free_port(address)
    try:
        process = subprocess.Popen(
            ["socat", f"TCP-LISTEN:{port},bind={address},fork,reuseaddr",
             f"TCP:127.0.0.1:{registry_port}"], stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
    except FileNotFoundError:
        raise SwarmUnavailable("socat is not installed (.ci/install-engine.sh)") from None
    try:
        def answers() -> bool:
            try:
                return httpx.get(f"http://{address}:{port}/v2/", timeout=2).status_code == 200
            except httpx.HTTPError:
                return process.poll() is not None  # dead: stop waiting, report below

        wait_until(answers, 20, f"the registry forwarder on {address}:{port}")
        if process.poll() is not None:
            _, stderr = process.communicate()
            raise SwarmUnavailable(f"socat exited: {stderr.strip()}")
        yield f"{address}:{port}"
    finally:
        process.terminate()
        process.wait(10)


def _push_images() -> None:
    """The images the stack names, into the registry every node pulls from."""
    if REGISTRY.split(":")[0] not in ("localhost", "127.0.0.1"):
        raise SwarmUnavailable(f"REGISTRY={REGISTRY}: the swarm tier needs the local registry")
    for name in IMAGES:
        docker("push", "--quiet", image_ref(name), timeout=300)


def _start_node(name: str, hostname: str, forward: str) -> Node:
    docker("rm", "--force", "--volumes", name, check=False)  # a crashed run's, same pid
    docker("run", "--detach", "--privileged", "--name", name, "--hostname", hostname,
           "--env", f"REGISTRY_FORWARD={forward}",
           "--env", f"REGISTRY_PORT={REGISTRY.rsplit(':', 1)[-1]}", NODE_IMAGE)
    node = Node(hostname, docker("inspect", "--format", "{{.NetworkSettings.IPAddress}}",
                                 name).stdout.strip(), name)
    wait_until(lambda: node.docker("info", check=False).returncode == 0, 60,
               f"dockerd in {name}\n{docker('logs', name, check=False).stderr[-3000:]}")
    return node


def _made_here() -> bool:
    label = docker("node", "inspect", "self", "--format",
                   f'{{{{index .Spec.Labels "{MADE_HERE_LABEL}"}}}}', check=False)
    return label.returncode == 0 and label.stdout.strip() == "true"


@contextmanager
def swarm_cluster(extra_nodes: int = 1) -> Iterator[Cluster]:
    """This engine as manager plus ``extra_nodes`` node containers, in one swarm."""
    state = swarm_state()
    if state != "inactive" and _made_here():
        print(f"swarm_cluster: leaving the swarm a killed run left behind ({state})")
        docker("swarm", "leave", "--force", timeout=120)
        state = swarm_state()
    if state != "inactive":
        raise SwarmUnavailable(f"the engine is already in a swarm (LocalNodeState {state!r}) "
                               f"that this test did not create: it will not join nor leave it")
    built = docker("build", "--quiet", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "--tag",
                   NODE_IMAGE, str(NODE_DIR), check=False, timeout=600)
    if built.returncode != 0:
        raise SwarmUnavailable(f"cannot build the node image: {built.stderr[-2000:]}")
    _push_images()
    gateway = _bridge_gateway()
    networks_before = set(docker("network", "ls", "--format", "{{.Name}}").stdout.split())
    containers: list[str] = []
    with ExitStack() as cleanup:
        forward = cleanup.enter_context(_registry_forwarder(gateway))

        @cleanup.callback
        def leave() -> None:
            for name in containers:
                docker("rm", "--force", "--volumes", name, check=False, timeout=120)
            docker("swarm", "leave", "--force", check=False)
            # Leaving keeps the bridge the swarm created: the engine as found.
            if "docker_gwbridge" not in networks_before:
                docker("network", "rm", "docker_gwbridge", check=False)

        docker("swarm", "init", "--advertise-addr", gateway)
        hostname = docker("info", "--format", "{{.Name}}").stdout.strip()
        docker("node", "update", "--label-add", f"{MADE_HERE_LABEL}=true", hostname)
        token = docker("swarm", "join-token", "--quiet", "worker").stdout.strip()
        cluster = Cluster(Node(hostname, "127.0.0.1"))
        for index in range(1, extra_nodes + 1):
            containers.append(f"ccs-swarm-{os.getpid()}-node{index}")
            node = _start_node(containers[-1], f"ccs-node{index}", forward)
            node.docker("swarm", "join", "--token", token, f"{gateway}:2377", timeout=60)
            cluster.workers.append(node)

        def all_ready() -> bool:
            listed = docker("node", "ls", "--format", "{{.Hostname}} {{.Status}}").stdout
            ready = {line.split()[0] for line in listed.splitlines() if line.endswith("Ready")}
            return ready == {n.hostname for n in cluster.nodes}

        wait_until(all_ready, 60, "every node Ready in `docker node ls`")
        for zone, node in enumerate(cluster.nodes):
            labels = ["--label-add", f"{ZONE_LABEL}=zone-{zone}"]
            if node is cluster.manager:
                labels += ["--label-add", f"{REDIS_LABEL}=true"]
            docker("node", "update", *labels, node.hostname)
        yield cluster
    if swarm_state() != "inactive":
        raise AssertionError("the engine is still in a swarm after leaving it")


@dataclass
class SwarmStack(Deployment):
    """A stack deployed on a Cluster, reached like a compose Stack (the API on its host-mode
    port: this machine's by default, any node's with ``on``), the Redis passwords in its own
    make-secrets.sh folder."""

    cluster: Cluster | None = None
    workers: int = 2
    apis: int = 1
    beats: int = 2  # compose/swarm.yaml's default: at most one per node
    api_address: str = "127.0.0.1"  # the node whose published API port this view uses

    def environ(self, **extra: str) -> dict[str, str]:
        return clean_env(API_PORT=str(self.api_port), CELERY_SECRETS_DIR=str(self.secrets),
                         WORKER_REPLICAS=str(self.workers), API_REPLICAS=str(self.apis),
                         BEAT_REPLICAS=str(self.beats),
                         **self.env, **extra)

    def service(self, name: str) -> str:
        return f"{self.project}_{name}"

    @property
    def network(self) -> str:
        return f"{self.project}_default"

    def on(self, node: Node) -> SwarmStack:
        """The same stack, its API reached on ``node``'s published port."""
        view = copy.copy(self)  # not dataclasses.replace: that would make new secrets
        view.api_address = node.address
        view._http = None  # its own client, for its own address
        return view

    @property
    def url(self) -> str:
        return f"http://{self.api_address}:{self.api_port}"

    def context(self) -> str:
        return self.logs()

    def deploy(self) -> None:
        result = run(["docker", "stack", "deploy", "--detach=true",
                      *stack_args(*STACK_FILES), self.project], self.environ())
        assert result.returncode == 0, (result.stdout, result.stderr)

    def logs(self, service: str | None = None, *, timestamps: bool = False) -> str:
        """One service's log (every task's, every node's), or where every task stands. A
        diagnostic: `docker service logs` can hang on a task whose node lost it (a replica
        just killed), so what it gave within 30 s is returned, never an exception."""
        if service is None:
            command = ["stack", "ps", "--no-trunc", self.project]
        else:
            command = ["service", "logs", "--raw", "--tail", "200", self.service(service)]
        try:
            result = docker(*command, check=False, timeout=30)
        except subprocess.TimeoutExpired as late:
            return (_text(late.stdout) + _text(late.stderr))[-8000:] + \
                f"\n(docker {' '.join(command)}: no end after 30 s)"
        return (result.stdout + result.stderr)[-8000:]

    def tasks(self, name: str) -> list[dict[str, Any]]:
        """Every task of one service that still exists: Swarm may prune one (a replica scaled
        away, an old one beyond the task history) between `service ps` and `inspect`."""
        ids = docker("service", "ps", "--quiet", "--no-trunc", self.service(name)).stdout.split()
        if not ids:
            return []
        result = docker("inspect", "--type", "task", *ids, check=False)
        gone = [line for line in result.stderr.splitlines() if line.strip()]
        if result.returncode != 0 and (not gone or any("not found" not in line.lower()
                                                        and "no such" not in line.lower()
                                                        for line in gone)):
            raise AssertionError(f"docker inspect --type task -> {result.returncode}\n"
                                 f"{result.stderr}")
        found: list[dict[str, Any]] = json.loads(result.stdout or "[]")
        return found

    def running(self, name: str) -> dict[str, str]:
        """The running containers of one service, every node's: 12-character container id
        (the replica's hostname, which Celery and the fleet report) -> node hostname."""
        nodes = {json.loads(line)["ID"]: json.loads(line)["Hostname"] for line in
                 docker("node", "ls", "--format", "{{json .}}").stdout.splitlines()}
        found = {}
        for task in self.tasks(name):
            status = task["Status"]
            if status["State"] == "running" and task["DesiredState"] == "running":
                container = status.get("ContainerStatus", {}).get("ContainerID", "")
                found[container[:12]] = nodes.get(task["NodeID"], task["NodeID"])
        return found

    def started(self, name: str) -> dict[str, Node]:
        """Every started container of one service, whatever Swarm's task state says (a
        replica is "starting" until its first healthcheck passes): id -> its node."""
        assert self.cluster is not None
        return {container: node for node in self.cluster.nodes for container in node.docker(
            "ps", "--quiet", "--filter", f"label=com.docker.swarm.service.name="
            f"{self.service(name)}").stdout.split()}

    def kill(self, name: str, container: str) -> None:
        """SIGKILL one replica where it runs (a crash, as Swarm sees it)."""
        self.started(name)[container].docker("kill", container)

    def job_done(self, name: str, iteration: int) -> dict[str, Any] | None:
        """The task of job iteration ``iteration`` once it completed, else None."""
        for task in self.tasks(name):
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
                        "--env", "CELERY_CONFIG_WAIT_TIMEOUT=5",
                        image_ref("config-seeder"), "status", check=False, timeout=120)
        assert "Traceback" not in result.stderr, result.stderr
        lines = result.stdout.strip().splitlines()
        # No report at all: Redis not (yet) reachable, exit 3 and one line on stderr.
        assert lines or result.returncode == 3, (result.returncode, result.stderr)
        report: dict[str, Any] = json.loads(lines[-1]) if lines else {"fleet": []}
        return result.returncode, report

    def wait_in_sync(self, timeout: float, version: int | None = None) -> dict[str, Any]:
        """Until the fleet is exactly the running replicas (stale records of replaced ones
        expired), every one on the published version (``version`` if given): the report."""
        last: dict[str, Any] = {}

        def in_sync() -> bool:
            code, report = self.fleet()
            last.clear()
            last.update(report)
            expected = {**{c: "worker" for c in self.running("worker")},
                        **{c: "beat" for c in self.running("beat")},
                        **{c: "api" for c in self.running("api")}}
            reported = {r["hostname"]: r["service"] for r in report["fleet"]}
            return (code == 0 and reported == expected
                    and len(expected) == self.workers + self.beats + self.apis
                    and (version is None or report["version"] == version))

        try:
            wait_until(in_sync, timeout, "the fleet: every running replica, in sync")
        except AssertionError as error:
            raise AssertionError(f"{error}: {last}\n{self.logs()}") from None
        return last

    def remove(self) -> float:
        """`docker stack rm`, then wait until its containers and network are gone from every
        node, and remove its volumes there (stack rm keeps them): the seconds it took."""
        started = time.monotonic()
        docker("stack", "rm", self.project, check=False)
        label = f"label=com.docker.stack.namespace={self.project}"
        nodes = self.cluster.nodes if self.cluster else [Node("", "127.0.0.1")]

        def gone() -> bool:
            return not any(
                node.docker("ps", "--all", "--quiet", "--filter", label).stdout.split()
                or node.docker("network", "ls", "--quiet", "--filter", label).stdout.split()
                for node in nodes)

        wait_until(gone, 120, f"stack {self.project}'s containers and network to go")
        took = time.monotonic() - started
        for node in nodes:
            volumes = node.docker("volume", "ls", "--quiet", "--filter", label).stdout.split()
            if volumes:
                node.docker("volume", "rm", *volumes)
        return took


def _text(output: bytes | str | None) -> str:
    """What a timed-out subprocess had written (bytes, even when run with text=True)."""
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""
