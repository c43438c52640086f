"""Rules every configuration must pass, at publish and again at load.

The rules are tables, not code per field: kombu's attribute tables type the queues, the
virtual transport's exchange table names the exchange types Redis can route, and Celery's
own option table (``celery.app.defaults``) names and types the settings.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from functools import cache
from typing import Any

from celery.app.defaults import DEFAULTS, NAMESPACES, Option, flatten
from kombu.entity import Exchange, Queue
from kombu.transport.virtual.exchange import STANDARD_EXCHANGE_TYPES

from .codec import REGEX_KEY_PREFIX, STRUCTURED_SETTINGS, ConfigDocument, canonical_json
from .errors import InvalidConfig
from .value_types import check_tags, from_json, tag_of

# Sane sizes: the real deployment is ~14 queues, ~60 routes, ~20 settings and a few KiB.
LIMITS = {
    "total_bytes": 1024 * 1024,
    "field_bytes": 64 * 1024,
    "queues": 256,
    "routes": 4096,
    "base": 512,
    "app": 512,
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


# Celery's value types (value_types.py) a setting of each option type may hold.
TAGS_FOR_OPTION_TYPE: dict[str, set[str]] = {
    "float": {"timedelta"},
    "int": {"timedelta"},
    "list": {"tuple"},
    "tuple": {"tuple"},
    "string": set(),
    "str": set(),
    "bool": set(),
}
APP_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,199}$")


def _not_json_only(_: str, value: Any) -> bool:
    values = [value] if isinstance(value, str) else list(value or ())
    return any(v not in ("json", "application/json") for v in values)


def _set(_: str, value: Any) -> bool:
    return value not in (None, "", [], (), {})


def _not_default(setting: str, value: Any) -> bool:
    return bool(value != DEFAULTS.get(setting))


# Task attributes that ``task_annotations`` may set as data (Celery sets any attribute it is
# given on the task class: ``Request``, ``Strategy`` or ``serializer`` would turn an annotation
# into code to import, or into pickle). JSON types of each, None allowed where Celery allows it.
_NUMBER = (int, float)
ANNOTATION_ATTRIBUTES: dict[str, tuple[type, ...]] = {
    "rate_limit": (str, int, float, type(None)),
    "time_limit": (*_NUMBER, type(None)),
    "soft_time_limit": (*_NUMBER, type(None)),
    "expires": (*_NUMBER, type(None)),
    "default_retry_delay": _NUMBER,
    "max_retries": (int, type(None)),
    "priority": (int, type(None)),
    "retry_backoff": (bool, int),
    "retry_backoff_max": (int,),
    "retry_jitter": (bool,),
    "acks_late": (bool,),
    "acks_on_failure_or_timeout": (bool,),
    "reject_on_worker_lost": (bool,),
    "ignore_result": (bool,),
    "store_errors_even_if_ignored": (bool,),
    "track_started": (bool,),
    "send_events": (bool,),
    "trail": (bool,),
    "typing": (bool,),
    "resultrepr_maxsize": (int,),
}


def _annotation_problem(value: Any) -> str | None:
    """Why ``task_annotations`` is not plain data (None when it is): a dict of task name (or
    "*") -> {attribute: value} with attributes of the table above, or a list of such dicts."""
    maps = list(value) if isinstance(value, (list, tuple)) else [value]
    for index, by_task in enumerate(maps):
        where = f"[{index}]" if isinstance(value, (list, tuple)) else ""
        if not isinstance(by_task, dict):
            return (f"{where} is a {type(by_task).__name__}, which names code "
                    "(annotation objects and module paths are code)")
        for task, attributes in by_task.items():
            if not isinstance(attributes, dict):
                return f"{where}[{task!r}] must be an object of task attributes"
            for attribute, item in attributes.items():
                allowed = ANNOTATION_ATTRIBUTES.get(attribute)
                if allowed is None:
                    return (f"{where}[{task!r}].{attribute} is not a task attribute annotations "
                            f"set as data (one of {', '.join(ANNOTATION_ATTRIBUTES)})")
                if not isinstance(item, allowed) or (
                        isinstance(item, bool) and bool not in allowed):
                    return (f"{where}[{task!r}].{attribute} must be "
                            f"{' or '.join(t.__name__ for t in allowed)}")
    return None


def _annotations_not_data(_: str, value: Any) -> bool:
    return _set(_, value) and _annotation_problem(value) is not None


# Settings that whoever can write Redis must not be able to switch on for every service:
# they turn configuration into code execution, or move traffic to another host. Refused at
# publish and at load unless the validating process allows them by name in its own
# environment (CELERY_CONFIG_ALLOW_UNSAFE). Setting -> (reason, when it applies).
UnsafeRule = tuple[str, Callable[[str, Any], bool]]
_SERIALIZER = "names a serializer other than JSON (pickle and yaml run code on load)"
_CODE = "names code to import and run"
_TRAFFIC = "moves traffic to another host than the service's own environment says"
UNSAFE_SETTINGS: dict[str, UnsafeRule] = {
    "accept_content": (_SERIALIZER, _not_json_only),
    "result_accept_content": (_SERIALIZER, _not_json_only),
    "task_serializer": (_SERIALIZER, _not_json_only),
    "result_serializer": (_SERIALIZER, _not_json_only),
    "event_serializer": (_SERIALIZER, _not_json_only),
    "imports": (_CODE, _set),
    "include": (_CODE, _set),
    "worker_pool": (_CODE, _not_default),
    "worker_consumer": (_CODE, _not_default),
    "worker_timer": (_CODE, _not_default),
    "worker_autoscaler": (_CODE, _not_default),
    "beat_scheduler": (_CODE, _not_default),
    "task_annotations": ("is not plain data: annotation objects, module paths and task "
                         "attributes outside the data table are code", _annotations_not_data),
    "worker_state_db": ("names a file the worker writes", _set),
    "broker_url": (_TRAFFIC, _set),
    "broker_read_url": (_TRAFFIC, _set),
    "broker_write_url": (_TRAFFIC, _set),
    "result_backend": (_TRAFFIC, _set),
    "cache_backend": (_TRAFFIC, _set),
    "database_url": (_TRAFFIC, _set),
    "s3_endpoint_url": (_TRAFFIC, _set),
}


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


@dataclass(frozen=True)
class Baseline:
    """What a new version shares with one validated before under the same ``allow`` (a live
    re-read): ``kept``, section -> the keys whose stored bytes are unchanged, hence valid on
    their own still; ``queues``, the queue names it declared, which every route is checked
    against."""

    kept: Mapping[str, AbstractSet[str]]
    queues: AbstractSet[str]


def validate(document: ConfigDocument, canonical: bytes | None = None, *,
             allow: frozenset[str] = frozenset(),
             field_sizes: Mapping[str, Mapping[str, int]] | None = None,
             baseline: Baseline | None = None) -> None:
    """Raise :class:`InvalidConfig` naming the first offending key; return None when valid.

    ``canonical`` is the document's canonical JSON when the caller already has it (a load
    hashes it anyway): sizes and the secret screen then cost one pass over those bytes.
    ``allow``: the unsafe settings the validating process accepts (CELERY_CONFIG_ALLOW_UNSAFE
    in its own environment). ``field_sizes``: section -> key -> size of its canonical JSON, for
    the fields larger than a field may be, when the caller knows them (a load reads the fields
    as stored): every field it does not list is within the limit, and nothing is re-encoded.
    ``baseline``: the entries that need no second look (see :class:`Baseline`); the first
    problem is the one a full validation finds, as the entries skipped passed every rule that
    looks at an entry alone.
    """
    found = problems(document, canonical, allow=allow, field_sizes=field_sizes,
                     baseline=baseline)
    if found:
        raise found[0]


def problems(document: ConfigDocument, canonical: bytes | None = None, *,
             allow: frozenset[str] = frozenset(),
             field_sizes: Mapping[str, Mapping[str, int]] | None = None,
             baseline: Baseline | None = None) -> list[InvalidConfig]:
    """Every problem of ``document``, one per offending entry, in a stable order (sorted: the
    same keys whatever order Redis returned the hash fields in), secrets first."""
    if document.is_empty():
        return [InvalidConfig("config", "empty: no queue, route or setting (publish and load "
                                        "refuse it alike)")]
    text = document.canonical().encode() if canonical is None else canonical
    found: list[InvalidConfig] = []

    def check(rule: Callable[..., None], *args: Any) -> None:
        try:
            rule(*args)
        except InvalidConfig as exc:
            found.append(exc)

    check(_check_sizes, document, len(text), field_sizes)
    if found:
        return found  # too big to walk: that is the one problem to fix first
    sections = document.sections()
    if baseline is not None:
        # Every route is checked against the declared queues: again when those changed.
        kept = {**baseline.kept, "routes": baseline.kept.get("routes", set()) if (
            baseline.queues == document.queues.keys()) else set()}
        sections = {name: {k: v for k, v in entries.items() if k not in kept.get(name, ())}
                    for name, entries in sections.items()}
        text = canonical_json(sections).encode()  # the entries to screen for secrets
    if SECRET_WORD_SCREEN.search(text.lower()) or URL_PASSWORD_SCREEN.search(text):
        # secrets first: the gravest finding
        for section, entries in sections.items():
            for key, value in sorted(entries.items()):
                check(_check_no_secret, entry_name(section, key), key, value)
    for name, queue in sorted(sections["queues"].items()):
        check(_check_queue, name, queue)
    for pattern, route in sorted(sections["routes"].items()):
        check(_check_route, pattern, route, document.queues)
    for setting, value in sorted(sections["base"].items()):
        before = len(found)
        check(_check_setting, setting, value)
        if len(found) == before:
            check(_check_safe, setting, value, allow)
    for key, value in sorted(sections["app"].items()):
        check(_check_app_key, key, value)
    found.extend(_beat_route_problems(document.base.get("beat_schedule"), document.queues))
    default_queue = document.base.get("task_default_queue")
    if document.queues and isinstance(default_queue, str) and (
            default_queue not in document.queues):
        found.append(InvalidConfig("base.task_default_queue",
                                   f"names queue {default_queue!r}, which is not declared: "
                                   f"{_declare(default_queue)}"))
    return found


def _declare(queue: str) -> str:
    """What to add to the source for an undeclared queue: the queue Celery would create."""
    return (f"add Queue({queue!r}, Exchange({queue!r}), routing_key={queue!r}) to "
            f"task_queues")


def entry_name(section: str, key: str) -> str:
    """How errors name an entry: ``base.task_serializer``, ``routes['scan.discovery']``."""
    return f"{section}.{key}" if section in ("base", "app") else f"{section}[{key!r}]"


def _check_sizes(document: ConfigDocument, total: int,
                 field_sizes: Mapping[str, Mapping[str, int]] | None) -> None:
    for section, entries in document.sections().items():
        if len(entries) > LIMITS[section]:
            raise InvalidConfig(section, f"{len(entries)} entries, more than {LIMITS[section]}")
        if total <= LIMITS["field_bytes"]:
            continue  # no field can be larger than the whole
        known = field_sizes.get(section, {}) if field_sizes is not None else None
        if known is not None and not known:
            continue  # the caller knows every field of this section is within the limit
        for key, value in entries.items():
            size = (known.get(key, 0) if known is not None
                    else len(canonical_json(value).encode()))
            if size > LIMITS["field_bytes"]:
                raise InvalidConfig(entry_name(section, key),
                                    f"{size} bytes, more than {LIMITS['field_bytes']}")
    if total > LIMITS["total_bytes"]:
        raise InvalidConfig("config", f"{total} bytes in all, more than {LIMITS['total_bytes']}")


QUEUE_ATTRS: dict[str, Any] = dict(Queue.attrs)
EXCHANGE_ATTRS: dict[str, Any] = dict(Exchange.attrs)
# kombu's binding.as_dict(recurse=True): binding has no attrs table of types, so this one is ours.
BINDING_ATTRS: dict[str, type] = {"exchange": dict, "routing_key": str, "arguments": dict,
                                  "unbind_arguments": dict}


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
    _check_exchange(f"{where}.exchange", queue.get("exchange"))
    bindings = queue.get("bindings")
    for index, item in enumerate(bindings or ()):
        _check_binding(f"{where}.bindings[{index}]", item)


def _check_binding(where: str, item: Any) -> None:
    """One item of a queue's ``bindings``: kombu ``binding.as_dict`` form, typed by its table."""
    if not isinstance(item, dict):
        raise InvalidConfig(where, f"must be an object, got {type(item).__name__}")
    for attr, value in item.items():
        if attr not in BINDING_ATTRS:
            raise InvalidConfig(f"{where}.{attr}", "is not a kombu binding attribute (one of "
                                                   f"{', '.join(sorted(BINDING_ATTRS))})")
        if attr == "exchange":
            _check_exchange(f"{where}.exchange", value)
        elif value is not None and not isinstance(value, BINDING_ATTRS[attr]):
            raise InvalidConfig(f"{where}.{attr}",
                                f"must be {BINDING_ATTRS[attr].__name__} or null")


