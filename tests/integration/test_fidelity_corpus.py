"""Fidelity over a corpus of realistic Celery settings modules (tests/data).

For each module and each place a service can load from (Redis, last-known-good, snapshot),
a Celery app configured from the loaded config must behave exactly like an app configured
from the module itself: same routing decisions, same queues in the same order, same settings
(same Python types: tuples stay tuples), and the same beat schedule as Celery's own Scheduler
reads it. The reference side is Celery reading the module directly, never our own codec.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis
from celery.beat import Scheduler
from celery.schedules import BaseSchedule, schedule
from kombu.entity import Queue

from celery import Celery
from celery_config_sync.environment import Environment
from celery_config_sync.fallback_files import render, write_atomic
from celery_config_sync.loader import LoadedConfig, load_config
from celery_config_sync.publishing import publish
from celery_config_sync.source import load_source, module_settings
from tests.conftest import RedisServer, free_port
from tests.integration.test_cli import error_line, run

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parent.parent / "data"
CORPUS = ("music_library", "ecommerce", "iot_telemetry")
PLACES = ("redis", "last-known-good", "snapshot")
NS = "fidelity"
# Compared through Celery's processed objects (app.amqp), not as raw settings.
STRUCTURED = {"task_queues", "task_routes", "app_settings"}

# Task names no exact route names, so only a glob (or the default queue) decides them.
GLOB_ONLY = {
    "music_library": [
        "media.covers.special_promo",  # "media.covers.special*" is declared before "media.covers.*"
        "media.covers.special",
        "media.covers.thumbnail",
        "media.audio.loudness",
        "media.waveform.zoom",  # no waveform glob: falls to "media.*"
        "media.video_clip",
        "library.scan.deep",  # "library.*" is declared first and shadows "library.scan.*"
        "library.tags.cleanup",
        "ui.theme_changed",
        "transcode.aac",
        "housekeeping.fsck",
        "plugins.events.sync",
        "unknown.task",  # only the catch-all "*"
    ],
    "ecommerce": [
        "shop.emails.welcome",
        "shop.reports.monthly_churn",
        "shop.orders.split",
        "shop.catalog.reindex",  # no route at all: task_default_queue
    ],
    "iot_telemetry": [
        "iot.archive.compress",
        "iot.ingest.co2",
        "iot.alerts.tamper",
        "iot.aggregate.weekly",
        "iot.unrouted.task",  # no route at all: task_default_queue
    ],
}

# What the overlapping globs are meant to decide: guards the corpus itself, so that the
# comparison below is not between two apps that agree for the wrong reason.
INTENDED = {
    "music_library": {
        "media.covers.special_promo": "interactive",
        "media.covers.special_edition_refresh": "covers",  # exact name beats every glob
        "media.covers.thumbnail": "covers",
        "media.waveform.zoom": "media_misc",
        "library.scan.deep": "library",
        "unknown.task": "library",
    },
    "ecommerce": {"shop.catalog.reindex": "default"},
    "iot_telemetry": {"iot.ingest.co2": "ingest.default", "iot.unrouted.task": "ingest.default"},
}


def import_module(path: Path) -> ModuleType:
    """A fresh import of the module, by path: Celery mutates the kombu Queues it is given
    (default exchange, routing key), so no two apps may share one module's objects."""
    spec = importlib.util.spec_from_file_location(f"fidelity_corpus_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_from(place: str, path: Path, tmp_path: Path, server: RedisServer,
              client: redis.Redis) -> LoadedConfig:
    """What a service loads from ``place`` after the module was published (or exported)."""
    document = load_source(str(path))
    unreachable = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    env = Environment(redis_url=server.url, namespace=NS, wait_timeout=1,
                      fallback_path=str(tmp_path / "lkg.json"),
                      snapshot_path=str(tmp_path / "snapshot.json"))
    if place == "snapshot":
        write_atomic(env.snapshot_path, render(document, version=0, meta={}))
        env = Environment(**{**env.__dict__, "redis_url": unreachable})
    else:
        publish(client, NS, document, source=path.name)
        loaded = load_config(env)  # also writes last-known-good
        if place == "redis":
            assert loaded.source == "redis"
            return loaded
        env = Environment(**{**env.__dict__, "redis_url": unreachable})
    loaded = load_config(env)
    assert loaded.source == place
    return loaded


