"""The Redis layout of DESIGN.md: key names, the atomic publish and the one-round-trip read.

Publish is one WATCH + MULTI/EXEC: every hash replaced whole, ``NS:version`` INCR'd, meta
written and the notification queued behind them, so a subscriber can never hear of a version
whose data is not there yet. Load is one MULTI/EXEC pipeline: one round trip, one snapshot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from .codec import ORDER_KEY, SECTIONS, ConfigDocument, canonical_json, ordered
from .errors import InvalidConfig, NotPublished, is_wrong_type, wrong_type
from .live_settings import describe
from .validation import validate

# 2: the declared order of queues and routes (NS:order) and the application's keys (NS:app).
SCHEMA_VERSION = "2"
HASHES = (*SECTIONS, ORDER_KEY)
log = logging.getLogger("celery_config_sync.publisher")


@dataclass(frozen=True)
class Keys:
    namespace: str

    @property
    def queues(self) -> str:
        return f"{self.namespace}:queues"

    @property
    def routes(self) -> str:
        return f"{self.namespace}:routes"

    @property
    def base(self) -> str:
        return f"{self.namespace}:base"

    @property
    def version(self) -> str:
        return f"{self.namespace}:version"

    @property
    def meta(self) -> str:
        return f"{self.namespace}:meta"

    @property
    def channel(self) -> str:
        return f"{self.namespace}_updates"

    @property
    def applied_prefix(self) -> str:
        """Prefix of the fleet's instance records (celery_config_sync.fleet)."""
        return f"{self.namespace}:applied:"

    def section(self, name: str) -> str:
        return f"{self.namespace}:{name}"


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
            allow: frozenset[str] = frozenset()) -> PublishResult:
    """Validate, then replace the published config in one transaction.

    Same sha256 as published (and ``force`` unset): nothing is written, nothing notified.
    What the new version changes (live, or restart-required and which settings) is kept in
    meta, so that ``status`` tells what kind of change it was.
    """
    validate(document, allow=allow)
    keys = Keys(namespace)
    sha = document.sha256
    encoded = document.encoded_fields()
    outcome: dict[str, PublishResult] = {}
    log.info("publishing %d queues, %d routes, %d settings (sha256 %s) to %s",
             len(document.queues), len(document.routes), len(document.base),
             sha[:12], namespace)

    def transaction(pipe: Any) -> None:
        current_sha, current_version = pipe.hget(keys.meta, "sha256"), pipe.get(keys.version)
        previous = int(current_version) if current_version is not None else 0
        if not force and current_version is not None and current_sha == sha.encode():
            outcome["result"] = PublishResult(previous, sha, changed=False)
            return
        version = previous + 1  # WATCH guarantees the INCR below lands on exactly this value
        before = _lenient_document([pipe.hgetall(keys.section(name)) for name in SECTIONS])
        change = describe(before, document) if before is not None else None
        pipe.multi()
        for name in HASHES:
            pipe.delete(keys.section(name))
            if encoded[name]:
                pipe.hset(keys.section(name), mapping=encoded[name])
        pipe.incr(keys.version)
        pipe.delete(keys.meta)
        pipe.hset(keys.meta, mapping={
            "sha256": sha,
            "version": str(version),
            "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "publisher": publisher or default_publisher(),
            "source": source,
            "schema_version": SCHEMA_VERSION,
            "change": change["kind"] if change else "initial",
            "restart_required": ",".join(change["restart_required"]) if change else "",
        })
        pipe.publish(keys.channel, canonical_json({"version": version, "sha256": sha}))
        outcome["result"] = PublishResult(version, sha, changed=True, change=change)

    client.transaction(transaction, keys.version, keys.meta)
    result = outcome["result"]
    if result.changed:
        log.info("published version %d (sha256 %s)", result.version, sha[:12])
    else:
        log.info("unchanged: version %d already holds sha256 %s, nothing published",
                 result.version, sha[:12])
    return result


def clear(client: redis.Redis, namespace: str) -> int | None:
    """Unpublish: delete every key of the configuration in one transaction and notify, so that
    a gate waits again. Running services keep what they apply (they log that nothing is
    published). The fleet's instance records stay: they describe processes, not the
    configuration. Returns the version that was published, None when there was none."""
    keys = Keys(namespace)
    pipe = client.pipeline(transaction=True)
    pipe.get(keys.version)
    pipe.delete(*(keys.section(name) for name in HASHES), keys.version, keys.meta)
    pipe.publish(keys.channel, canonical_json({"version": None, "sha256": None}))
    version, _, _ = pipe.execute()
    log.info("cleared %s (was version %s)", namespace,
             version.decode() if version is not None else "none")
    return int(version) if version is not None and version.isdigit() else None


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
    return (int(text) if text.isdigit() else None), (sha.decode(errors="replace") if sha else None)


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


@dataclass(frozen=True)
class Published:
    document: ConfigDocument
    version: int
    sha256: str
    meta: dict[str, str]


