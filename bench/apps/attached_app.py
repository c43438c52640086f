"""The same app attached to the shared configuration (``celery -A bench.apps.attached_app
worker``): the settings come from what ``celery-config publish --overlay rpi`` put in Redis."""

from __future__ import annotations

from celery import Celery
from celery_config_sync.celery import attach

from .noop import register

app = Celery("bench_attached")
sync = attach(app)
noop = register(app)
