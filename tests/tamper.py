"""Writing hostile content into Redis as anyone with write access can: with a correctly
recomputed sha256, so that the content checks, not the hash, must catch it."""

from __future__ import annotations

import hashlib
import json

import redis

from celery_config_sync.redis_layout import HASHES, Keys, _canonical_from_fields


def reseal(client: redis.Redis, namespace: str = "celery_config") -> str:
    """Recompute meta.sha256 over the bytes as stored; return it."""
    keys = Keys(namespace)
    fields = {name: client.hgetall(keys.section(name)) for name in HASHES}
    sha = hashlib.sha256(_canonical_from_fields(fields)).hexdigest()
    client.hset(keys.meta, "sha256", sha)
    return sha


def drop_queue(client: redis.Redis, name: str, namespace: str = "celery_config") -> None:
    """Remove a queue and its name from the declared order (its routes stay)."""
    keys = Keys(namespace)
    client.hdel(keys.queues, name)
    order = [q for q in json.loads(client.hget(keys.section("order"), "queues")) if q != name]
    client.hset(keys.section("order"), "queues", json.dumps(order, separators=(",", ":")))
