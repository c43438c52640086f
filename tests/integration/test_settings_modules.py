"""Celery settings modules written for Celery, not for us (tests/data/settings_modules): the
styles of Celery's documentation, of a Celery 3-era project (old upper-case names only) and
of a Django-style project. Each is published as it is, in one run, and a Celery app configured
from what a service loads must behave as Celery's own ``config_from_object`` of the module:
routing of every task name, queues in order, beat schedule, annotations, settings. What the
source carries for each service's own environment (broker and backend URLs, imports, local
files) is set aside with a notice, never published.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from celery.app.annotations import prepare as prepare_annotations
from celery.app.annotations import resolve_all

from celery import Celery
from celery_config_sync.celery_forms import DEPLOYMENT_SETTINGS
from celery_config_sync.codec import STRUCTURED_SETTINGS
from celery_config_sync.loader import LoadedConfig
from celery_config_sync.redis_keys import Keys
from celery_config_sync.validation import celery_options
from tests.conftest import RedisServer
from tests.integration.test_cli import run, write_source
from tests.integration.test_fidelity_corpus import (
    PLACES,
    assert_same,
    import_module,
    load_from,
    loaded_app,
    queue_dict,
    route_of,
    scheduler_entries,
)

pytestmark = pytest.mark.integration

MODULES = Path(__file__).resolve().parent.parent / "data" / "settings_modules"

# Task names each module's routes decide, by name, glob, regex, a later dict or the default.
TASKS = {
    "celery_docs": ["feed.tasks.import_feed", "feed.tasks.refresh", "tasks.add", "web.login",
                    "image.tasks.resize", "video.tasks.transcode", "audio.tasks.x", "other"],
    "legacy_uppercase": ["nlp.tasks.train_gmm", "nlp.tasks.find_synonyms",
                         "nlp.tasks.vectorize_doc", "nlp.tasks.vectorize_batch",
                         "nlp.maintenance.vacuum", "nlp.other", "unrouted"],
    "django_project": ["shop.emails.send", "shop.emails.digest", "shop.REPORTS.daily",
                       "shop.exports.csv", "shop.search.reindex", "shop.cart.add", "other"],
}
# What the modules are written to decide: guards the corpus (the two apps could otherwise
# agree for the wrong reason).
INTENDED = {
    "celery_docs": {"tasks.add": "low-priority", "video.tasks.transcode": "images",
                    "feed.tasks.refresh": "feed_tasks"},
    "legacy_uppercase": {"nlp.tasks.vectorize_batch": "vectorization",
                         "nlp.maintenance.vacuum": "default", "nlp.other": "synonym"},
    "django_project": {"shop.emails.digest": "emails", "shop.REPORTS.daily": "reports",
                       "shop.cart.add": "web"},
}
SET_ASIDE = {
    "celery_docs": ["broker_url", "imports", "result_backend"],
    "legacy_uppercase": ["broker_url", "result_backend", "imports"],
    "django_project": ["broker_url", "result_backend", "worker_state_db",
                       "beat_schedule_filename"],
}


@pytest.fixture(params=sorted(TASKS))
def module_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=PLACES)
def apps(request: pytest.FixtureRequest, module_name: str, tmp_path: Path,
         redis_server: RedisServer, redis_client: redis.Redis) -> tuple[Celery, Celery]:
    """(Celery's own app from the module, the app configured from what a service loads)."""
    path = MODULES / f"{module_name}.py"
    reference = Celery("reference", set_as_current=False)
    reference.config_from_object(import_module(path))
    loaded: LoadedConfig = load_from(request.param, path, tmp_path, redis_server, redis_client)
    return reference, loaded_app(loaded)


def test_every_task_name_routes_the_same(apps: tuple[Celery, Celery], module_name: str) -> None:
    reference, loaded = apps
    for name in TASKS[module_name]:
        assert route_of(loaded, name) == route_of(reference, name), name
    for name, queue in INTENDED[module_name].items():
        assert reference.amqp.router.route({}, name)["queue"].name == queue, name


def test_same_queues_in_the_same_order(apps: tuple[Celery, Celery]) -> None:
    reference, loaded = apps
    expected, actual = list(reference.amqp.queues.values()), list(loaded.amqp.queues.values())
    assert [q.name for q in actual] == [q.name for q in expected]
    for want, got in zip(expected, actual, strict=True):
        assert queue_dict(got) == queue_dict(want), want.name


def test_same_settings_but_the_ones_set_aside(apps: tuple[Celery, Celery],
                                              module_name: str) -> None:
    reference, loaded = apps
    # Every Celery setting the module gives (under its new name, whichever it used).
    given = {key for key in celery_options() if reference.conf[key] != Celery(
        "defaults", set_as_current=False).conf[key]}
    assert set(SET_ASIDE[module_name]) <= given
    compared = given - set(DEPLOYMENT_SETTINGS) - set(STRUCTURED_SETTINGS)
    assert len(compared) >= 8, compared  # the comparison is not vacuous
    for key in sorted(compared):
        assert_same(reference.conf[key], loaded.conf[key], key)
    for key in SET_ASIDE[module_name]:  # the service's own environment decides them
        assert loaded.conf[key] == Celery("defaults", set_as_current=False).conf[key], key


def test_same_beat_schedule(apps: tuple[Celery, Celery]) -> None:
    reference, loaded = apps
    expected, actual = scheduler_entries(reference), scheduler_entries(loaded)
    assert set(actual) == set(expected) and len(expected) >= 2
    for name, want in expected.items():
        got = actual[name]
        assert got.task == want.task, name
        for attr in ("schedule", "args", "kwargs", "options"):
            assert_same(getattr(want, attr), getattr(got, attr), f"{name}.{attr}")


def annotations_for(app: Celery, name: str) -> list[Any]:
    """What Celery's annotations give a task of ``name``, as the worker applies them."""
    task = SimpleNamespace(name=name)
    return list(resolve_all(prepare_annotations(app.conf.task_annotations), task))


def test_same_annotations(apps: tuple[Celery, Celery], module_name: str) -> None:
    reference, loaded = apps
    for name in TASKS[module_name]:
        assert annotations_for(loaded, name) == annotations_for(reference, name), name
    assert any(annotations_for(reference, name) for name in TASKS[module_name]) or (
        module_name == "celery_docs")


def test_each_module_publishes_in_one_run_with_its_notices(
        module_name: str, redis_server: RedisServer, redis_client: redis.Redis) -> None:
    source = str(MODULES / f"{module_name}.py")
    checked = run("check", "--source", source)
    assert checked.returncode == 0, checked.stderr
    result = run("publish", "--source", source, url=redis_server.url)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    notices = [line for line in result.stderr.splitlines()
               if line.startswith("celery-config: notice: ")]
    set_aside = next(line for line in notices if "set aside" in line)
    for name in SET_ASIDE[module_name]:
        assert name in set_aside, set_aside
    published = {key.decode() for key in redis_client.hkeys(Keys("celery_config").base)}
    assert not published & set(DEPLOYMENT_SETTINGS), published
    if module_name == "legacy_uppercase":
        assert any("CELERY_QUEUES -> task_queues" in line for line in notices), notices
        assert any("CELERY_ENABLE_UTC" in line for line in notices), notices  # Celery's too


# Ten problems in one source, each its own line, all reported by one run.
TEN_PROBLEMS = '''
def route_task(name, args, kwargs, options, task=None, **kw):
    return {"queue": "scan"}

task_serialiser = "json"
worker_concurency = 2
task_routes = [route_task, {**task_routes, "x.y": "ghost"}]
beat_schedule = {"tick": {"task": "x.tick", "schedule": 5.0, "options": {"queue": "phantom"}}}
result_expires = float("nan")
broker_transport_options = {"regions": {"eu", "us"}}
task_default_rate_limit = 5
task_serializer = "pickle"
app_settings = {"task_time_limit": 3}
task_annotations = object()
'''
TEN_KEYS = ["base.task_serialiser", "base.worker_concurency", "task_routes[0]",
            "routes['x.y'].queue", "base.beat_schedule['tick'].options.queue",
            "base.result_expires", "base.broker_transport_options.regions",
            "base.task_default_rate_limit", "base.task_serializer", "task_annotations"]


def test_ten_problems_are_ten_lines_in_one_run(tmp_path: Path, redis_server: RedisServer,
                                               redis_client: redis.Redis) -> None:
    source = write_source(tmp_path, TEN_PROBLEMS.replace('app_settings = {"task_time_limit": 3}\n',
                                                         ""))
    for command in ("check", "publish", "export", "diff"):
        result = run(command, "--source", source, url=redis_server.url)
        assert result.returncode == 2, (command, result.stderr)
        assert "Traceback" not in result.stderr
        lines = [line.removeprefix("celery-config: error: ")
                 for line in result.stderr.splitlines() if line.startswith("celery-config: error")]
        assert len(lines) == 11, (command, lines)  # ten problems, then the count
        assert lines[-1] == f"10 problems in {source}: nothing published"
        for key in TEN_KEYS:
            assert sum(line.startswith(f"{key}:") for line in lines) == 1, (key, lines)
        ghost = next(line for line in lines if line.startswith("routes['x.y']"))
        assert ghost.endswith("add Queue('ghost', Exchange('ghost'), routing_key='ghost') to "
                              "task_queues"), ghost
        router = next(line for line in lines if line.startswith("task_routes[0]"))
        assert "router function" in router and '{"tasks.add": "queue"}' in router, router
    assert redis_client.keys("*") == []


def test_an_app_key_that_is_a_setting_and_the_rest_at_once(tmp_path: Path) -> None:
    result = run("check", write_source(tmp_path, TEN_PROBLEMS))  # SOURCE as an argument
    lines = [line for line in result.stderr.splitlines() if line.startswith("celery-config: e")]
    assert result.returncode == 2 and len(lines) == 12, lines
    assert any("app.task_time_limit: is a Celery setting" in line for line in lines), lines


@pytest.mark.parametrize(("extra", "key", "words"), [
    ("task_routes = 'myapp.routers.route_task'", "task_routes",
     "names a router to import"),
    ("task_routes = {re.compile(rb'^x'): 'scan'}", "task_routes[re.compile(b'^x')]", "bytes"),
    ("task_annotations = 'myapp.annotations.Limits'", "task_annotations", "module path"),
    ("task_annotations = {'*': {'Request': 'myapp.Request'}}", "base.task_annotations",
     "Request is not a task attribute"),
    ("task_routes = {'x.y': {'queue': Queue('scan')}}", "task_routes['x.y'].queue",
     "kombu Queue object"),
    ("CELERY_ROUTES = {}", "source", "mixes old upper-case setting names"),
])
def test_what_is_code_is_refused_naming_the_data_form(tmp_path: Path, extra: str, key: str,
                                                      words: str) -> None:
    result = run("check", "--source", write_source(tmp_path, "import re\n" + extra))
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("celery-config: e")]
    assert any(line.startswith(f"celery-config: error: {key}:") and words in line
               for line in lines), lines
