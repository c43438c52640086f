"""The load's one-pass canonical check (strict_fields.canonical_fields) against the field-by-field
check it shortcuts (issue 20): for any stored fields, the same values or the same refusal."""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celery_config_sync.codec import canonical_json
from celery_config_sync.errors import InvalidConfig
from celery_config_sync.redis_keys import HASHES
from celery_config_sync.strict_fields import (
    canonical_fields,
    canonical_fields_since,
    canonical_from_fields,
    concatenate,
    strict_json,
)

JSON_LEAVES = (st.none() | st.booleans() | st.integers(-2**64, 2**64) | st.text(max_size=6)
               | st.floats(allow_nan=False, allow_infinity=False))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                           max_leaves=6)
CANONICAL = JSON_VALUES.map(lambda value: canonical_json(value).encode())
# Other spellings of a value and what a tampered field holds: each one is refused field by
# field (or, for a few, is canonical after all); the one-pass check must say the same.
NOT_CANONICAL = st.sampled_from([
    b" 1", b"1 ", b"1.00", b"1e5", b"1E2", b"-0", b"0.0e0", b'"\\u00e9"', b'"\\/"',
    b'{"b":1,"a":2}', b'{"a":1,"a":2}', b'{"a": 1}', b"[1, 2]", b"NaN", b"-Infinity",
    b'600,"task_serializer":"pickle"', b'1,"b":2', b'"s', b"", b"\xff\xfe", b"[" * 5000,
    b"tru", b"nulls", b"01", b'{"a":1}}', b'"a"]'])
FIELDS = CANONICAL | NOT_CANONICAL | st.binary(max_size=12)
KEYS = st.text(max_size=4).map(str.encode) | st.sampled_from([b"\xff", b"a\x00", b'"'])
HASH_CONTENTS = st.fixed_dictionaries({name: st.dictionaries(KEYS, FIELDS, max_size=4)
                                       for name in HASHES})


def field_by_field(hashes: dict[str, dict[bytes, bytes]]) -> dict[str, dict[str, Any]]:
    """The check before the shortcut: every field strict on its own, in the hashes' order."""
    result: dict[str, dict[str, Any]] = {}
    for name, fields in hashes.items():
        result[name] = {}
        for raw_key, raw_value in fields.items():
            try:
                key = raw_key.decode()
            except UnicodeDecodeError:
                raise InvalidConfig(name, f"not UTF-8: {raw_key[:40]!r}") from None
            result[name][key] = strict_json(f"{name}[{key!r}]", raw_value)
    return result


def outcome(check: Any, hashes: dict[str, dict[bytes, bytes]]) -> Any:
    try:
        return "accepted", check(hashes)
    except InvalidConfig as exc:
        return "refused", exc.key, exc.problem


def keys_decode(hashes: dict[str, dict[bytes, bytes]]) -> bool:
    try:
        for fields in hashes.values():
            for key in fields:
                key.decode()
    except UnicodeDecodeError:
        return False
    return True


@settings(max_examples=600, deadline=None)
@given(hashes=HASH_CONTENTS)
def test_the_one_pass_check_accepts_and_refuses_exactly_as_field_by_field(
        hashes: dict[str, dict[bytes, bytes]]) -> None:
    if not keys_decode(hashes):  # the stored hashes' concatenation needs text keys
        with pytest.raises(InvalidConfig, match="not UTF-8"):
            canonical_from_fields(hashes)
        return
    canonical = canonical_from_fields(hashes)
    expected = outcome(field_by_field, hashes)
    assert outcome(lambda h: canonical_fields(h, canonical), hashes) == expected


@given(value=JSON_VALUES)
def test_every_canonical_field_is_accepted(value: Any) -> None:
    hashes = {name: {} for name in HASHES} | {"base": {b"x": canonical_json(value).encode()}}
    decoded = canonical_fields(hashes, canonical_from_fields(hashes))
    assert canonical_json(decoded["base"]["x"]) == canonical_json(value)


def test_a_smuggled_key_is_refused_naming_its_field() -> None:
    hashes: dict[str, dict[bytes, bytes]] = {name: {} for name in HASHES}
    hashes["base"] = {b"task_time_limit": b'600,"task_serializer":"pickle"'}
    with pytest.raises(InvalidConfig) as error:
        canonical_fields(hashes, canonical_from_fields(hashes))
    assert error.value.key == "base['task_time_limit']"
    assert "malformed JSON" in error.value.problem


