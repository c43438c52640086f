"""Strict decoding of what a read found: a snapshot of the namespace (a load), or a whole
canonical document (the history). The sha256 over the bytes as stored first, then strict
canonical JSON, then validation: every refusal is one :class:`InvalidConfig` naming the key."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .codec import ORDER_KEY, SECTIONS, ConfigDocument, ordered
from .counters import excerpt, parse_counter
from .errors import InvalidConfig, NotPublished
from .redis_keys import SCHEMA_VERSION
from .snapshot_reading import Snapshot
from .strict_fields import canonical_fields, canonical_from_fields, field_text, strict_json
from .validation import LIMITS, validate


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
    meta = {field_text("meta", k): field_text(f"meta.{k!r}", v) for k, v in snapshot.meta.items()}
    expected = meta.get("sha256")
    if not expected:
        raise InvalidConfig("meta.sha256", "missing")
    check_schema(meta.get("schema_version", "1"))
    if not any(snapshot.hashes[name] for name in SECTIONS):
        raise InvalidConfig("config", f"version {version} exists but every hash is empty")
    # The stored texts are canonical JSON, so the canonical document is their concatenation:
    # the sha256 is checked on the bytes as stored, before anything is parsed.
    canonical = canonical_from_fields(snapshot.hashes)
    actual = hashlib.sha256(canonical).hexdigest()
    if actual != expected:
        raise InvalidConfig("meta.sha256", f"content hashes to {actual[:12]}, meta says "
                                           f"{expected[:12]}: partial or tampered write")
    decoded = canonical_fields(snapshot.hashes, canonical)
    order = decoded.pop(ORDER_KEY)
    document = ConfigDocument(**ordered(decoded, order))
    # Every field is canonical: its size is its stored size, so validation need not re-encode
    # each field to size it (it does only when the whole is larger than a field may be).
    sizes = {name: {field_text(name, k): len(v) for k, v in fields.items()}
             for name, fields in snapshot.hashes.items()
             } if len(canonical) > LIMITS["field_bytes"] else None
    validate(document, canonical, allow=allow, field_sizes=sizes)
    return Published(document, version, expected, meta)


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
