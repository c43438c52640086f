"""FastAPI app: ``uvicorn api_service.app:app``.

It enqueues tasks by name, routed by the shared configuration, without importing the worker.
The configuration is loaded at start-up (the fallback chain) and followed live: each new
version becomes a complete routing state (celery_config_sync.routing) swapped in with one
assignment. A request takes that state once, and routes, sends and logs with that same object.
Prometheus scrapes ``GET /metrics`` on the same port (celery_config_sync.metrics).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from celery.result import AsyncResult
from fastapi import Body, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from celery import Celery
from celery_config_sync.celery_app import configure_app
from celery_config_sync.environment import Environment
from celery_config_sync.live_config import Applied, LiveConfig
from celery_config_sync.log_setup import TAGS, configure_logging
from celery_config_sync.metrics import ServiceMetrics, broker_client
from celery_config_sync.validation import redact

TASK_NAME = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)+$")
log = logging.getLogger("api_service")

celery = Celery("api_service")
state: dict[str, LiveConfig] = {}
exporters: dict[str, ServiceMetrics] = {}


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    env = Environment.from_environ()
    configure_logging(env.log_tag or TAGS["api"], loggers=("api_service",))
    live = LiveConfig("api", env)
    # No config at all (Redis, last-known-good and snapshot all failed) raises: the API exits.
    applied = live.load()
    configure_app(celery, applied.loaded, env)  # read once (serializers, result backend...)
    state["live"] = live
    exporters["metrics"] = ServiceMetrics(live, broker_client(celery.conf.broker_url,
                                                              env.redis_password))
    live.watch()
    try:
        yield
    finally:
        live.stop()
        state.clear()
        exporters.clear()


app = FastAPI(title="celery-config-sync API", lifespan=lifespan)


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "alive"}


@app.get("/readyz")
def readyz() -> JSONResponse:
    live = state.get("live")
    if live is None:
        return JSONResponse({"ready": False}, status_code=503)
    status = live.status()
    return JSONResponse({"ready": True, **live.current.loaded.summary(),
                         **{k: status[k] for k in ("published_version", "lagging",
                                                   "restart_required", "last_error")}})


@app.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus exposition (OpenMetrics when the scraper asks for it)."""
    found = exporters.get("metrics")
    if found is None:
        raise HTTPException(503, "configuration not loaded")
    body, content_type = found.render(request.headers.get("accept"))
    return Response(body, media_type=content_type)


@app.get("/config/status")
def config_status() -> dict[str, Any]:
    """What this API instance applies, what Redis holds, and whether it lags."""
    return _live().status()


@app.get("/config")
def config() -> dict[str, Any]:
    loaded = _applied().loaded
    return {**loaded.summary(), "meta": redact(loaded.meta),
            **redact(loaded.document.sections())}


@app.post("/tasks/{name}", status_code=202)
def enqueue(name: str,
            payload: Annotated[dict[str, Any] | None, Body()] = None) -> dict[str, Any]:
    applied = _applied()  # one state for the whole request
    if not TASK_NAME.match(name):
        raise HTTPException(422, f"invalid task name {name!r}")
    if applied.routing.explicit_route(name) is None:
        raise HTTPException(404, f"no route for task {name!r} in configuration version "
                                 f"{applied.loaded.version}")
    payload = payload or {}
    args, kwargs = payload.get("args", []), payload.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise HTTPException(422, "body must be {\"args\": [...], \"kwargs\": {...}}")
    queue = applied.routing.route(name, args, kwargs)["queue"].name
    result = celery.send_task(name, args=args, kwargs=kwargs, router=applied.routing.router)
    log.info("enqueued %s (%s) on queue %s by configuration version %d", name, result.id, queue,
             applied.loaded.version)
    return {"id": result.id, "name": name, "queue": queue,
            "config_version": applied.loaded.version}


@app.get("/tasks/{task_id}")
def task_status(task_id: str) -> dict[str, Any]:
    result = AsyncResult(task_id, app=celery)
    body: dict[str, Any] = {"id": task_id, "state": result.state}
    if result.successful():
        body["result"] = result.result
    elif result.failed():
        body["error"] = repr(result.result)
    return body


def _live() -> LiveConfig:
    live = state.get("live")
    if live is None:
        raise HTTPException(503, "configuration not loaded")
    return live


def _applied() -> Applied:
    return _live().current
