"""The demo's Celery app: ``celery -A worker_service.app worker`` (and ``beat``).

Its tasks, and one call that attaches the shared configuration (celery_config_sync.celery):
importing this module touches neither Redis nor a file; the worker loads the configuration when
it starts and follows it live. The broker and result URLs come from this service's own
environment (CELERY_BROKER_URL, CELERY_RESULT_BACKEND).
"""

from __future__ import annotations

import socket
from typing import Any

from celery import Celery, Task
from celery_config_sync.celery import attach

from .delivery import queue_for

app = Celery("worker_service")
sync = attach(app, loggers=("worker_service",))

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
# Tasks of configurations published later (the live-reload tests add a "reports" queue).
LATER_TASKS = ("report.build",)


def _report(task: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """What this process applies, and where the message came from."""
    applied = sync.current if sync.live is not None else None
    info = dict(task.request.delivery_info or {})
    return {
        "task": task.name,
        "queue": queue_for(info, applied.routing.queues.values() if applied else ()),
        "exchange": info.get("exchange"),
        "routing_key": info.get("routing_key"),
        "worker": socket.gethostname(),
        "config_version": applied.loaded.version if applied else None,
        "config_source": applied.loaded.source if applied else None,
        "args": list(args),
        "kwargs": kwargs,
    }


for _name in DEMO_TASKS + LATER_TASKS:
    app.task(name=_name, bind=True)(_report)


@app.task(name="demo.forward", bind=True)  # type: ignore[untyped-decorator]
def forward(task: Task, name: str) -> dict[str, Any]:
    """Send the demo task ``name`` from inside a task: it routes by what this process applies.
    Only the demo's own tasks: never a name a client invents (Celery's built-ins included)."""
    if name not in DEMO_TASKS + LATER_TASKS:
        raise ValueError(f"demo.forward sends only the demo's tasks, not {name[:80]!r}")
    sent = app.send_task(name)
    route = app.amqp.router.route({}, name)
    return {**_report(task, name), "forwarded": sent.id,
            "forwarded_queue": getattr(route.get("queue"), "name", None)}
