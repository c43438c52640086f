"""The report of ``celery-config status`` and of the API's health page: what Redis publishes
(version, sha256, meta, the kind of change), every running instance with its problems, and
every declared queue with what sends to it, the live workers that consume it and its depth.

One function, so that the CLI and the page can never disagree on what drift is, nor on which
routed queue has no consumer.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import redis

from .errors import InvalidConfig
from .fleet import consumed_queues, problems, scan_fleet
from .loader import RedisReader
from .queue_coverage import coverage, declared_queues, unconsumed
from .queue_depth import priority_steps, queue_depths
from .snapshot_decoding import Published


def status_report(reader: RedisReader, *, broker: redis.Redis | None = None,
                  keyprefix: str = "") -> tuple[dict[str, Any], Published | None]:
    """The report, and the decoded published configuration (None when it is invalid).

    Invalid published content does not stop the report: the fleet is what runs despite it, and
    ``published_error`` says what is wrong (and no queue is reported). NotPublished and Redis
    errors propagate, but for the queues' depths: read in ``broker`` under Celery's key prefix
    ``keyprefix``, None when it is not given or does not answer (or refuses: an ACL)."""
    published: Published | None = None
    published_error = None
    try:
        published = reader.load()
        version, sha256, meta = published.version, published.sha256, published.meta
    except InvalidConfig as exc:
        published_error = str(exc)
        snapshot = reader.last_snapshot
        meta = {k.decode(errors="replace"): v.decode(errors="replace")
                for k, v in (snapshot.meta if snapshot else {}).items()}
        seen_version, seen_sha = reader.last_seen()
        version, sha256 = seen_version or 0, seen_sha or ""
    age = None
    try:
        published_at = datetime.fromisoformat(meta["published_at"])
        age = round((datetime.now(UTC) - published_at).total_seconds())
    except (KeyError, ValueError, TypeError):
        pass
    scanned = scan_fleet(reader.client, reader.namespace)
    fleet = scanned.records
    queues = []
    if published is not None:  # before the records' consumes are decoded below
        settings = published.document.to_celery_settings()
        queues = coverage(settings, fleet, hidden=scanned.hidden,
                          depths=_depths(broker, declared_queues(settings), keyprefix, settings))
    for record in fleet:
        record["problems"] = problems(record, sha256)
        consumed = consumed_queues(record)
        record["consumes"] = sorted(consumed) if consumed is not None else None  # None: unknown
    change = {"kind": meta.get("change", "unknown"),
              "restart_required": [k for k in meta.get("restart_required", "").split(",") if k]}
    report = {
        "namespace": reader.namespace,
        "version": version,
        "sha256": sha256,
        "published_error": published_error,
        "published_at": meta.get("published_at"),
        "age_seconds": age,  # wall clock: meaningless on a Pi that booted without NTP
        "publisher": meta.get("publisher"),
        "source": meta.get("source"),
        "change": change,
        "fleet": fleet,
        # Live records beyond what is shown (the freshest are), and keys left out unread: of
        # another Redis type, or with a field too long to be an instance's (fleet.scan_fleet).
        "fleet_hidden": scanned.hidden,
        "fleet_skipped": scanned.skipped,
        "in_sync": not any(record["problems"] for record in fleet) and published_error is None,
        # Every declared queue (queue_coverage.QueueCoverage.as_dict), and the routed ones that
        # no live worker consumes: a problem of its own (status exits 1), not a drift.
        "queues": [row.as_dict() for row in queues],
        "unconsumed_queues": unconsumed(queues),
    }
    return report, published


def _depths(broker: redis.Redis | None, names: list[str], keyprefix: str,
            settings: dict[str, Any]) -> dict[str, int]:
    if broker is None:
        return {}
    with contextlib.suppress(redis.RedisError, OSError):
        return queue_depths(broker, names, keyprefix, priority_steps(settings))
    return {}
