"""The demo's FastAPI app: ``uvicorn api_service.app:app``.

Its own endpoints only: enqueue a task by name, routed by the shared configuration, without
importing the worker; read a task's result (both with the bearer token of
CELERY_CONFIG_API_TOKEN_FILE, posts in JSON only); lead ``/`` to the health page. Everything else
(following the configuration live, probes, status, metrics, the health page) is the library's
public FastAPI integration (celery_config_sync.fastapi), as any app would use it. The API docs
(``/docs``, ``/redoc``) load every asset from the API itself: a Pi at home is often offline.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any

from fastapi import Body, HTTPException
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi_offline import FastAPIOffline

from celery import Celery
from celery_config_sync.celery import attach
from celery_config_sync.fastapi import AppliedForTasks, TaskAccess, config_router, protect

# Dotted names only, matched whole (a trailing newline is refused too).
TASK_NAME = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)+")
MAX_TASK_NAME = 200  # characters; an error body quotes at most 64 of them
MAX_TASK_ID = 255  # Celery's ids are UUIDs (36); a longer one is no id of ours
log = logging.getLogger("api_service")

celery = Celery("api_service")
attach(celery, loggers=("api_service",))

# FastAPIOffline: FastAPI whose /docs (Swagger UI) and /redoc load their JavaScript and CSS
# from /static-offline-docs, files of the fastapi-offline wheel, instead of a CDN.
app = FastAPIOffline(title="celery-config-sync API",
                     # No "validate this spec" badge fetched from validator.swagger.io.
                     swagger_ui_parameters={"validatorUrl": None})
# Host names, body size, short error bodies, 503 when Redis does not answer (README, "The API on
# a network"); the task endpoints below also require the token (TaskAccess).
protect(app)


# response_model=None on the task endpoints: their bodies are built here, from values of known
# types, so FastAPI's validation of them would check nothing, and for a sync endpoint it runs
# in the thread pool: a second hop per request (issue 20). One hop remains: the endpoint itself,
# whose send_task blocks on Redis and must stay off the event loop (the probes answer there).
# They come before the configuration router's routes: Starlette tries routes in order.
# AppliedForTasks: TaskAccess and AppliedConfig solved as one dependency (issue 20).
@app.post("/tasks/{name}", status_code=202, response_model=None)
def enqueue(name: str, applied: AppliedForTasks,
            payload: Annotated[dict[str, Any] | None, Body()] = None) -> JSONResponse:
    """Send task ``name`` (a route for it must exist) with ``{"args": [...], "kwargs": {...}}``."""
    if len(name) > MAX_TASK_NAME or not TASK_NAME.fullmatch(name):
        raise HTTPException(422, f"invalid task name {name[:64]!r}")
    if applied.routing.explicit_route(name) is None:
        raise HTTPException(404, f"no route for task {name[:64]!r} in configuration version "
                                 f"{applied.loaded.version}")
    payload = payload or {}
    args, kwargs = payload.get("args", []), payload.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise HTTPException(422, "body must be {\"args\": [...], \"kwargs\": {...}}")
    queue = applied.routing.route(name, args, kwargs)["queue"].name
    result = celery.send_task(name, args=args, kwargs=kwargs)  # app.amqp routes it live
    # DEBUG: uvicorn's access line already records every request; this one costs a record only
    # when asked for (logging returns at its cached level check otherwise).
    log.debug("enqueued %s (%s) on queue %s by configuration version %d", name, result.id, queue,
              applied.loaded.version)
    # A response of our own: FastAPI passes it through, where it would walk a dict through
    # jsonable_encoder on the event loop (values of known JSON types here: nothing to convert).
    return JSONResponse({"id": result.id, "name": name, "queue": queue,
                         "config_version": applied.loaded.version}, status_code=202)


@app.get("/tasks/{task_id}", dependencies=[TaskAccess], response_model=None)
def task_status(task_id: str) -> dict[str, Any]:
    if len(task_id) > MAX_TASK_ID:
        raise HTTPException(422, f"invalid task id {task_id[:64]!r}")
    result = celery.AsyncResult(task_id)
    body: dict[str, Any] = {"id": task_id, "state": result.state}
    if result.successful():
        body["result"] = result.result
    elif result.failed():
        body["error"] = repr(result.result)
    return body


app.include_router(config_router(celery, service="api"))


@app.get("/", include_in_schema=False)
def root() -> RedirectResponse:
    return RedirectResponse("health")
