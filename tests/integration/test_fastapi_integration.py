"""The public FastAPI integration (celery_config_sync.fastapi) used by apps that are not the
demo, against a real redis-server: a user's app with a lifespan and routes of its own, under
real uvicorn; two apps with two Celery apps in one process (two uvicorn servers on one event
loop), each on its own namespace; and in-process cases (a prefix, the page left out, the
lifespan entered from the user's own, no lifespan at all).

The apps below import the library's public modules only, as the demo must (pyproject.toml's
import-linter contract).
"""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI, Request

from celery import Celery
from celery_config_sync import Environment
from celery_config_sync.celery import attach, attached
from celery_config_sync.codec import ConfigDocument
from celery_config_sync.fastapi import (
    STATE_KEY,
    AppliedConfig,
    ConfigState,
    ConfigStateDep,
    config_lifespan,
    config_router,
)
from celery_config_sync.fleet import record_key
from celery_config_sync.publishing import publish
from celery_config_sync.redis_keys import Keys
from celery_config_sync.source import load_source
from tests.conftest import SOURCE, RedisServer, free_port
from tests.polling import wait_for
from tests.prometheus_text import parse, value
from tests.service_processes import Service, running, service_environment, start_api

pytestmark = pytest.mark.integration
NS = "celery_config"
V1 = load_source(str(SOURCE), "rpi")
# The same configuration with scan.discovery routed to "batch" instead of "scan".
MOVED = ConfigDocument(dict(V1.queues), {**V1.routes, "scan.discovery": {"queue": "batch"}},
                       dict(V1.base))

USER_APP = '''
"""Somebody's shop: a lifespan, state and a route of its own, and the integration."""
import os
from contextlib import asynccontextmanager
from pathlib import Path

from celery import Celery
from fastapi import FastAPI, Request

from celery_config_sync.fastapi import AppliedConfig, config_router

MARKER = Path(os.environ["SHOP_MARKER"])


@asynccontextmanager
async def lifespan(app):
    MARKER.write_text("started")
    yield {"greeting": "hello from the shop"}
    MARKER.write_text(MARKER.read_text() + ",stopped")


celery_app = Celery("shop")
app = FastAPI(title="shop", lifespan=lifespan)
app.include_router(config_router(celery_app, service="shop"))


@app.get("/hello")
def hello(request: Request, config: AppliedConfig) -> dict:
    return {"greeting": request.state.greeting, "config_version": config.loaded.version}


@app.post("/orders")
def order(config: AppliedConfig) -> dict:
    sent = celery_app.send_task("scan.discovery")
    return {"id": sent.id, "queue": config.routing.route("scan.discovery")["queue"].name}
'''

TWO_APPS = '''
"""Two FastAPI apps, two Celery apps, one process: two uvicorn servers on one event loop."""
import asyncio
import contextlib
import os
import signal
import sys
import warnings

import uvicorn
from celery import Celery
from fastapi import FastAPI

from celery_config_sync import Environment
from celery_config_sync.celery import attach
from celery_config_sync.fastapi import AppliedConfig, config_router


def make(name):
    env = Environment.from_environ({**os.environ, "CELERY_CONFIG_NAMESPACE": name,
                                    "CELERY_CONFIG_FALLBACK_PATH": f"{name}-lkg.json"})
    celery_app = Celery(name, set_as_current=False)
    attach(celery_app, env=env)
    app = FastAPI(title=name)
    app.include_router(config_router(celery_app, service=f"{name}-api"))

    @app.post("/send/{task}")
    def send(task: str, config: AppliedConfig) -> dict:
        celery_app.send_task(task)
        return {"queue": config.routing.route(task)["queue"].name,
                "config_version": config.loaded.version}

    return app


class Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # one SIGTERM handler for both, installed below
        yield


async def main():
    servers = [Server(uvicorn.Config(make(name), host="127.0.0.1", port=int(port)))
               for name, port in zip(("alpha", "beta"), sys.argv[1:], strict=True)]

    def stop():
        for server in servers:
            server.should_exit = True

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop)
    await asyncio.gather(*(server.serve() for server in servers))


asyncio.run(main())
'''


@pytest.fixture
def published(redis_client: redis.Redis) -> redis.Redis:
    publish(redis_client, NS, V1, source="v1")
    return redis_client


