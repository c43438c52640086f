"""The live / restart-required table and what it makes of a change."""

from __future__ import annotations

import pytest
from celery.app.defaults import DEFAULTS

from celery_config_sync.codec import ConfigDocument
from celery_config_sync.diffing import describe_change
from celery_config_sync.live_settings import (
    LIVE_SETTINGS,
    WORKER_ONLY_SETTINGS,
    concerns,
    describe,
    kind_of,
    label,
    restart_required,
)
from celery_config_sync.source import load_source
from tests.conftest import SOURCE

BASE = load_source(str(SOURCE))


def changed(**settings: object) -> ConfigDocument:
    return ConfigDocument(BASE.queues, BASE.routes, {**BASE.base, **settings})


def test_every_setting_of_the_table_is_a_celery_setting() -> None:
    assert DEFAULTS.keys() >= LIVE_SETTINGS
    assert DEFAULTS.keys() >= WORKER_ONLY_SETTINGS


@pytest.mark.parametrize(("section", "key", "kind"), [
    ("queues", "scan", "live"),
    ("routes", "scan.discovery", "live"),
    ("base", "task_default_queue", "live"),
    ("base", "task_default_routing_key", "live"),
    ("base", "worker_concurrency", "restart"),
    ("base", "worker_prefetch_multiplier", "restart"),
    ("base", "task_serializer", "restart"),
    ("base", "accept_content", "restart"),
    ("base", "task_time_limit", "restart"),
    ("base", "not_a_setting_at_all", "restart"),  # unknown: the safe answer
    ("base", "beat_schedule", "live"),  # the live beat merges it (celery_config_sync.beat)
])
def test_kind_of(section: str, key: str, kind: str) -> None:
    assert kind_of(section, key) == kind


def test_worker_settings_do_not_concern_the_api() -> None:
    assert not concerns("api", "worker_concurrency")
    assert not concerns("api", "task_time_limit")
    assert concerns("api", "task_serializer") and concerns("worker", "worker_concurrency")
    assert label("base", "worker_concurrency") == "restart: worker"
    assert label("base", "task_serializer") == "restart: worker, api, beat"
    assert label("routes", "x.y") == "live"


def test_beat_follows_its_schedule_live_and_restarts_for_its_own_settings() -> None:
    assert kind_of("base", "beat_schedule") == "live"
    assert label("base", "beat_schedule") == "live"
    assert label("base", "beat_max_loop_interval") == "restart: worker, beat"
    assert not concerns("beat", "worker_concurrency") and concerns("beat", "beat_sync_every")
    assert restart_required(BASE, changed(beat_schedule={}), "beat") == []


def test_restart_required_compares_with_the_start_not_the_previous_version() -> None:
    started = BASE
    assert restart_required(started, changed(worker_concurrency=7), "worker") == [
        "worker_concurrency"]
    assert restart_required(started, changed(worker_concurrency=7), "api") == []
    # Changed, then changed back: nothing waits for a restart.
    assert restart_required(started, changed(), "worker") == []
    # A removed setting counts as a change too.
    without = ConfigDocument(BASE.queues, BASE.routes,
                             {k: v for k, v in BASE.base.items() if k != "task_time_limit"})
    assert restart_required(started, without, "worker") == ["task_time_limit"]


def test_describe_names_the_kind_of_a_publish() -> None:
    assert describe(BASE, BASE)["kind"] == "none"
    assert describe(BASE, changed(task_default_queue="scan"))["kind"] == "live"
    routes_only = ConfigDocument(BASE.queues, {**BASE.routes, "x.y": {"queue": "scan"}},
                                 BASE.base)
    assert describe(BASE, routes_only) == {"kind": "live", "restart_required": [],
                                           "services": {}}
    both = describe(BASE, changed(worker_concurrency=9, task_serializer="msgpack"))
    assert both["kind"] == "restart-required"
    assert both["restart_required"] == ["task_serializer", "worker_concurrency"]
    assert both["services"] == {"worker": ["task_serializer", "worker_concurrency"],
                                "api": ["task_serializer"], "beat": ["task_serializer"]}


def test_describe_change_is_one_short_phrase() -> None:
    queues = {k: v for k, v in BASE.queues.items() if k != "lastfm"}
    routes = {k: v for k, v in BASE.routes.items() if not k.startswith("lastfm.")}
    new = ConfigDocument(queues, {**routes, "scan.discovery": {"queue": "batch"}},
                         {**BASE.base, "task_time_limit": 3, "worker_concurrency": 3})
    assert describe_change(BASE, new) == (
        "queues -lastfm, routes -4 ~1, settings +worker_concurrency ~task_time_limit")
    assert describe_change(BASE, BASE) == "same content"


def test_describe_change_names_the_application_keys_and_the_order() -> None:
    reordered = ConfigDocument(BASE.queues, dict(reversed(BASE.routes.items())), BASE.base,
                               {**BASE.app, "FEATURE_NEW": 1})
    assert describe_change(BASE, reordered) == "app +FEATURE_NEW, order ~routes"
