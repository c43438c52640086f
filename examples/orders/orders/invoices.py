"""Invoices (queue ``invoices`` by the shared routes; beat renders a batch every hour)."""

from typing import Any

from .celery_app import app


@app.task(name="orders.invoices.render", bind=True)  # type: ignore[untyped-decorator]
def render(self: Any, order_id: int) -> dict[str, Any]:
    """Pretend to render the invoice of ``order_id``; report the queue it came through."""
    return {"order_id": order_id, "invoice": f"INV-{order_id:06d}",
            "queue": (self.request.delivery_info or {}).get("routing_key")}


@app.task(name="orders.invoices.render_batch", bind=True)  # type: ignore[untyped-decorator]
def render_batch(self: Any, label: str = "scheduled") -> dict[str, Any]:
    """The periodic batch beat sends."""
    return {"batch": label, "queue": (self.request.delivery_info or {}).get("routing_key")}