def depth(health: dict[str, Any], queue: str) -> int:
    found: int = next(q["depth"] for q in health["queues"] if q["name"] == queue)
    return found


# ------------------------------------------------------------------ a user's app, uvicorn
def test_a_users_app_with_its_own_lifespan_gets_the_probes_status_page_and_metrics(
        redis_server: RedisServer, published: redis.Redis, tmp_path: Path) -> None:
    (tmp_path / "shopapp.py").write_text(USER_APP)
    marker = tmp_path / "marker"
    shop = start_api(redis_server.url, tmp_path, name="shop", target="shopapp:app", cwd=tmp_path,
                     SHOP_MARKER=str(marker), CELERY_CONFIG_HEARTBEAT_INTERVAL="1")
    with running(shop):
        assert marker.read_text() == "started"  # its own lifespan ran, ours too (/readyz)
        ready = shop.get("/readyz")
        assert ready["ready"] and ready["version"] == 1 and ready["source"] == "redis"
        assert shop.get("/healthz") == {"status": "alive"}
        # Its own route sees its own lifespan state and the integration's, side by side.
        assert shop.get("/hello") == {"greeting": "hello from the shop", "config_version": 1}

        status = shop.get("/config/status")
        assert status["service"] == "shop" and status["version"] == 1
        assert not status["lagging"]
        instance = status["instance"]
        assert published.exists(record_key(NS, "shop", instance))  # its fleet record
        assert shop.get("/config")["routes"]["scan.discovery"] == {"queue": "scan"}
        assert shop.lines(r"INFO \[CELERY_SHOP\] Celery configuration loaded from redis")

        page = shop.client.get("/health")
        assert page.status_code == 200
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert f'data-instance="{instance}"' in page.text
        assert '<a href="docs">API docs</a>' in page.text
        for asset in re.findall(r'(?:src|href)="(static/[^"]+)"', page.text):
            response = shop.client.get(f"/{asset}")
            assert response.status_code == 200 and response.content, asset
            assert response.headers["x-content-type-options"] == "nosniff"
            again = shop.client.get(f"/{asset}",
                                    headers={"if-none-match": response.headers["etag"]})
            assert again.status_code == 304 and not again.content
        assert shop.client.get("/health/live").status_code == 200

        # send_task routes by the live configuration: no router argument anywhere.
        before = depth(shop.get("/health.json"), "scan")
        assert shop.client.post("/orders").json()["queue"] == "scan"
        assert depth(shop.get("/health.json"), "scan") == before + 1
        publish(published, NS, MOVED, source="moved")
        wait_for(lambda: shop.get("/readyz")["version"] == 2, 10, "the shop on version 2")
        before_batch = depth(shop.get("/health.json"), "batch")
        assert shop.client.post("/orders").json()["queue"] == "batch"
        assert depth(shop.get("/health.json"), "batch") == before_batch + 1

        samples = parse(shop.client.get("/metrics").text)
        assert value(samples, "celery_config_applied_version") == 2
        assert value(samples, "celery_config_applies_total") == 1
        assert value(samples, "celery_config_applied_info", service="shop", version="2",
                     source="redis") == 1
        shop.stop()  # SIGTERM (uvicorn exits with it again once shut down)
    # Both lifespans stopped: the user's wrote its line, ours deleted the fleet record.
    assert shop.lines("Application shutdown complete")
    assert marker.read_text() == "started,stopped"
    assert not published.exists(record_key(NS, "shop", instance))


