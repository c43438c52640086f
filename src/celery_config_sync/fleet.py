"""The fleet view: what every running service instance applies, kept in Redis.

Each instance keeps one hash ``NS:applied:<service>:<instance>`` (version, sha256, source,
applied_at, restart_required, last_error...) alive with a TTL heartbeat, so an instance that
died vanishes by itself. ``celery-config status`` reads them all and names every instance that
is not on the published sha256 (drift), runs on a fallback, or waits for a restart.

Ages come from the keys' TTL, never from wall clocks: a Pi boots without a real-time clock.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Any

import redis

from .redis_layout import Keys

# Fields of an instance record, in the order they are shown.
RECORD_FIELDS = ("service", "instance", "hostname", "pid", "version", "sha256", "source",
                 "applied_at", "restart_required", "last_error", "live_reload", "ttl")


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


def read_fleet(client: redis.Redis, namespace: str) -> list[dict[str, Any]]:
    """Every live instance record, with ``heartbeat_age`` (seconds since its last heartbeat,
    from the TTL left), sorted by service and instance."""
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", Keys(namespace).applied_prefix) + "*"
    keys = sorted(client.scan_iter(match=pattern, count=500))
    if not keys:
        return []
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
        pipe.pttl(key)
    replies = pipe.execute()
    fleet = []
    for raw, pttl in zip(replies[::2], replies[1::2], strict=True):
        if not raw:
            continue  # expired between SCAN and HGETALL
        record: dict[str, Any] = {k.decode(errors="replace"): v.decode(errors="replace")
                                  for k, v in raw.items()}
        ttl = _number(record.get("ttl"))
        if ttl is not None and pttl is not None and pttl >= 0:
            record["heartbeat_age"] = round(max(0.0, ttl - pttl / 1000), 1)
        fleet.append(record)
    return sorted(fleet, key=lambda r: (r.get("service", ""), r.get("instance", "")))


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