def decode_snapshot(snapshot: Snapshot, *, allow: frozenset[str] = frozenset()) -> Published:
    """Check and decode a snapshot; raise :class:`InvalidConfig` naming the bad key and field.

    A field is accepted only if it is canonical JSON that re-encodes to exactly the stored
    bytes: that refuses NaN/Infinity, duplicate keys, any other spelling of the same value (the
    sha256 covers the bytes, so the parsed content must be what was hashed), and nesting deep
    enough to exhaust the parser. Whatever is refused here is never written to last-known-good.
    """
    if snapshot.version is None:
        raise NotPublished("no configuration published under this namespace (version missing)")
    text = snapshot.version.decode(errors="replace")
    if not text.isdigit() or text.startswith("0"):
        raise InvalidConfig("version", f"must be an integer >= 1, got {text[:40]!r}")
    version = int(text)
    meta = {_text("meta", k): _text(f"meta.{k!r}", v) for k, v in snapshot.meta.items()}
    expected = meta.get("sha256")
    if not expected:
        raise InvalidConfig("meta.sha256", "missing")
    _check_schema(meta.get("schema_version", "1"))
    if not any(snapshot.hashes[name] for name in SECTIONS):
        raise InvalidConfig("config", f"version {version} exists but every hash is empty")
    # The stored texts are canonical JSON, so the canonical document is their concatenation:
    # the sha256 is checked on the bytes as stored, before anything is parsed.
    canonical = _canonical_from_fields(snapshot.hashes)
    actual = hashlib.sha256(canonical).hexdigest()
    if actual != expected:
        raise InvalidConfig("meta.sha256", f"content hashes to {actual[:12]}, meta says "
                                           f"{expected[:12]}: partial or tampered write")
    # Each field parses on its own: parsing the concatenation would be faster, but a field
    # such as '600,"task_serializer":"pickle"' could then smuggle in a key of its own.
    decoded = {name: {_text(name, raw_key): _strict_field(name, raw_key, raw_value)
                      for raw_key, raw_value in fields.items()}
               for name, fields in snapshot.hashes.items()}
    order = decoded.pop(ORDER_KEY)
    document = ConfigDocument(**ordered(decoded, order))
    validate(document, canonical, allow=allow)
    return Published(document, version, expected, meta)


def _check_schema(schema: str) -> None:
    if schema == SCHEMA_VERSION:
        return
    if schema.isdigit() and int(schema) < int(SCHEMA_VERSION):
        raise InvalidConfig("meta.schema_version",
                            f"layout {schema} was published by an older celery-config (no "
                            f"declared order): publish again with this one (layout "
                            f"{SCHEMA_VERSION})")
    raise InvalidConfig("meta.schema_version",
                        f"layout {schema[:20]!r} is newer than this celery-config reads (up to "
                        f"{SCHEMA_VERSION}): upgrade the service's image")


def _strict_field(section: str, key: bytes, raw: bytes) -> Any:
    """One stored field: JSON whose canonical re-encoding is exactly ``raw``."""
    where = f"{section}[{key.decode(errors='replace')!r}]"  # only used on error: cheap enough
    try:
        text = raw.decode()
        value = _FIELD_DECODER.decode(text)
    except RecursionError:
        raise InvalidConfig(where, "nested too deeply") from None
    except ValueError as exc:  # malformed, or not UTF-8 (UnicodeDecodeError)
        raise InvalidConfig(where, f"malformed JSON: {exc}") from None
    try:
        same = canonical_json(value) == text
    except (ValueError, RecursionError):  # NaN/Infinity parse, but have no canonical form
        same = False
    if not same:
        raise InvalidConfig(where, "not canonical JSON (duplicate keys, NaN, or another "
                                   "spelling of the value): not what was hashed")
    return value


def _lenient_document(hashes: list[dict[bytes, bytes]]) -> ConfigDocument | None:
    """The previously published content, only to describe a change: None if absent or
    undecodable (then the change is described as "initial")."""
    if not any(hashes):
        return None
    try:
        return ConfigDocument(**{name: {k.decode(): json.loads(v) for k, v in fields.items()}
                                 for name, fields in zip(SECTIONS, hashes, strict=False)})
    except (ValueError, TypeError, RecursionError):
        return None


# Hot in every load (about 100 fields): the decoder's own method, not json.loads (which
# re-detects the encoding of bytes on each call), and the encoder's C string quoting, which is
# exactly what canonical_json does to a str (ensure_ascii=False).
_FIELD_DECODER = json.JSONDecoder()
_json_string = json.encoder.encode_basestring  # type: ignore[attr-defined]


def _canonical_from_fields(sections: dict[str, dict[bytes, bytes]]) -> bytes:
    parts = []
    for name in sorted(sections):
        fields = sections[name]
        items = sorted((_text(name, k), v) for k, v in fields.items())
        body = b",".join(_json_string(k).encode() + b":" + v for k, v in items)
        parts.append(canonical_json(name).encode() + b":{" + body + b"}")
    return b"{" + b",".join(parts) + b"}"


def _text(where: str, raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise InvalidConfig(where, f"not UTF-8: {raw[:40]!r}") from None
