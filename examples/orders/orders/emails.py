"""Customer e-mails (queue ``emails`` by the shared routes)."""

from typing import Any

from .celery_app import app


@app.task(name="orders.emails.send_receipt", bind=True)  # type: ignore[untyped-decorator]
def send_receipt(self: Any, order_id: int, address: str) -> dict[str, Any]:
    """Pretend to send the receipt of ``order_id``; report the queue it came through."""
    return {"order_id": order_id, "to": address,
            "queue": (self.request.delivery_info or {}).get("routing_key")}
