"""The version history: what each publish recorded, read back as strictly as a load, and
republished (rollback).

``publishing.publish`` writes it in the same transaction as the version it records:
``NS:history`` (hash: version -> record, canonical JSON of strings: the version's meta, the
one-line ``summary`` of its change from the version before and its document's size in
``bytes``) and ``NS:history:documents`` (hash: version -> canonical document, whose sha256 is
the version's). A record or document that does not decode is one :class:`InvalidConfig`
naming ``history[<version>]``, never a half-read entry.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import redis

from .codec import ConfigDocument
from .counters import excerpt, parse_counter
from .errors import InvalidConfig, NotInHistory, is_wrong_type, wrong_type
from .history_policy import DEFAULT_HISTORY, HistoryLimits
from .publishing import PublishResult, publish
from .redis_keys import Keys
from .snapshot_decoding import check_schema, decode_document, parse_version
from .strict_fields import strict_json

# The record's text fields: the same names in the record and in HistoryEntry.
TEXT_FIELDS = ("sha256", "published_at", "publisher", "source", "change", "summary",
               "schema_version")
RECORD_FIELDS = (*TEXT_FIELDS, "version", "restart_required", "bytes")
SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class HistoryEntry:
    """One published version as the history recorded it; its document: :func:`read_version`."""

    version: int
    sha256: str
    published_at: str  # the publisher's wall clock (ISO 8601): a Pi without NTP may be wrong
    publisher: str  # <hostname>:<pid>
    source: str  # the source (and +overlay), or rollback:<version>
    change: str  # initial, live, restart-required, none (the same content, --force)
    restart_required: tuple[str, ...]
    summary: str  # what changed from the version before: "routes +1, settings ~x"
    size: int  # bytes of the canonical document
    schema_version: str

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "restart_required": list(self.restart_required)}


def list_history(client: redis.Redis, namespace: str) -> list[HistoryEntry]:
    """Every recorded version, newest first, without documents: one HGETALL of the records."""
    keys = Keys(namespace)
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.history)
    (records,) = _replies(pipe, keys.history)
    entries = [decode_entry(field, raw) for field, raw in records.items()]
    return sorted(entries, key=lambda entry: entry.version, reverse=True)


def read_version(client: redis.Redis, namespace: str, version: int, *,
                 allow: frozenset[str] = frozenset()) -> tuple[HistoryEntry, ConfigDocument]:
    """One version's record and document, read in one round trip (MULTI/EXEC) and decoded as
    strictly as a load (sha256, canonical JSON, validation with ``allow``: the unsafe settings
    this process accepts). Raise :class:`NotInHistory` when the history does not hold it."""
    keys = Keys(namespace)
    pipe = client.pipeline(transaction=True)
    pipe.hget(keys.history, str(version))
    pipe.hget(keys.history_documents, str(version))
    record, document = _replies(pipe, keys.history, keys.history_documents)
    if record is None and document is None:
        raise NotInHistory(f"version {version} is not in the history of {namespace} "
                           f"({_held(client, keys)}): trimmed, or never published")
    return decode_version(version, record, document, allow=allow)


def rollback(client: redis.Redis, namespace: str, version: int, *,
             history: HistoryLimits = DEFAULT_HISTORY, publisher: str | None = None,
             allow: frozenset[str] = frozenset()) -> PublishResult:
    """Publish ``version``'s content again, as a NEW version whose source is
    ``rollback:<version>``: the past is never rewritten. It goes through :func:`publish`, so
    validation runs again with this release's rules, and content equal to the published one
    publishes nothing (``changed`` False). Content this release refuses: InvalidConfig."""
    try:
        _, document = read_version(client, namespace, version, allow=allow)
    except InvalidConfig as exc:
        raise InvalidConfig(f"rollback to version {version} refused", str(exc)) from None
    return publish(client, namespace, document, source=f"rollback:{version}",
                   publisher=publisher, history=history, allow=allow)


def decode_version(version: int, record: bytes | None, document: bytes | None, *,
                   allow: frozenset[str] = frozenset()) -> tuple[HistoryEntry, ConfigDocument]:
    """The pure half of :func:`read_version`: any bytes give the entry and its document, or
    one :class:`InvalidConfig` whose key starts with ``history[<version>]``."""
    where = f"history[{version}]"
    if record is None or document is None:
        raise InvalidConfig(where, f"a {'document' if record is None else 'record'} without "
                                   f"its {'record' if record is None else 'document'}")
    entry = decode_entry(str(version).encode(), record)
    try:
        check_schema(entry.schema_version)
    except InvalidConfig as exc:
        raise InvalidConfig(f"{where}.schema_version", exc.problem) from None
    return entry, decode_document(where, document, entry.sha256, allow=allow)


def decode_entry(field: bytes, raw: bytes) -> HistoryEntry:
    """One record (``field`` its version, as stored): canonical JSON of strings holding every
    field of :class:`HistoryEntry`; fields of a newer release are ignored."""
    text = field.decode(errors="replace")
    version = parse_version(f"history[{text[:40]!r}]", text)
    where = f"history[{version}].record"
    record = strict_json(where, raw)
    if not isinstance(record, dict) or not all(isinstance(v, str) for v in record.values()):
        raise InvalidConfig(where, "must be a JSON object of strings")
    missing = [name for name in RECORD_FIELDS if name not in record]
    if missing:
        raise InvalidConfig(where, f"misses {', '.join(missing)}")
    if parse_version(f"{where}.version", record["version"]) != version:
        raise InvalidConfig(f"{where}.version", f"says {record['version']}, stored as {version}")
    if not SHA256.fullmatch(record["sha256"]):
        raise InvalidConfig(f"{where}.sha256", f"not a sha256: {record['sha256'][:70]!r}")
    size = record["bytes"]
    bytes_ = parse_counter(size)
    if bytes_ is None:
        raise InvalidConfig(f"{where}.bytes", f"must be a size in bytes, got {excerpt(size)}")
    return HistoryEntry(version=version, size=bytes_,
                        restart_required=tuple(k for k in record["restart_required"].split(",")
                                               if k),
                        **{name: record[name] for name in TEXT_FIELDS})


def _replies(pipe: Any, *keys: str) -> list[Any]:
    """Execute ``pipe``, one command per key of ``keys``: a key of another Redis type is the
    corrupt-data error naming it, as in a load."""
    replies: list[Any] = pipe.execute(raise_on_error=False)
    for key, reply in zip(keys, replies, strict=True):
        if is_wrong_type(reply):
            raise wrong_type(key, "hash")
        if isinstance(reply, redis.RedisError):
            raise reply
    return replies


def _held(client: redis.Redis, keys: Keys) -> str:
    """Which versions the history holds, for the error message only (one more round trip)."""
    pipe = client.pipeline(transaction=False)
    pipe.hkeys(keys.history)
    (fields,) = _replies(pipe, keys.history)
    versions = sorted(version for version in map(parse_counter, fields) if version)
    if not versions:
        return "the history is empty"
    return f"it holds versions {versions[0]} to {versions[-1]}"
