"""Property (issue 9): any document the validator accepts round-trips exactly, through Redis
(publish, then one-round-trip read and decode), through a last-known-good file, and through
Celery's settings form, with the same sha256 everywhere. Documents are drawn in the shapes
real projects use (kombu queues of every exchange type, priorities, overlapping globs in a
declared order, Celery's value types, application keys of any JSON and any Unicode)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.schedules import crontab
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from kombu import Exchange, Queue

from celery_config_sync.codec import ConfigDocument, queue_to_dict
from celery_config_sync.errors import InvalidConfig
from celery_config_sync.fallback_files import read_file, render, write_atomic
from celery_config_sync.publishing import publish
from celery_config_sync.snapshot_decoding import decode_snapshot
from celery_config_sync.snapshot_reading import read_snapshot
from celery_config_sync.validation import validate
from celery_config_sync.value_types import to_json

pytestmark = pytest.mark.integration
NS = "roundtrip"

NAMES = st.text("abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=12)
GLOBS = st.text("abcdefghijklmnopqrstuvwxyz._*?", min_size=1, max_size=14)
JSON_LEAVES = (st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=8)
               | st.floats(allow_nan=False, allow_infinity=False))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                           max_leaves=8)


@st.composite
def queues(draw: st.DrawFn) -> dict[str, dict[str, Any]]:
    names = draw(st.lists(NAMES, min_size=1, max_size=6, unique=True))
    declared: dict[str, dict[str, Any]] = {}
    for name in names:
        kind = draw(st.sampled_from(["direct", "topic", "fanout"]))
        priority = draw(st.none() | st.integers(1, 10))
        queue = Queue(name, Exchange(draw(NAMES), type=kind, durable=draw(st.booleans())),
                      routing_key=draw(NAMES), durable=draw(st.booleans()),
                      max_priority=priority,
                      queue_arguments={"x-max-priority": priority} if priority else None)
        declared[name] = to_json(queue_to_dict(queue), name)
    return declared


@st.composite
def documents(draw: st.DrawFn) -> ConfigDocument:
    declared = draw(queues())
    targets = st.sampled_from(list(declared))
    routes = {pattern: {"queue": draw(targets)}
              | draw(st.fixed_dictionaries({}, optional={"routing_key": NAMES,
                                                         "priority": st.integers(0, 9)}))
              for pattern in draw(st.lists(GLOBS, max_size=8, unique=True))}
    base: dict[str, Any] = draw(st.fixed_dictionaries({}, optional={
        "task_default_queue": targets,
        "worker_prefetch_multiplier": st.integers(1, 16),
        "task_time_limit": st.integers(1, 3600),
        "timezone": st.sampled_from(["UTC", "Europe/Paris"]),
        "result_expires": st.integers(1, 10**6).map(lambda s: to_json(timedelta(seconds=s),
                                                                         "x")),
        "beat_schedule": st.dictionaries(NAMES, st.builds(
            lambda task, hour, queue: {"task": task, "options": {"queue": queue},
                                       "schedule": to_json(crontab(minute="0", hour=hour),
                                                           "x")},
            NAMES, st.integers(0, 23), targets), max_size=3),
        "broker_transport_options": st.fixed_dictionaries(
            {"queue_order_strategy": st.sampled_from(["priority", "round_robin"])}),
    }))
    # Keys mostly of the allowed alphabet, sometimes anything (refused, hence not drawn on).
    app = draw(st.dictionaries(NAMES.map(lambda k: "APP_" + k) | st.text(max_size=4),
                               JSON_VALUES, max_size=4))
    return ConfigDocument(queues=declared, routes=routes, base=base, app=app)


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.filter_too_much])
@given(document=documents())
def test_any_accepted_document_round_trips_exactly(redis_client: redis.Redis,
                                                    tmp_path: Path,
                                                    document: ConfigDocument) -> None:
    try:
        validate(document)
    except InvalidConfig:
        assume(False)  # the property is about what the validator accepts
    # Redis: publish, then the loader's one-round-trip read and strict decode.
    publish(redis_client, NS, document, source="property", force=True)
    published = decode_snapshot(read_snapshot(redis_client, NS))
    assert published.document == document
    assert list(published.document.queues) == list(document.queues)  # declared order
    assert list(published.document.routes) == list(document.routes)
    assert published.sha256 == published.document.sha256 == document.sha256
    # Last-known-good: what a load writes, read back strictly.
    path = tmp_path / "lkg.json"
    write_atomic(path, render(published.document, version=published.version, meta={}))
    from_file, version, _ = read_file(path)
    assert (from_file, from_file.sha256, version) == (document, document.sha256,
                                                      published.version)
    # Celery's settings form (what configure_app applies) holds the same queues, routes and
    # settings; application keys are flattened into the settings there, so compared apart.
    celery_settings = document.to_celery_settings()
    for key in document.app:
        celery_settings.pop(key)
    again = ConfigDocument.from_celery_settings(celery_settings)
    assert again == ConfigDocument(document.queues, document.routes, document.base)
