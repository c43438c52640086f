"""Fixtures for the image tier: the baked images, run as the compose stack runs them
(read-only root filesystem, tmpfs /tmp, no capabilities), on a private network of their own.

Images come from `make bake` (tags ``$REGISTRY/celery-config-sync/<name>:$TAG``); a missing
engine or image skips loudly here and fails in CI.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import pytest
import testinfra
from docker.models.containers import Container

from tests.compose_stack import IMAGES, image_ref, wait_until
from tests.conftest import require

__all__ = ["IMAGES", "PYTHON_IMAGES", "Stack", "health", "image_ref", "wait_until"]

PYTHON_IMAGES = ("config-seeder", "worker", "api")
# What compose's rpi profile applies to every service, so the images are tested as they run.
HARDENING: dict[str, Any] = {
    "read_only": True,
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges:true"],
}


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


@dataclass
class Stack:
    """One network with redis (seeded once), a worker, an api and an idle seeder container."""

    client: docker.DockerClient
    network: str
    containers: dict[str, Container]

    @property
    def env(self) -> dict[str, str]:
        """What every service gets: Redis by its container name on this network."""
        url = f"redis://{self.containers['redis'].name}:6379/0"
        return {"CELERY_CONFIG_REDIS_URL": url, "CELERY_BROKER_URL": url,
                "CELERY_RESULT_BACKEND": url.replace("/0", "/1"),
                "CELERY_CONFIG_WAIT_TIMEOUT": "30"}

    def host(self, name: str) -> Any:
        return testinfra.get_host(f"docker://{self.containers[name].name}")

    def run(self, image: str, command: list[str] | None = None, **kwargs: Any) -> Container:
        """Start a container of ``image`` on this network (not removed: the caller reads it)."""
        options = {**HARDENING, "tmpfs": {"/tmp": "size=16m"}, **kwargs}
        return self.client.containers.run(image_ref(image), command, detach=True,
                                          network=self.network, **options)

    def redis_cli(self, *args: str) -> str:
        result = self.containers["redis"].exec_run(["redis-cli", *args])
        assert result.exit_code == 0, result.output
        return str(result.output.decode().strip())


@pytest.fixture(scope="session")
def stack(docker_client: docker.DockerClient) -> Iterator[Stack]:
    suffix = f"{os.getpid()}"
    network = docker_client.networks.create(f"ccs-img-{suffix}", driver="bridge")
    created: list[Container] = []
    try:
        redis = docker_client.containers.run(
            image_ref("redis"), name=f"ccs-img-redis-{suffix}", detach=True,
            network=network.name, **HARDENING)
        created.append(redis)
        wait_until(lambda: health(redis) == "healthy", 30, "redis healthy")
        current = Stack(docker_client, network.name, {"redis": redis})

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
