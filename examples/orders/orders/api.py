"""The shop's HTTP API: ``uvicorn orders.api:app``.

Its own endpoints, plus one router of celery-config-sync (probes, status, metrics, the health
page, and a lifespan that follows the shared configuration): ``.delay()`` routes by the live
configuration, so a route published later applies to the next order without a restart.
"""

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from celery_config_sync.fastapi import TaskAccess, config_router, protect

from .celery_app import app as celery_app
from .emails import send_receipt
from .invoices import render

app = FastAPI(title="orders")
protect(app)  # Host names, body size, short error bodies, 503 when Redis does not answer
app.include_router(config_router(celery_app))


class Order(BaseModel):
    order_id: int
    email: str


def _queue(task_name: str) -> str:
    """The queue Celery's router picks for ``task_name`` (the live configuration's)."""
    return str(celery_app.amqp.router.route({}, task_name)["queue"].name)


@app.post("/orders", status_code=202, dependencies=[TaskAccess])
def place(order: Order) -> dict[str, Any]:
    receipt = send_receipt.delay(order.order_id, order.email)
    invoice = render.delay(order.order_id)
    return {"receipt": receipt.id, "invoice": invoice.id,
            "queues": {"receipt": _queue(send_receipt.name), "invoice": _queue(render.name)}}


@app.get("/orders/tasks/{task_id}", dependencies=[TaskAccess])
def task(task_id: str) -> dict[str, Any]:
    result = celery_app.AsyncResult(task_id)
    body: dict[str, Any] = {"id": task_id, "state": result.state}
    if result.ready():
        body["result" if result.successful() else "error"] = (
            result.result if result.successful() else repr(result.result))
    return body
