"""Stored fields read strictly: each one canonical JSON, exactly the bytes that were hashed.

The stored texts are canonical JSON, so the canonical document is their concatenation
(:func:`concatenate`): a load hashes that before it parses anything. The concatenation alone
does not say where each field ends (``{"a":"1,\\"b\\":2"}`` and two fields can make the same
text): its ``layout``, the length of every field, does; the two together name the stored
fields exactly, which is what a record of content validated before must name
(celery_config_sync.validated_content).
"""

from __future__ import annotations

import hashlib
import json
import sys
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from itertools import chain
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


@dataclass(frozen=True)
class Concatenation:
    """The stored fields as one text (``canonical``: what the sha256 is checked on) and their
    ``layout`` (:func:`layout_of`: every field's length, hash by hash, in the text's order)."""

    canonical: bytes
    layout: str


def concatenate(sections: Mapping[str, Mapping[bytes, bytes]]) -> Concatenation:
    """The canonical document that stored fields make when each is canonical: the sections in
    name order, each field's key quoted and its bytes as stored, keys sorted; and its layout.
    A key that is not UTF-8 is refused here, naming its hash.

    Built in one formatting of the whole (every load does it, about 100 fields; 2,000 in a big
    configuration): a template of every field's place, filled with the keys and the stored
    bytes, instead of a join per field."""
    templates: list[bytes] = []
    pieces: list[bytes] = []
    sizes = array("Q")
    for name in sorted(sections):
        fields = sections[name]
        keys = _plain_keys(fields)
        if keys is not None:
            values = list(map(fields.__getitem__, keys))
            field_template = b'"%s":%s'
        else:
            by_text = sorted((field_text(name, k), k) for k in fields)
            keys = [json_string(text).encode() for text, _ in by_text]
            values = [fields[k] for _, k in by_text]
            field_template = b"%s:%s"  # the key quoted already
        templates.append(_section_opening(name) + b",".join([field_template] * len(keys))
                         + b"}")
        pieces += chain.from_iterable(zip(keys, values, strict=True))
        sizes.append(len(values))
        sizes.extend(map(len, values))
    canonical = (b"{" + b",".join(templates) + b"}") % tuple(pieces)
    return Concatenation(canonical, layout_of(sizes))


def layout_of(sizes: array[int]) -> str:
    """The layout of stored fields: the sha256 of, hash by hash in name order, its number of
    fields then each one's length, as unsigned 64-bit little-endian integers. The text names
    the hashes and the keys; with these counts and lengths, every field's place in it."""
    if sys.byteorder == "big":
        sizes.byteswap()
    return hashlib.sha256(sizes.tobytes()).hexdigest()


@cache  # a handful of names (the hashes of the layout)
def _section_opening(name: str) -> bytes:
    """``"name":{`` as a template's text (a ``%`` in it doubled: it is no placeholder)."""
    return canonical_json(name).encode().replace(b"%", b"%%") + b":{"


# What canonical JSON escapes in a string (json.encoder's ESCAPE, ensure_ascii=False): the
# quote, the backslash and the control characters. The table turns each into a quote, so that
# counting quotes counts them all, in one pass of C.
_ESCAPED_TO_QUOTE = bytes(ord('"') if byte < 0x20 or byte in b'"\\' else byte
                          for byte in range(256))


def _plain_keys(fields: Mapping[bytes, bytes]) -> list[bytes] | None:
    """The keys sorted, when every key is UTF-8 with nothing canonical JSON escapes (the common
    case: names of tasks, queues and settings): then a key's quoted form is its bytes between
    quotes, and sorting by bytes is sorting by text (UTF-8 keeps the order of code points).
    None otherwise: the caller quotes each key as canonical_json does.

    One check for all the keys: joined by a quote, the text is UTF-8 exactly when every key is
    (a quote cannot continue a multi-byte sequence) and holds nothing escaped but the quotes
    joining them."""
    joined = b'"'.join(fields)
    if joined.translate(_ESCAPED_TO_QUOTE).count(b'"') != max(len(fields) - 1, 0):
        return None
    try:
        joined.decode()
    except UnicodeDecodeError:
        return None
    return sorted(fields)


def canonical_from_fields(sections: Mapping[str, Mapping[bytes, bytes]]) -> bytes:
    """:func:`concatenate`'s text alone."""
    return concatenate(sections).canonical


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


def canonical_fields_since(hashes: Mapping[str, Mapping[bytes, bytes]],
                           before: Mapping[str, Mapping[bytes, bytes]],
                           decoded_before: Mapping[str, Mapping[str, Any]],
                           ) -> tuple[dict[str, dict[str, Any]], dict[str, set[str]]]:
    """:func:`canonical_fields` for a new version of fields decoded before: a field whose bytes
    are those of ``before`` (proven canonical then, decoded to ``decoded_before``) keeps its
    value; every other field is parsed and proven canonical on its own, in the same order as
    :func:`canonical_fields`' field-by-field path, so the first bad field is the one it names.
    Also returns, per hash, the keys kept (what validation need not look at again)."""
    decoded: dict[str, dict[str, Any]] = {}
    kept: dict[str, set[str]] = {}
    for name, fields in hashes.items():
        old, values = before.get(name, {}), decoded_before.get(name, {})
        section: dict[str, Any] = {}
        same: set[str] = set()
        for raw_key, raw_value in fields.items():
            key = field_text(name, raw_key)
            if old.get(raw_key) == raw_value and key in values:
                section[key] = values[key]
                same.add(key)
            else:
                section[key] = _strict_field(name, raw_key, raw_value)
        decoded[name], kept[name] = section, same
    return decoded, kept