def _check_exchange(where: str, exchange: Any) -> None:
    """``where`` names the exchange itself (``queues['scan'].exchange``)."""
    if exchange is None:
        return
    if not isinstance(exchange, dict):
        raise InvalidConfig(where, "must be an object")
    _check_typed_attrs(where, exchange, EXCHANGE_ATTRS)
    if not isinstance(exchange.get("name"), str):
        raise InvalidConfig(f"{where}.name", "must be a string")
    kind = exchange.get("type")
    if kind not in STANDARD_EXCHANGE_TYPES:
        raise InvalidConfig(f"{where}.type",
                            f"unknown exchange type {kind!r} "
                            f"(one of {', '.join(sorted(STANDARD_EXCHANGE_TYPES))})")


def _check_route(pattern: str, route: Any, queues: Mapping[str, Any]) -> None:
    where = f"routes[{pattern!r}]"
    if pattern.startswith(REGEX_KEY_PREFIX):
        _check_regex_key(where, pattern[len(REGEX_KEY_PREFIX):])
    elif not NAME.match(pattern):
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
    if queue is None and not {"exchange", "routing_key"} & set(route):
        # Celery sends a route with neither queue nor exchange to the default queue: say so
        # rather than carry a route that does nothing.
        raise InvalidConfig(f"{where}.queue", "is missing (a route names a queue, or an "
                                              "exchange and routing key)")
    if queue is not None and queue not in queues:
        raise InvalidConfig(f"{where}.queue", f"routes to queue {queue!r}, which is not "
                                              f"declared: {_declare(queue)}")
    if "priority" in route and not 0 <= route["priority"] <= 255:
        raise InvalidConfig(f"{where}.priority", "must be in 0..255")
    if route.get("exchange_type") not in (None, *STANDARD_EXCHANGE_TYPES):
        raise InvalidConfig(f"{where}.exchange_type",
                            f"unknown exchange type {route['exchange_type']!r}")