# ------------------------------------------------------- two apps in one process, uvicorn
def test_two_apps_with_two_celery_apps_in_one_process_keep_their_own_state(
        redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path) -> None:
    publish(redis_client, "alpha", V1, source="alpha-v1")
    publish(redis_client, "beta", MOVED, source="beta-v1")
    (tmp_path / "twoapps.py").write_text(TWO_APPS)
    ports = {"alpha": free_port(), "beta": free_port()}
    log_path = tmp_path / "twoapps.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "twoapps.py", str(ports["alpha"]), str(ports["beta"])],
            cwd=tmp_path, env=service_environment(redis_server.url, tmp_path),
            stdout=log, stderr=subprocess.STDOUT)
    service = Service("twoapps", process, log_path)
    clients = {name: httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
               for name, port in ports.items()}

    def ready(name: str) -> bool:
        assert process.poll() is None, service.log()[-3000:]
        try:
            return clients[name].get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    with running(service):
        for name in ports:
            wait_for(lambda name=name: ready(name), 60, f"{name}'s /readyz", interval=0.1)
        status = {name: client.get("/config/status").json() for name, client in clients.items()}
        assert status["alpha"]["service"] == "alpha-api"
        assert status["beta"]["service"] == "beta-api"
        assert status["alpha"]["sha256"] == V1.sha256
        assert status["beta"]["sha256"] == MOVED.sha256
        assert status["alpha"]["instance"] == status["beta"]["instance"]  # one process
        for name in ports:
            health = clients[name].get("/health.json").json()
            assert health["namespace"] == name
            assert [r["service"] for r in health["fleet"]] == [f"{name}-api"]

        # Each Celery app routes by its own configuration.
        sent = {name: client.post("/send/scan.discovery").json()
                for name, client in clients.items()}
        assert sent["alpha"]["queue"] == "scan" and sent["beta"]["queue"] == "batch"
        health = clients["alpha"].get("/health.json").json()
        assert depth(health, "scan") == 1 and depth(health, "batch") == 1

        # A version published in one namespace moves that app alone.
        publish(redis_client, "alpha", MOVED, source="alpha-v2")
        wait_for(lambda: clients["alpha"].get("/readyz").json()["version"] == 2, 10,
                 "alpha on version 2")
        assert clients["alpha"].post("/send/scan.discovery").json()["queue"] == "batch"
        assert clients["beta"].get("/readyz").json()["version"] == 1
        alpha_metrics = parse(clients["alpha"].get("/metrics").text)
        beta_metrics = parse(clients["beta"].get("/metrics").text)
        assert value(alpha_metrics, "celery_config_applies_total") == 1
        assert value(beta_metrics, "celery_config_applies_total") == 0
        assert service.stop() == 0, service.log()[-3000:]
    for client in clients.values():
        client.close()
    assert not redis_client.keys(f"{Keys('alpha').applied_prefix}*")  # both shut down
    assert not redis_client.keys(f"{Keys('beta').applied_prefix}*")


