"""Every rule of validation.py, each proven by a config that breaks it and the key it names."""

import copy
from collections.abc import Callable
from typing import Any

import pytest

from celery_config_sync.codec import ConfigDocument
from celery_config_sync.errors import InvalidConfig
from celery_config_sync.source import load_source
from celery_config_sync.validation import LIMITS, redact, validate
from tests.conftest import SOURCE

GOOD = load_source(str(SOURCE))


def mutated(change: Callable[[dict[str, Any]], None]) -> ConfigDocument:
    sections = copy.deepcopy(GOOD.sections())
    change(sections)
    return ConfigDocument(**sections)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(sections: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        target = sections
        for part in parents:
            target = target[part]
        target[last] = value
    return change


CASES = [
    ("route to an undeclared queue", _set("routes/scan.discovery", {"queue": "nowhere"}),
     "routes['scan.discovery'].queue", "not declared"),
    ("route without a queue", _set("routes/scan.discovery", {"priority": 5}),
     "routes['scan.discovery'].queue", "missing"),
    ("unknown route field", _set("routes/scan.discovery", {"queue": "scan", "queu": "x"}),
     "routes['scan.discovery'].queu", "not a route field"),
    ("route priority out of range",
     _set("routes/scan.discovery", {"queue": "scan", "priority": 900}),
     "routes['scan.discovery'].priority", "0..255"),
    ("unknown exchange type", _set("queues/scan/exchange/type", "x-delayed"),
     "queues['scan'].exchange.type", "unknown exchange type"),
    ("headers exchange cannot route on redis", _set("queues/scan/exchange/type", "headers"),
     "queues['scan'].exchange.type", "unknown exchange type"),
    ("queue attribute of the wrong type", _set("queues/scan/durable", "yes"),
     "queues['scan'].durable", "must be bool"),
    ("unknown queue attribute", _set("queues/scan/colour", "red"),
     "queues['scan'].colour", "not a kombu attribute"),
    ("queue name differs from its field", _set("queues/scan/name", "other"),
     "queues['scan'].name", "hash field"),
    ("bad x-max-priority", _set("queues/priority/queue_arguments", {"x-max-priority": 1000}),
     "queues['priority'].queue_arguments.x-max-priority", "1..255"),
    ("typo in a setting", _set("base/task_serialiser", "json"),
     "base.task_serialiser", "not a Celery setting"),
    ("setting of the wrong type", _set("base/worker_prefetch_multiplier", "one"),
     "base.worker_prefetch_multiplier", "must be int"),
    ("bool where an int is due", _set("base/worker_prefetch_multiplier", True),
     "base.worker_prefetch_multiplier", "must be int"),
    ("string setting given a list", _set("base/task_serializer", ["json"]),
     "base.task_serializer", "must be string"),
    ("queues smuggled into base", _set("base/task_queues", []),
     "base.task_queues", "belongs in the queues hash"),
    ("default queue not declared", _set("base/task_default_queue", "ghost"),
     "base.task_default_queue", "not declared"),
    ("broker URL with credentials", _set("base/broker_url", "redis://user:hunter2@redis:6379/0"),
     "base.broker_url", "URL with credentials"),
    ("backend URL with only a password", _set("base/result_backend", "redis://:hunter2@redis/1"),
     "base.result_backend", "URL with credentials"),
    ("a password key nested in a dict", _set("base/broker_transport_options",
                                             {"visibility_timeout": 1, "password": "x"}),
     "base.broker_transport_options.password", "secret"),
    ("a token-named setting", _set("base/security_key_password", "x"),
     "base.security_key_password", "looks like a secret"),
    ("a secret in a queue argument", _set("queues/scan/queue_arguments", {"api_key": "abc"}),
     "queues['scan'].queue_arguments.api_key", "secret"),
    ("a huge field", _set("base/broker_transport_options", {"x": "a" * (70 * 1024)}),
     "base.broker_transport_options", "bytes, more than"),
    ("too many routes", lambda s: s["routes"].update(
        {f"r{i}.t": {"queue": "scan"} for i in range(LIMITS["routes"] + 1)}),
     "routes", "entries, more than"),
]


@pytest.mark.parametrize(("change", "key", "words"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_each_rule_names_the_offending_key(change: Any, key: str, words: str) -> None:
    with pytest.raises(InvalidConfig) as error:
        validate(mutated(change))
    assert error.value.key == key
    assert words in error.value.problem
    assert "\n" not in str(error.value)


def test_the_source_itself_is_valid() -> None:
    validate(GOOD)


def test_total_size_is_capped() -> None:
    many = {f"q{i}": {**GOOD.queues["scan"], "name": f"q{i}",
                      "queue_arguments": {"x-pad": "p" * 60_000}} for i in range(20)}
    with pytest.raises(InvalidConfig, match="bytes in all"):
        validate(ConfigDocument(many, {}, {}))


def test_harmless_names_are_not_mistaken_for_secrets() -> None:
    validate(mutated(_set("queues/scan/exchange/passive", False)))
    validate(mutated(_set("base/broker_url", "redis://redis:6379/0")),
             allow=frozenset({"broker_url"}))


def test_redact_hides_secrets_and_url_passwords() -> None:
    shown = redact({"broker_url": "redis://u:pw@h:1/0", "opts": {"token": "t", "ok": 1}})
    assert shown == {"broker_url": "redis://u:***@h:1/0", "opts": {"token": "***", "ok": 1}}
