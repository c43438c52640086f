"""The configuration as data: kombu entities <-> JSON, canonical form and its sha256.

A :class:`ConfigDocument` holds exactly what goes into the three Redis hashes: queue name ->
queue dict (kombu's own ``as_dict(recurse=True)``), route key -> route dict, setting -> value.
Decoding rebuilds kombu objects from kombu's attribute tables (``Queue.attrs``,
``Exchange.attrs``), so every attribute kombu serializes survives the round trip.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kombu.entity import Exchange, Queue, binding

from .errors import InvalidConfig
from .value_types import from_json, to_json

SECTIONS = ("queues", "routes", "base", "app")
# Sections whose declared order is configuration: Celery's MapRoute tries glob routes in the
# order declared, and the Redis transport's "priority" queue order strategy follows the order
# of task_queues. Hashes and sorted files do not keep it: it travels beside them, in ORDER_KEY.
ORDERED_SECTIONS = ("queues", "routes")
ORDER_KEY = "order"

# Settings published in their own hash, never in ``base``.
STRUCTURED_SETTINGS = {"task_queues": "queues", "task_routes": "routes"}
# The declared place of an application's own keys (not Celery settings) in a source module.
APP_SETTINGS = "app_settings"
# A route keyed by a ``re.compile`` pattern (Celery's MapRoute takes them) is stored under
# this prefix and the pattern's text, its flags written inline: ``$regex:(?i)^video\.``.
# ``$`` is in no task name or glob, so no other key can be read as one.
REGEX_KEY_PREFIX = "$regex:"
_INLINE_FLAGS = ((re.ASCII, "a"), (re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s"),
                 (re.VERBOSE, "x"))


def regex_key(pattern: re.Pattern[str]) -> str:
    """The route key of a compiled pattern: its text with its flags inline."""
    flags = "".join(letter for flag, letter in _INLINE_FLAGS if pattern.flags & flag)
    return REGEX_KEY_PREFIX + (f"(?{flags})" if flags else "") + pattern.pattern


def route_key_to_celery(key: str) -> str | re.Pattern[str]:
    """A stored route key as Celery's MapRoute takes it: a glob or name, or the compiled
    pattern of a ``$regex:`` key (validation has compiled it once already)."""
    if key.startswith(REGEX_KEY_PREFIX):
        return re.compile(key[len(REGEX_KEY_PREFIX):])
    return key


# One encoder for the process: json.dumps with options builds a new one on every call, and a
# load re-encodes every field to check it is canonical.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False)


def canonical_json(value: Any) -> str:
    """One text per value: sorted keys, no whitespace, UTF-8 kept, NaN refused."""
    return _CANONICAL.encode(value)


@dataclass(frozen=True, eq=False)
class ConfigDocument:
    """The JSON form of one configuration: what is published, loaded, exported and diffed.

    ``queues`` and ``routes`` keep their declared order (dicts keep insertion order); the
    canonical form, hence the sha256, covers that order. Values are JSON, with Celery's value
    types tagged (celery_config_sync.value_types).
    """

    queues: dict[str, dict[str, Any]] = field(default_factory=dict)
    routes: dict[str, dict[str, Any]] = field(default_factory=dict)
    base: dict[str, Any] = field(default_factory=dict)
    app: dict[str, Any] = field(default_factory=dict)

    def sections(self) -> dict[str, dict[str, Any]]:
        return {"queues": self.queues, "routes": self.routes, "base": self.base,
                "app": self.app}

    def order(self) -> dict[str, list[str]]:
        return {"queues": list(self.queues), "routes": list(self.routes)}

    def as_mapping(self) -> dict[str, Any]:
        """The sections and the order: what :meth:`from_mapping` reads back (files, the slot)."""
        return {**self.sections(), ORDER_KEY: self.order()}

    def canonical(self) -> str:
        return canonical_json(self.as_mapping())

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConfigDocument):
            return NotImplemented
        return (self.sections(), self.order()) == (other.sections(), other.order())

    def __hash__(self) -> int:
        return hash(self.sha256)

    def is_empty(self) -> bool:
        return not any(self.sections().values())

    def encoded_fields(self) -> dict[str, dict[str, str]]:
        """Per-hash field -> JSON text, the form stored in Redis: the sections, then the order
        (one field per ordered section, a JSON array of its keys)."""
        fields = {name: {key: canonical_json(value) for key, value in section.items()}
                  for name, section in self.sections().items()}
        fields[ORDER_KEY] = {name: canonical_json(keys) for name, keys in self.order().items()}
        return fields

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ConfigDocument:
        """From ``{"queues": ..., "routes": ..., "base": ..., "app": ..., "order": ...}`` (a
        file); ``order`` absent: sorted (files written before order was kept). Types are
        checked by validation."""
        sections: dict[str, dict[str, Any]] = {}
        for name in SECTIONS:
            section = data.get(name, {})
            if not isinstance(section, dict):
                raise InvalidConfig(name, f"must be an object, got {type(section).__name__}")
            sections[name] = section
        order = data.get(ORDER_KEY)
        return cls(**ordered(sections, order if order is not None else {
            name: sorted(sections[name]) for name in ORDERED_SECTIONS}))

    @classmethod
    def from_celery_settings(cls, settings: Mapping[str, Any],
                             problems: list[InvalidConfig] | None = None) -> ConfigDocument:
        """From Celery-style settings (``task_queues`` of kombu Queues, ``task_routes`` dict,
        ``app_settings``): values JSON cannot hold are tagged, or refused naming the key.
        With ``problems``, every refusal is added to it and the entry left out; without, the
        first one raises."""
        found: list[InvalidConfig] = [] if problems is None else problems

        def carried(where: str, value: Any) -> tuple[bool, Any]:
            try:
                return True, to_json(value, where)
            except InvalidConfig as exc:
                if problems is None:
                    raise
                found.append(exc)
                return False, None

        queues: dict[str, dict[str, Any]] = {}
        for queue in _as_queue_list(settings.get("task_queues") or (), found):
            where = f"queues[{queue.name!r}]"
            if queue.name in queues:
                found.append(InvalidConfig(where, "declared twice"))
                continue
            ok, queues[queue.name] = carried(where, queue_to_dict(queue))
            if not ok:
                del queues[queue.name]
        routes = settings.get("task_routes") or {}
        if not isinstance(routes, Mapping):
            found.append(InvalidConfig("task_routes",
                                       "must be a dict of task name or glob -> route"))
            routes = {}
        app = settings.get(APP_SETTINGS) or {}
        if not isinstance(app, Mapping):
            found.append(InvalidConfig(APP_SETTINGS,
                                       "must be a dict of the application's own keys"))
            app = {}
        sections: dict[str, dict[str, Any]] = {"routes": {}, "base": {}, "app": {}}
        entries = [("routes", str(k), f"routes[{k!r}]", v) for k, v in routes.items()]
        entries += [("base", k, f"base.{k}", v) for k, v in settings.items()
                    if k not in STRUCTURED_SETTINGS and k != APP_SETTINGS]
        entries += [("app", str(k), f"app.{k}", v) for k, v in app.items()]
        for section, key, where, value in entries:
            ok, json_value = carried(where, value)
            if ok:
                sections[section][key] = json_value
        if problems is None and found:
            raise found[0]
        return cls(queues=queues, **sections)

    def to_celery_settings(self) -> dict[str, Any]:
        """Settings ready for ``app.conf.update``: kombu Queues and the routes dict in their
        declared order, Celery's value types decoded; the application's keys too."""
        settings = {key: from_json(value, f"base.{key}") for key, value in self.base.items()}
        settings.update({key: from_json(value, f"app.{key}") for key, value in self.app.items()})
        settings["task_queues"] = tuple(queue_from_dict(queue) for queue in self.queues.values())
        settings["task_routes"] = {route_key_to_celery(k): dict(v)
                                   for k, v in self.routes.items()}
        return settings


def ordered(sections: dict[str, dict[str, Any]], order: Any) -> dict[str, dict[str, Any]]:
    """``sections`` with queues and routes rebuilt in ``order``; the order must name exactly
    the keys of its section."""
    if not isinstance(order, Mapping):
        raise InvalidConfig(ORDER_KEY, "must be an object of key lists")
    result = dict(sections)
    for name in ORDERED_SECTIONS:
        keys, section = order.get(name, []), sections[name]
        if not _lists_exactly(keys, section):
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise InvalidConfig(f"{ORDER_KEY}.{name}", "must be an array of names")
            raise InvalidConfig(f"{ORDER_KEY}.{name}",
                                f"does not list exactly the {len(section)} {name}")
        result[name] = dict(zip(keys, map(section.__getitem__, keys), strict=True))
    return result


def _lists_exactly(keys: Any, section: dict[str, Any]) -> bool:
    """True when ``keys`` is a list naming every key of ``section`` once (hence only strings:
    a section's keys are): the common case, checked without a test per key."""
    if not isinstance(keys, list) or len(keys) != len(section):
        return False
    try:
        return section.keys() == set(keys)
    except TypeError:  # an unhashable item (a list, an object)
        return False


def _as_queue_list(value: Any, problems: list[InvalidConfig]) -> Iterable[Queue]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        problems.append(InvalidConfig("task_queues", f"must be a list or tuple of kombu Queues, "
                                                     f"got {type(value).__name__}"))
        return
    items = value.values() if isinstance(value, Mapping) else value
    for index, item in enumerate(items):
        if not isinstance(item, Queue):
            problems.append(InvalidConfig(f"task_queues[{index}]",
                                          f"holds {type(item).__name__}, not a kombu Queue"))
            continue
        yield item


def queue_to_dict(queue: Queue) -> dict[str, Any]:
    """kombu's own serialization; bindings (kombu ``binding`` objects) recurse the same way."""
    data: dict[str, Any] = queue.as_dict(recurse=True)
    data["bindings"] = [b.as_dict(recurse=True) for b in queue.bindings or ()]
    return data


# kombu's attribute tables as sets, built once: every load rebuilds every queue.
_EXCHANGE_ATTRS = frozenset(name for name, _ in Exchange.attrs)
_QUEUE_KWARGS = frozenset(name for name, _ in Queue.attrs) - {"name", "exchange", "bindings"}


def exchange_from_dict(data: Mapping[str, Any]) -> Exchange:
    return Exchange(**{k: v for k, v in data.items() if k in _EXCHANGE_ATTRS})


def queue_from_dict(data: Mapping[str, Any]) -> Queue:
    """Inverse of :func:`queue_to_dict`, driven by ``Queue.attrs``."""
    kwargs = {k: v for k, v in data.items() if k in _QUEUE_KWARGS}
    exchange = data.get("exchange")
    bindings = [
        binding(exchange_from_dict(b["exchange"]) if b.get("exchange") else None,
                routing_key=b.get("routing_key"), arguments=b.get("arguments"),
                unbind_arguments=b.get("unbind_arguments"))
        for b in data.get("bindings") or ()
    ]
    return Queue(
        data["name"],
        exchange=exchange_from_dict(exchange) if isinstance(exchange, Mapping) else exchange,
        bindings=bindings or None,
        **kwargs,
    )
