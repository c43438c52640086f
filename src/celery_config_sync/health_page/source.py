"""Where the health page reads from (:class:`HealthSource`), apart from the view that reads it
(:mod:`.view`): a server builds its source when it starts and imports the view, the history and
the rendering only when the page is first asked for (issue 20: not before it is ready)."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from ..live_config import LiveConfig
from ..loader import RedisReader


@dataclass(frozen=True)
class HealthSource:
    """The page's own reader (its decode memo apart from the watcher's) on ``client`` (by
    default the service's configuration client; the API gives it one with its deadline as
    socket timeout), and the broker's client the metrics already hold (the queues live in the
    broker's Redis, which may be another one)."""

    live: LiveConfig
    reader: RedisReader
    broker: redis.Redis | None  # None: a broker that is not Redis, no depth to show

    @classmethod
    def of(cls, live: LiveConfig, broker: redis.Redis | None,
           client: redis.Redis | None = None) -> HealthSource:
        reader = RedisReader(client or live.reader.client, live.env.namespace,
                             allow=live.env.allow_unsafe)
        return cls(live, reader, broker)

    @property
    def client(self) -> redis.Redis:
        return self.reader.client

    @property
    def namespace(self) -> str:
        return self.reader.namespace