def _check_regex_key(where: str, text: str) -> None:
    """A ``$regex:`` route key: printable, bounded, and a pattern Python compiles."""
    if not text or len(text) > 1000 or not text.isprintable():
        raise InvalidConfig(where, "is not a regex of 1 to 1000 printable characters")
    try:
        re.compile(text)
    except (re.error, RecursionError, OverflowError, ValueError) as exc:
        raise InvalidConfig(where, f"is not a valid regex: {exc}") from None


def _check_setting(setting: str, value: Any) -> None:
    where = f"base.{setting}"
    if setting in STRUCTURED_SETTINGS:
        raise InvalidConfig(where, f"belongs in the {STRUCTURED_SETTINGS[setting]} hash")
    kind = option_type(setting)
    if kind is None:
        close = difflib.get_close_matches(setting, celery_options(), n=1, cutoff=0.8)
        raise InvalidConfig(where, "is not a Celery setting (see celery.app.defaults)" + (
            f": did you mean {close[0]}?" if close else ""))
    if kind == "bytes":
        raise InvalidConfig(where, "holds bytes, which JSON cannot carry")
    check_tags(value, where)
    tagged = tag_of(value)
    if tagged is not None:
        if tagged.tag not in TAGS_FOR_OPTION_TYPE.get(kind, {tagged.tag}):
            raise InvalidConfig(where, f"must be {kind}, got a {tagged.tag}")
        return
    allowed = OPTION_JSON_TYPES.get(kind)
    if value is None or allowed is None:
        return
    if not isinstance(value, allowed) or (bool not in allowed and isinstance(value, bool)):
        raise InvalidConfig(where, f"must be {kind}, got {type(value).__name__}")