def reference_concatenation(hashes: dict[str, dict[bytes, bytes]]) -> tuple[bytes, list[Any]]:
    """What concatenate makes, the plain way: every key decoded and quoted by canonical_json,
    sorted as text; and every field's length in that order."""
    parts, lengths = [], []
    for name in sorted(hashes):
        items = sorted((key.decode(), value) for key, value in hashes[name].items())
        parts.append(canonical_json(name).encode() + b":{" + b",".join(
            canonical_json(key).encode() + b":" + value for key, value in items) + b"}")
        lengths.append([name, [len(value) for _, value in items]])
    return b"{" + b",".join(parts) + b"}", lengths


# Keys as Redis may hold them: plain names, and what the shortcut must hand to the slow path
# (quotes, backslashes, control characters, bytes that are not UTF-8, halves of a character).
ANY_KEYS = (st.text(max_size=6).map(str.encode)
            | st.sampled_from([b"a\"b", b"a\\", b"\x00", b"\x1f", b"\x7f", b"\xc3", b"\xa9",
                               b"\xc3\xa9", "\u2028".encode(), b"\xff"])
            | st.binary(max_size=4))
ANY_HASHES = st.fixed_dictionaries({name: st.dictionaries(ANY_KEYS, FIELDS, max_size=5)
                                    for name in HASHES})


@settings(max_examples=200, deadline=None)
@given(hashes=ANY_HASHES)
def test_the_concatenation_is_the_plain_one_with_its_layout(
        hashes: dict[str, dict[bytes, bytes]]) -> None:
    """The shortcut for plain keys (quoted as bytes, sorted as bytes) makes exactly the text the
    plain way makes, and the layout names every field's length in that order; a key that is not
    UTF-8 is refused, naming its hash."""
    if not keys_decode(hashes):
        with pytest.raises(InvalidConfig, match="not UTF-8"):
            concatenate(hashes)
        return
    text, lengths = reference_concatenation(hashes)
    made = concatenate(hashes)
    assert made.canonical == text
    sizes = [size for _, section in lengths for size in (len(section), *section)]
    assert made.layout == hashlib.sha256(struct.pack(f"<{len(sizes)}Q", *sizes)).hexdigest()


def test_layouts_of_one_text_are_told_apart() -> None:
    """Fields that split one text differently (one field holding what two would, or two split
    inside a value) make the same text, never the same layout: a record of validated content
    names the fields, not only their text."""
    splits = [{b"a": b"1", b"b": b'{"x":1,"b":3}'}, {b"a": b'1,"b":{"x":1,"b":3}'},
              {b"a": b'1,"b":{"x":1', b"b": b"3}"}]
    made = [concatenate({name: {} for name in HASHES} | {"base": split}) for split in splits]
    assert len({m.canonical for m in made}) == 1
    assert len({m.layout for m in made}) == len(splits)


CANONICAL_HASHES = st.fixed_dictionaries({
    name: st.dictionaries(st.text(max_size=4).map(str.encode), CANONICAL, max_size=4)
    for name in HASHES})


@settings(max_examples=200, deadline=None)
@given(before=CANONICAL_HASHES, edits=st.lists(
    st.tuples(st.sampled_from(HASHES), st.text(max_size=4).map(str.encode),
              FIELDS | st.none()), max_size=4))
def test_a_new_version_decoded_from_the_last_is_decoded_as_from_nothing(
        before: dict[str, dict[bytes, bytes]],
        edits: list[tuple[str, bytes, bytes | None]]) -> None:
    """canonical_fields_since (a live re-read: unchanged fields keep their values) accepts and
    refuses exactly as the field-by-field check of the whole new version, naming the same
    field; what it keeps is exactly the fields whose bytes did not change."""
    after = {name: dict(fields) for name, fields in before.items()}
    for name, key, value in edits:  # None: the field is deleted
        if value is None:
            after[name].pop(key, None)
        else:
            after[name][key] = value
    decoded_before = canonical_fields(before, canonical_from_fields(before))
    expected = outcome(field_by_field, after)
    got = outcome(lambda h: canonical_fields_since(h, before, decoded_before), after)
    if expected[0] == "refused":
        assert got == expected
        return
    decoded, kept = got[1]
    assert got[0] == "accepted" and decoded == expected[1]
    assert all(kept[name] == {k.decode() for k, v in after[name].items()
                              if before[name].get(k) == v} for name in HASHES)
