"""The report of ``celery-config status`` and of the API's health page: what Redis publishes
(version, sha256, meta, the kind of change) and every running instance with its problems.

One function, so that the CLI and the page can never disagree on what drift is.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .errors import InvalidConfig
from .fleet import problems, scan_fleet
from .loader import RedisReader
from .redis_layout import Published


def status_report(reader: RedisReader) -> tuple[dict[str, Any], Published | None]:
    """The report, and the decoded published configuration (None when it is invalid).

    Invalid published content does not stop the report: the fleet is what runs despite it, and
    ``published_error`` says what is wrong. NotPublished and Redis errors propagate."""
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
    for record in fleet:
        record["problems"] = problems(record, sha256)
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
    }
    return report, published
