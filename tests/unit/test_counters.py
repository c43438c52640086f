"""Integers read back from Redis: one spelling, Redis' 64-bit range, never an exception."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from celery_config_sync.counters import MAX_COUNTER, excerpt, parse_counter


@given(st.integers(min_value=0, max_value=MAX_COUNTER))
def test_every_counter_redis_can_hold_reads_back(value: int) -> None:
    assert parse_counter(str(value)) == value
    assert parse_counter(str(value).encode()) == value


@given(st.one_of(st.text(), st.binary()))
def test_any_input_is_a_counter_in_its_one_spelling_or_none(raw: str | bytes) -> None:
    value = parse_counter(raw)
    text = raw.decode("ascii", errors="replace") if isinstance(raw, bytes) else raw
    assert value is None or str(value) == text


def test_what_is_not_a_counter() -> None:
    for raw in ("", "-1", "+1", "01", " 1", "1 ", "1.0", "²", "٣", "9" * 5000,
                str(MAX_COUNTER + 1), b"\xff", None):
        assert parse_counter(raw) is None, raw


def test_excerpt_is_short_whatever_the_input() -> None:
    assert excerpt("12") == "'12'"
    long = excerpt("9" * 5000)
    assert len(long) < 80 and "5000 characters" in long
