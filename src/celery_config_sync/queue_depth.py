"""How many messages wait in each Celery queue, read from the broker's Redis.

kombu's Redis transport keeps a queue as Redis lists, all under the global key prefix (kombu's
``global_keyprefix``, CELERY_CONFIG_CELERY_KEYPREFIX here, ``celery:`` in the stack):
``<prefix><queue>`` for priority 0, and one list per further priority step,
``<prefix><queue>\\x06\\x16<step>`` (kombu.transport.redis: ``Channel.sep``, ``_q_for_pri``,
``PRIORITY_STEPS``). A queue's depth is the sum of its lists' LLEN, as kombu's own ``_size``
counts it. Messages a worker has taken but not acknowledged sit in kombu's ``unacked`` hash, not
here: the depth is what waits, not what runs.

One pipelined round trip for every queue. Used by the Prometheus metrics
(:mod:`celery_config_sync.metrics`), the health page and ``celery-config status --broker``,
each through :func:`broker_client` (no Prometheus needed: the seeder's image has none).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis

from .connection import make_client, with_password

# kombu.transport.redis.Channel.sep and PRIORITY_STEPS, copied rather than imported: kombu
# documents neither as API; tests/integration/test_metrics.py checks them against messages
# kombu itself sends, so a kombu that changes them fails that test.
SEPARATOR = "\x06\x16"
PRIORITY_STEPS: tuple[int, ...] = (0, 3, 6, 9)
# A scrape or a page must answer even when Redis does not: one attempt, short timeouts, and
# the queue depths are left out (the heartbeat age tells the rest).
DEPTH_CONNECT_TIMEOUT = 0.5
DEPTH_SOCKET_TIMEOUT = 1.0


def broker_client(broker_url: str | None, password: str | None) -> redis.Redis | None:
    """A client of the broker's Redis for the queue depths (None for another broker): the
    service's own broker URL and Redis password, as Celery uses them (celery_app.service_wiring)."""
    if not broker_url or not broker_url.startswith(("redis://", "rediss://", "unix://")):
        return None
    url = with_password(broker_url, password) if password else broker_url
    return make_client(url, retries=0, connect_timeout=DEPTH_CONNECT_TIMEOUT,
                       socket_timeout=DEPTH_SOCKET_TIMEOUT)


def priority_steps(settings: Mapping[str, Any]) -> tuple[int, ...]:
    """The steps the broker uses: ``broker_transport_options['priority_steps']``, or kombu's."""
    options = settings.get("broker_transport_options") or {}
    steps = options.get("priority_steps") if isinstance(options, Mapping) else None
    return tuple(sorted(int(step) for step in steps)) if steps else PRIORITY_STEPS


def list_keys(queue: str, keyprefix: str = "",
              steps: Sequence[int] = PRIORITY_STEPS) -> list[str]:
    """The Redis lists holding ``queue``'s messages, one per priority step."""
    return [f"{keyprefix}{queue}{SEPARATOR}{step}" if step else f"{keyprefix}{queue}"
            for step in steps]


def queue_depths(client: redis.Redis, queue_names: Iterable[str], keyprefix: str = "",
                 steps: Sequence[int] = PRIORITY_STEPS) -> dict[str, int]:
    """queue name -> messages waiting in it, in one round trip (raises redis errors)."""
    names = list(dict.fromkeys(queue_names))
    per_queue = len(steps)
    pipe = client.pipeline(transaction=False)
    for name in names:
        for key in list_keys(name, keyprefix, steps):
            pipe.llen(key)
    lengths = pipe.execute() if names else []
    return {name: sum(lengths[i * per_queue:(i + 1) * per_queue])
            for i, name in enumerate(names)}


__all__ = ["PRIORITY_STEPS", "SEPARATOR", "broker_client", "list_keys", "priority_steps",
           "queue_depths"]
