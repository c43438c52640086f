"""Which declared queue a message was delivered through, from its exchange and routing key.

The Redis transport's delivery info names the exchange and routing key, not the queue; kombu's
own exchange types say which declared queue those select.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from kombu.entity import Queue
from kombu.transport.virtual.exchange import TopicExchange

_topic = TopicExchange(channel=None)


def queue_for(delivery_info: Mapping[str, Any], queues: Iterable[Queue]) -> str | None:
    exchange = delivery_info.get("exchange") or ""
    routing_key = delivery_info.get("routing_key") or ""
    for queue in queues:
        if queue.exchange is None or queue.exchange.name != exchange:
            # The default exchange ("") delivers straight to the queue named by the key.
            if not exchange and queue.name == routing_key:
                return str(queue.name)
            continue
        kind = queue.exchange.type
        if kind == "fanout" or (kind == "direct" and queue.routing_key == routing_key):
            return str(queue.name)
        if kind == "topic" and re.match(_topic.key_to_pattern(queue.routing_key), routing_key):
            return str(queue.name)
    return None
