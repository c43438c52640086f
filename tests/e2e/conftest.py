"""The e2e tier: the real compose stack (compose/compose.yaml, profile rpi), one project per
test module, named ``ccs-e2e-<pid>[-suffix]`` so that its containers, network and volumes
never collide with anyone else's, and always torn down (``down -v --timeout 10``).

The API is reached through its published port, bound to 127.0.0.1 on a free port (API_PORT,
API_BIND). A missing engine, compose plugin or image skips loudly here and fails in CI.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from celery_config_sync.codec import ConfigDocument
from celery_config_sync.loader import LoadedConfig
from celery_config_sync.routing import build_routing
from tests.compose_stack import IMAGES, Stack, containers_of, docker, image_ref
from tests.conftest import SOURCE, free_port, require

NAMESPACE = "celery_config"
# Figures measured by the tests, printed at the end of the run (never asserted there).
MEASUREMENTS: list[str] = []


def expected_queue(document: ConfigDocument, task: str) -> str:
    """The queue Celery's own router picks for ``task`` in ``document``."""
    state = build_routing(LoadedConfig(document, 0, document.sha256, "source"))
    assert state.explicit_route(task) is not None, f"no route for {task} in {SOURCE}"
    return str(state.route(task)["queue"].name)


def now_utc() -> datetime:
    return datetime.now(UTC)


@pytest.fixture(scope="session")
def engine() -> None:
    """A Docker engine, its compose plugin and the project's four images, or skip (fail in CI)."""
    try:
        version = docker("version", "--format", "{{.Server.Version}}", check=False, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        require(False, f"no docker CLI or engine ({exc})")
    require(version.returncode == 0, f"no Docker engine ({version.stderr.strip()})")
    plugin = docker("compose", "version", check=False)
    require(plugin.returncode == 0, "the docker compose plugin is missing")
    for name in IMAGES:
        found = docker("image", "inspect", "--format", "{{.Id}}", image_ref(name), check=False)
        require(found.returncode == 0, f"image {image_ref(name)} is missing; run `make bake`")


@contextmanager
def make_stack(suffix: str = "", *, tls: bool = False, profile: str = "rpi",
               **env: str) -> Iterator[Stack]:
    project = f"ccs-e2e-{os.getpid()}{suffix}"
    stack = Stack(project, free_port(), dict(env), tls, profile)
    stack.down()  # a leftover of a crashed run with the same pid
    try:
        yield stack
    finally:
        stack.down()
        left = containers_of(project)
        assert not left, f"containers left behind by {project}: {left}"


def up_measured(stack: Stack, what: str, timeout: float = 240) -> None:
    """``stack.up``, its time printed at the end of the run (never asserted)."""
    started = time.monotonic()
    stack.up(timeout=timeout)
    MEASUREMENTS.append(f"{what}: `up --wait` returned after "
                        f"{time.monotonic() - started:.1f} s")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if MEASUREMENTS:
        terminalreporter.section("e2e measurements")
        for line in MEASUREMENTS:
            terminalreporter.write_line(line)
