"""Which changes a running service applies live, and which need it restarted: one table.

A service applies live what its routing state is built from (queues, routes, the default
queue/exchange/routing key...): :mod:`celery_config_sync.routing` rebuilds that state from the
new version and swaps it in. Every other setting was read once, when Celery built the worker,
its pool or its task classes (concurrency, prefetch, pool, serializers, accept_content, time
limits bound at task registration...): a change to one of those is reported as
``restart_required`` with the setting names, never silently ignored.

Unknown or unlisted settings are restart-required: the safe answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .codec import ConfigDocument

LIVE = "live"
RESTART = "restart"

# Settings whose new value the live routing state picks up (see routing.build_routing).
LIVE_SETTINGS = frozenset({
    "task_default_queue",
    "task_default_exchange",
    "task_default_exchange_type",
    "task_default_routing_key",
    "task_default_delivery_mode",
    "task_create_missing_queues",
    "task_create_missing_queue_type",
    "task_create_missing_queue_exchange_type",
    "task_queue_max_priority",
})

# Which services a setting concerns. The API only sends tasks and reads results: settings of
# the worker (its own namespace, and what the worker binds when it executes a task) change
# nothing in it, so they never make the API "restart-required".
WORKER_ONLY_PREFIXES = ("worker_", "beat_")
WORKER_ONLY_SETTINGS = frozenset({
    "task_acks_late",
    "task_acks_on_failure_or_timeout",
    "task_reject_on_worker_lost",
    "task_track_started",
    "task_time_limit",
    "task_soft_time_limit",
    "task_annotations",
    "task_remote_tracebacks",
    "task_store_errors_even_if_ignored",
    "task_default_rate_limit",
    "task_eager_propagates",
})
# Settings a running process follows without being in the routing state: the live beat
# (celery_config_sync.beat) merges each published beat_schedule; nothing else reads it.
LIVE_OTHER = frozenset({"beat_schedule"})
SERVICES = ("worker", "api", "beat")


def kind_of(section: str, key: str) -> str:
    """``live`` or ``restart`` for one entry of a document: queues, routes and their order are
    always live; the application's own keys (section ``app``) are read by the application
    whenever it likes, so a running process is not known to follow them: restart."""
    if section in ("queues", "routes", "order") or (
            section == "base" and (key in LIVE_SETTINGS or key in LIVE_OTHER)):
        return LIVE
    return RESTART


def concerns(service: str, setting: str) -> bool:
    """Whether a base setting matters to ``service`` (unknown services: every setting). Beat
    sends tasks as the API does, and reads its own ``beat_*`` settings."""
    if service == "beat" and setting.startswith("beat_"):
        return True
    if service not in ("api", "beat"):
        return True
    return not (setting.startswith(WORKER_ONLY_PREFIXES) or setting in WORKER_ONLY_SETTINGS)


def changed_settings(old: ConfigDocument, new: ConfigDocument) -> list[str]:
    """Base settings whose value differs (added, removed or changed), then the application's
    keys as ``app.<key>``, sorted."""
    settings = sorted(key for key in old.base.keys() | new.base.keys()
                      if old.base.get(key, _ABSENT) != new.base.get(key, _ABSENT))
    return settings + sorted(f"app.{key}" for key in old.app.keys() | new.app.keys()
                             if old.app.get(key, _ABSENT) != new.app.get(key, _ABSENT))


def restart_required(started: ConfigDocument, current: ConfigDocument,
                     service: str | None = None) -> list[str]:
    """The restart-required settings that differ between what a process started with and what
    it now runs. Compared with the start, not the previous version: a value changed and then
    changed back needs no restart."""
    return [key for key in changed_settings(started, current)
            if (key.startswith("app.") or kind_of("base", key) == RESTART)
            and (service is None or concerns(service, key))]


def describe(old: ConfigDocument, new: ConfigDocument) -> dict[str, Any]:
    """What publishing ``new`` over ``old`` changes, by kind: ``{"kind": "live"|"restart-
    required"|"none", "restart_required": {...per service...}}``."""
    live = (old.queues != new.queues or old.routes != new.routes
            or old.order() != new.order())
    changed = changed_settings(old, new)
    live = live or any(kind_of("base", key) == LIVE for key in changed if "." not in key)
    per_service = {service: restart_required(old, new, service) for service in SERVICES}
    needing = sorted({key for keys in per_service.values() for key in keys})
    kind = "restart-required" if needing else "live" if live or changed else "none"
    return {"kind": kind, "restart_required": needing,
            "services": {s: keys for s, keys in per_service.items() if keys}}


def label(section: str, key: str) -> str:
    """How ``diff`` tags a change: ``live`` or ``restart: worker`` / ``restart: worker, api``."""
    if kind_of(section, key) == LIVE:
        return LIVE
    return "restart: " + ", ".join(_services_for(key))


def _services_for(setting: str) -> Iterable[str]:
    return [service for service in SERVICES if concerns(service, setting)]


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


_ABSENT: Any = _Absent()
