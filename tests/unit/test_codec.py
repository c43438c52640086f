import json
from datetime import timedelta

import pytest
from celery.schedules import crontab, schedule, solar
from hypothesis import given, settings
from hypothesis import strategies as st
from kombu import Exchange, Queue, binding

from celery_config_sync.codec import ConfigDocument, canonical_json, queue_from_dict, queue_to_dict
from celery_config_sync.source import load_source
from celery_config_sync.strict_fields import json_string
from celery_config_sync.value_types import from_json, to_json
from tests.conftest import SOURCE


@pytest.fixture(scope="module")
def document() -> ConfigDocument:
    return load_source(str(SOURCE))


def test_source_is_sized_like_the_real_deployment(document: ConfigDocument) -> None:
    assert len(document.queues) >= 14
    assert len(document.routes) >= 60
    assert len(document.base) >= 20
    types = {q["exchange"]["type"] for q in document.queues.values()}
    assert {"direct", "topic", "fanout"} <= types
    assert any((q["queue_arguments"] or {}).get("x-max-priority") for q in document.queues.values())


def test_every_queue_survives_the_json_round_trip(document: ConfigDocument) -> None:
    import runpy

    source_queues = {q.name: q for q in runpy.run_path(str(SOURCE))["task_queues"]}
    for name, data in document.queues.items():
        rebuilt = queue_from_dict(json.loads(json.dumps(data)))
        original = source_queues[name]
        assert rebuilt == original
        assert rebuilt.as_dict(recurse=True) == original.as_dict(recurse=True)
        assert rebuilt.exchange.name == original.exchange.name
        assert rebuilt.exchange.type == original.exchange.type
        assert rebuilt.exchange.durable == original.exchange.durable
        assert rebuilt.max_priority == original.max_priority


def test_all_kombu_attributes_and_bindings_round_trip() -> None:
    queue = Queue(
        "full", Exchange("ex", type="topic", durable=False, auto_delete=True,
                         arguments={"alternate-exchange": "ae"}, delivery_mode=1),
        routing_key="a.#", queue_arguments={"x-max-priority": 3}, durable=False,
        exclusive=True, auto_delete=True, expires=30.5, message_ttl=10, max_length=100,
        max_length_bytes=4096, max_priority=3, no_declare=True,
        bindings=[binding(Exchange("other", type="fanout"), routing_key="x",
                          arguments={"k": "v"})])
    rebuilt = queue_from_dict(json.loads(json.dumps(queue_to_dict(queue))))
    assert queue_to_dict(rebuilt) == queue_to_dict(queue)
    assert rebuilt.expires == 30.5 and rebuilt.max_length_bytes == 4096


def test_celery_settings_round_trip(document: ConfigDocument) -> None:
    settings = document.to_celery_settings()
    assert all(isinstance(q, Queue) for q in settings["task_queues"])
    assert ConfigDocument.from_celery_settings(settings) == document


def test_the_order_of_queues_and_routes_is_configuration(document: ConfigDocument) -> None:
    """Celery's MapRoute tries globs in declared order and the priority queue order strategy
    follows task_queues: their order is in the sha256; the order of settings is not."""
    settings_shuffled = ConfigDocument(document.queues, document.routes,
                                       dict(reversed(list(document.base.items()))))
    assert settings_shuffled.sha256 == document.sha256 and settings_shuffled == document
    for reordered in (
            ConfigDocument(dict(reversed(list(document.queues.items()))), document.routes,
                           document.base),
            ConfigDocument(document.queues, dict(reversed(list(document.routes.items()))),
                           document.base)):
        assert reordered.sha256 != document.sha256 and reordered != document
    changed = ConfigDocument(document.queues, document.routes, {**document.base, "timezone": "X"})
    assert changed.sha256 != document.sha256


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_the_fast_key_quoting_of_load_is_canonical_json(key: str) -> None:
    """decode_snapshot rebuilds the canonical text with the encoder's C quoting: it must be the
    canonical form of any key whatsoever, or a sha256 check would fail on valid content."""
    assert json_string(key) == canonical_json(key)


@pytest.mark.parametrize("value", [
    timedelta(hours=1, microseconds=5),
    crontab(minute=0, hour=[9, 17]),
    crontab(minute=range(0, 60, 15), day_of_week={1, 3, 5}),
    crontab(minute="*/15", hour="3-5", day_of_week="mon-fri"),
    schedule(timedelta(seconds=30)),
    solar("sunset", 48.85, 2.35),
    ("a", 1, ("nested",)),
])
def test_celery_value_types_round_trip(value: object) -> None:
    encoded = to_json(value, "x")
    assert json.loads(canonical_json(encoded)) == encoded  # plain JSON
    decoded = from_json(encoded, "x")
    if isinstance(value, schedule) and not isinstance(value, (crontab, solar)):
        assert (decoded.run_every, decoded.relative) == (value.run_every, value.relative)
    elif isinstance(value, solar):
        assert (decoded.event, decoded.lat, decoded.lon) == (value.event, value.lat, value.lon)
    else:
        assert decoded == value and type(decoded) is type(value)
