"""A new connection of ours costs only what it must (issue 20): no package-metadata lookup of
redis-py's version, no CLIENT SETINFO, no HELLO; just the commands of the operation itself.
The same measure on redis-py's default client shows what it saves (so the test can fail)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
import redis.utils

from celery_config_sync.connection import make_client
from celery_config_sync.snapshot_reading import read_snapshot
from tests.conftest import RedisServer
from tests.figures import figure

pytestmark = pytest.mark.integration


def handshake(admin: redis.Redis, monkeypatch: pytest.MonkeyPatch,
              new_client: Callable[[], redis.Redis]) -> tuple[int, set[str], int]:
    """(metadata lookups, commands the server saw, errors it answered) for one new client
    that reads the snapshot once."""
    lookups = []
    real = redis.utils.get_lib_version
    monkeypatch.setattr(redis.utils, "get_lib_version",
                        lambda: lookups.append(1) or real())
    admin.config_resetstat()
    client = new_client()
    try:
        read_snapshot(client, "celery_config")
    finally:
        client.close()
    monkeypatch.undo()
    commands = {name.removeprefix("cmdstat_") for name in admin.info("commandstats")}
    errors = sum(int(stats["count"]) for stats in admin.info("errorstats").values())
    return len(lookups), commands - {"config|resetstat", "info"}, errors


def test_a_new_client_spends_nothing_on_its_identity(redis_server: RedisServer,
                                                     redis_client: redis.Redis,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    lookups, commands, errors = handshake(redis_client, monkeypatch,
                                          lambda: make_client(redis_server.url))
    assert (lookups, commands, errors) == (0, {"multi", "hgetall", "get", "exec"}, 0)
    default = handshake(redis_client, monkeypatch,
                        lambda: redis.Redis.from_url(redis_server.url))
    figure(f"redis-py's default client: {default[0]} metadata lookup(s), commands "
           f"{sorted(default[1])}, {default[2]} error(s) answered; ours: none of them")
    assert default[0] >= 1 and "hello" in default[1]  # what the lean handshake avoids
