"""FastAPI app: ``uvicorn api_service.app:app``.

It enqueues tasks by name, routed by the shared configuration, without importing the worker,
and serves the operator's health page (``/health``, api_service.health_page) and its API docs
(``/docs``, ``/redoc``) with every asset from the API itself: a Pi at home is often offline.
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
from importlib.resources import files
from typing import Annotated, Any

from celery.result import AsyncResult
from fastapi import Body, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from celery import Celery
from celery_config_sync.celery_app import configure_app
from celery_config_sync.environment import Environment
from celery_config_sync.live_config import Applied, LiveConfig
from celery_config_sync.log_setup import TAGS, configure_logging
from celery_config_sync.metrics import ServiceMetrics, broker_client
from celery_config_sync.validation import redact

from .health import HealthSource, health_view, version_diff
from .health_page import render_live, render_page

TASK_NAME = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)+$")
log = logging.getLogger("api_service")

celery = Celery("api_service")
state: dict[str, LiveConfig] = {}
exporters: dict[str, ServiceMetrics] = {}
health: dict[str, HealthSource] = {}
# The health page's own rules: its script and style from this API alone, no inline script (an
# escaping mistake shows text, never runs it), no frame, no form posting elsewhere.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self'; form-action 'self'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


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
    health["source"] = HealthSource.of(live, exporters["metrics"].broker)
    live.watch()
    try:
        yield
    finally:
        live.stop()
        state.clear()
        exporters.clear()
        health.clear()


# FastAPIOffline: FastAPI whose /docs (Swagger UI) and /redoc load their JavaScript and CSS
# from /static-offline-docs, files of the fastapi-offline wheel, instead of a CDN.
app = FastAPIOffline(title="celery-config-sync API", lifespan=lifespan,
                     # No "validate this spec" badge fetched from validator.swagger.io.
                     swagger_ui_parameters={"validatorUrl": None})
app.mount("/static", StaticFiles(directory=str(files("api_service") / "static")),
          name="static")


@app.get("/", include_in_schema=False)
def root() -> RedirectResponse:
    return RedirectResponse("health")


# ?from=V1&to=V2 on the page and on diff.json: two versions of the history.
Version = Annotated[int, Query(ge=1)]


@app.get("/health", include_in_schema=False)
def health_page(old: Annotated[int | None, Query(alias="from", ge=1)] = None,
                new: Annotated[int | None, Query(alias="to", ge=1)] = None) -> HTMLResponse:
    """The operator's page: published version, fleet and drift, queues, history, and the
    changes between two versions when ``from`` and ``to`` are given."""
    source = _health()
    compared = version_diff(source, old, new) if old is not None and new is not None else None
    return HTMLResponse(render_page(health_view(source), compared), headers=PAGE_HEADERS)


@app.get("/health/live", include_in_schema=False)
def health_live() -> HTMLResponse:
    """The part of the page that its script refreshes every few seconds."""
    return HTMLResponse(render_live(health_view(_health())), headers=PAGE_HEADERS)


@app.get("/health.json")
def health_json() -> dict[str, Any]:
    """What the health page shows, as JSON: published version, fleet, queues, history."""
    return health_view(_health())


@app.get("/health/diff.json")
def health_diff(old: Annotated[Version, Query(alias="from")],
                new: Annotated[Version, Query(alias="to")]) -> dict[str, Any]:
    """The changes from one version of the history to another, each tagged live or restart."""
    return version_diff(_health(), old, new)


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


def _health() -> HealthSource:
    source = health.get("source")
    if source is None:
        raise HTTPException(503, "configuration not loaded")
    return source


def _applied() -> Applied:
    return _live().current
