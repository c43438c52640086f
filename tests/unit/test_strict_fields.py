"""The load's one-pass canonical check (strict_fields.canonical_fields) against the field-by-field
check it shortcuts (issue 20): for any stored fields, the same values or the same refusal."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celery_config_sync.codec import canonical_json
from celery_config_sync.errors import InvalidConfig
from celery_config_sync.redis_keys import HASHES
from celery_config_sync.strict_fields import canonical_fields, canonical_from_fields, strict_json

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
