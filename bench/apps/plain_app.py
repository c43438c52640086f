"""A plain Celery app: ``config_from_object`` of the source with its rpi overlay, no
celery-config-sync at all (``celery -A bench.apps.plain_app worker``)."""

from __future__ import annotations

from celery import Celery

from .noop import register

app = Celery("bench_plain")
app.config_from_object("bench.apps.rpi_settings")
noop = register(app)
