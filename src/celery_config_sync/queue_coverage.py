"""Which declared queues the configuration sends to, and how many live workers consume each.

The bug class this project exists to end, at run time: routes (and beat entries) that send to a
declared queue that no running worker consumes (a worker started with a fixed ``-Q`` list that
leaves it out). Publishing refuses a route to an *undeclared* queue; only the fleet can tell
that a declared one has no consumer. :func:`coverage` is the one definition, a pure function of
the configuration (Celery's settings form, :meth:`ConfigDocument.to_celery_settings`) and the
fleet's records (:mod:`celery_config_sync.fleet`, each worker's ``consumes`` field), shared by
``celery-config status``, the health page, ``/readyz`` and the metrics.

A worker whose record does not say what it consumes (an older release) is *unknown*: a queue
that no record lists while such a worker lives is not reported as unconsumed, only as unknown.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from celery.app.routes import MapRoute

from .fleet import consumed_queues

# What sends to a queue, as the reports name it.
DEFAULT_QUEUE = "task_default_queue"


@dataclass(frozen=True)
class QueueCoverage:
    """One declared queue: what sends to it, the live workers that consume it, its depth."""

    name: str
    senders: tuple[str, ...] = ()  # "route 'scan.*'", "beat 'nightly'", "task_default_queue"
    consumers: int = 0  # live workers whose record lists it
    unknown: int = 0  # live workers (or records not read) that do not say what they consume
    depth: int | None = None  # messages waiting (None: not read)
    consumer_names: tuple[str, ...] = field(default=(), compare=False)

    @property
    def routed(self) -> bool:
        return bool(self.senders)

    @property
    def unconsumed(self) -> bool:
        """The problem: something sends to it, and no live worker consumes it (as far as every
        record says: an unknown worker may)."""
        return self.routed and self.consumers == 0 and self.unknown == 0

    @property
    def state(self) -> str:
        if self.unconsumed:
            return "no consumer"
        if self.consumers == 0 and self.unknown:
            return "unknown"
        return "consumed" if self.consumers else "not routed"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "routed": self.routed, "senders": list(self.senders),
                "consumers": self.consumers, "unknown": self.unknown, "depth": self.depth,
                "state": self.state, "consumed_by": list(self.consumer_names)}


def declared_queues(settings: Mapping[str, Any]) -> list[str]:
    """The queue names the configuration declares, in order; none declared: Celery's default
    queue, which Celery then declares itself (as routing.build_routing does)."""
    names = [_queue_name(queue) for queue in settings.get("task_queues") or ()]
    if not names and settings.get("task_default_queue", "celery"):
        names = [str(settings.get("task_default_queue", "celery"))]
    return [name for name in dict.fromkeys(names) if name]


def routed_queues(settings: Mapping[str, Any]) -> dict[str, list[str]]:
    """queue name -> what sends to it: every route of ``task_routes`` (its mapping forms,
    whatever the order: a dict, or a sequence of dicts), every beat entry (its own
    ``options.queue``, else where Celery's MapRoute sends its task, else the default queue),
    and ``task_default_queue``, where every task no route matches goes."""
    senders: dict[str, list[str]] = {}
    maps = _route_maps(settings.get("task_routes"))
    for mapping in maps:
        for pattern, route in mapping.items():
            queue = _route_queue(route)
            if queue is not None:
                senders.setdefault(queue, []).append(f"route {_pattern_text(pattern)!r}")
    default = settings.get("task_default_queue", "celery")
    schedule = settings.get("beat_schedule") or {}
    for entry_name, entry in (schedule.items() if isinstance(schedule, Mapping) else ()):
        if not isinstance(entry, Mapping):
            continue
        options = entry.get("options") or {}
        queue = _route_queue(options) if isinstance(options, Mapping) else None
        if queue is None and isinstance(entry.get("task"), str):
            queue = _routed_by_celery(maps, entry["task"]) or default
        if queue:
            senders.setdefault(str(queue), []).append(f"beat {entry_name!r}")
    if default:
        senders.setdefault(str(default), []).append(DEFAULT_QUEUE)
    return senders


def coverage(settings: Mapping[str, Any], records: Iterable[Mapping[str, Any]], *,
             hidden: int = 0, depths: Mapping[str, int] | None = None) -> list[QueueCoverage]:
    """Every declared queue, in declared order, with its senders, consumers and depth.

    ``records``: the live fleet records (fleet.scan_fleet); ``hidden``: live records not read
    (beyond what a reader takes), counted as unknown since any of them may consume a queue."""
    senders = routed_queues(settings)
    consumers: dict[str, list[str]] = {}
    unknown = hidden
    for record in records:
        consumed = consumed_queues(record)
        if consumed is None:
            if record.get("service") == "worker":  # a beat or an API consumes no task queue
                unknown += 1
            continue
        for queue in consumed:
            consumers.setdefault(queue, []).append(str(record.get("instance", "")))
    depths = depths or {}
    return [QueueCoverage(name, tuple(senders.get(name, ())), len(consumers.get(name, ())),
                          unknown, depths.get(name), tuple(sorted(consumers.get(name, ()))))
            for name in declared_queues(settings)]


def unconsumed(rows: Iterable[QueueCoverage]) -> list[str]:
    """The names of the routed queues no live worker consumes."""
    return [row.name for row in rows if row.unconsumed]


def _route_maps(routes: Any) -> list[Mapping[Any, Any]]:
    """``task_routes`` as the list of its mappings, in order (Celery's forms: one mapping, or a
    sequence of them; a router given by name or as a function names no queue and is left out)."""
    if isinstance(routes, Mapping):
        return [routes]
    if isinstance(routes, (list, tuple)):
        return [item for item in routes if isinstance(item, Mapping)]
    return []


def _route_queue(route: Any) -> str | None:
    """The queue a route names: its string shorthand, or its ``queue`` (a name or a Queue)."""
    if isinstance(route, str):
        return route
    if isinstance(route, Mapping) and route.get("queue") is not None:
        return _queue_name(route["queue"])
    return None


def _routed_by_celery(maps: list[Mapping[Any, Any]], task: str) -> str | None:
    """Where Celery's own MapRoute sends ``task`` (exact names, then patterns in order)."""
    for mapping in maps:
        route = MapRoute(mapping)(task)
        queue = _route_queue(route)
        if queue is not None:
            return queue
    return None


def _queue_name(queue: Any) -> str:
    return str(getattr(queue, "name", queue))


def _pattern_text(pattern: Any) -> str:
    return pattern.pattern if isinstance(pattern, re.Pattern) else str(pattern)


__all__ = ["DEFAULT_QUEUE", "QueueCoverage", "coverage", "declared_queues", "routed_queues",
           "unconsumed"]