# ----------------------------------------------------------------------- in process
def client_of(app: FastAPI) -> Any:
    """Starlette's TestClient (``with``: the app's lifespan runs; without: it does not). Its
    import warns that a future Starlette wants another HTTP client: not this project's to
    change, and not a reason to fail."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
        from fastapi.testclient import TestClient
    return TestClient(app)


def in_process(redis_server: RedisServer, tmp_path: Path, name: str) -> Celery:
    """A Celery app attached with an environment of its own (no process-wide logging set-up:
    pytest's own capture stays as it is)."""
    env = Environment(redis_url=redis_server.url, fallback_path=str(tmp_path / f"{name}.json"),
                      snapshot_path=str(tmp_path / "no-snapshot.json"))
    celery_app = Celery(name, broker=redis_server.url, set_as_current=False)
    attach(celery_app, env=env, log_setup=False)
    return celery_app


def test_under_a_prefix_the_page_links_stay_inside_it(
        redis_server: RedisServer, published: redis.Redis, tmp_path: Path) -> None:
    celery_app = in_process(redis_server, tmp_path, "prefixed")
    app = FastAPI()
    app.include_router(config_router(celery_app), prefix="/ops")
    with client_of(app) as client:
        assert client.get("/ops/readyz").json()["ready"]
        assert client.get("/readyz").status_code == 404
        page = client.get("/ops/health").text
        assert '<a href="../docs">API docs</a>' in page  # the app's /docs from /ops/health
        assert 'data-src="health/live"' in page and 'href="health.json"' in page
        for asset in re.findall(r'(?:src|href)="(static/[^"]+)"', page):
            assert client.get(f"/ops/{asset}").status_code == 200, asset
        assert client.get("/ops/health/live").status_code == 200
        assert client.get("/ops/health/diff.json?from=1&to=1").json()["changes"] == []


def test_page_false_serves_the_probes_and_status_only(
        redis_server: RedisServer, published: redis.Redis, tmp_path: Path) -> None:
    celery_app = in_process(redis_server, tmp_path, "nopage")
    app = FastAPI(docs_url=None)
    app.include_router(config_router(celery_app, page=False))
    with client_of(app) as client:
        assert client.get("/readyz").status_code == 200
        assert client.get("/metrics").status_code == 200
        for path in ("/health", "/health.json", "/static/health.js"):
            assert client.get(path).status_code == 404, path


def test_the_lifespan_entered_from_the_users_own(
        redis_server: RedisServer, published: redis.Redis, tmp_path: Path) -> None:
    """The user's lifespan wraps ours: the Celery app is configured and routes live before the
    user's start-up code runs; the router brings no second lifespan."""
    celery_app = in_process(redis_server, tmp_path, "wrapped")
    config = config_lifespan(celery_app, service="wrapped")
    seen: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with config(app) as state:
            route = celery_app.amqp.router.route({}, "scan.discovery")
            seen.append(route["queue"].name)
            yield {**state, "mine": "kept"}
        seen.append("after")

    app = FastAPI(lifespan=lifespan)
    app.include_router(config_router())

    @app.get("/mine")
    def mine(request: Request, state: ConfigStateDep) -> dict[str, Any]:
        return {"mine": request.state.mine, "service": state.sync.status()["service"]}

    with client_of(app) as client:
        assert seen == ["scan"]
        assert client.get("/mine").json() == {"mine": "kept", "service": "wrapped"}
        assert client.get("/config/status").json()["service"] == "wrapped"
    assert seen == ["scan", "after"]
    sync = attached(celery_app)
    assert sync is not None and sync.live is not None and sync.live.watcher is None  # stopped


def test_without_the_lifespan_every_route_that_needs_it_is_503(
        redis_server: RedisServer, published: redis.Redis, tmp_path: Path) -> None:
    """A server run with ``--lifespan off``: not ready, and no route fails with a 500."""
    app = FastAPI()
    app.include_router(config_router(in_process(redis_server, tmp_path, "off")))

    @app.get("/version")
    def version(config: AppliedConfig) -> int:
        return config.loaded.version

    client = client_of(app)  # no ``with``: the lifespan does not run
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503
    for path in ("/config/status", "/config", "/metrics", "/health", "/health.json",
                 "/version"):
        assert client.get(path).status_code == 503, path


def test_two_apps_run_one_after_the_other_on_one_celery_app(
        redis_server: RedisServer, published: redis.Redis, tmp_path: Path) -> None:
    """Each server run builds its own state (metrics included) and leaves nothing behind, and
    an app that finds the Celery app already followed serves it without stopping it."""
    celery_app = in_process(redis_server, tmp_path, "shared")
    states: list[ConfigState] = []
    apps = []
    for _ in range(2):
        app = FastAPI()
        app.include_router(config_router(celery_app))

        @app.get("/state")
        def state(request: Request) -> bool:
            states.append(getattr(request.state, STATE_KEY))
            return True

        apps.append(app)
    with client_of(apps[0]) as first:
        first.get("/state")
        with client_of(apps[1]) as second:  # the same Celery app, already followed
            second.get("/state")
            assert states[0] is not states[1] and states[0].sync is states[1].sync
            assert states[0].metrics.registry is not states[1].metrics.registry
        live = states[0].sync.live
        assert live is not None and live.watcher is not None  # still followed for the first
        assert first.get("/readyz").status_code == 200
        assert live.observers == [states[0].metrics]  # the second's metrics left with it
    assert live.watcher is None and live.observers == []


def test_the_demo_refuses_a_task_name_with_a_trailing_newline(
        redis_server: RedisServer, published: redis.Redis, tmp_path: Path) -> None:
    api = start_api(redis_server.url, tmp_path)
    with running(api):
        assert api.enqueue("scan.discovery")["queue"] == "scan"
        assert api.enqueue("scan.discovery%0A", expect=422)["detail"].startswith(
            "invalid task name")
        assert api.enqueue("no_dot", expect=422)
        assert api.enqueue("unknown.task", expect=404)
        response = api.client.post("/tasks/scan.discovery", json={"args": {}})
        assert response.status_code == 422
