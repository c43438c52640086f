"""Publish and load against a real redis-server: layout, round trip, replacement, idempotence."""

import json
import threading

import redis

from celery_config_sync.codec import ConfigDocument
from celery_config_sync.environment import Environment
from celery_config_sync.loader import RedisReader, load_config
from celery_config_sync.publishing import publish
from celery_config_sync.redis_keys import Keys
from celery_config_sync.source import load_source
from tests.conftest import SOURCE, RedisServer

NS = "celery_config"


def source_document() -> ConfigDocument:
    return load_source(str(SOURCE))


def test_publish_writes_the_design_layout(redis_client: redis.Redis) -> None:
    document = source_document()
    result = publish(redis_client, NS, document, source="test", publisher="pytest")
    assert result.changed and result.version == 1
    keys = Keys(NS)
    assert redis_client.type(keys.queues) == b"hash"
    assert json.loads(redis_client.hget(keys.queues, "scan")) == document.queues["scan"]
    assert json.loads(redis_client.hget(keys.routes, "scan.discovery")) == {"queue": "scan"}
    assert json.loads(redis_client.hget(keys.base, "task_serializer")) == "json"
    assert redis_client.get(keys.version) == b"1"
    meta = {k.decode(): v.decode() for k, v in redis_client.hgetall(keys.meta).items()}
    assert meta["sha256"] == document.sha256
    assert meta["publisher"] == "pytest" and meta["source"] == "test"
    assert {"published_at", "schema_version", "version"} <= meta.keys()


def test_load_round_trips_every_queue_route_and_setting(redis_client: redis.Redis,
                                                        tmp_path) -> None:  # type: ignore[no-untyped-def]
    document = source_document()
    publish(redis_client, NS, document, source="test")
    env = Environment(fallback_path=str(tmp_path / "lkg.json"), snapshot_path="/nonexistent")
    loaded = load_config(env, client=redis_client)
    assert loaded.source == "redis" and loaded.version == 1
    assert loaded.sha256 == document.sha256
    assert loaded.document == document
    settings, expected = loaded.settings, document.to_celery_settings()
    assert list(settings["task_queues"]) == list(expected["task_queues"])
    for got, want in zip(settings["task_queues"], expected["task_queues"], strict=True):
        assert got.as_dict(recurse=True) == want.as_dict(recurse=True)
    assert settings["task_routes"] == expected["task_routes"]
    assert (tmp_path / "lkg.json").exists()  # last-known-good written after the Redis load


def test_publish_replaces_every_hash_whole(redis_client: redis.Redis) -> None:
    document = source_document()
    publish(redis_client, NS, document, source="test")
    queues = {k: v for k, v in document.queues.items() if k != "lastfm"}
    routes = {k: v for k, v in document.routes.items() if v["queue"] != "lastfm"}
    base = {k: v for k, v in document.base.items() if k != "result_extended"}
    smaller = ConfigDocument(queues, routes, base)
    assert publish(redis_client, NS, smaller, source="test").version == 2
    keys = Keys(NS)
    assert not redis_client.hexists(keys.queues, "lastfm")
    assert not redis_client.hexists(keys.routes, "lastfm.sync_scrobbles")
    assert not redis_client.hexists(keys.base, "result_extended")
    assert RedisReader(redis_client, NS).load().document == smaller


def test_same_content_publishes_nothing_and_notifies_nobody(redis_client: redis.Redis,
                                                            redis_server: RedisServer) -> None:
    document = source_document()
    listener = redis_server.client().pubsub()
    listener.subscribe(Keys(NS).channel)
    assert listener.get_message(timeout=1)["type"] == "subscribe"
    first = publish(redis_client, NS, document, source="test")
    message = listener.get_message(timeout=2)
    assert json.loads(message["data"]) == {"version": 1, "sha256": document.sha256}
    again = publish(redis_client, NS, document, source="test")
    assert (again.version, again.changed) == (first.version, False)
    assert listener.get_message(timeout=0.5) is None
    assert redis_client.get(Keys(NS).version) == b"1"
    forced = publish(redis_client, NS, document, source="test", force=True)
    assert forced.version == 2 and forced.changed
    assert json.loads(listener.get_message(timeout=2)["data"])["version"] == 2
    listener.close()


def test_version_is_an_incr_counter_never_a_timestamp(redis_client: redis.Redis) -> None:
    document = source_document()
    versions = []
    for i in range(5):
        tweaked = ConfigDocument(document.queues, document.routes,
                                 {**document.base, "task_time_limit": 600 + i})
        versions.append(publish(redis_client, NS, tweaked, source="test").version)
    assert versions == [1, 2, 3, 4, 5]


def test_namespaces_are_independent(redis_client: redis.Redis) -> None:
    document = source_document()
    publish(redis_client, "one", document, source="test")
    assert redis_client.exists("one:version") and not redis_client.exists("celery_config:version")


def test_one_load_is_one_round_trip(redis_client: redis.Redis) -> None:
    publish(redis_client, NS, source_document(), source="test")
    reader = RedisReader(redis_client, NS)
    reader.load()  # warm the connection
    connection = redis_client.connection_pool.get_connection()
    redis_client.connection_pool.release(connection)
    sent = []
    original = connection.send_packed_command

    def counting(command, check_health=True):  # type: ignore[no-untyped-def]
        sent.append(command)
        return original(command, check_health)

    connection.send_packed_command = counting  # count what crosses the socket, behaviour intact
    try:
        reader.load()
    finally:
        del connection.send_packed_command
    assert len(sent) == 1


def test_concurrent_publishers_never_lose_a_version(redis_server: RedisServer) -> None:
    document = source_document()
    errors: list[BaseException] = []

    def publisher(offset: int) -> None:
        client = redis_server.client()
        try:
            for i in range(25):
                tweaked = ConfigDocument(document.queues, document.routes,
                                         {**document.base, "task_time_limit": offset + i})
                publish(client, "race", tweaked, source="test")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=publisher, args=(n * 1000,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    client = redis_server.client()
    assert client.get("race:version") == b"75"
    assert RedisReader(client, "race").load().version == 75
