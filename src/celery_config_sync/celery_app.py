"""Celery integration: configure an app from the loaded config, and the seed-compatible
publish from ``worker_init`` (only with ``CELERY_CONFIG_PUBLISH_ON_START=true``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from celery.signals import worker_init

from celery import Celery

from .connection import make_client
from .environment import Environment
from .loader import LoadedConfig, load_config

log = logging.getLogger("celery_config_sync.celery_app")


def configure_app(app: Celery, loaded: LoadedConfig, env: Environment | None = None) -> None:
    """Apply the shared settings, then the service's own wiring from ``env`` (which the
    shared settings cannot change): the broker and result URLs stay the service's own."""
    app.conf.update(loaded.settings)
    if env is not None:
        app.conf.update(service_wiring(env, app.conf))


def service_wiring(env: Environment, current: Mapping[str, Any]) -> dict[str, Any]:
    """The Celery settings a service takes from its own environment, not from the shared
    configuration, because they belong to the deployment (the Redis ACL) rather than to the
    application: its Redis password (CELERY_CONFIG_REDIS_PASSWORD_FILE) for the broker and
    the result backend, for the users their URLs name (``redis://worker@redis:6379/0``), kept
    out of the URLs and so out of every banner and log line; and the prefix of Celery's keys
    and channels (CELERY_CONFIG_CELERY_KEYPREFIX, kombu's ``global_keyprefix``), merged into
    the transport options ``current`` holds."""
    wiring: dict[str, Any] = {}
    if env.redis_password:
        wiring.update(broker_password=env.redis_password, redis_password=env.redis_password)
    if env.celery_keyprefix:
        for name in ("broker_transport_options", "result_backend_transport_options"):
            wiring[name] = {**(current.get(name) or {}), "global_keyprefix": env.celery_keyprefix}
    return wiring


def configure_from_environment(app: Celery, *, env: Environment | None = None) -> LoadedConfig:
    """Load through the fallback chain once, and configure ``app`` (no live reload)."""
    env = env or Environment.from_environ()
    loaded = load_config(env)
    configure_app(app, loaded, env)
    if env.publish_on_start:
        enable_publish_on_start(env)
    return loaded


def enable_publish_on_start(env: Environment) -> None:
    """Seed-compatible mode: the worker publishes its source when it starts."""

    def _publish(**_: Any) -> None:
        # The publishing side, imported here: only this opt-in mode of a worker needs it, and
        # every other service (an API, a beat, a worker without it) loads only.
        from .publishing import publish
        from .source import load_source

        try:
            publish(make_client(env.redis_url), env.namespace,
                    load_source(env.source, env.overlay, allow=env.allow_unsafe), source=env.source,
                    history=env.history)
        except Exception:  # a worker must still start if publishing fails; it logs why
            log.exception("publish on worker start failed")

    worker_init.connect(_publish, weak=False, dispatch_uid="celery_config_sync.publish")
