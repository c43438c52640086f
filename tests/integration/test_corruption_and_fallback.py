"""Corrupt data in Redis never raises out of load and never yields half a config: it falls down
the chain (Redis -> last-known-good -> snapshot) and the log names the bad key and field."""

import json
import logging
from pathlib import Path

import pytest
import redis

from celery_config_sync.codec import ConfigDocument
from celery_config_sync.environment import Environment
from celery_config_sync.errors import CeleryConfigError, NoConfigAvailable
from celery_config_sync.fallback_files import render, write_atomic
from celery_config_sync.loader import RedisReader, load_config
from celery_config_sync.publishing import publish
from celery_config_sync.redis_keys import Keys
from celery_config_sync.source import load_source
from tests.conftest import SOURCE, free_port
from tests.tamper import drop_queue, reseal

NS = "celery_config"
KEYS = Keys(NS)
DOCUMENT = load_source(str(SOURCE))
SNAPSHOT_DOCUMENT = ConfigDocument(DOCUMENT.queues, DOCUMENT.routes,
                                   {**DOCUMENT.base, "task_time_limit": 1234})


@pytest.fixture
def env(tmp_path: Path, redis_server) -> Environment:  # type: ignore[no-untyped-def]
    snapshot = tmp_path / "snapshot.json"
    write_atomic(snapshot, render(SNAPSHOT_DOCUMENT, version=0, meta={"source": "test"}))
    return Environment(redis_url=redis_server.url, namespace=NS,
                       fallback_path=str(tmp_path / "lkg.json"), snapshot_path=str(snapshot))


DEEP = b"[" * 100_000 + b"]" * 100_000


CORRUPTIONS = {
    "malformed JSON": (lambda c: c.hset(KEYS.queues, "scan", b'{"name": "scan",'), True,
                       "queues['scan']: malformed JSON"),
    "wrong type in a queue": (lambda c: c.hset(KEYS.queues, "scan", json.dumps(
        {**DOCUMENT.queues["scan"], "durable": "yes"}, sort_keys=True, separators=(",", ":"))),
        True, "queues['scan'].durable"),
    "wrong type of a setting": (lambda c: c.hset(KEYS.base, "worker_prefetch_multiplier",
                                                 b'"four"'), True,
                                "base.worker_prefetch_multiplier"),
    "unknown exchange type": (lambda c: c.hset(KEYS.queues, "scan", json.dumps(
        {**DOCUMENT.queues["scan"], "exchange": {**DOCUMENT.queues["scan"]["exchange"],
                                                 "type": "x-consistent-hash"}},
        sort_keys=True, separators=(",", ":"))), True, "queues['scan'].exchange.type"),
    "huge field": (lambda c: c.hset(KEYS.base, "broker_transport_options",
                                    json.dumps({"x": "a" * 100_000}, separators=(",", ":"))),
                   True, "base.broker_transport_options"),
    "sha256 mismatch": (lambda c: c.hset(KEYS.base, "task_time_limit", b"1"), False,
                        "meta.sha256"),
    "version without hashes": (lambda c: c.delete(KEYS.queues, KEYS.routes, KEYS.base), False,
                               "every hash is empty"),
    "meta missing": (lambda c: c.delete(KEYS.meta), False, "meta.sha256: missing"),
    "non-integer version": (lambda c: c.set(KEYS.version, b"2026-11-28T10:00"), False,
                            "version: must be an integer >= 1"),
    "negative version": (lambda c: c.set(KEYS.version, b"-3"), False,
                         "version: must be an integer >= 1"),
    # Python's int() refuses more than 4,300 digits with a ValueError of its own: one line too.
    "version of 5,000 digits": (lambda c: c.set(KEYS.version, b"9" * 5000), False,
                                "version: must be an integer >= 1, got '9999"),
    "version beyond Redis' 64 bits": (lambda c: c.set(KEYS.version, b"9" * 20), False,
                                      "version: must be an integer >= 1"),
    "version in other digits": (lambda c: c.set(KEYS.version, "²".encode()), False,
                                "version: must be an integer >= 1"),
    "schema of 5,000 digits": (lambda c: c.hset(KEYS.meta, "schema_version", b"9" * 5000),
                               False, "meta.schema_version: layout '9999"),
    "route to a vanished queue": (lambda c: drop_queue(c, "lastfm"), True,
                                  "routes['lastfm.fetch_artist_info'].queue"),
    "queue missing from the order": (lambda c: c.hdel(KEYS.queues, "lastfm"), True,
                                     "order.queues: does not list exactly"),
    "NaN": (lambda c: c.hset(KEYS.base, "task_time_limit", b"NaN"), True,
            "base['task_time_limit']: not canonical JSON"),
    "Infinity": (lambda c: c.hset(KEYS.base, "task_time_limit", b"-Infinity"), True,
                 "base['task_time_limit']: not canonical JSON"),
    "duplicate keys": (lambda c: c.hset(KEYS.routes, "scan.discovery",
                                        b'{"queue":"scan","queue":"batch"}'), True,
                       "routes['scan.discovery']: not canonical JSON"),
    "not canonical spacing": (lambda c: c.hset(KEYS.routes, "scan.discovery",
                                               b'{"queue": "scan"}'), True,
                              "routes['scan.discovery']: not canonical JSON"),
    "pathological nesting": (lambda c: c.hset(KEYS.base, "task_annotations", DEEP), True,
                             "base['task_annotations']: nested too deeply"),
    "unknown value type": (lambda c: c.hset(KEYS.base, "result_expires", b'{"$pickle":"x"}'),
                           True, "base.result_expires.$pickle: is not a value type"),
    "newer layout": (lambda c: c.hset(KEYS.meta, "schema_version", b"3"), False,
                     "meta.schema_version: layout '3' is newer"),
    "older layout": (lambda c: c.hset(KEYS.meta, "schema_version", b"1"), False,
                     "meta.schema_version: layout 1 was published by an older"),
    "not UTF-8": (lambda c: c.hset(KEYS.routes, "scan.discovery", b'"\xff\xfe"'), True,
                  "routes['scan.discovery']: malformed JSON"),
}


