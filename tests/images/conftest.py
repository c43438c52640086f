"""Fixtures for the image tier: the baked images, run as the compose stack runs them
(read-only root filesystem, tmpfs /tmp, no capabilities), on a private network of their own.

Images come from `make bake` (tags ``$REGISTRY/celery-config-sync/<name>:$TAG``); a missing
engine or image skips loudly here and fails in CI.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
import testinfra
from docker.models.containers import Container

from tests.compose_stack import IMAGES, MAKE_SECRETS, image_ref
from tests.conftest import require
from tests.polling import wait_until

__all__ = ["IMAGES", "PYTHON_IMAGES", "Stack", "health", "image_ref", "wait_until"]

PYTHON_IMAGES = ("config-seeder", "worker", "api")
# What compose's rpi profile applies to every service, so the images are tested as they run.
HARDENING: dict[str, Any] = {
    "read_only": True,
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges:true"],
}


def redis_options(secrets: Path) -> dict[str, Any]:
    """What compose gives the redis service: every role's password file, a tmpfs for its ACL."""
    # One mount per file, as compose does (the directory itself is 0700, for its owner only).
    return {"volumes": {str(path): {"bind": f"/run/secrets/{path.name}", "mode": "ro"}
                        for path in sorted(secrets.iterdir())},
            "tmpfs": {"/run/redis": "size=1m,uid=999,gid=999,mode=0700"}}


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        require(False, f"no Docker engine ({exc}); run .ci/toolchain.sh")
    for name in IMAGES:
        try:
            client.images.get(image_ref(name))
        except docker.errors.ImageNotFound:
            require(False, f"image {image_ref(name)} is missing; run `make bake`")
    return client


def health(container: Container) -> str:
    container.reload()
    state = container.attrs["State"]
    if state["Status"] != "running":
        return state["Status"]
    return str(state.get("Health", {}).get("Status", "none"))


# The Redis user each image runs as (images/redis/roles.acl).
ROLE = {"config-seeder": "seeder", "worker": "worker", "api": "api"}


@dataclass
class Stack:
    """One network with redis (seeded once), a worker, an api and an idle seeder container."""

    client: docker.DockerClient
    network: str
    containers: dict[str, Container]
    secrets: Path  # this stack's Redis passwords, made by compose/make-secrets.sh

    @property
    def env(self) -> dict[str, str]:
        """What every service gets besides its Redis user (added by :meth:`run`)."""
        return {"CELERY_CONFIG_WAIT_TIMEOUT": "30"}

    def role_env(self, image: str) -> dict[str, str]:
        """Redis by its container name on this network, as the image's own user, with its
        password in a file (mounted by :meth:`run`) and Celery's keys under the ACL's prefix."""
        if image not in ROLE:
            return {}
        url = f"redis://{ROLE[image]}@{self.containers['redis'].name}:6379"
        return {"CELERY_CONFIG_REDIS_URL": f"{url}/0", "CELERY_BROKER_URL": f"{url}/0",
                "CELERY_RESULT_BACKEND": f"{url}/1",
                "CELERY_CONFIG_REDIS_PASSWORD_FILE": "/run/secrets/redis-password",
                "CELERY_CONFIG_CELERY_KEYPREFIX": "celery:"}

    def host(self, name: str) -> Any:
        return testinfra.get_host(f"docker://{self.containers[name].name}")

    def run(self, image: str, command: list[str] | None = None, *,
            environment: dict[str, str] | None = None, **kwargs: Any) -> Container:
        """Start a container of ``image`` on this network (not removed: the caller reads it),
        as compose runs it: its Redis user and password file; ``environment`` wins."""
        options = {**HARDENING, "tmpfs": {"/tmp": "size=16m"}, **kwargs}
        if image == "redis":
            options.update(redis_options(self.secrets))
        if image in ROLE:
            options["volumes"] = {**options.get("volumes", {}),
                                  str(self.secrets / f"redis-{ROLE[image]}"): {
                                      "bind": "/run/secrets/redis-password", "mode": "ro"}}
        return self.client.containers.run(
            image_ref(image), command, detach=True, network=self.network,
            environment={**self.role_env(image), **(environment or {})}, **options)

    def redis_cli(self, *args: str) -> str:
        result = self.containers["redis"].exec_run(["redis-admin", *args])
        assert result.exit_code == 0, result.output
        return str(result.output.decode().strip())


@pytest.fixture(scope="session")
def stack(docker_client: docker.DockerClient) -> Iterator[Stack]:
    suffix = f"{os.getpid()}"
    secrets = Path(tempfile.mkdtemp(prefix=f"ccs-img-{suffix}-")) / "secrets"
    subprocess.run(["sh", str(MAKE_SECRETS), str(secrets)], check=True, capture_output=True)
    network = docker_client.networks.create(f"ccs-img-{suffix}", driver="bridge")
    created: list[Container] = []
    try:
        redis = docker_client.containers.run(
            image_ref("redis"), name=f"ccs-img-redis-{suffix}", detach=True,
            network=network.name, **{**HARDENING, **redis_options(secrets)})
        created.append(redis)
        wait_until(lambda: health(redis) == "healthy", 30, "redis healthy")
        current = Stack(docker_client, network.name, {"redis": redis}, secrets)

        seeder = current.run("config-seeder", name=f"ccs-img-seed-{suffix}",
                             environment={**current.env, "CELERY_CONFIG_OVERLAY": "rpi"})
        created.append(seeder)
        assert seeder.wait(timeout=60)["StatusCode"] == 0, seeder.logs().decode()

        for name in ("worker", "api"):
            container = current.run(name, name=f"ccs-img-{name}-{suffix}",
                                    environment=current.env)
            created.append(container)
            current.containers[name] = container
        # An idle container of the seeder image, to inspect its filesystem.
        idle = current.run("config-seeder", ["infinity"], name=f"ccs-img-seeder-{suffix}",
                           entrypoint="sleep")
        created.append(idle)
        current.containers["config-seeder"] = idle
        for name in ("worker", "api"):
            container = current.containers[name]
            wait_until(lambda c=container: health(c) == "healthy", 90,  # type: ignore[misc]
                       f"{name} healthy (logs: docker logs {container.name})")
        yield current
    finally:
        for container in created:
            container.remove(force=True, v=True)
        network.remove()
