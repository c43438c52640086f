"""The routing state of a service: Celery's own ``Queues`` and ``Router``, built from one
configuration off to the side, then swapped in whole.

Celery caches its router and queues in ``app.amqp`` (celery/celery#5617): updating
``app.conf`` alone leaves a running process routing by the old ones. So a new version is turned
into a complete :class:`RoutingState` first (nothing shared with the one in use), and the
service switches to it with one assignment: a request either sees the old state or the new one,
never half of each. Which queue a task goes to is decided by Celery's ``Router`` and
``MapRoute`` (exact names first, then globs in declared order), never by a re-implementation.

Relies on Celery 5.7 (pinned in pyproject.toml): ``celery.app.amqp.Queues`` and
``celery.app.routes.Router``/``prepare``, and the cached properties of ``celery.app.amqp.AMQP``
that :func:`install` replaces.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from celery.app.amqp import Queues
from celery.app.defaults import DEFAULTS
from celery.app.routes import Router, prepare
from kombu.entity import Exchange, Queue

from celery import Celery

from .live_settings import LIVE_SETTINGS
from .loader import LoadedConfig


@dataclass(frozen=True)
class RoutingState:
    """Everything a service routes by, for one loaded configuration. Immutable once built."""

    loaded: LoadedConfig
    queues: Queues
    router: Router
    settings: dict[str, Any]  # the live settings' effective values (Celery's default if unset)

    def explicit_route(self, name: str) -> dict[str, Any] | None:
        """The route ``task_routes`` gives ``name`` (Celery's MapRoute), None when none does."""
        route: dict[str, Any] | None = self.router.lookup_route(name, (), {}, {}, None)
        return route

    def route(self, name: str, args: Any = (), kwargs: Any = None) -> dict[str, Any]:
        """Celery's full routing options for ``name``: queue (a kombu Queue), exchange..."""
        options: dict[str, Any] = self.router.route({}, name, args, kwargs or {})
        return options


def effective(document_base: dict[str, Any], setting: str) -> Any:
    """A setting's value for a configuration: its own, else Celery's default. A setting
    removed from the configuration goes back to Celery's default, not to its previous value."""
    return document_base.get(setting, DEFAULTS.get(setting))


def build_routing(loaded: LoadedConfig) -> RoutingState:
    """A complete, private routing state for ``loaded``; nothing of a live app is touched."""
    settings = {name: effective(loaded.document.base, name) for name in sorted(LIVE_SETTINGS)}
    default_exchange = Exchange(settings["task_default_exchange"],
                                settings["task_default_exchange_type"])
    declared = loaded.settings["task_queues"]
    if not declared and settings["task_default_queue"]:
        declared = (Queue(settings["task_default_queue"], exchange=default_exchange,
                          routing_key=settings["task_default_routing_key"]),)
    queues = Queues(
        declared,
        default_exchange=default_exchange,
        create_missing=settings["task_create_missing_queues"],
        create_missing_queue_type=settings["task_create_missing_queue_type"],
        create_missing_queue_exchange_type=settings["task_create_missing_queue_exchange_type"],
        max_priority=settings["task_queue_max_priority"],
        default_routing_key=settings["task_default_routing_key"],
    )
    # Router reads only ``app.conf.task_default_queue`` from its app (for unrouted tasks):
    # hand it this configuration's value rather than the live app's.
    own_conf = SimpleNamespace(conf=SimpleNamespace(
        task_default_queue=settings["task_default_queue"]))
    router = Router(prepare(loaded.settings["task_routes"]), queues,
                    settings["task_create_missing_queues"], app=own_conf)
    return RoutingState(loaded, queues, router, settings)


def install(app: Celery, state: RoutingState) -> None:
    """Make ``app`` route by ``state``: its conf, and the caches of ``app.amqp`` that Celery
    would otherwise keep (queues, router, default queue and exchange, the task sender that
    captured them). For a process that sends through ``app`` itself (a worker and its tasks);
    the API passes ``state.router`` to each ``send_task`` instead."""
    app.conf.update({**state.settings,
                     "task_queues": tuple(state.queues.values()),
                     "task_routes": state.loaded.settings["task_routes"]})
    cache = vars(app.amqp)
    cache["queues"] = state.queues
    cache["router"] = state.router
    for derived in ("default_queue", "default_exchange", "send_task_message"):
        cache.pop(derived, None)
    app.amqp._rtable = state.router.routes
