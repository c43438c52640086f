"""The configuration as data: kombu entities <-> JSON, canonical form and its sha256.

A :class:`ConfigDocument` holds exactly what goes into the three Redis hashes: queue name ->
queue dict (kombu's own ``as_dict(recurse=True)``), route key -> route dict, setting -> value.
Decoding rebuilds kombu objects from kombu's attribute tables (``Queue.attrs``,
``Exchange.attrs``), so every attribute kombu serializes survives the round trip.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kombu.entity import Exchange, Queue, binding

from .errors import InvalidConfig

SECTIONS = ("queues", "routes", "base")

# Settings published in their own hash, never in ``base``.
STRUCTURED_SETTINGS = {"task_queues": "queues", "task_routes": "routes"}


def canonical_json(value: Any) -> str:
    """One text per value: sorted keys, no whitespace, UTF-8 kept, NaN refused."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


@dataclass(frozen=True)
class ConfigDocument:
    """The JSON form of one configuration: what is published, loaded, exported and diffed."""

    queues: dict[str, dict[str, Any]] = field(default_factory=dict)
    routes: dict[str, dict[str, Any]] = field(default_factory=dict)
    base: dict[str, Any] = field(default_factory=dict)

    def sections(self) -> dict[str, dict[str, Any]]:
        return {"queues": self.queues, "routes": self.routes, "base": self.base}

    def canonical(self) -> str:
        return canonical_json(self.sections())

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()

    def encoded_fields(self) -> dict[str, dict[str, str]]:
        """Per-section field -> JSON text, the form stored in the Redis hashes."""
        return {
            name: {key: canonical_json(value) for key, value in section.items()}
            for name, section in self.sections().items()
        }

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ConfigDocument:
        """From ``{"queues": ..., "routes": ..., "base": ...}`` (a file); types checked later."""
        sections = {}
        for name in SECTIONS:
            section = data.get(name, {})
            if not isinstance(section, dict):
                raise InvalidConfig(name, f"must be an object, got {type(section).__name__}")
            sections[name] = section
        return cls(**sections)

    @classmethod
    def from_celery_settings(cls, settings: Mapping[str, Any]) -> ConfigDocument:
        """From Celery-style settings (``task_queues`` of kombu Queues, ``task_routes`` dict)."""
        queues: dict[str, dict[str, Any]] = {}
        for queue in _as_queue_list(settings.get("task_queues") or ()):
            if queue.name in queues:
                raise InvalidConfig(f"queues[{queue.name!r}]", "declared twice")
            queues[queue.name] = queue_to_dict(queue)
        routes = settings.get("task_routes") or {}
        if not isinstance(routes, Mapping):
            raise InvalidConfig("task_routes", "must be a dict of task name or glob -> route")
        base = {k: _jsonable(v) for k, v in settings.items() if k not in STRUCTURED_SETTINGS}
        return cls(queues=queues, routes={str(k): _jsonable(v) for k, v in routes.items()},
                   base=base)

    def to_celery_settings(self) -> dict[str, Any]:
        """Settings ready for ``app.conf.update``: kombu Queue objects and a routes dict."""
        settings = dict(self.base)
        # Sorted by name: a Redis hash has no order, and the same config must give the same app.
        settings["task_queues"] = tuple(queue_from_dict(self.queues[name])
                                        for name in sorted(self.queues))
        settings["task_routes"] = {k: dict(v) for k, v in self.routes.items()}
        return settings


def _as_queue_list(value: Any) -> Iterable[Queue]:
    items = value.values() if isinstance(value, Mapping) else value
    for item in items:
        if not isinstance(item, Queue):
            raise InvalidConfig("task_queues", f"holds {type(item).__name__}, not a kombu Queue")
        yield item


def _jsonable(value: Any) -> Any:
    """Tuples become lists (JSON has no tuple); anything JSON cannot hold is left for validation."""
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def queue_to_dict(queue: Queue) -> dict[str, Any]:
    """kombu's own serialization; bindings (kombu ``binding`` objects) recurse the same way."""
    data: dict[str, Any] = queue.as_dict(recurse=True)
    data["bindings"] = [b.as_dict(recurse=True) for b in queue.bindings or ()]
    return data


def exchange_from_dict(data: Mapping[str, Any]) -> Exchange:
    known = {name for name, _ in Exchange.attrs}
    return Exchange(**{k: v for k, v in data.items() if k in known})


def queue_from_dict(data: Mapping[str, Any]) -> Queue:
    """Inverse of :func:`queue_to_dict`, driven by ``Queue.attrs``."""
    known = {name for name, _ in Queue.attrs} - {"name", "exchange", "bindings"}
    kwargs = {k: v for k, v in data.items() if k in known}
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
