"""The shop's Celery app: ``celery -A orders.celery_app worker`` and ``... beat``.

The one line of celery-config-sync is ``attach``: the configuration comes from Redis when a
worker or beat starts, and follows every publish live. Importing this module touches neither
Redis nor a file.
"""

from celery import Celery
from celery_config_sync.celery import attach

app = Celery("orders", include=["orders.emails", "orders.invoices"])
sync = attach(app, loggers=("orders",))
