"""The operator's health page, apart from any web framework: where it reads from (:mod:`.source`,
made when a server starts), what it shows (:mod:`.view`, read from Redis at each request;
imported at the page's first request), its HTML (:mod:`.render`, escaped on the server; the
same), and the files a browser loads with it (``templates/``, ``static/``: package data of the
library, so that an app installed from the wheel serves them). :mod:`celery_config_sync.fastapi`
serves it; this package is internal, not a public surface."""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable

# The files the page loads: name under static/ -> media type.
STATIC_FILES = {"health.css": "text/css; charset=utf-8",
                "health.js": "text/javascript; charset=utf-8"}


def static_file(name: str) -> Traversable:
    """One of :data:`STATIC_FILES`, as package data."""
    return files(__name__) / "static" / name
