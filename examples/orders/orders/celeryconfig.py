"""The shop's Celery configuration: the one source of truth, published into Redis with
``celery-config publish --source orders.celeryconfig``. The worker, beat and the API read it
from there; none of them imports this module.

A plain Celery settings module. Broker and result URLs are not here: each process takes them
from its own environment (CELERY_BROKER_URL, CELERY_RESULT_BACKEND).
"""

from kombu.entity import Exchange, Queue

task_queues = (
    Queue("default", Exchange("default", type="direct"), routing_key="default"),
    Queue("emails", Exchange("emails", type="direct"), routing_key="emails"),
    Queue("invoices", Exchange("invoices", type="direct"), routing_key="invoices"),
)

task_routes = {
    "orders.emails.*": {"queue": "emails"},
    "orders.invoices.*": {"queue": "invoices"},
}

task_default_queue = "default"
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_expires = 3600
timezone = "UTC"
worker_prefetch_multiplier = 1

# celery -A orders.celery_app beat follows this live.
beat_schedule = {
    "nightly-invoice-batch": {"task": "orders.invoices.render_batch", "schedule": 3600.0},
}
