"""The publish side of the Redis layout: the atomic publish, with its history, and the clear.

Publish is one WATCH + MULTI/EXEC: every hash replaced whole, ``NS:version`` INCR'd, meta
written, the version recorded in the history (the oldest dropped) and the notification queued
behind them, so a subscriber can never hear of a version whose data is not there yet, and the
history never disagrees with the version. The history's read side is
celery_config_sync.history.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from .codec import ORDER_KEY, SECTIONS, ConfigDocument, canonical_json, ordered
from .counters import excerpt, parse_counter
from .diffing import describe_change
from .errors import InvalidConfig, is_wrong_type
from .history_policy import DEFAULT_HISTORY, HistoryLimits
from .live_settings import describe
from .redis_keys import HASHES, SCHEMA_VERSION, Keys
from .validation import validate

log = logging.getLogger("celery_config_sync.publisher")


@dataclass(frozen=True)
class PublishResult:
    version: int
    sha256: str
    changed: bool
    change: dict[str, Any] | None = None  # live_settings.describe of the previous content


def default_publisher() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def publish(client: redis.Redis, namespace: str, document: ConfigDocument, *,
            source: str, publisher: str | None = None, force: bool = False,
            history: HistoryLimits = DEFAULT_HISTORY,
            allow: frozenset[str] = frozenset()) -> PublishResult:
    """Validate, then replace the published config in one transaction.

    Same sha256 as published (and ``force`` unset): nothing is written, nothing notified.
    What the new version changes (live, or restart-required and which settings) is kept in
    meta, so that ``status`` tells what kind of change it was. The same transaction records
    the version in the history, trimmed to ``history``.
    """
    validate(document, allow=allow)
    keys = Keys(namespace)
    sha = document.sha256
    canonical = document.canonical().encode()  # what the history keeps; its sha256 is ``sha``
    encoded = document.encoded_fields()
    outcome: dict[str, PublishResult] = {}
    log.info("publishing %d queues, %d routes, %d settings (sha256 %s) to %s",
             len(document.queues), len(document.routes), len(document.base),
             sha[:12], namespace)

    def transaction(pipe: Any) -> None:
        current_sha, current_version = pipe.hget(keys.meta, "sha256"), pipe.get(keys.version)
        previous = parse_counter(current_version) if current_version is not None else 0
        if previous is None:
            held = excerpt(current_version.decode(errors="replace"))
            raise InvalidConfig(keys.version, f"holds {held}, not a version counter: corrupt "
                                              "data")
        if not force and current_version is not None and current_sha == sha.encode():
            outcome["result"] = PublishResult(previous, sha, changed=False)
            return
        version = previous + 1  # WATCH guarantees the INCR below lands on exactly this value
        before = _lenient_document({name: pipe.hgetall(keys.section(name)) for name in HASHES})
        change = describe(before, document) if before is not None else None
        summary = describe_change(before, document) if before is not None else "initial"
        recorded = _recorded_sizes(pipe, keys)
        pipe.multi()
        for name in HASHES:
            pipe.delete(keys.section(name))
            if encoded[name]:
                pipe.hset(keys.section(name), mapping=encoded[name])
        pipe.incr(keys.version)
        pipe.delete(keys.meta)
        meta = {
            "sha256": sha,
            "version": str(version),
            "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "publisher": publisher or default_publisher(),
            "source": source,
            "schema_version": SCHEMA_VERSION,
            "change": change["kind"] if change else "initial",
            "restart_required": ",".join(change["restart_required"]) if change else "",
        }
        pipe.hset(keys.meta, mapping=meta)
        _record_history(pipe, keys, limits=history, recorded=recorded, document=canonical,
                        record={**meta, "summary": summary, "bytes": str(len(canonical))})
        pipe.publish(keys.channel, canonical_json({"version": version, "sha256": sha}))
        outcome["result"] = PublishResult(version, sha, changed=True, change=change)

    client.transaction(transaction, keys.version, keys.meta, keys.history,
                       keys.history_documents)
    result = outcome["result"]
    if result.changed:
        log.info("published version %d (sha256 %s)", result.version, sha[:12])
    else:
        log.info("unchanged: version %d already holds sha256 %s, nothing published",
                 result.version, sha[:12])
    return result


def _recorded_sizes(pipe: Any, keys: Keys) -> dict[bytes, int | None] | None:
    """Before MULTI, under WATCH: every version field of the two history hashes -> the size of
    its document, None for one that is not a readable record with its document (it could be
    neither listed nor rolled back to: the publish drops it). None: a history key holds another
    Redis type, and the publish starts the history again rather than fail: the history serves
    the configuration, never the other way round."""
    try:
        records = pipe.hgetall(keys.history)
        documents = set(pipe.hkeys(keys.history_documents))
    except redis.ResponseError as exc:
        if not is_wrong_type(exc):
            raise
        log.warning("%s or %s holds another Redis type: the history starts again",
                    keys.history, keys.history_documents)
        return None
    sizes: dict[bytes, int | None] = dict.fromkeys(documents | records.keys())
    for field, raw in records.items():
        if field not in documents or not parse_counter(field):
            continue  # a version has one spelling, and a record its document
        try:
            record = json.loads(raw)
            size = record["bytes"]
            valid = record["version"] == field.decode()
        except (ValueError, TypeError, KeyError, RecursionError):
            continue
        if valid and isinstance(size, str) and parse_counter(size) is not None:
            sizes[field] = int(size)
    return sizes


def _record_history(pipe: Any, keys: Keys, *, limits: HistoryLimits,
                    recorded: dict[bytes, int | None] | None, document: bytes,
                    record: dict[str, str]) -> None:
    """Inside MULTI: add the version being published, drop what ``limits`` no longer keeps.

    Versions recorded at or above the new one (left by a Redis that lost its counter) are not
    its past: dropped too."""
    version = int(record["version"])
    if recorded is None:
        pipe.delete(keys.history, keys.history_documents)
        recorded = {}
    sizes = {int(field): size for field, size in recorded.items()
             if size is not None and int(field) < version}
    kept = {str(v).encode() for v in limits.keep({**sizes, version: len(document)}, version)}
    dropped = [field for field in recorded if field not in kept]
    if dropped:
        pipe.hdel(keys.history, *dropped)
        pipe.hdel(keys.history_documents, *dropped)
    pipe.hset(keys.history, str(version), canonical_json(record))
    pipe.hset(keys.history_documents, str(version), document)


def clear(client: redis.Redis, namespace: str) -> int | None:
    """Unpublish: delete every key of the configuration, its history included, in one
    transaction and notify, so that a gate waits again. The history goes too: the version
    counter starts again at 1, and a history of other versions 1, 2... would lie. Running
    services keep what they apply (they log that nothing is published). The fleet's instance
    records stay: they describe processes, not the configuration. Returns the version that was
    published, None when there was none."""
    keys = Keys(namespace)
    pipe = client.pipeline(transaction=True)
    pipe.get(keys.version)
    pipe.delete(*keys.layout())
    pipe.publish(keys.channel, canonical_json({"version": None, "sha256": None}))
    version, _, _ = pipe.execute()
    log.info("cleared %s (was version %s)", namespace,
             version.decode() if version is not None else "none")
    return parse_counter(version)



def _lenient_document(hashes: dict[str, dict[bytes, bytes]]) -> ConfigDocument | None:
    """The previously published content, in its declared order, only to describe a change:
    None if absent or undecodable (then the change is described as "initial")."""
    if not any(hashes[name] for name in SECTIONS):
        return None
    try:
        decoded = {name: {k.decode(): json.loads(v) for k, v in fields.items()}
                   for name, fields in hashes.items()}
        order = decoded.pop(ORDER_KEY)  # absent in layout 1: the hashes' own order
        return ConfigDocument(**(ordered(decoded, order) if order else decoded))
    except (ValueError, TypeError, RecursionError, InvalidConfig):
        return None


