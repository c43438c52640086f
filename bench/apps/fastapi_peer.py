"""The minimal FastAPI peer of bench/api_bench.py (``uvicorn bench.apps.fastapi_peer:app``):
what a Celery user runs without celery-config-sync. A plain Celery app with the demo's settings
(the source and its rpi overlay, given as a dict: the cheaper of Celery's two ways, see
plain_dict_app.py), and one endpoint that sends a task by name, written as FastAPI's tutorial
writes one: a sync function (``send_task`` blocks, so FastAPI runs it in its thread pool), the
body as a ``dict``, no return annotation (no response model).

No bearer token, no Host check, no body limit: a minimal app has none of them, so what issue 18's
security costs on our request path is ours to carry within the target. ``GET /readyz`` answers
at once: the peer has nothing to load, it is ready when it serves.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body, FastAPI

from celery import Celery

from . import rpi_settings

celery = Celery("api_peer")  # broker and result backend: CELERY_BROKER_URL, CELERY_RESULT_BACKEND
celery.conf.update({name: value for name, value in vars(rpi_settings).items()
                    if not name.startswith("_")})
app = FastAPI()


@app.get("/readyz")
async def readyz():  # type: ignore[no-untyped-def]  # as a user writes it
    return {"ready": True}


@app.post("/tasks/{name}", status_code=202)
def enqueue(name: str, payload: Annotated[dict[str, Any] | None, Body()] = None):  # type: ignore[no-untyped-def]
    payload = payload or {}
    result = celery.send_task(name, args=payload.get("args", []),
                              kwargs=payload.get("kwargs", {}))
    return {"id": result.id}
