"""The read side of the Redis layout: every key of a namespace in one round trip (one
MULTI/EXEC pipeline, one consistent snapshot), still as bytes; or the version and sha256 alone.
Decoding is celery_config_sync.snapshot_decoding's."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from .counters import parse_counter
from .errors import is_wrong_type, wrong_type
from .redis_keys import HASHES, Keys


@dataclass(frozen=True)
class Snapshot:
    """What one read of the namespace returned, still as bytes."""

    hashes: dict[str, dict[bytes, bytes]]  # each of HASHES: field -> stored JSON bytes
    version: bytes | None
    meta: dict[bytes, bytes]


def peek_published(client: redis.Redis, namespace: str) -> tuple[int | None, str | None]:
    """The published version and sha256 alone, in one round trip, nothing decoded.

    A key of the wrong Redis type raises :class:`InvalidConfig` naming it (corrupt data)."""
    keys = Keys(namespace)
    pipe = client.pipeline(transaction=True)
    pipe.get(keys.version)
    pipe.hget(keys.meta, "sha256")
    replies = pipe.execute(raise_on_error=False)
    for key, expected, reply in zip((keys.version, keys.meta), ("string", "hash"), replies,
                                    strict=True):
        if is_wrong_type(reply):
            raise wrong_type(key, expected)
        if isinstance(reply, redis.RedisError):
            raise reply
    version, sha = replies
    text = version.decode(errors="replace") if version is not None else ""
    return parse_counter(text), (sha.decode(errors="replace") if sha else None)


def read_snapshot(client: redis.Redis, namespace: str) -> Snapshot:
    """Every key in ONE round trip (MULTI/EXEC pipeline): a consistent snapshot.

    A key of the wrong Redis type (Redis answers WRONGTYPE) is corrupt content, not an
    unreachable Redis: it raises :class:`InvalidConfig` naming the key and the type it holds,
    so that every reader (the CLI, the fallback chain, the watcher) treats it as invalid."""
    keys = Keys(namespace)
    expected = {**{keys.section(name): "hash" for name in HASHES},
                keys.version: "string", keys.meta: "hash"}
    pipe = client.pipeline(transaction=True)
    for name in HASHES:
        pipe.hgetall(keys.section(name))
    pipe.get(keys.version)
    pipe.hgetall(keys.meta)
    replies = pipe.execute(raise_on_error=False)
    for key, reply in zip(expected, replies, strict=True):
        if is_wrong_type(reply):
            actual = None
            try:  # one more round trip, on this error path only, to say what the key holds
                held = client.type(key)
                actual = held.decode() if isinstance(held, bytes) else str(held)
            except redis.RedisError:
                pass
            raise wrong_type(key, expected[key], actual)
        if isinstance(reply, redis.RedisError):
            raise reply
    *hashes, version, meta = replies
    return Snapshot(dict(zip(HASHES, hashes, strict=True)), version, meta)
