"""The fleet view: what every running service instance applies, kept in Redis.

Each instance keeps one hash ``NS:applied:<service>:<instance>`` (version, sha256, source,
applied_at, restart_required, last_error...; a worker adds ``consumes``: see
:data:`CONSUMES`) alive with a TTL heartbeat, so an instance that died vanishes by itself.
``celery-config status`` reads them all and names every instance that is not on the published
sha256 (drift), runs on a fallback, or waits for a restart.

Ages come from the keys' TTL, never from wall clocks: a Pi boots without a real-time clock.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from .errors import is_wrong_type
from .redis_keys import Keys

# A worker's field: the queues its task consumer is set to consume now (after -Q,
# add_consumer/cancel_consumer and live changes), a JSON array of names, sorted. Absent (a
# producer, a beat, a worker of an older release) or unreadable means "unknown", never "none".
CONSUMES = "consumes"

# Fields of an instance record, in the order they are shown.
RECORD_FIELDS = ("service", "instance", "hostname", "pid", "version", "sha256", "source",
                 "applied_at", "restart_required", "last_error", "live_reload", "ttl", CONSUMES)


def default_instance() -> str:
    """``<hostname>:<pid>``: the container id in a container, unique per process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def record_key(namespace: str, service: str, instance: str) -> str:
    return f"{Keys(namespace).applied_prefix}{service}:{instance}"


def write_record(client: redis.Redis, namespace: str, record: dict[str, str], ttl: float) -> None:
    """Replace the instance's record and (re)arm its TTL, in one transaction."""
    key = record_key(namespace, record["service"], record["instance"])
    pipe = client.pipeline(transaction=True)
    pipe.delete(key)
    pipe.hset(key, mapping=dict(record, ttl=str(int(ttl))))  # type: ignore[arg-type]
    pipe.expire(key, max(1, int(ttl)))
    pipe.execute()


def delete_record(client: redis.Redis, namespace: str, service: str, instance: str) -> None:
    client.delete(record_key(namespace, service, instance))


# What a reader takes of the fleet, whoever wrote into it: the freshest MAX_SHOWN records (the
# rest counted, never read), and of those only the known fields, none longer than
# MAX_FIELD_BYTES (a record with a longer one is skipped, and counted, without being read).
# A key of another Redis type under the prefix is skipped and counted too: one bad key never
# blanks the whole view (a status page that fails is no status page).
MAX_SHOWN = 200
MAX_FIELD_BYTES = 4096
# Except ``consumes``: every queue a configuration may declare (validation.LIMITS, 256 names of
# at most 200 characters) fits in it.
FIELD_LIMITS = {CONSUMES: 64 * 1024}


def encode_consumes(names: Iterable[str]) -> str | None:
    """The ``consumes`` field for these queue names, or None when it would not fit the readers'
    limit (then the field is left out: unknown, rather than a list cut short)."""
    text = json.dumps(sorted(set(names)), ensure_ascii=False, separators=(",", ":"))
    return text if len(text.encode()) <= FIELD_LIMITS[CONSUMES] else None


def consumed_queues(record: Mapping[str, Any]) -> frozenset[str] | None:
    """The queues a record says its instance consumes; None when it does not say (no field, or
    not a JSON array of names: what another writer put there is never trusted as "none")."""
    text = record.get(CONSUMES)
    if not isinstance(text, str):
        return None
    try:
        names = json.loads(text)
    except ValueError:
        return None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        return None
    return frozenset(names)


@dataclass
class Fleet:
    """The records read, newest heartbeat first then sorted, and what was left out."""

    records: list[dict[str, Any]] = field(default_factory=list)
    hidden: int = 0  # live records beyond MAX_SHOWN, not read
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> keys left out


def read_fleet(client: redis.Redis, namespace: str) -> list[dict[str, Any]]:
    """Every live instance record shown (:func:`scan_fleet`'s records)."""
    return scan_fleet(client, namespace).records


def scan_fleet(client: redis.Redis, namespace: str, limit: int = MAX_SHOWN) -> Fleet:
    """The instance records, with ``heartbeat_age`` (seconds since the last heartbeat, from the
    TTL left), sorted by service and instance: at most ``limit`` of them (those with the most
    TTL left), each checked for type and size before it is read. Three round trips at most,
    whatever the number of keys."""
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", Keys(namespace).applied_prefix) + "*"
    keys = list(dict.fromkeys(client.scan_iter(match=pattern, count=500)))
    fleet = Fleet()
    if not keys:
        return fleet
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.pttl(key)
    ttls = dict(zip(keys, pipe.execute(), strict=True))
    alive = sorted((k for k in keys if ttls[k] != -2), key=lambda k: (-ttls[k], k))
    chosen, fleet.hidden = alive[:limit], max(0, len(alive) - limit)
    if not chosen:
        return fleet
    readable = _checked(client, chosen, fleet)
    pipe = client.pipeline(transaction=False)
    for key in readable:
        pipe.hmget(key, RECORD_FIELDS)
    for key, values in zip(readable, pipe.execute(raise_on_error=False), strict=True):
        if isinstance(values, Exception) or not any(v is not None for v in values):
            continue  # expired (or replaced by another type) between two round trips
        record: dict[str, Any] = {name: value.decode(errors="replace")
                                  for name, value in zip(RECORD_FIELDS, values, strict=True)
                                  if value is not None}
        ttl, pttl = _number(record.get("ttl")), ttls[key]
        if ttl is not None and pttl is not None and pttl >= 0:
            record["heartbeat_age"] = round(max(0.0, ttl - pttl / 1000), 1)
        fleet.records.append(record)
    fleet.records.sort(key=lambda r: (r.get("service", ""), r.get("instance", "")))
    return fleet


def _checked(client: redis.Redis, keys: list[Any], fleet: Fleet) -> list[Any]:
    """The keys that are hashes with no field longer than its limit (FIELD_LIMITS, else
    MAX_FIELD_BYTES; HSTRLEN: nothing is read); the others are counted in ``fleet.skipped``."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        for name in RECORD_FIELDS:
            pipe.hstrlen(key, name)
    lengths = pipe.execute(raise_on_error=False)
    readable = []
    for index, key in enumerate(keys):
        sizes = lengths[index * len(RECORD_FIELDS):(index + 1) * len(RECORD_FIELDS)]
        errors = [size for size in sizes if isinstance(size, Exception)]
        if errors:
            _count(fleet, "wrong type" if any(map(is_wrong_type, errors)) else "unreadable")
        elif any(size > FIELD_LIMITS.get(name, MAX_FIELD_BYTES)
                 for name, size in zip(RECORD_FIELDS, sizes, strict=True)):
            _count(fleet, "oversized")
        else:
            readable.append(key)
    return readable


def _count(fleet: Fleet, reason: str) -> None:
    fleet.skipped[reason] = fleet.skipped.get(reason, 0) + 1


def problems(record: dict[str, Any], published_sha256: str | None) -> list[str]:
    """What is wrong with one instance: drift, fallback, restart required, a rejected version."""
    found = []
    if published_sha256 is not None and record.get("sha256") != published_sha256:
        found.append(f"drift: runs version {record.get('version')} "
                     f"({str(record.get('sha256'))[:12]}), published {published_sha256[:12]}")
    if record.get("source") != "redis":
        found.append(f"fallback: runs on {record.get('source')}")
    if record.get("restart_required"):
        found.append(f"restart required: {record['restart_required']}")
    if record.get("last_error"):
        found.append(f"error: {record['last_error']}")
    return found


def _number(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None
