"""An example shop's order processing: a Celery app (orders.celery_app), two task modules
(orders.emails, orders.invoices), a FastAPI app (orders.api) and the configuration source they
share through Redis (orders.celeryconfig)."""
