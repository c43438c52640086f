"""The routing state is Celery's own router, and importing the services has no side effect."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from celery import Celery
from celery_config_sync.codec import ConfigDocument
from celery_config_sync.loader import LoadedConfig
from celery_config_sync.routing import build_routing, install
from celery_config_sync.source import load_source
from tests.conftest import ROOT, SOURCE

BASE = load_source(str(SOURCE))


def loaded_with(routes: dict[str, dict[str, str]], **base: object) -> LoadedConfig:
    document = ConfigDocument(BASE.queues, routes, {**BASE.base, **base})
    return LoadedConfig(document, 1, document.sha256, "redis")


def celery_route(loaded: LoadedConfig, name: str) -> str:
    app = Celery("reference", set_as_current=False)
    app.conf.update(loaded.settings)
    return str(app.amqp.router.route({}, name)["queue"].name)


@pytest.mark.parametrize(("task", "queue"), [
    ("demo.echo", "maintenance"), ("demo.special_x", "priority"), ("demo.ech0", "maintenance"),
    ("scan.discovery", "batch"), ("other.thing", "deferred")])
def test_the_state_routes_exactly_like_a_celery_app(task: str, queue: str) -> None:
    # '?' without '*': Celery's MapRoute takes it as a plain name (fnmatch would not);
    # globs in declared order: the first that matches wins.
    routes = {"demo.ech?": {"queue": "scan"}, "demo.special*": {"queue": "priority"},
              "demo.*": {"queue": "maintenance"}, "scan.discovery": {"queue": "batch"}}
    loaded = loaded_with(routes, task_default_queue="deferred")
    state = build_routing(loaded)
    assert state.route(task)["queue"].name == celery_route(loaded, task) == queue
    assert (state.explicit_route(task) is None) == (task == "other.thing")  # the API's 404
    assert state.explicit_route("demo.ech?") == {"queue": "scan"}
    assert state.explicit_route("other.thing") is None


def test_a_state_is_built_aside_and_installed_whole() -> None:
    app = Celery("probe", set_as_current=False)
    first = build_routing(loaded_with(dict(BASE.routes)))
    install(app, first)
    assert app.amqp.router.route({}, "scan.discovery")["queue"].name == "scan"
    second = build_routing(loaded_with({**BASE.routes, "scan.discovery": {"queue": "batch"}},
                                       task_default_queue="maintenance"))
    assert app.amqp.router.route({}, "scan.discovery")["queue"].name == "scan"  # untouched
    install(app, second)
    assert app.amqp.router.route({}, "scan.discovery")["queue"].name == "batch"
    assert app.amqp.router.route({}, "unrouted.task")["queue"].name == "maintenance"
    assert app.amqp.default_queue.name == "maintenance"
    assert app.amqp.queues is second.queues


@pytest.mark.parametrize("module", ["worker_service.app", "api_service.app",
                                    # the example project: an app that is not ours, attached
                                    "orders.celery_app", "orders.api", "orders.emails"])
def test_importing_a_service_touches_neither_redis_nor_a_file(module: str,
                                                              tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    lkg = tmp_path / "lkg.json"
    env = {**os.environ, "CELERY_CONFIG_REDIS_URL": f"redis://127.0.0.1:{port}/0",
           "CELERY_BROKER_URL": f"redis://127.0.0.1:{port}/0",
           "CELERY_CONFIG_FALLBACK_PATH": str(lkg),
           # Not even the password file is read at import (it does not exist: reading it fails).
           "CELERY_CONFIG_REDIS_PASSWORD_FILE": str(tmp_path / "no-such-password"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "examples" / "orders"),
                                                       os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody connected
    listener.close()
    assert not lkg.exists() and list(tmp_path.iterdir()) == []
