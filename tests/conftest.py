"""Shared fixtures: a real redis-server on a free loopback port, and the project paths.

Missing tools skip loudly on a developer machine and fail in CI (CI=true): no tier may be
skipped there.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.figures import FIGURES
from tests.redis_process import RedisServer, free_port, redis_server_binary

__all__ = ["IN_CI", "ROOT", "SOURCE", "RedisServer", "free_port", "require"]

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "config" / "celery" / "source.py"
IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: bool, reason: str) -> None:
    """Skip (loudly) when a prerequisite is missing; in CI, fail instead."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and {reason}: no tier may be skipped in CI", pytrace=False)
    pytest.skip(f"SKIPPED LOUDLY: {reason}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    require(redis_server_binary() is not None,
            "redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone, which it may pause (SIGSTOP) or stop: resumed, then
    stopped, at the end whatever the test left."""
    require(redis_server_binary() is not None, "redis-server is not installed")
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The figures the tests measured (tests/figures.py): printed, never asserted."""
    if FIGURES:
        terminalreporter.section("figures (measured, never asserted)")
        for line in FIGURES:
            terminalreporter.write_line(line)
