"""The Redis layout of DESIGN.md: key names, the atomic publish and the one-round-trip read.

Publish is one WATCH + MULTI/EXEC: every hash replaced whole, ``NS:version`` INCR'd, meta
written, the version recorded in the history (the oldest dropped) and the notification queued
behind them, so a subscriber can never hear of a version whose data is not there yet, and the
history never disagrees with the version. Load is one MULTI/EXEC pipeline: one round trip, one
snapshot. The history's read side is celery_config_sync.history.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from .codec import ORDER_KEY, SECTIONS, ConfigDocument, canonical_json, ordered
from .counters import excerpt, parse_counter
from .diffing import describe_change
from .errors import InvalidConfig, NotPublished, is_wrong_type, wrong_type
from .live_settings import describe
from .validation import LIMITS, validate

# 2: the declared order of queues and routes (NS:order) and the application's keys (NS:app).
# The history (NS:history, NS:history:documents) needs no new layout: it is additive, and a
# reader that does not know it never reads it.
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
    def beat_lock(self) -> str:
        """The lock that makes one beat the active one (celery_config_sync.beat)."""
        return f"{self.namespace}:beat:lock"

    @property
    def beat_last_run(self) -> str:
        """Hash: schedule entry name -> ISO time of its last run, written by the active beat."""
        return f"{self.namespace}:beat:last_run"

    @property
    def applied_prefix(self) -> str:
        """Prefix of the fleet's instance records (celery_config_sync.fleet)."""
        return f"{self.namespace}:applied:"

    @property
    def history(self) -> str:
        """Hash: version -> that version's record (its meta, the one-line summary of its change
        and its document's size in ``bytes``), as canonical JSON."""
        return f"{self.namespace}:history"

    @property
    def history_documents(self) -> str:
        """Hash: version -> that version's canonical document (``ConfigDocument.canonical``,
        whose sha256 is the version's)."""
        return f"{self.namespace}:history:documents"

    def section(self, name: str) -> str:
        return f"{self.namespace}:{name}"

    def layout(self) -> dict[str, str]:
        """Every key of the published configuration -> the Redis type it holds (what ``clear``
        deletes; the fleet's records are not the configuration's)."""
        return {**{self.section(name): "hash" for name in HASHES}, self.version: "string",
                self.meta: "hash", self.history: "hash", self.history_documents: "hash"}


@dataclass(frozen=True)
class HistoryLimits:
    """How much history a publish keeps (CELERY_CONFIG_HISTORY_LENGTH, _MAX_BYTES): the last
    ``length`` versions, while their documents add up to at most ``max_bytes``."""

    length: int = 20
    max_bytes: int = 1024 * 1024

    def keep(self, sizes: Mapping[int, int], newest: int) -> list[int]:
        """The versions to keep, newest first, from ``sizes`` (version -> document bytes).

        ``newest`` (the version being published) is always kept, even bigger than
        ``max_bytes`` alone: the published version must be in its history. Older ones follow
        while both limits hold; the first that does not fit ends the history, so the oldest
        are dropped first and what is kept has no holes."""
        kept, total = [newest], sizes[newest]
        for older in sorted((v for v in sizes if v < newest), reverse=True):
            total += sizes[older]
            if len(kept) >= self.length or total > self.max_bytes:
                break
            kept.append(older)
        return kept


DEFAULT_HISTORY = HistoryLimits()


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
    version = parse_version("version", snapshot.version.decode(errors="replace"))
    meta = {_text("meta", k): _text(f"meta.{k!r}", v) for k, v in snapshot.meta.items()}
    expected = meta.get("sha256")
    if not expected:
        raise InvalidConfig("meta.sha256", "missing")
    check_schema(meta.get("schema_version", "1"))
    if not any(snapshot.hashes[name] for name in SECTIONS):
        raise InvalidConfig("config", f"version {version} exists but every hash is empty")
    # The stored texts are canonical JSON, so the canonical document is their concatenation:
    # the sha256 is checked on the bytes as stored, before anything is parsed.
    canonical = _canonical_from_fields(snapshot.hashes)
    actual = hashlib.sha256(canonical).hexdigest()
    if actual != expected:
        raise InvalidConfig("meta.sha256", f"content hashes to {actual[:12]}, meta says "
                                           f"{expected[:12]}: partial or tampered write")
    decoded = _canonical_fields(snapshot.hashes, canonical)
    order = decoded.pop(ORDER_KEY)
    document = ConfigDocument(**ordered(decoded, order))
    # Every field is canonical: its size is its stored size, so validation need not re-encode
    # each field to size it (it does only when the whole is larger than a field may be).
    sizes = {name: {_text(name, k): len(v) for k, v in fields.items()}
             for name, fields in snapshot.hashes.items()
             } if len(canonical) > LIMITS["field_bytes"] else None
    validate(document, canonical, allow=allow, field_sizes=sizes)
    return Published(document, version, expected, meta)