@pytest.fixture(params=CORPUS)
def corpus(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=PLACES)
def apps(request: pytest.FixtureRequest, corpus: str, tmp_path: Path,
         redis_server: RedisServer, redis_client: redis.Redis,
         ) -> tuple[ModuleType, Celery, Celery]:
    """(the module, the reference app configured from it, the app configured as loaded)."""
    path = DATA / f"{corpus}.py"
    module = import_module(path)
    return module, reference_app(module), loaded_app(
        load_from(request.param, path, tmp_path, redis_server, redis_client))


def reference_app(module: ModuleType) -> Celery:
    app = Celery("reference", set_as_current=False)
    app.config_from_object(module)
    # The loaded side applies the application's own keys as settings: so does the reference.
    app.conf.update(getattr(module, "app_settings", {}))
    return app


def loaded_app(loaded: LoadedConfig) -> Celery:
    app = Celery("loaded", set_as_current=False)
    app.conf.update(loaded.settings)
    return app


def queue_dict(queue: Queue) -> dict[str, Any]:
    """kombu's own serialization, bindings sorted: kombu keeps them in a set (hashed by
    identity), so their listed order means nothing and differs between two equal queues."""
    data: dict[str, Any] = queue.as_dict(recurse=True)
    data["bindings"] = sorted(data.get("bindings") or [],
                              key=lambda b: json.dumps(b, sort_keys=True, default=str))
    return data


def route_of(app: Celery, name: str) -> dict[str, Any]:
    route = app.amqp.router.route({}, name)
    return {key: queue_dict(value) if isinstance(value, Queue) else value
            for key, value in route.items()}


def assert_same(expected: Any, actual: Any, where: str) -> None:
    """Equal AND of the same types all the way down (a tuple that comes back as a list, an
    int as a float, is a difference Celery's consumers can see)."""
    assert type(actual) is type(expected), (
        f"{where}: {type(actual).__name__} {actual!r}, expected "
        f"{type(expected).__name__} {expected!r}")
    if isinstance(expected, dict):
        # Key order of a plain settings dict carries no meaning (routes and queues, whose
        # order does, are compared in order elsewhere).
        assert set(actual) == set(expected), f"{where}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            assert_same(expected[key], actual[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), f"{where}: {actual!r} != {expected!r}"
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            assert_same(want, got, f"{where}[{index}]")
    elif isinstance(expected, BaseSchedule):
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"
        if isinstance(expected, schedule):  # schedule.__eq__ looks at run_every alone
            assert (actual.run_every, actual.relative) == (expected.run_every,
                                                           expected.relative), where
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def test_every_route_decides_the_same(apps: tuple[ModuleType, Celery, Celery],
                                      corpus: str) -> None:
    module, reference, loaded = apps
    exact = [name for name in module.task_routes if "*" not in name]
    samples = GLOB_ONLY[corpus]
    assert not set(samples) & set(module.task_routes), "samples must be matched by globs only"
    for name in exact + samples:
        assert route_of(loaded, name) == route_of(reference, name), name
    for name, queue in INTENDED[corpus].items():
        assert reference.amqp.router.route({}, name)["queue"].name == queue, name


def test_same_queues_in_the_same_order(apps: tuple[ModuleType, Celery, Celery]) -> None:
    module, reference, loaded = apps
    expected = list(reference.amqp.queues.values())
    actual = list(loaded.amqp.queues.values())
    assert [q.name for q in actual] == [q.name for q in expected]
    assert [q.name for q in expected] == [q.name for q in module.task_queues]
    for want, got in zip(expected, actual, strict=True):
        assert queue_dict(got) == queue_dict(want), want.name


