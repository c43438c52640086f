"""Configuring a Celery app from the loaded config, and the seed-compatible worker_init publish."""

from pathlib import Path

import redis
from celery.signals import worker_init

from celery import Celery
from celery_config_sync.celery_app import configure_from_environment
from celery_config_sync.environment import Environment
from celery_config_sync.fallback_files import render, write_atomic
from celery_config_sync.loader import RedisReader
from celery_config_sync.publishing import publish
from celery_config_sync.source import load_source
from tests.conftest import SOURCE, RedisServer


def env_for(server: RedisServer, tmp_path: Path, **extra: object) -> Environment:
    return Environment(redis_url=server.url, fallback_path=str(tmp_path / "lkg.json"),
                       snapshot_path=str(tmp_path / "none.json"), source=str(SOURCE), **extra)  # type: ignore[arg-type]


def test_an_app_routes_by_the_published_config(redis_server: RedisServer,
                                               redis_client: redis.Redis, tmp_path: Path) -> None:
    publish(redis_client, "celery_config", load_source(str(SOURCE), "rpi"), source="test")
    app = Celery("probe", broker=redis_server.url, set_as_current=False)
    loaded = configure_from_environment(app,
                                        env=env_for(redis_server, tmp_path))
    assert loaded.source == "redis"
    assert app.conf.worker_concurrency == 2 and app.conf.task_serializer == "json"
    assert {q.name for q in app.conf.task_queues} >= {"scan", "covers", "priority"}
    route = app.amqp.router.route({}, "covers.fetch_album")
    assert route["queue"].name == "covers" and route["routing_key"] == "media.covers.album"
    assert app.amqp.router.route({}, "maintenance.anything")["queue"].name == "maintenance"
    assert app.amqp.router.route({}, "priority.user_request")["priority"] == 9


def test_publish_on_start_is_off_by_default_and_on_when_asked(
        redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path) -> None:
    redis_client.flushall()
    snapshot = tmp_path / "snap.json"  # nothing in Redis yet: the worker starts from its snapshot
    write_atomic(snapshot, render(load_source(str(SOURCE)), version=0, meta={}))
    env = Environment(**{**env_for(redis_server, tmp_path).__dict__,
                         "snapshot_path": str(snapshot)})
    app = Celery("worker-probe", set_as_current=False)
    assert configure_from_environment(app, env=env).source == "snapshot"
    worker_init.send(sender=None)
    assert not redis_client.exists("celery_config:version")

    env = Environment(**{**env.__dict__, "publish_on_start": True})
    configure_from_environment(app, env=env)
    worker_init.send(sender=None)
    assert RedisReader(redis_client, "celery_config").load().document == load_source(str(SOURCE))
