"""Rules every configuration must pass, at publish and again at load.

The rules are tables, not code per field: kombu's attribute tables type the queues, the
virtual transport's exchange table names the exchange types Redis can route, and Celery's
own option table (``celery.app.defaults``) names and types the settings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from typing import Any

from celery.app.defaults import NAMESPACES, Option, flatten
from kombu.entity import Exchange, Queue
from kombu.transport.virtual.exchange import STANDARD_EXCHANGE_TYPES

from .codec import STRUCTURED_SETTINGS, ConfigDocument, canonical_json
from .errors import InvalidConfig

# Sane sizes: the real deployment is ~14 queues, ~60 routes, ~20 settings and a few KiB.
LIMITS = {
    "total_bytes": 1024 * 1024,
    "field_bytes": 64 * 1024,
    "queues": 256,
    "routes": 4096,
    "base": 512,
}

# JSON types accepted for each Celery option type ("any": whatever JSON holds).
OPTION_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "str": (str,),
    "bool": (bool,),
    "int": (int,),
    "float": (int, float),
    "dict": (dict,),
    "list": (list,),
    "tuple": (list,),
}

# kombu attribute types -> JSON types accepted (None always allowed: kombu's "unset").
KOMBU_JSON_TYPES: dict[Any, tuple[type, ...]] = {
    bool: (bool,),
    int: (int,),
    float: (int, float),
    list: (list,),
}

ROUTE_FIELDS: dict[str, tuple[type, ...]] = {
    "queue": (str,),
    "routing_key": (str,),
    "exchange": (str,),
    "exchange_type": (str,),
    "priority": (int,),
}

# Whole words of a key name: "password" and "redis_token" match, "passive" does not.
SENSITIVE_WORDS = (
    r"pass|passwd|password|pwd|secret|token|credentials?|apikey|api[_-]key|private[_-]key")
SECRET_KEY = re.compile(rf"(?:^|[_.-])(?:{SENSITIVE_WORDS})(?:$|[_.-])", re.IGNORECASE)
# A screen run over the canonical JSON bytes, lowercased: a secret word between quotes or
# separators, or a URL with a password. Only a hit pays for the walk that names the exact key;
# the walk is the authority. (Two simple patterns scan several times faster than one combined
# case-insensitive one.)
SECRET_WORD_SCREEN = re.compile(rf'["_.-](?:{SENSITIVE_WORDS})["_.-]'.encode())
URL_PASSWORD_SCREEN = re.compile(rb'://[^/@\s"]*:[^/@\s"]+@')
URL_WITH_CREDENTIALS = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@\s]*:[^/@\s]+@", re.IGNORECASE)
NAME = re.compile(r"^[A-Za-z0-9_.:*?\[\]-]{1,200}$")


# Where Celery's table types an option by how it parses environment strings rather than by the
# value it takes ("string" for an int priority), the value type wins.
OPTION_TYPE_CORRECTIONS = {
    "task_default_priority": "int",
}


@cache
def celery_options() -> dict[str, Option]:
    return dict(flatten(NAMESPACES))


def option_type(setting: str) -> str | None:
    option = celery_options().get(setting)
    if option is None:
        return None
    kind = OPTION_TYPE_CORRECTIONS.get(setting, option.type)
    return kind if isinstance(kind, str) else kind.__name__


def validate(document: ConfigDocument, canonical: bytes | None = None) -> None:
    """Raise :class:`InvalidConfig` naming the first offending key; return None when valid.

    ``canonical`` is the document's canonical JSON when the caller already has it (a load
    hashes it anyway): sizes and the secret screen then cost one pass over those bytes.
    """
    text = document.canonical().encode() if canonical is None else canonical
    _check_sizes(document, len(text))
    if SECRET_WORD_SCREEN.search(text.lower()) or URL_PASSWORD_SCREEN.search(text):
        # secrets first: the gravest finding
        for section, entries in document.sections().items():
            for key, value in sorted(entries.items()):
                _check_no_secret(entry_name(section, key), key, value)
    # Sorted: the error names the same key whatever order Redis returned the hash fields in.
    for name, queue in sorted(document.queues.items()):
        _check_queue(name, queue)
    for pattern, route in sorted(document.routes.items()):
        _check_route(pattern, route, document.queues)
    for setting, value in sorted(document.base.items()):
        _check_setting(setting, value)
    default_queue = document.base.get("task_default_queue")
    if document.queues and default_queue is not None and default_queue not in document.queues:
        raise InvalidConfig("base.task_default_queue",
                            f"names queue {default_queue!r}, which is not declared")


def entry_name(section: str, key: str) -> str:
    """How errors name an entry: ``base.task_serializer``, ``routes['scan.discovery']``."""
    return f"base.{key}" if section == "base" else f"{section}[{key!r}]"


def _check_sizes(document: ConfigDocument, total: int) -> None:
    for section, entries in document.sections().items():
        if len(entries) > LIMITS[section]:
            raise InvalidConfig(section, f"{len(entries)} entries, more than {LIMITS[section]}")
        if total <= LIMITS["field_bytes"]:
            continue  # no field can be larger than the whole
        for key, value in entries.items():
            size = len(canonical_json(value).encode())
            if size > LIMITS["field_bytes"]:
                raise InvalidConfig(entry_name(section, key),
                                    f"{size} bytes, more than {LIMITS['field_bytes']}")
    if total > LIMITS["total_bytes"]:
        raise InvalidConfig("config", f"{total} bytes in all, more than {LIMITS['total_bytes']}")


QUEUE_ATTRS: dict[str, Any] = dict(Queue.attrs)
EXCHANGE_ATTRS: dict[str, Any] = dict(Exchange.attrs)


def _check_typed_attrs(where: str, data: Mapping[str, Any], table: Mapping[str, Any]) -> None:
    """Type-check ``data`` against a kombu ``attrs`` table; unknown attributes are refused."""
    for attr, value in data.items():
        if attr not in table:
            raise InvalidConfig(f"{where}.{attr}", "is not a kombu attribute")
        allowed = KOMBU_JSON_TYPES.get(table[attr])
        if value is None or allowed is None:
            continue
        if not isinstance(value, allowed) or (bool not in allowed and isinstance(value, bool)):
            raise InvalidConfig(f"{where}.{attr}",
                                f"must be {' or '.join(t.__name__ for t in allowed)}, "
                                f"got {type(value).__name__}")


def _check_queue(name: str, queue: Any) -> None:
    where = f"queues[{name!r}]"
    if not isinstance(queue, dict):
        raise InvalidConfig(where, f"must be an object, got {type(queue).__name__}")
    if not NAME.match(name) or queue.get("name") != name:
        raise InvalidConfig(f"{where}.name",
                            f"must be the hash field name, got {queue.get('name')!r}")
    _check_typed_attrs(where, {k: v for k, v in queue.items() if k != "exchange"}, QUEUE_ATTRS)
    for attr in ("queue_arguments", "binding_arguments", "consumer_arguments"):
        if queue.get(attr) is not None and not isinstance(queue[attr], dict):
            raise InvalidConfig(f"{where}.{attr}", "must be an object")
    priority = (queue.get("queue_arguments") or {}).get("x-max-priority")
    if priority is not None and (not isinstance(priority, int) or not 1 <= priority <= 255):
        raise InvalidConfig(f"{where}.queue_arguments.x-max-priority", "must be an int in 1..255")
    exchange = queue.get("exchange")
    if exchange is None:
        return
    if not isinstance(exchange, dict):
        raise InvalidConfig(f"{where}.exchange", "must be an object")
    _check_typed_attrs(f"{where}.exchange", exchange, EXCHANGE_ATTRS)
    if not isinstance(exchange.get("name"), str):
        raise InvalidConfig(f"{where}.exchange.name", "must be a string")
    kind = exchange.get("type")
    if kind not in STANDARD_EXCHANGE_TYPES:
        raise InvalidConfig(f"{where}.exchange.type",
                            f"unknown exchange type {kind!r} "
                            f"(one of {', '.join(sorted(STANDARD_EXCHANGE_TYPES))})")


def _check_route(pattern: str, route: Any, queues: Mapping[str, Any]) -> None:
    where = f"routes[{pattern!r}]"
    if not NAME.match(pattern):
        raise InvalidConfig(where, "is not a task name or glob")
    if not isinstance(route, dict):
        raise InvalidConfig(where, f"must be an object, got {type(route).__name__}")
    for key, value in route.items():
        allowed = ROUTE_FIELDS.get(key)
        if allowed is None:
            raise InvalidConfig(f"{where}.{key}",
                                f"is not a route field (one of {', '.join(ROUTE_FIELDS)})")
        if not isinstance(value, allowed) or isinstance(value, bool):
            raise InvalidConfig(f"{where}.{key}", f"must be {allowed[0].__name__}")
    queue = route.get("queue")
    if queue is None:
        raise InvalidConfig(f"{where}.queue", "is missing")
    if queue not in queues:
        raise InvalidConfig(f"{where}.queue", f"routes to queue {queue!r}, which is not declared")
    if "priority" in route and not 0 <= route["priority"] <= 255:
        raise InvalidConfig(f"{where}.priority", "must be in 0..255")
    if route.get("exchange_type") not in (None, *STANDARD_EXCHANGE_TYPES):
        raise InvalidConfig(f"{where}.exchange_type",
                            f"unknown exchange type {route['exchange_type']!r}")


def _check_setting(setting: str, value: Any) -> None:
    where = f"base.{setting}"
    if setting in STRUCTURED_SETTINGS:
        raise InvalidConfig(where, f"belongs in the {STRUCTURED_SETTINGS[setting]} hash")
    kind = option_type(setting)
    if kind is None:
        raise InvalidConfig(where, "is not a Celery setting (see celery.app.defaults)")
    if kind == "bytes":
        raise InvalidConfig(where, "holds bytes, which JSON cannot carry")
    allowed = OPTION_JSON_TYPES.get(kind)
    if value is None or allowed is None:
        return
    if not isinstance(value, allowed) or (bool not in allowed and isinstance(value, bool)):
        raise InvalidConfig(where, f"must be {kind}, got {type(value).__name__}")


def _check_no_secret(where: str, key: str, value: Any) -> None:
    if SECRET_KEY.search(str(key)):
        raise InvalidConfig(where, "looks like a secret; credentials belong in each service's "
                                   "environment, never in the shared config")
    if isinstance(value, str) and URL_WITH_CREDENTIALS.match(value):
        raise InvalidConfig(where, "is a URL with credentials; pass it through the environment")
    if isinstance(value, dict):
        for sub_key, sub_value in value.items():
            _check_no_secret(f"{where}.{sub_key}", sub_key, sub_value)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_no_secret(f"{where}[{index}]", "", item)


REDACTED = "***"


def redact(value: Any, key: str = "") -> Any:
    """A copy safe to print: secret-named keys and passwords inside URLs hidden.

    Validation already keeps secrets out; this guards what ``show`` and ``/config`` print
    anyway, e.g. a last-known-good file written by an older, laxer version.
    """
    if key and SECRET_KEY.search(key):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str) and URL_WITH_CREDENTIALS.match(value):
        scheme, rest = value.split("://", 1)
        user = rest.split("@", 1)[0].split(":", 1)[0]
        return f"{scheme}://{user}:{REDACTED}@{rest.split('@', 1)[1]}"
    return value