def test_same_settings_and_app_keys(apps: tuple[ModuleType, Celery, Celery]) -> None:
    module, reference, loaded = apps
    for key in sorted(set(module_settings(module)) - STRUCTURED):
        assert_same(reference.conf[key], loaded.conf[key], key)
    # The routes dict itself, in declared order: MapRoute tries the globs in that order.
    assert list(loaded.conf.task_routes.items()) == list(reference.conf.task_routes.items())
    for key in module.app_settings:
        assert_same(reference.conf[key], loaded.conf[key], f"app_settings.{key}")


def scheduler_entries(app: Celery) -> dict[str, Any]:
    # The base Scheduler keeps its schedule in memory (PersistentScheduler would write a
    # shelve file); not lazy: setup_schedule() reads beat_schedule as beat itself does.
    return dict(Scheduler(app=app).schedule)


def test_beat_reads_the_same_schedule(apps: tuple[ModuleType, Celery, Celery]) -> None:
    module, reference, loaded = apps
    assert module.beat_schedule, "every corpus module has a beat schedule"
    expected, actual = scheduler_entries(reference), scheduler_entries(loaded)
    assert set(actual) == set(expected)
    assert set(module.beat_schedule) <= set(expected)
    for name, want in expected.items():
        got = actual[name]
        assert got.task == want.task, name
        for attr in ("schedule", "args", "kwargs", "options"):
            assert_same(getattr(want, attr), getattr(got, attr), f"{name}.{attr}")


# Celery documents crontab fields as "a string, an int, or a list/set/range of ints"; the
# list form is common for a few fixed hours. Kept out of the corpus modules so that a failure
# here names this one shape instead of failing a whole module at load_source.
CRONTAB_LISTS = """
from celery.schedules import crontab
from kombu import Exchange, Queue

task_queues = (Queue("reports", Exchange("reports", type="direct"), routing_key="reports"),)
task_default_queue = "reports"
beat_schedule = {
    "digest-twice-a-day": {"task": "reports.digest", "schedule": crontab(minute=0, hour=[9, 17])},
    "weekday-backup": {"task": "reports.backup",
                       "schedule": crontab(minute=30, hour=2, day_of_week={1, 3, 5})},
    "quarter-hours": {"task": "reports.tick", "schedule": crontab(minute=range(0, 60, 15))},
}
"""


def test_crontab_fields_given_as_lists_reach_beat(tmp_path: Path, redis_server: RedisServer,
                                                   redis_client: redis.Redis) -> None:
    path = tmp_path / "crontab_lists.py"
    path.write_text(CRONTAB_LISTS)
    loaded = load_from("redis", path, tmp_path, redis_server, redis_client)
    expected = scheduler_entries(reference_app(import_module(path)))
    actual = scheduler_entries(loaded_app(loaded))
    assert set(actual) == set(expected)
    for name, want in expected.items():
        assert_same(want.schedule, actual[name].schedule, f"{name}.schedule")


# Values JSON cannot hold, each appended to a valid corpus module: (line, key named).
UNCARRIABLE = {
    "exception classes under an app key": (
        "app_settings = {**app_settings, 'task_autoretry_for': (ConnectionError, TimeoutError)}",
        "app.task_autoretry_for"),
    "a set": ("broker_transport_options = {**broker_transport_options, 'regions': {'eu', 'us'}}",
              "base.broker_transport_options.regions"),
    "NaN": ("task_soft_time_limit = float('nan')", "base.task_soft_time_limit"),
}


@pytest.mark.parametrize("case", UNCARRIABLE, ids=list(UNCARRIABLE))
def test_publish_refuses_what_json_cannot_hold(case: str, tmp_path: Path,
                                               redis_server: RedisServer,
                                               redis_client: redis.Redis) -> None:
    line, key = UNCARRIABLE[case]
    source = tmp_path / "source.py"
    source.write_text((DATA / "ecommerce.py").read_text() + "\n" + line + "\n")
    result = run("publish", "--source", str(source), url=redis_server.url)
    assert result.returncode == 2, result.stderr
    message = error_line(result)  # exactly one celery-config line, no traceback
    assert result.stderr.strip().splitlines() == [message]
    assert message.startswith("celery-config: error: ") and key in message, message
    assert redis_client.keys("*") == []  # refused before anything was written
