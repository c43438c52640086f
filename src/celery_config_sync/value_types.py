"""Celery's value types as tagged JSON: what a settings module holds that JSON cannot.

Celery settings really use a few types beyond JSON: ``timedelta`` (``result_expires``),
``crontab``/``solar``/``schedule`` (``beat_schedule``) and tuples (``args`` of beat entries,
``imports``). Each travels as a one-key object naming its type, ``{"$timedelta": 3600.0}``,
``{"$crontab": {"minute": "*/15", ...}}``, ``{"$tuple": [...]}``, and is decoded back to the
real Celery object. Anything else JSON cannot hold (a set, a class, bytes, NaN...) is refused
naming the key and the type. The table below drives both directions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery.schedules import crontab, schedule, solar

from .errors import InvalidConfig

TAG_PREFIX = "$"
# Nesting deeper than this is refused: a configuration is shallow, and recursion must never
# escape as RecursionError (hostile input).
MAX_DEPTH = 32

CRONTAB_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")


def _crontab_out(value: crontab) -> dict[str, Any]:
    return {name: _cron_field(getattr(value, f"_orig_{name}")) for name in CRONTAB_FIELDS}


def _cron_field(value: Any) -> str:
    """A crontab field as Celery's own text syntax: ``"*/15"`` stays, ``[9, 17]``, a set or a
    range become ``"9,17"`` (crontab parses both into the same set of values)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    items = sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    return ",".join(str(item) for item in items)


def _crontab_in(data: Any) -> crontab:
    if not isinstance(data, dict) or set(data) - set(CRONTAB_FIELDS) or not all(
            isinstance(v, str) for v in data.values()):
        raise ValueError(f"expects an object of strings among {', '.join(CRONTAB_FIELDS)}")
    return crontab(**data)


def _solar_out(value: solar) -> dict[str, Any]:
    return {"event": value.event, "lat": value.lat, "lon": value.lon}


def _solar_in(data: Any) -> solar:
    if not isinstance(data, dict) or set(data) != {"event", "lat", "lon"}:
        raise ValueError("expects {\"event\": ..., \"lat\": ..., \"lon\": ...}")
    return solar(data["event"], data["lat"], data["lon"])


def _schedule_out(value: schedule) -> dict[str, Any]:
    return {"run_every": value.run_every.total_seconds(), "relative": bool(value.relative)}


def _schedule_in(data: Any) -> schedule:
    if not isinstance(data, dict) or set(data) != {"run_every", "relative"} or not _number(
            data["run_every"]) or not isinstance(data["relative"], bool):
        raise ValueError("expects {\"run_every\": seconds, \"relative\": bool}")
    return schedule(timedelta(seconds=data["run_every"]), relative=data["relative"])


def _timedelta_in(data: Any) -> timedelta:
    if not _number(data):
        raise ValueError("expects a number of seconds")
    return timedelta(seconds=data)


def _tuple_in(data: Any) -> tuple[Any, ...]:
    if not isinstance(data, list):
        raise TypeError("expects an array")
    return tuple(data)


@dataclass(frozen=True)
class ValueType:
    """One Python type carried as ``{"$<tag>": <payload>}``."""

    tag: str
    python_type: type
    encode: Callable[[Any], Any]  # value -> JSON payload (not yet recursed into)
    decode: Callable[[Any], Any]  # decoded JSON payload -> value


# Order matters where types nest: solar and crontab are schedules too, so they come first.
VALUE_TYPES = (
    ValueType("timedelta", timedelta, lambda v: v.total_seconds(), _timedelta_in),
    ValueType("crontab", crontab, _crontab_out, _crontab_in),
    ValueType("solar", solar, _solar_out, _solar_in),
    ValueType("schedule", schedule, _schedule_out, _schedule_in),
    ValueType("tuple", tuple, list, _tuple_in),
)
BY_TAG = {TAG_PREFIX + t.tag: t for t in VALUE_TYPES}


def to_json(value: Any, where: str, depth: int = 0) -> Any:
    """A Python value of a settings module -> its JSON form; refuse what JSON cannot hold."""
    if depth > MAX_DEPTH:
        raise InvalidConfig(where, f"nested more than {MAX_DEPTH} levels deep")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidConfig(where, f"{value!r} is not a finite number (JSON has no NaN)")
        return value
    if isinstance(value, list):
        return [to_json(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidConfig(where, f"has a key of type {type(key).__name__} "
                                           f"({key!r}); JSON keys are strings")
            if key.startswith(TAG_PREFIX):
                raise InvalidConfig(f"{where}.{key}", f"keys starting with {TAG_PREFIX!r} are "
                                                      "reserved for Celery's value types")
            out[key] = to_json(item, f"{where}.{key}", depth + 1)
        return out
    for kind in VALUE_TYPES:
        if isinstance(value, kind.python_type):
            return {TAG_PREFIX + kind.tag: to_json(kind.encode(value), where, depth + 1)}
    raise InvalidConfig(where, f"holds a {type(value).__module__}.{type(value).__qualname__} "
                               f"({_short(value)}), which cannot be carried: JSON values, "
                               f"timedelta, crontab, solar, schedule and tuples can")


def from_json(value: Any, where: str = "value", depth: int = 0) -> Any:
    """The JSON form -> Python values, tags decoded to Celery's objects; bad tags refused."""
    if depth > MAX_DEPTH:
        raise InvalidConfig(where, f"nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, list):
        return [from_json(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, dict):
        tagged = tag_of(value)
        if tagged is not None:
            payload = from_json(value[TAG_PREFIX + tagged.tag], where, depth + 1)
            try:
                return tagged.decode(payload)
            except Exception as exc:
                raise InvalidConfig(where, f"bad {tagged.tag}: {exc}") from None
        return {key: from_json(item, f"{where}.{key}", depth + 1) for key, item in value.items()}
    return value


def tag_of(value: Any) -> ValueType | None:
    """The value type a JSON object stands for, None for a plain object; unknown tags refused
    by :func:`check_tags` (validation), not here."""
    if isinstance(value, dict) and len(value) == 1:
        (key,) = value
        return BY_TAG.get(key)
    return None


def check_tags(value: Any, where: str, depth: int = 0) -> None:
    """Every ``$`` key is a known tag alone in its object, and its payload decodes."""
    if depth > MAX_DEPTH:
        raise InvalidConfig(where, f"nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, list):
        for i, item in enumerate(value):
            check_tags(item, f"{where}[{i}]", depth + 1)
    elif isinstance(value, dict):
        tags = [key for key in value if key.startswith(TAG_PREFIX)]
        if tags and (len(value) != 1 or tags[0] not in BY_TAG):
            raise InvalidConfig(f"{where}.{tags[0]}", "is not a value type (one of "
                                f"{', '.join(sorted(BY_TAG))}, alone in its object)")
        if tags:
            from_json(value, where, depth)
            return
        for key, item in value.items():
            check_tags(item, f"{where}.{key}", depth + 1)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
