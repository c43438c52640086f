"""Whose snapshot is this? The snapshot is the last link of the fallback chain, exported from
the source at image build time. An image built on ours with another project's source (its own
CELERY_CONFIG_SOURCE) that forgot to export its own snapshot would fall back to our demo's
configuration, and consume the wrong queues, silently. The gate refuses to start it instead.

The snapshot records the source it was exported from (``meta.source``: the source, then
``+overlay`` when one applied); the service's own source is its CELERY_CONFIG_SOURCE.
"""

from __future__ import annotations

from pathlib import Path

from .environment import Environment
from .errors import InvalidConfig
from .fallback_files import read_file


def foreign_snapshot(env: Environment) -> str | None:
    """Why the snapshot cannot be this service's fallback; None when it can, or when there is
    none (a service without a snapshot falls back no further than last-known-good)."""
    path = Path(env.snapshot_path)
    if not path.is_file():
        return None
    try:
        _, _, meta = read_file(path, allow=env.allow_unsafe)
    except InvalidConfig:
        return None  # a damaged snapshot is refused when it is used, naming the problem
    exported_from = str(meta.get("source") or "")
    if exported_from == env.source or exported_from.startswith(f"{env.source}+"):
        return None
    recorded = f"from {exported_from!r}" if exported_from else "with no source recorded"
    return (f"snapshot {path} was exported {recorded}, not from this service's source "
            f"{env.source!r} (CELERY_CONFIG_SOURCE): export yours when the image is built "
            f"(celery-config export --source {env.source} --output {path})")