def _check_app_key(key: str, value: Any) -> None:
    """The application's own keys: named like settings, never a Celery setting's name."""
    where = f"app.{key}"
    if not APP_KEY.match(key):
        raise InvalidConfig(where, "is not a valid key (letters, digits, _ . -; at most 200)")
    if option_type(key) is not None or key in STRUCTURED_SETTINGS:
        raise InvalidConfig(where, "is a Celery setting: it belongs among the settings")
    check_tags(value, where)


def _check_safe(setting: str, value: Any, allow: frozenset[str]) -> None:
    rule = UNSAFE_SETTINGS.get(setting)
    if rule is None or setting in allow:
        return
    reason, applies = rule
    decoded = from_json(value, f"base.{setting}")
    if applies(setting, decoded):
        if setting == "task_annotations":
            reason = f"{reason}: {_annotation_problem(decoded)}"
        raise InvalidConfig(f"base.{setting}",
                            f"{reason}: refused unless the process that loads it allows it in "
                            f"its own environment (CELERY_CONFIG_ALLOW_UNSAFE={setting})")


def _beat_route_problems(schedule: Any, queues: Mapping[str, Any]) -> list[InvalidConfig]:
    """Beat entries route like task_routes: a queue they name must be declared."""
    if not isinstance(schedule, dict):
        return []
    found = []
    for name, entry in sorted(schedule.items()):
        where = f"base.beat_schedule[{name!r}]"
        if not isinstance(entry, dict):
            found.append(InvalidConfig(where, "must be an object (task, schedule, args, "
                                              "options...)"))
        elif not isinstance(entry.get("task"), str):
            found.append(InvalidConfig(f"{where}.task", "must be a task name"))
        elif "schedule" not in entry:
            found.append(InvalidConfig(f"{where}.schedule", "is missing"))
        elif not isinstance(entry.get("options") or {}, dict):
            found.append(InvalidConfig(f"{where}.options", "must be an object"))
        else:
            queue = (entry.get("options") or {}).get("queue")
            if queue is not None and queue not in queues:
                found.append(InvalidConfig(f"{where}.options.queue",
                                           f"routes to queue {queue!r}, which is not "
                                           f"declared: {_declare(str(queue))}"))
    return found


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
