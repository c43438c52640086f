"""Drive one compose project of compose/compose.yaml (profile rpi, or dev) from Python: used by the
e2e tier (tests/e2e) and by the stack report (bench/stack_report.py), as tests/redis_process.py
serves the integration tier and the load benchmark.

A project is named by its caller (``ccs-e2e-...``) so that its containers, network and volumes
never collide with anyone else's; the API is reached on 127.0.0.1 through API_PORT/API_BIND.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.api_client import ApiEndpoint
from tests.polling import wait_until

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = os.environ.get("REGISTRY", "localhost:5000")
TAG = os.environ.get("TAG", "latest")
IMAGES = ("redis", "config-seeder", "worker", "api")
COMPOSE_FILE = ROOT / "compose" / "compose.yaml"
# Variables of the caller's shell that would change which stack compose runs.
FOREIGN = ("COMPOSE_FILE", "COMPOSE_PROJECT_NAME", "COMPOSE_PROFILES", "DOCKER_DEFAULT_PLATFORM",
           "IMAGES", "API_PORT", "API_BIND", "CELERY_CONFIG_WAIT_TIMEOUT",
           "CELERY_CONFIG_ON_TIMEOUT",
           "CELERY_CONFIG_LIVE_RELOAD", "CELERY_CONFIG_ON_RESTART_REQUIRED",
           "CELERY_CONFIG_HEARTBEAT_INTERVAL", "CELERY_CONFIG_BEAT_LOCK_TIMEOUT",
           "CELERY_SECRETS_DIR", "API_DEV_PORT", "REDIS_DEV_PORT", "BEAT_REPLICAS",
           "CELERY_CONFIG_API_ALLOWED_HOSTS", "CELERY_CONFIG_API_PROTECT_VIEWS")
TLS_FILE = ROOT / "compose" / "tls.yaml"
MAKE_SECRETS = ROOT / "compose" / "make-secrets.sh"
MAKE_TLS = ROOT / "compose" / "make-tls.sh"


def image_ref(name: str) -> str:
    return f"{REGISTRY}/celery-config-sync/{name}:{TAG}"


def demo_tasks() -> tuple[str, ...]:
    """worker_service.app.DEMO_TASKS (importing the worker's module has no side effect)."""
    from worker_service.app import DEMO_TASKS

    return tuple(DEMO_TASKS)


def parse_docker_time(text: str) -> datetime:
    """RFC 3339 with nanoseconds (docker inspect, docker logs -t) -> aware datetime (µs)."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)",
                         text.strip())
    assert match, f"not an RFC 3339 time: {text!r}"
    head, fraction, zone = match.groups()
    zone = "+00:00" if zone == "Z" else zone
    return datetime.fromisoformat(f"{head}.{((fraction or '') + '000000')[:6]}{zone}")


def docker(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                            check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} -> {result.returncode}\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


@dataclass
class Deployment(ApiEndpoint):
    """What every deployment of the services has, a compose project (Stack) or a Swarm stack
    (tests/swarm_cluster.py): its name, the API's port on this machine, variables for its
    files, and its own Redis passwords and API token, made by the project's script as
    `make secrets` makes them. Each kind adds how it runs (composition of these parts, not a
    Swarm stack inheriting compose's commands)."""

    project: str
    api_port: int
    env: dict[str, str] = field(default_factory=dict)
    secrets: Path = field(init=False)
    # Its containers are recreated under some tests: a new connection per request.
    keep_alive = False

    def __post_init__(self) -> None:
        self.secrets = Path(tempfile.mkdtemp(prefix=f"{self.project}-")) / "secrets"
        for script in self.secret_scripts():
            subprocess.run(["sh", str(script), str(self.secrets)], check=True,
                           capture_output=True)

    def secret_scripts(self) -> tuple[Path, ...]:
        return (MAKE_SECRETS,)

    def password(self, role: str) -> str:
        return (self.secrets / f"redis-{role}").read_text().strip()

    @property
    def token(self) -> str:
        """The API's bearer token (the api-token secret, made with the passwords)."""
        return (self.secrets / "api-token").read_text().strip()


@dataclass
class Stack(Deployment):
    """One compose project of compose/compose.yaml, profile rpi (or dev: its services are
    the rpi ones with a -dev suffix, the API on API_DEV_PORT). Services are named as rpi's."""

    tls: bool = False  # with compose/tls.yaml (TLS between the services and Redis)
    profile: str = "rpi"
    # Ours, or a project's own that includes it (examples/orders/compose.yaml): its folder is
    # the project directory.
    compose_file: Path = COMPOSE_FILE

    def secret_scripts(self) -> tuple[Path, ...]:
        return (MAKE_SECRETS, MAKE_TLS) if self.tls else (MAKE_SECRETS,)

    # ------------------------------------------------------------------ compose and docker
    def environ(self, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if k not in FOREIGN}
        return {**base, "API_PORT": str(self.api_port), "API_DEV_PORT": str(self.api_port),
                "API_BIND": "127.0.0.1",
                "REGISTRY": REGISTRY, "TAG": TAG, "CELERY_SECRETS_DIR": str(self.secrets),
                **self.env, **extra}

    def command(self, *args: str) -> list[str]:
        # compose/ is the project directory: its services extend compose/base.yaml, a path
        # compose versions resolve against the file or the project directory (the same here).
        files = [self.compose_file, TLS_FILE] if self.tls else [self.compose_file]
        return ["docker", "compose", "--project-directory", str(self.compose_file.parent),
                *(arg for path in files for arg in ("-f", str(path))),
                "-p", self.project, "--profile", self.profile, *args]

    def compose(self, *args: str, timeout: float = 120, check: bool = True,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        command = self.command(*args)
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                env=self.environ(**(env or {})), check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} -> {result.returncode}\n"
                                 f"{result.stdout}\n{result.stderr}\n{self.logs()}")
        return result

    def name(self, service: str) -> str:
        """The compose service of this profile for the rpi service ``service``."""
        return service if self.profile == "rpi" else f"{service}-{self.profile}"

    def container(self, service: str) -> str:
        return f"{self.project}-{self.name(service)}-1"

    def inspect(self, service: str) -> dict[str, Any]:
        out = docker("inspect", self.container(service)).stdout
        document: list[dict[str, Any]] = json.loads(out)
        return document[0]

    def logs(self, service: str | None = None, *, timestamps: bool = False) -> str:
        """One service's container log (stdout and stderr), or the tail of every service's."""
        if service is None:
            return self.compose("logs", "--no-color", "--tail", "60",
                                check=False).stdout[-8000:]
        args = ["logs"] + (["--timestamps"] if timestamps else []) + [self.container(service)]
        result = docker(*args, check=False)
        return result.stdout + result.stderr

    def redis_cli(self, *args: str) -> str:
        """redis-cli in the redis container as the admin user (the image's redis-admin)."""
        return self.compose("exec", "-T", self.name("redis"), "redis-admin", *args).stdout.strip()

    def health(self, service: str) -> str:
        state = self.inspect(service)["State"]
        if state["Status"] != "running":
            return str(state["Status"])
        return str(state.get("Health", {}).get("Status", "none"))

    # ------------------------------------------------------------------------------ the API
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def context(self) -> str:
        return self.logs()

    def start_without_redis(self, wait: float) -> tuple[float, float, dict[str, Any]]:
        """(Re)create worker and api alone (redis stopped by the caller) with the gate waiting
        ``wait`` seconds: the seconds from each container's start to ready (api: /readyz
        answers ready; worker: its log line naming the source it loaded), and /readyz's body.
        The e2e fallback cases assert on it, the stack report prints it."""
        self.compose("up", "--detach", "--no-deps", "--force-recreate", "worker", "api",
                     env={"CELERY_CONFIG_WAIT_TIMEOUT": str(wait)})
        body = self.wait_ready(wait + 60)
        ready_at = datetime.now(UTC)
        api_started = parse_docker_time(self.inspect("api")["State"]["StartedAt"])
        marker = "Celery configuration loaded from"
        wait_until(lambda: marker in self.logs("worker"), 60, "the worker's configuration line")
        line = next(line for line in self.logs("worker", timestamps=True).splitlines()
                    if marker in line)
        worker_started = parse_docker_time(self.inspect("worker")["State"]["StartedAt"])
        return ((ready_at - api_started).total_seconds(),
                (parse_docker_time(line.split()[0]) - worker_started).total_seconds(), body)

    # ---------------------------------------------------------------------- set up, tear down
    def up(self, timeout: float) -> None:
        """Up and healthy, and the worker consuming: Celery logs "ready." once it consumes
        every queue. The monitoring queue is bound to a fanout exchange, which the Redis
        transport carries over pub/sub: a message sent before the worker subscribed is lost
        (by design of fanout), so no task is sent before that line."""
        started = time.monotonic()
        self.compose("up", "--detach", "--wait", "--wait-timeout", str(int(timeout)),
                     timeout=timeout + 30)
        left = max(10.0, timeout - (time.monotonic() - started))
        wait_until(lambda: " ready." in self.logs("worker"), left,
                   lambda: f"the worker's ready line\n{self.logs()}")

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "10", timeout=120,
                     check=False)


def containers_of(project: str) -> list[dict[str, Any]]:
    """Every container of a compose project, running or not (docker ps -a)."""
    out = docker("ps", "--all", "--no-trunc", "--filter",
                 f"label=com.docker.compose.project={project}", "--format", "{{json .}}").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


