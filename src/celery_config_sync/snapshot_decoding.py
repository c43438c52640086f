"""Strict decoding of what a read found: a snapshot of the namespace (a load), or a whole
canonical document (the history). The sha256 over the bytes as stored first, then strict
canonical JSON, then validation: every refusal is one :class:`InvalidConfig` naming the key."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .codec import ORDER_KEY, SECTIONS, ConfigDocument, ordered
from .counters import excerpt, parse_counter
from .errors import InvalidConfig, NotPublished
from .redis_keys import SCHEMA_VERSION
from .snapshot_reading import Snapshot
from .strict_fields import (
    canonical_fields,
    canonical_fields_since,
    concatenate,
    field_text,
    strict_json,
    whole_value,
)
from .validated_content import ValidatedContent
from .validation import LIMITS, Baseline, validate


@dataclass(frozen=True)
class Published:
    document: ConfigDocument
    version: int
    sha256: str
    meta: dict[str, str]
    # What the rules accepted, for the record beside last-known-good (None: not recordable).
    validated: ValidatedContent | None = None


@dataclass(frozen=True)
class Decoded:
    """A snapshot and what decoding it under some ``allow`` gave: the previous version a reader
    decoded, whose unchanged fields the next version need not parse or validate again."""

    snapshot: Snapshot
    published: Published

    def values(self) -> dict[str, dict[str, Any]]:
        """Hash -> field -> decoded value, as the stored hashes hold them (the order too)."""
        document = self.published.document
        return {**document.sections(), ORDER_KEY: document.order()}


def decode_snapshot(snapshot: Snapshot, *, allow: frozenset[str] = frozenset(),
                    trusted: ValidatedContent | None = None,
                    previous: Decoded | None = None) -> Published:
    """Check and decode a snapshot; raise :class:`InvalidConfig` naming the bad key and field.

    A field is accepted only if it is canonical JSON that re-encodes to exactly the stored
    bytes: that refuses NaN/Infinity, duplicate keys, any other spelling of the same value (the
    sha256 covers the bytes, so the parsed content must be what was hashed), and nesting deep
    enough to exhaust the parser. Whatever is refused here is never written to last-known-good.

    Two ways to do less, each deciding exactly as the full decoding would (issue 20):

    * ``trusted``: a record of fields these rules accepted under this ``allow``
      (celery_config_sync.validated_content). When the stored fields are those, byte for byte
      (sha256 and layout), their text is parsed whole and not validated again.
    * ``previous``: the last snapshot decoded under the same ``allow`` (a live re-read). The
      whole content is still hashed; then only the fields whose bytes changed are parsed and
      proven canonical, and validation looks only at the entries they hold (and at every route
      when the declared queues changed).
    """
    if snapshot.version is None:
        raise NotPublished("no configuration published under this namespace (version missing)")
    version = parse_version("version", snapshot.version.decode(errors="replace"))
    meta = meta_text(snapshot.meta)
    expected = meta.get("sha256")
    if not expected:
        raise InvalidConfig("meta.sha256", "missing")
    check_schema(meta.get("schema_version", "1"))
    if not any(snapshot.hashes[name] for name in SECTIONS):
        raise InvalidConfig("config", f"version {version} exists but every hash is empty")
    # The stored texts are canonical JSON, so the canonical document is their concatenation:
    # the sha256 is checked on the bytes as stored, before anything is parsed.
    concatenation = concatenate(snapshot.hashes)
    canonical = concatenation.canonical
    actual = hashlib.sha256(canonical).hexdigest()
    if actual != expected:
        raise InvalidConfig("meta.sha256", f"content hashes to {actual[:12]}, meta says "
                                           f"{expected[:12]}: partial or tampered write")
    if trusted is not None and trusted.vouches_for(actual, concatenation.layout, allow):
        # Exactly the fields these rules accepted: each one canonical, so their concatenation
        # parses whole to the same values.
        whole = whole_value(canonical.decode())
        order = whole.pop(ORDER_KEY)
        return Published(ConfigDocument(**ordered(whole, order)), version, expected, meta,
                         trusted)
    baseline = None
    if previous is None:
        decoded = canonical_fields(snapshot.hashes, canonical)
    else:
        decoded, kept = canonical_fields_since(snapshot.hashes, previous.snapshot.hashes,
                                               previous.values())
        baseline = Baseline(kept, frozenset(previous.published.document.queues))
    order = decoded.pop(ORDER_KEY)
    document = ConfigDocument(**ordered(decoded, order))
    validate(document, canonical, allow=allow, field_sizes=_oversized(snapshot.hashes),
             baseline=baseline)
    return Published(document, version, expected, meta,
                     ValidatedContent.now(actual, concatenation.layout, allow))


def meta_text(meta: Mapping[bytes, bytes]) -> dict[str, str]:
    """The meta hash as text; a key or value that is not UTF-8 is refused, naming it."""
    try:
        return {k.decode(): v.decode() for k, v in meta.items()}
    except UnicodeDecodeError:  # the slow way, to name what is not UTF-8
        return {field_text("meta", k): field_text(f"meta.{k!r}", v) for k, v in meta.items()}


def _oversized(hashes: Mapping[str, Mapping[bytes, bytes]]) -> dict[str, dict[str, int]]:
    """Section -> key -> stored size of the fields larger than a field may be (none, but in a
    tampered or absurd config): every field is canonical, so its size is its stored size, and
    validation need not re-encode each field to size it."""
    limit = LIMITS["field_bytes"]
    return {name: {field_text(name, k): len(v) for k, v in fields.items() if len(v) > limit}
            for name, fields in hashes.items()
            if fields and max(map(len, fields.values())) > limit}


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
