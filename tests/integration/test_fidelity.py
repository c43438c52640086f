"""Fidelity and hostile input (issue 9): Celery's value types, the declared order, bindings,
beat routes, unsafe settings, application keys, clear; and whatever bytes sit in Redis or in a
last-known-good file, the loader answers with the valid document or one InvalidConfig, falls
down the chain, and never writes what it refused."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from celery.schedules import crontab
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celery_config_sync.codec import ConfigDocument
from celery_config_sync.environment import Environment
from celery_config_sync.errors import InvalidConfig
from celery_config_sync.fallback_files import read_file, render, write_atomic
from celery_config_sync.loader import load_config
from celery_config_sync.publishing import publish
from celery_config_sync.redis_keys import HASHES, Keys
from celery_config_sync.routing import build_routing
from celery_config_sync.snapshot_decoding import decode_snapshot
from celery_config_sync.snapshot_reading import read_snapshot
from celery_config_sync.source import load_source
from celery_config_sync.value_types import to_json
from tests.conftest import SOURCE, RedisServer, free_port
from tests.integration.test_cli import error_line, run, write_source
from tests.tamper import reseal

pytestmark = pytest.mark.integration
NS = "celery_config"
KEYS = Keys(NS)
DOCUMENT = load_source(str(SOURCE))

VALUE_TYPES_SOURCE = """
from datetime import timedelta
from celery.schedules import crontab, schedule
result_expires = timedelta(hours=1)
beat_schedule = {
    "rescan-nightly": {"task": "scan.full_rescan", "schedule": crontab(minute="0", hour="3"),
                       "args": ("/music", 2), "options": {"queue": "scan"}},
    "heartbeat": {"task": "monitoring.heartbeat", "schedule": schedule(timedelta(seconds=30))},
    "stats": {"task": "deferred.recompute_stats", "schedule": 600.0},
}
app_settings = {"FEATURE_LYRICS": True, "retry_backoff": timedelta(seconds=5)}
"""


def env_for(server: RedisServer | None, tmp_path: Path, **extra: object) -> Environment:
    url = server.url if server else f"redis://127.0.0.1:{free_port()}/0"
    return Environment(redis_url=url, namespace=NS, wait_timeout=1,
                       fallback_path=str(tmp_path / "lkg.json"),
                       snapshot_path=str(tmp_path / "snapshot.json"), **extra)  # type: ignore[arg-type]


# ------------------------------------------------------------------------- value types
def test_celery_value_types_round_trip_from_redis_and_last_known_good(
        tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis) -> None:
    document = load_source(write_source(tmp_path, VALUE_TYPES_SOURCE))
    assert document.base["result_expires"] == {"$timedelta": 3600.0}
    publish(redis_client, NS, document, source="test")
    from_redis = load_config(env_for(redis_server, tmp_path))
    from_lkg = load_config(env_for(None, tmp_path))  # Redis unreachable: the file just written
    assert (from_redis.source, from_lkg.source) == ("redis", "last-known-good")
    for loaded in (from_redis, from_lkg):
        settings = loaded.settings
        assert settings["result_expires"] == timedelta(hours=1)
        nightly = settings["beat_schedule"]["rescan-nightly"]
        assert nightly["schedule"] == crontab(minute="0", hour="3")
        assert nightly["args"] == ("/music", 2)  # a tuple again
        assert settings["beat_schedule"]["heartbeat"]["schedule"].run_every == timedelta(
            seconds=30)
        assert settings["FEATURE_LYRICS"] is True
        assert settings["retry_backoff"] == timedelta(seconds=5)
        assert loaded.sha256 == document.sha256


@pytest.mark.parametrize(("extra", "key", "problem"), [
    ("result_backend_transport_options = {'tags': {1, 2}}",
     "base.result_backend_transport_options.tags", "builtins.set"),
    ("task_time_limit = float('nan')", "base.task_time_limit", "not a finite number"),
    ("app_settings = {'retry_on': (ValueError,)}", "app.retry_on[0]", "builtins.type"),
    ("beat_schedule = {'x': {'task': 'scan.directory', 'schedule': 5, "
     "'options': {'queue': 'gmm'}}}", "base.beat_schedule['x'].options.queue", "'gmm'"),
    ("app_settings = {'task_serializer': 'json'}", "app.task_serializer", "Celery setting"),
    ("task_queues = ()\ntask_routes = {}\nfor _k in list(globals()):\n"
     "    if not _k.startswith('_') and _k not in ('Queue', 'Exchange'):\n"
     "        del globals()[_k]", "config", "empty"),
])
def test_what_cannot_be_carried_is_one_line_exit_2(tmp_path: Path, redis_server: RedisServer,
                                                   redis_client: redis.Redis, extra: str,
                                                   key: str, problem: str) -> None:
    result = run("publish", "--source", write_source(tmp_path, extra), url=redis_server.url)
    assert result.returncode == 2, result.stderr
    line = error_line(result)
    assert line.startswith(f"celery-config: error: {key}") and problem in line, line
    assert not redis_client.exists(KEYS.version)


def test_a_malformed_binding_in_redis_is_refused_at_load(redis_client: redis.Redis) -> None:
    publish(redis_client, NS, DOCUMENT, source="test")
    scan = {**DOCUMENT.queues["scan"], "bindings": [{"exchange": "not an object"}]}
    redis_client.hset(KEYS.queues, "scan", json.dumps(scan, sort_keys=True,
                                                      separators=(",", ":")))
    reseal(redis_client)
    with pytest.raises(InvalidConfig, match=r"queues\['scan'\]\.bindings\[0\]\.exchange"):
        decode_snapshot(read_snapshot(redis_client, NS))


# ------------------------------------------------------------------------------- order
def test_declared_order_of_globs_and_queues_survives_every_link(
        tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis) -> None:
    routes = {"demo.special*": {"queue": "priority"}, **DOCUMENT.routes}  # before demo.*
    queues = dict(reversed(list(DOCUMENT.queues.items())))  # not alphabetical
    document = ConfigDocument(queues, routes, DOCUMENT.base)
    publish(redis_client, NS, document, source="test")
    write_atomic(tmp_path / "snapshot.json", render(document, version=0, meta={}))
    loads = [load_config(env_for(redis_server, tmp_path)), load_config(env_for(None, tmp_path))]
    (tmp_path / "lkg.json").unlink()
    loads.append(load_config(env_for(None, tmp_path)))
    assert [loaded.source for loaded in loads] == ["redis", "last-known-good", "snapshot"]
    for loaded in loads:
        assert list(loaded.document.routes) == list(routes)
        assert [q.name for q in loaded.settings["task_queues"]] == list(queues)
        state = build_routing(loaded)
        assert state.route("demo.special_x")["queue"].name == "priority"
        assert state.route("demo.other")["queue"].name == "celery"
        assert loaded.sha256 == document.sha256


# ------------------------------------------------------------------------ unsafe settings
def test_unsafe_settings_need_the_loading_sides_consent(
        tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis) -> None:
    extra = "task_serializer = 'pickle'\naccept_content = ['json', 'pickle']"
    source = write_source(tmp_path, extra)
    refused = run("publish", "--source", source, url=redis_server.url)
    assert refused.returncode == 2
    lines = [line for line in refused.stderr.splitlines() if line.startswith("celery-config")]
    assert len(lines) == 3, refused.stderr  # both settings, then the count: one run
    for setting in ("accept_content", "task_serializer"):
        assert any(f"CELERY_CONFIG_ALLOW_UNSAFE={setting}" in line for line in lines), lines
    assert redis_client.keys("*") == []
    allowed = run("publish", "--source", source, url=redis_server.url,
                  CELERY_CONFIG_ALLOW_UNSAFE="task_serializer,accept_content")
    assert allowed.returncode == 0, allowed.stderr
    assert_consent_needed_to_load(tmp_path, redis_server, {"task_serializer", "accept_content"})


# Deployment settings are set aside at publish (a notice, not a refusal): a source never carries
# them. One that reaches Redis anyway (another writer, an older publisher) is refused at load
# unless the loading side consents: the loading side's rule is unchanged.
@pytest.mark.parametrize(("setting", "value"), [
    ("broker_write_url", "redis://elsewhere:6379/0"),
    ("imports", ("myapp.tasks",)),
    ("result_backend", "redis://elsewhere:6379/1"),
])
def test_deployment_settings_are_set_aside_at_publish_and_refused_at_load(
        tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis, setting: str,
        value: object) -> None:
    source = write_source(tmp_path, f"{setting} = {value!r}")
    published = run("publish", "--source", source, url=redis_server.url)
    assert published.returncode == 0, published.stderr
    notices = [line for line in published.stderr.splitlines()
               if line.startswith("celery-config: notice: set aside")]
    assert len(notices) == 1 and setting in notices[0], published.stderr
    assert setting.encode() not in b"".join(redis_client.hkeys(f"{NS}:base"))
    assert b"elsewhere" not in b"".join(redis_client.hvals(f"{NS}:base"))
    # Written to Redis by a writer that bypasses the source (the library, consenting itself):
    document = ConfigDocument(**{**DOCUMENT.sections(),
                                 "base": {**DOCUMENT.base, setting: to_json(value, setting)}})
    publish(redis_client, NS, document, source="elsewhere", allow=frozenset({setting}))
    assert_consent_needed_to_load(tmp_path, redis_server, {setting})


def assert_consent_needed_to_load(tmp_path: Path, redis_server: RedisServer,
                                  names: set[str]) -> None:
    """A loading side that did not consent refuses what Redis holds, and falls back; one that
    did, loads it."""
    write_atomic(tmp_path / "snapshot.json", render(DOCUMENT, version=0, meta={}))
    refusing = load_config(env_for(redis_server, tmp_path))
    assert refusing.source == "snapshot"
    consenting = load_config(env_for(redis_server, tmp_path, allow_unsafe=frozenset(names)))
    assert consenting.source == "redis"


# ------------------------------------------------------------------------------- clear
def test_clear_unpublishes_after_confirmation(redis_server: RedisServer,
                                             redis_client: redis.Redis) -> None:
    publish(redis_client, NS, DOCUMENT, source="test")
    refused = run("clear", url=redis_server.url)
    assert refused.returncode == 2 and "--yes" in error_line(refused)
    assert redis_client.exists(KEYS.version)
    redis_client.hset(f"{NS}:applied:api:h:1", mapping={"service": "api"})
    cleared = run("clear", "--yes", url=redis_server.url)
    assert cleared.returncode == 0 and json.loads(cleared.stdout) == {"cleared": True,
                                                                      "was_version": 1}
    assert not any(redis_client.exists(KEYS.section(name)) for name in HASHES)
    assert not redis_client.exists(KEYS.version) and not redis_client.exists(KEYS.meta)
    assert redis_client.exists(f"{NS}:applied:api:h:1")  # the fleet's records stay
    assert run("wait", "--timeout", "1", url=redis_server.url).returncode == 3


# --------------------------------------------------------------- hostile last-known-good
HOSTILE_FILES = {
    "NaN": lambda text: text.replace('"task_time_limit": 600', '"task_time_limit": NaN'),
    "duplicate keys": lambda text: text.replace('"task_time_limit": 600',
                                                '"task_time_limit": 600, "task_time_limit": 1'),
    "pathological nesting": lambda text: text.replace(
        '"task_time_limit": 600', '"task_time_limit": ' + "[" * 50_000 + "]" * 50_000),
    "negative version": lambda text: text.replace('"version": 1', '"version": -1'),
    "older format": lambda text: text.replace('"celery-config/2"', '"celery-config/1"'),
}


@pytest.mark.parametrize("case", HOSTILE_FILES, ids=list(HOSTILE_FILES))
def test_a_hostile_last_known_good_falls_through_to_the_snapshot(
        case: str, tmp_path: Path) -> None:
    lkg = tmp_path / "lkg.json"
    text = render(DOCUMENT, version=1, meta={})
    hostile = HOSTILE_FILES[case](text)
    assert hostile != text
    lkg.write_text(hostile)
    with pytest.raises(InvalidConfig):
        read_file(lkg)
    write_atomic(tmp_path / "snapshot.json", render(DOCUMENT, version=0, meta={}))
    loaded = load_config(env_for(None, tmp_path))
    assert (loaded.source, loaded.version) == ("snapshot", 0)
    assert lkg.read_text() == hostile  # a refused file is left for a human, never rewritten


# -------------------------------------------------------------------- any bytes anywhere
FIELDS = [(name, key) for name in ("queues", "routes", "base")
          for key in list(DOCUMENT.sections()[name])[:3]] + [("order", "routes")]
SENTINEL_NS = "fuzz"


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS),
       raw=st.one_of(st.binary(max_size=200),
                     st.recursive(st.none() | st.booleans() | st.integers() | st.text()
                                  | st.floats(), lambda inner: st.lists(inner, max_size=3)
                                  | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                                  max_leaves=10).map(lambda v: json.dumps(v).encode())))
def test_any_bytes_in_any_field_give_the_document_or_one_invalid_config(
        redis_client: redis.Redis, field: tuple[str, str], raw: bytes) -> None:
    publish(redis_client, SENTINEL_NS, DOCUMENT, source="fuzz", force=True)
    name, key = field
    redis_client.hset(Keys(SENTINEL_NS).section(name), key, raw)
    reseal(redis_client, SENTINEL_NS)
    try:
        published = decode_snapshot(read_snapshot(redis_client, SENTINEL_NS))
    except InvalidConfig as exc:
        assert exc.key  # names the key
        return
    # Accepted: then it is exactly a valid document whose canonical form is what is stored.
    assert published.document.sha256 == published.sha256