def _canonical_fields(hashes: dict[str, dict[bytes, bytes]],
                      canonical: bytes) -> dict[str, dict[str, Any]]:
    """Every field parsed, each on its own, and proven canonical: hash -> field -> value.

    Each field parses on its own: parsing the concatenation would be faster, but a field such
    as '600,"task_serializer":"pickle"' could then smuggle in a key of its own.

    The common case (every field canonical) costs one re-encoding of the whole, compared with
    ``canonical``, the concatenation of the stored fields: equal, every field is canonical
    (each field is one whole JSON value, and canonical JSON has no whitespace between values,
    so no field can end sooner or later in one text than in the other). Anything else (a field
    that does not parse, or not canonical) takes the field-by-field path, which names the bad
    field: every refusal is the field-by-field one, as before this shortcut.
    """
    try:
        decoded = {name: {raw_key.decode(): _whole_value(raw_value.decode())
                          for raw_key, raw_value in fields.items()}
                   for name, fields in hashes.items()}
        if canonical_json(decoded).encode() == canonical:
            return decoded
    except (ValueError, RecursionError):  # malformed, not UTF-8, NaN, deep, spaced: below
        pass
    return {name: {_text(name, raw_key): _strict_field(name, raw_key, raw_value)
                   for raw_key, raw_value in fields.items()}
            for name, fields in hashes.items()}


def parse_version(where: str, text: str) -> int:
    """A version as stored: an integer >= 1, in its one spelling (ASCII digits: str.isdigit
    alone accepts "²", which int() refuses)."""
    version = parse_counter(text)
    if version is None or version < 1:
        raise InvalidConfig(where, f"must be an integer >= 1, got {excerpt(text)}")
    return version


def decode_document(where: str, raw: bytes, sha256: str, *,
                    allow: frozenset[str] = frozenset()) -> ConfigDocument:
    """A whole document stored as its canonical JSON (the history keeps them so), checked as
    strictly as a load: the sha256 over the bytes as stored first, then strict JSON that is
    exactly the canonical form of the document it decodes to (no other key, the declared order
    present), then validation. Every refusal is an :class:`InvalidConfig` whose key starts
    with ``where``."""
    actual = hashlib.sha256(raw).hexdigest()
    if actual != sha256:
        raise InvalidConfig(where, f"content hashes to {actual[:12]}, its record says "
                                   f"{sha256[:12]}: partial or tampered write")
    data = strict_json(where, raw)
    if not isinstance(data, dict):
        raise InvalidConfig(where, f"must be a JSON object, got {type(data).__name__}")
    try:
        document = ConfigDocument.from_mapping(data)
        if document.canonical().encode() != raw:
            raise InvalidConfig("config", "is not exactly a configuration's sections and "
                                          "declared order")
        validate(document, raw, allow=allow)
    except InvalidConfig as exc:
        raise InvalidConfig(f"{where}: {exc.key}", exc.problem) from None
    return document


def check_schema(schema: str) -> None:
    if schema == SCHEMA_VERSION:
        return
    older = parse_counter(schema)
    if older is not None and older < int(SCHEMA_VERSION):
        raise InvalidConfig("meta.schema_version",
                            f"layout {schema} was published by an older celery-config (no "
                            f"declared order): publish again with this one (layout "
                            f"{SCHEMA_VERSION})")
    raise InvalidConfig("meta.schema_version",
                        f"layout {schema[:20]!r} is newer than this celery-config reads (up to "
                        f"{SCHEMA_VERSION}): upgrade the service's image")


def _strict_field(section: str, key: bytes, raw: bytes) -> Any:
    """One stored field: JSON whose canonical re-encoding is exactly ``raw``."""
    # ``where`` is only used on error, and cheap enough to build every time.
    return strict_json(f"{section}[{key.decode(errors='replace')!r}]", raw)


def strict_json(where: str, raw: bytes) -> Any:
    """JSON whose canonical re-encoding is exactly ``raw``, or :class:`InvalidConfig`."""
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


def _whole_value(text: str) -> Any:
    """The one JSON value ``text`` holds, with nothing around it (no whitespace either: a
    canonical field has none), else ValueError. The decoder's own scanner, without the two
    whitespace scans of ``decode``: about 100 fields a load, 2,000 in a big one."""
    value, end = _FIELD_DECODER.raw_decode(text)
    if end != len(text):
        raise ValueError("not one whole JSON value")
    return value


def _text(where: str, raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise InvalidConfig(where, f"not UTF-8: {raw[:40]!r}") from None
