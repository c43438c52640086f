"""A Celery settings module as Celery reads it, turned into the data this project carries.

A user's ``celeryconfig.py`` is written for ``app.config_from_object``, not for us. Every form
Celery accepts there that is data is carried with the meaning Celery gives it:

- old upper-case names (``CELERY_QUEUES``, ``CELERYBEAT_SCHEDULE``...) are mapped to the new
  ones through Celery's own table, as Celery maps them (mixing both is refused, as Celery
  refuses it); other upper-case names are the module's own constants, which Celery ignores too;
- ``task_routes``: a route given as a queue name (``{"tasks.add": "emails"}``) becomes
  ``{"queue": "emails"}``; a list of route dicts (Celery tries them in order) becomes one map in
  that order, an entry that an earlier dict always wins over being left out with a notice;
  ``re.compile`` patterns travel as ``$regex:`` keys;
- ``task_queues`` as Celery's old dict form (name -> options) becomes kombu Queues, as Celery's
  ``Queues.add_compat`` builds them;
- deployment settings (where a service connects, what it imports, its own files: the table
  below says why each one) are set aside with a notice: each service's environment sets them.

What is code (router functions and classes, annotation objects, names of modules to import)
is a problem naming the setting and the data form to use instead. Nothing here raises: every
problem is collected, so that a source with ten problems is reported in one run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from celery.app.defaults import _TO_NEW_KEY, NAMESPACES, SETTING_KEYS
from celery.app.routes import MapRoute
from kombu.entity import Queue

from .codec import REGEX_KEY_PREFIX, regex_key
from .errors import InvalidConfig

_CONNECTION = "where a service connects: each has its own environment and Redis user"
_RESULTS = "the result backend's connection: each service's own environment"
_IMPORTS = "what a service imports: each its own, the API never the worker's tasks"
_OWN_FILE = "a file on each service's own disk"
_OWN_KEYS = "a key or certificate on each service's own disk"

# Deployment settings: set aside at publish (never refused, never carried). Decided from
# Celery's option table (celery.app.defaults): what says where to connect, what to import or
# which local file to use. Tuning that every service should share (broker_transport_options,
# result_expires, broker_connection_retry...) is not here: it is configuration.
DEPLOYMENT_SETTINGS: dict[str, str] = {
    **{f"broker_{name}": _CONNECTION for name in (
        "url", "read_url", "write_url", "host", "port", "user", "password", "vhost",
        "transport", "use_ssl", "login_method")},
    "result_backend": _CONNECTION,
    # Every option of the namespaces that configure one result backend's connection.
    **{f"{namespace}_{name}": _RESULTS
       for namespace in ("arangodb", "azureblockblob", "cassandra", "cosmosdbsql", "couchbase",
                         "database", "elasticsearch", "gcs", "mongodb", "redis", "s3", "cache")
       if isinstance(NAMESPACES.get(namespace), Mapping)
       for name in NAMESPACES[namespace]},
    "imports": _IMPORTS,
    "include": _IMPORTS,
    "worker_state_db": _OWN_FILE,
    "beat_schedule_filename": _OWN_FILE,
    **{f"security_{name}": _OWN_KEYS for name in ("key", "key_password", "certificate",
                                                    "cert_store")},
}

# The data form to give instead, for the settings whose other forms are code.
DATA_FORMS: dict[str, str] = {
    "task_routes": 'give routes as data: {"tasks.add": "queue"} or {"tasks.*": {"queue": '
                   '"queue", "routing_key": "..."}}, or a list of such dicts',
    "task_annotations": 'give annotations as data: {"tasks.add": {"rate_limit": "10/s"}} '
                        '(or "*" for every task), or a list of such dicts',
    "task_queues": 'declare queues as kombu Queue("name", Exchange("name"), routing_key="name")',
}


@dataclass
class Normalized:
    """The module's settings as this project carries them, what was set aside or mapped (one
    notice line each), and every problem found."""

    settings: dict[str, Any]
    notices: list[str] = field(default_factory=list)
    problems: list[InvalidConfig] = field(default_factory=list)


def is_setting_name(name: str) -> bool:
    """A name Celery reads as a setting, new or old (``task_routes``, ``CELERY_ROUTES``)."""
    return name in SETTING_KEYS or name in _TO_NEW_KEY


def normalize(settings: Mapping[str, Any]) -> Normalized:
    result = Normalized({})
    names = _map_old_names(settings, result)
    deployment = [name for name in names if name in DEPLOYMENT_SETTINGS]
    if deployment:
        by_reason: dict[str, list[str]] = {}
        for name in deployment:
            by_reason.setdefault(DEPLOYMENT_SETTINGS[name], []).append(name)
        result.notices.append("set aside, each service's own environment sets them: " + "; ".join(
            f"{', '.join(names)} ({reason})" for reason, names in by_reason.items()))
    for name, value in names.items():
        if name in DEPLOYMENT_SETTINGS:
            continue
        carried = value
        if name == "task_routes":
            carried = _routes(value, result)
        elif name == "task_queues" and isinstance(value, Mapping):
            carried = _queues_from_dict_form(value, result)
        elif name == "task_annotations" and not isinstance(value, (Mapping, list, tuple,
                                                                    type(None))):
            kind = ("module path" if isinstance(value, str)
                    else f"{type(value).__qualname__} instance")
            result.problems.append(InvalidConfig(
                "task_annotations", f"holds a {kind}: annotation objects and module paths "
                                    f"are code, which is not carried; "
                                    f"{DATA_FORMS['task_annotations']}"))
            continue
        result.settings[name] = carried
    return result


def _map_old_names(settings: Mapping[str, Any], result: Normalized) -> dict[str, Any]:
    """Old upper-case names mapped as Celery maps them; the module's own upper-case constants
    left out (Celery ignores them as well); mixing old and new names refused as Celery does."""
    old = [name for name in settings if name in _TO_NEW_KEY]
    new = [name for name in settings if name in SETTING_KEYS]
    constants = [name for name in settings if name not in _TO_NEW_KEY and name.isupper()]
    if constants:
        result.notices.append(f"left out, upper-case names that Celery does not read either "
                              f"(not in its table of old setting names): {', '.join(constants)}")
    if old and new:
        result.problems.append(InvalidConfig(
            "source", f"mixes old upper-case setting names ({', '.join(old)}) with new ones "
                      f"({', '.join(new)}), which Celery refuses: rename "
                      + ", ".join(f"{name} to {_TO_NEW_KEY[name]}" for name in old)))
        return {name: value for name, value in settings.items()
                if name not in _TO_NEW_KEY and name not in constants}
    if old:
        result.notices.append("old setting names mapped as Celery maps them: " + ", ".join(
            f"{name} -> {_TO_NEW_KEY[name]}" for name in old))
    return {_TO_NEW_KEY.get(name, name): value for name, value in settings.items()
            if name not in constants}


def _routes(value: Any, result: Normalized) -> dict[str, Any]:
    """``task_routes`` in any data form Celery accepts -> one ordered map of key -> route."""
    if value is None:
        return {}
    as_list = isinstance(value, (list, tuple))
    routers = list(value) if as_list else [value]
    merged: dict[str, Any] = {}
    earlier: list[MapRoute] = []
    for index, router in enumerate(routers):
        where = f"task_routes[{index}]" if as_list else "task_routes"
        if isinstance(router, str):
            result.problems.append(InvalidConfig(
                where, f"names a router to import ({router!r}): router functions and classes "
                       f"are code, which is not carried; {DATA_FORMS['task_routes']}"))
            continue
        if not isinstance(router, Mapping):
            kind = "router function" if callable(router) else type(router).__name__
            result.problems.append(InvalidConfig(
                where, f"holds a {kind}: router functions and classes are code, which is not "
                       f"carried; {DATA_FORMS['task_routes']}"))
            continue
        for key, route in router.items():
            entry = f"{where}[{_shown(key)}]"
            text = _route_key(key, entry, result)
            if text is None:
                continue
            # An exact name that an earlier dict routes (by name or pattern) never reaches
            # this one: Celery stops at the first dict that gives a route.
            exact = isinstance(key, str) and "*" not in key
            shadow = next((i for i, rule in enumerate(earlier) if rule(key) is not None),
                          None) if exact else None
            if text in merged or shadow is not None:
                winner = "an earlier entry with the same pattern" if shadow is None else (
                    f"task_routes[{shadow}] matches it first (Celery tries the dicts in order)")
                result.notices.append(f"left out {entry}: never used, {winner}")
                continue
            merged[text] = _route_value(route, entry, result)
        earlier.append(MapRoute(router))
    return merged


def _route_key(key: Any, where: str, result: Normalized) -> str | None:
    if isinstance(key, str):
        if key.startswith(REGEX_KEY_PREFIX):
            result.problems.append(InvalidConfig(
                where, f"starts with {REGEX_KEY_PREFIX!r}, which is reserved: give a regex "
                       f"as re.compile(...)"))
            return None
        return key
    if isinstance(key, re.Pattern):
        if not isinstance(key.pattern, str):
            result.problems.append(InvalidConfig(where, "is a bytes regex: task names are "
                                                        "text, use re.compile(str)"))
            return None
        return regex_key(key)
    result.problems.append(InvalidConfig(
        where, f"is a {type(key).__name__}: a route's key is a task name, a glob or a "
               f"re.compile(...) pattern"))
    return None


def _route_value(route: Any, where: str, result: Normalized) -> Any:
    if isinstance(route, str):
        return {"queue": route}  # Celery's shorthand: the queue's name alone
    if isinstance(route, Mapping):
        if isinstance(route.get("queue"), Queue):
            queue: Queue = route["queue"]
            result.problems.append(InvalidConfig(
                f"{where}.queue", f"is a kombu Queue object: name it ({queue.name!r}) and "
                                  f"declare it in task_queues"))
        return dict(route)
    return route  # validation names what is wrong with it


def _queues_from_dict_form(value: Mapping[str, Any], result: Normalized) -> tuple[Queue, ...]:
    """Celery's old ``{"name": {"exchange": ..., "routing_key": ...}}`` form, built as
    ``celery.app.amqp.Queues.add_compat`` builds it (kombu Queue objects pass as they are)."""
    queues = []
    for name, options in value.items():
        if isinstance(options, Queue):
            queues.append(options)
            continue
        if not isinstance(name, str) or not isinstance(options, Mapping):
            result.problems.append(InvalidConfig(
                f"task_queues[{_shown(name)}]", f"must map a queue name to its options; "
                                                f"{DATA_FORMS['task_queues']}"))
            continue
        given = dict(options)
        given.setdefault("routing_key", given.get("binding_key"))
        if given["routing_key"] is None:
            given["routing_key"] = name
        try:
            queues.append(Queue.from_dict(name, **given))
        except Exception as exc:  # kombu's own parsing of user input: any refusal is a problem
            result.problems.append(InvalidConfig(f"task_queues[{name!r}]",
                                                 f"kombu refuses it: {type(exc).__name__}: "
                                                 f"{exc}"))
    return tuple(queues)


def _shown(key: Any) -> str:
    if isinstance(key, re.Pattern):
        return f"re.compile({key.pattern!r})"
    return repr(key)


__all__ = ["DATA_FORMS", "DEPLOYMENT_SETTINGS", "Normalized", "is_setting_name", "normalize"]
