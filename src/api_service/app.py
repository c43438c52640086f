"""FastAPI app: ``uvicorn api_service.app:app``.

It enqueues tasks by name, routed by the loaded configuration, without importing the worker:
the routes and queues it needs come from Redis (or the fallback chain).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from fnmatch import fnmatchcase
from typing import Annotated, Any

from celery.result import AsyncResult
from fastapi import Body, FastAPI, HTTPException
from fastapi.responses import JSONResponse

from celery import Celery
from celery_config_sync.celery_app import configure_from_environment
from celery_config_sync.loader import LoadedConfig
from celery_config_sync.validation import redact

LOG_TAG = "[CELERY_API]"
TASK_NAME = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)+$")
log = logging.getLogger("api_service")

celery = Celery("api_service")
state: dict[str, LoadedConfig] = {}


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    # No config at all (Redis, last-known-good and snapshot all failed) raises: the API exits.
    state["config"] = configure_from_environment(celery, log_tag=LOG_TAG)
    yield


app = FastAPI(title="celery-config-sync API", lifespan=lifespan)


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "alive"}


@app.get("/readyz")
def readyz() -> JSONResponse:
    loaded = state.get("config")
    if loaded is None:
        return JSONResponse({"ready": False}, status_code=503)
    return JSONResponse({"ready": True, **loaded.summary()})


@app.get("/config")
def config() -> dict[str, Any]:
    loaded = _loaded()
    return {**loaded.summary(), "meta": redact(loaded.meta),
            **redact(loaded.document.sections())}


@app.post("/tasks/{name}", status_code=202)
def enqueue(name: str,
            payload: Annotated[dict[str, Any] | None, Body()] = None) -> dict[str, Any]:
    _loaded()
    if not TASK_NAME.match(name):
        raise HTTPException(422, f"invalid task name {name!r}")
    if not _has_explicit_route(name):
        raise HTTPException(404, f"no route for task {name!r} in the loaded configuration")
    queue = celery.amqp.router.route({}, name).get("queue")
    payload = payload or {}
    args, kwargs = payload.get("args", []), payload.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise HTTPException(422, "body must be {\"args\": [...], \"kwargs\": {...}}")
    result = celery.send_task(name, args=args, kwargs=kwargs)
    log.info("%s enqueued %s (%s) on queue %s", LOG_TAG, name, result.id,
             getattr(queue, "name", queue))
    return {"id": result.id, "name": name, "queue": getattr(queue, "name", queue)}


@app.get("/tasks/{task_id}")
def task_status(task_id: str) -> dict[str, Any]:
    result = AsyncResult(task_id, app=celery)
    body: dict[str, Any] = {"id": task_id, "state": result.state}
    if result.successful():
        body["result"] = result.result
    elif result.failed():
        body["error"] = repr(result.result)
    return body


def _loaded() -> LoadedConfig:
    loaded = state.get("config")
    if loaded is None:
        raise HTTPException(503, "configuration not loaded")
    return loaded


def _has_explicit_route(name: str) -> bool:
    routes = celery.conf.task_routes or {}
    return any(name == pattern or fnmatchcase(name, pattern) for pattern in routes)
