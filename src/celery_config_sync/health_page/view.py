"""What the health page shows, as one JSON-able view (``GET /health.json``; the page renders it).

Everything comes from the library, read fresh from Redis at each request: the published
version and the fleet with its problems (:func:`celery_config_sync.status_report`, the same
report as ``celery-config status``), the queues (what sends to each, the live workers that
consume it, its depth) and the version history. The serving instance adds what it applies
itself, so that the page still says something useful when Redis does not answer. No web
framework here: :mod:`celery_config_sync.fastapi` serves it.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import redis

from ..codec import ConfigDocument
from ..diffing import diff
from ..errors import CeleryConfigError, NotPublished
from ..history import list_history, read_version
from ..live_settings import describe, label
from ..queue_depth import priority_steps, queue_depths
from ..status_report import status_report
from .source import HealthSource


def health_view(source: HealthSource) -> dict[str, Any]:
    """The whole view. Never raises for Redis trouble: ``error`` says what failed, and what
    this instance applies is still there."""
    started = time.perf_counter()
    view: dict[str, Any] = {"namespace": source.namespace, "error": None,
                            "this_instance": source.live.status(), "published": None,
                            "fleet": [], "in_sync": False, "queues": [],
                            "unconsumed_queues": [], "history": [],
                            "history_error": None}
    document: ConfigDocument = source.live.current.loaded.document
    try:
        report, published = status_report(source.reader, broker=source.broker,
                                          keyprefix=source.live.env.celery_keyprefix)
        view["fleet"] = report.pop("fleet")
        view["in_sync"] = report.pop("in_sync")
        view["queues"] = report.pop("queues")
        view["unconsumed_queues"] = report.pop("unconsumed_queues")
        view["published"] = report
        if published is not None:
            document = published.document
    except NotPublished as exc:
        view["error"] = f"nothing published: {exc}"
    except (redis.RedisError, OSError, CeleryConfigError) as exc:
        view["error"] = f"Redis did not answer: {type(exc).__name__}: {exc}"
    if not view["queues"]:  # no report's (Redis away, invalid content): the depths alone
        view["queues"] = queues(source, document)
    if view["error"] is None or view["published"] is not None:
        try:
            view["history"] = [entry.as_dict() for entry in list_history(source.client,
                                                                         source.namespace)]
        except (redis.RedisError, OSError, CeleryConfigError) as exc:
            view["history_error"] = str(exc)
    view["rendered_in_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return view


def queues(source: HealthSource, document: ConfigDocument) -> list[dict[str, Any]]:
    """Each queue the configuration declares, with the messages waiting in it (None when the
    broker's Redis does not answer or is not Redis), when the fleet could not be read: its
    consumers unknown (state None)."""
    depths: dict[str, int] = {}
    if source.broker is not None:
        with contextlib.suppress(redis.RedisError, OSError):
            depths = queue_depths(source.broker, document.queues,
                                  source.live.env.celery_keyprefix, priority_steps(document.base))
    return [{"name": name, "depth": depths.get(name), "routed": None, "senders": [],
             "consumers": None, "unknown": None, "state": None, "consumed_by": []}
            for name in document.queues]


def version_diff(source: HealthSource, old: int, new: int) -> dict[str, Any]:
    """What changes from version ``old`` to version ``new`` of the history, change by change
    (as ``celery-config diff --from --to``), each tagged live or restart; or ``error``."""
    result: dict[str, Any] = {"from": old, "to": new, "changes": [], "kind": None,
                              "error": None}
    try:
        documents = [read_version(source.client, source.namespace, version,
                                  allow=source.reader.allow)[1] for version in (old, new)]
    except (redis.RedisError, OSError, CeleryConfigError) as exc:
        result["error"] = str(exc)
        return result
    result["changes"] = [{"kind": change.kind, "section": change.section, "key": change.key,
                          "from": change.published, "to": change.source,
                          "applies": label(change.section, change.key)}
                         for change in diff(*documents)]
    result["kind"] = describe(*documents)["kind"]
    return result
