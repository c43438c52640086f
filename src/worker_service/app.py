"""The Celery app the worker runs: ``celery -A worker_service.app worker``.

Configuration comes from the fallback chain (Redis, last-known-good, snapshot); the broker and
result URLs come from this service's own environment (CELERY_BROKER_URL, CELERY_RESULT_BACKEND).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from celery import Celery, Task
from celery_config_sync.celery_app import configure_from_environment

from .delivery import queue_for

LOG_TAG = "[CELERY_WORKER]"
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

app = Celery("worker_service")
loaded = configure_from_environment(app, log_tag=LOG_TAG)

# One demo task per queue family, named after the source's routes: each reports the queue it
# was delivered through, which proves the routing the API applied.
DEMO_TASKS = (
    "scan.discovery",
    "metadata.extract_batch",
    "batch.process_entities",
    "insert.direct_batch",
    "priority.user_request",
    "covers.fetch_album",
    "audio.analyze_track",
    "vectorization.track",
    "enrichment.musicbrainz",
    "lastfm.sync_scrobbles",
    "deferred.retry_failed",
    "maintenance.cleanup_orphans",
    "monitoring.heartbeat",
    "demo.echo",
)


def _report(task: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    info = dict(task.request.delivery_info or {})
    return {
        "task": task.name,
        "queue": queue_for(info, app.conf.task_queues or ()),
        "exchange": info.get("exchange"),
        "routing_key": info.get("routing_key"),
        "worker": socket.gethostname(),
        "config_version": loaded.version,
        "config_source": loaded.source,
        "args": list(args),
        "kwargs": kwargs,
    }


for _name in DEMO_TASKS:
    app.task(name=_name, bind=True)(_report)
