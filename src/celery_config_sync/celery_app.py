"""Celery integration: configure an app from the loaded config, and the seed-compatible
publish from ``worker_init`` (only with ``CELERY_CONFIG_PUBLISH_ON_START=true``)."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_init

from celery import Celery

from .connection import make_client
from .environment import Environment
from .loader import LoadedConfig, load_config
from .redis_layout import publish
from .source import load_source

log = logging.getLogger("celery_config_sync.celery_app")


def configure_app(app: Celery, loaded: LoadedConfig) -> None:
    """Apply the shared settings; the broker and result URLs stay the service's own."""
    app.conf.update(loaded.settings)


def configure_from_environment(app: Celery, *, env: Environment | None = None) -> LoadedConfig:
    """Load through the fallback chain once, and configure ``app`` (no live reload)."""
    env = env or Environment.from_environ()
    loaded = load_config(env)
    configure_app(app, loaded)
    if env.publish_on_start:
        enable_publish_on_start(env)
    return loaded


def enable_publish_on_start(env: Environment) -> None:
    """Seed-compatible mode: the worker publishes its source when it starts."""

    def _publish(**_: Any) -> None:
        try:
            publish(make_client(env.redis_url), env.namespace,
                    load_source(env.source, env.overlay, allow=env.allow_unsafe), source=env.source)
        except Exception:  # a worker must still start if publishing fails; it logs why
            log.exception("publish on worker start failed")

    worker_init.connect(_publish, weak=False, dispatch_uid="celery_config_sync.publish")
