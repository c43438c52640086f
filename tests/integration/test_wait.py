"""wait: ready, timed out, and Redis coming up late, against real redis-server processes.

What it waits for is asserted, and that a timeout is not cut short (at least the timeout went
by); how long each wait took is printed, never compared with a budget (tests/figures.py)."""

import threading
import time
from pathlib import Path

from celery_config_sync.publishing import publish
from celery_config_sync.source import load_source
from celery_config_sync.waiting import wait_for_redis, wait_for_version
from tests.conftest import SOURCE, RedisServer, free_port
from tests.figures import figure


def test_ready_when_already_published(redis_server: RedisServer, redis_client) -> None:  # type: ignore[no-untyped-def]
    publish(redis_client, "ns", load_source(str(SOURCE)), source="test")
    started = time.monotonic()
    assert wait_for_version(redis_server.url, "ns", 60)
    figure(f"wait for a version already published: {time.monotonic() - started:.3f} s")


def test_times_out_when_never_published(redis_server: RedisServer, redis_client) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    assert not wait_for_version(redis_server.url, "ns", 1.0)
    elapsed = time.monotonic() - started
    assert elapsed >= 1.0  # the whole timeout waited
    figure(f"wait for a version never published, timeout 1 s: gave up after {elapsed:.3f} s")


def test_times_out_when_redis_is_unreachable() -> None:
    started = time.monotonic()
    assert not wait_for_version(f"redis://127.0.0.1:{free_port()}/0", "ns", 1.5)
    assert not wait_for_redis(f"redis://127.0.0.1:{free_port()}/0", 0.5)
    elapsed = time.monotonic() - started
    assert elapsed >= 2.0  # both timeouts waited
    figure(f"waits on an unreachable Redis, timeouts 1.5 s + 0.5 s: gave up after "
           f"{elapsed:.3f} s")


def test_becomes_ready_after_a_late_publish(redis_server: RedisServer, redis_client) -> None:  # type: ignore[no-untyped-def]
    timer = threading.Timer(1.0, lambda: publish(redis_client, "late", load_source(str(SOURCE)),
                                                 source="test"))
    started = time.monotonic()
    timer.start()
    assert wait_for_version(redis_server.url, "late", 60)
    elapsed = time.monotonic() - started
    timer.join()
    assert elapsed >= 1.0  # it was published 1 s in
    figure(f"wait for a version published 1 s in: ready after {elapsed:.3f} s (backoff capped "
           f"at 2 s)")


def test_survives_redis_starting_late(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    url = server.url  # the port is chosen now; nothing listens on it yet

    def start_and_publish() -> None:
        server.start()
        publish(server.client(), "ns", load_source(str(SOURCE)), source="test")

    timer = threading.Timer(1.0, start_and_publish)
    timer.start()
    try:
        assert wait_for_version(url, "ns", 60)
    finally:
        timer.join()
        server.stop()
