"""Writing hostile content into Redis as anyone with write access can: with a correctly
recomputed sha256, so that the content checks, not the hash, must catch it."""

from __future__ import annotations

import hashlib
import json

import redis

from celery_config_sync.codec import ConfigDocument, canonical_json
from celery_config_sync.redis_keys import HASHES, SCHEMA_VERSION, Keys
from celery_config_sync.strict_fields import canonical_from_fields


def reseal(client: redis.Redis, namespace: str = "celery_config") -> str:
    """Recompute meta.sha256 over the bytes as stored; return it."""
    keys = Keys(namespace)
    fields = {name: client.hgetall(keys.section(name)) for name in HASHES}
    sha = hashlib.sha256(canonical_from_fields(fields)).hexdigest()
    client.hset(keys.meta, "sha256", sha)
    return sha


def drop_queue(client: redis.Redis, name: str, namespace: str = "celery_config") -> None:
    """Remove a queue and its name from the declared order (its routes stay)."""
    keys = Keys(namespace)
    client.hdel(keys.queues, name)
    order = [q for q in json.loads(client.hget(keys.section("order"), "queues")) if q != name]
    client.hset(keys.section("order"), "queues", json.dumps(order, separators=(",", ":")))


def history_record(version: int, canonical: bytes) -> dict[str, str]:
    """A history record for ``canonical`` (a document's canonical JSON) with the right sha256."""
    return {"version": str(version), "sha256": hashlib.sha256(canonical).hexdigest(),
            "published_at": "2020-01-01T00:00:00+00:00", "publisher": "tamper:1",
            "source": "tampered", "schema_version": SCHEMA_VERSION, "change": "live",
            "restart_required": "", "summary": "tampered", "bytes": str(len(canonical))}


def store_version(client: redis.Redis, version: int, document: ConfigDocument,
                  namespace: str = "celery_config") -> None:
    """Write a version into the history directly, as whoever can write Redis can: its canonical
    document and a record whose sha256 is right, so that decoding and validation, not the
    hash, must refuse what this release refuses."""
    keys = Keys(namespace)
    canonical = document.canonical().encode()
    client.hset(keys.history, str(version), canonical_json(history_record(version, canonical)))
    client.hset(keys.history_documents, str(version), canonical)
