"""Stored fields read strictly: each one canonical JSON, exactly the bytes that were hashed.

The stored texts are canonical JSON, so the canonical document is their concatenation
(:func:`canonical_from_fields`): a load hashes that before it parses anything."""

from __future__ import annotations

import json
from typing import Any

from .codec import canonical_json
from .errors import InvalidConfig


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


# Hot in every load (about 100 fields): the decoder's own method, not json.loads (which
# re-detects the encoding of bytes on each call), and the encoder's C string quoting, which is
# exactly what canonical_json does to a str (ensure_ascii=False).
_FIELD_DECODER = json.JSONDecoder()
json_string = json.encoder.encode_basestring  # type: ignore[attr-defined]


def canonical_from_fields(sections: dict[str, dict[bytes, bytes]]) -> bytes:
    """The canonical document that stored fields make when each is canonical: the sections in
    name order, each field's key quoted and its bytes as stored, keys sorted. What the sha256
    is checked on, before anything is parsed."""
    parts = []
    for name in sorted(sections):
        fields = sections[name]
        items = sorted((field_text(name, k), v) for k, v in fields.items())
        body = b",".join(json_string(k).encode() + b":" + v for k, v in items)
        parts.append(canonical_json(name).encode() + b":{" + body + b"}")
    return b"{" + b",".join(parts) + b"}"


def whole_value(text: str) -> Any:
    """The one JSON value ``text`` holds, with nothing around it (no whitespace either: a
    canonical field has none), else ValueError. The decoder's own scanner, without the two
    whitespace scans of ``decode``: about 100 fields a load, 2,000 in a big one."""
    value, end = _FIELD_DECODER.raw_decode(text)
    if end != len(text):
        raise ValueError("not one whole JSON value")
    return value


def field_text(where: str, raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise InvalidConfig(where, f"not UTF-8: {raw[:40]!r}") from None


def canonical_fields(hashes: dict[str, dict[bytes, bytes]],
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
        decoded = {name: {raw_key.decode(): whole_value(raw_value.decode())
                          for raw_key, raw_value in fields.items()}
                   for name, fields in hashes.items()}
        if canonical_json(decoded).encode() == canonical:
            return decoded
    except (ValueError, RecursionError):  # malformed, not UTF-8, NaN, deep, spaced: below
        pass
    return {name: {field_text(name, raw_key): _strict_field(name, raw_key, raw_value)
                   for raw_key, raw_value in fields.items()}
            for name, fields in hashes.items()}
