"""How many messages wait in each Celery queue, read from the broker's Redis.

kombu's Redis transport keeps a queue as Redis lists, all under the global key prefix (kombu's
``global_keyprefix``, CELERY_CONFIG_CELERY_KEYPREFIX here, ``celery:`` in the stack):
``<prefix><queue>`` for priority 0, and one list per further priority step,
``<prefix><queue>\\x06\\x16<step>`` (kombu.transport.redis: ``Channel.sep``, ``_q_for_pri``,
``PRIORITY_STEPS``). A queue's depth is the sum of its lists' LLEN, as kombu's own ``_size``
counts it. Messages a worker has taken but not acknowledged sit in kombu's ``unacked`` hash, not
here: the depth is what waits, not what runs.

One pipelined round trip for every queue. Used by the Prometheus metrics
(:mod:`celery_config_sync.metrics`) and by anything else that shows the queues.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis

# kombu.transport.redis.Channel.sep and PRIORITY_STEPS, copied rather than imported: kombu
# documents neither as API; tests/integration/test_metrics.py checks them against messages
# kombu itself sends, so a kombu that changes them fails that test.
SEPARATOR = "\x06\x16"
PRIORITY_STEPS: tuple[int, ...] = (0, 3, 6, 9)


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


__all__ = ["PRIORITY_STEPS", "SEPARATOR", "list_keys", "priority_steps", "queue_depths"]