@pytest.mark.parametrize("case", CORRUPTIONS, ids=list(CORRUPTIONS))
@pytest.mark.parametrize("with_lkg", [True, False], ids=["lkg", "no-lkg"])
def test_corrupt_redis_falls_down_the_chain(case: str, with_lkg: bool, env: Environment,
                                            redis_client: redis.Redis,
                                            caplog: pytest.LogCaptureFixture) -> None:
    publish(redis_client, NS, DOCUMENT, source="test")
    if with_lkg:
        assert load_config(env).source == "redis"  # writes last-known-good
    corrupt, needs_reseal, logged = CORRUPTIONS[case]
    corrupt(redis_client)
    if needs_reseal:
        reseal(redis_client)
    with caplog.at_level(logging.WARNING):
        loaded = load_config(env)
    if with_lkg:
        assert (loaded.source, loaded.version, loaded.document) == ("last-known-good", 1, DOCUMENT)
    else:
        assert (loaded.source, loaded.version) == ("snapshot", 0)
        assert loaded.document == SNAPSHOT_DOCUMENT
    assert any(logged in r.getMessage() for r in caplog.records), [
        r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("case", CORRUPTIONS, ids=list(CORRUPTIONS))
def test_a_reader_that_decoded_the_version_before_refuses_as_a_fresh_one(
        case: str, redis_client: redis.Redis) -> None:
    """A live re-read decodes a new version from the last one (only the fields whose bytes
    changed are parsed and validated again): every corruption is refused with the very line a
    reader that never saw the version before gives."""
    publish(redis_client, NS, DOCUMENT, source="test")
    following = RedisReader(redis_client, NS)
    following.load()
    corrupt, needs_reseal, _ = CORRUPTIONS[case]
    corrupt(redis_client)
    if needs_reseal:
        reseal(redis_client)
    refusals = []
    for reader in (following, RedisReader(redis_client, NS)):
        with pytest.raises(CeleryConfigError) as error:
            reader.load()
        refusals.append((type(error.value), str(error.value)))
    assert refusals[0] == refusals[1]


def test_fallback_order_redis_then_lkg_then_snapshot_then_error(
        env: Environment, redis_client: redis.Redis, tmp_path: Path) -> None:
    publish(redis_client, NS, DOCUMENT, source="test")
    assert load_config(env).source == "redis"
    unreachable = Environment(**{**env.__dict__, "redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    assert load_config(unreachable).source == "last-known-good"
    Path(env.fallback_path).write_text("{ not json")
    assert load_config(unreachable).source == "snapshot"
    Path(env.snapshot_path).unlink()
    with pytest.raises(NoConfigAvailable) as error:
        load_config(unreachable)
    message = str(error.value)
    assert "redis: unreachable" in message and "last-known-good" in message
    assert "snapshot" in message and "\n" not in message


def test_nothing_published_yet_uses_the_snapshot(env: Environment,
                                                 redis_client: redis.Redis) -> None:
    loaded = load_config(env)
    assert loaded.source == "snapshot" and loaded.document == SNAPSHOT_DOCUMENT


def test_tampered_last_known_good_is_refused(env: Environment, redis_client: redis.Redis) -> None:
    publish(redis_client, NS, DOCUMENT, source="test")
    load_config(env)
    data = json.loads(Path(env.fallback_path).read_text())
    data["config"]["base"]["task_time_limit"] = 1
    Path(env.fallback_path).write_text(json.dumps(data))
    redis_client.flushall()
    assert load_config(env).source == "snapshot"


def test_last_known_good_is_rewritten_only_when_the_config_changes(
        env: Environment, redis_client: redis.Redis) -> None:
    publish(redis_client, NS, DOCUMENT, source="test")
    load_config(env)
    first = Path(env.fallback_path).stat().st_mtime_ns
    load_config(env)
    assert Path(env.fallback_path).stat().st_mtime_ns == first  # an SD card thanks us
    publish(redis_client, NS, SNAPSHOT_DOCUMENT, source="test")
    assert load_config(env).version == 2
    assert json.loads(Path(env.fallback_path).read_text())["version"] == 2


def test_unwritable_last_known_good_does_not_stop_the_load(
        env: Environment, redis_client: redis.Redis, tmp_path: Path) -> None:
    publish(redis_client, NS, DOCUMENT, source="test")
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = Environment(**{**env.__dict__, "fallback_path": str(blocker / "lkg.json")})
    assert load_config(env).source == "redis"
