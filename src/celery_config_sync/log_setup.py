"""The log format of a process, set once when it starts: the tag that names the service
(``[CELERY_API]``, ``[CELERY_WORKER]``, ``[CELERY_CONFIG_PUBLISHER]``) is part of the format,
never a parameter threaded through the library's calls.

The handler sits on the project's own loggers, not on the root logger, because uvicorn and
Celery each configure the root (or leave it at WARNING) in their own way: the lines that the
specification's monitoring greps for must appear whatever the host process did.
"""

from __future__ import annotations

import logging
import sys

TAGS = {
    "publisher": "[CELERY_CONFIG_PUBLISHER]",
    "worker": "[CELERY_WORKER]",
    "api": "[CELERY_API]",
    "beat": "[CELERY_BEAT]",
    "cli": "[CELERY_CONFIG]",
}
# The library's loggers all live under this name.
LIBRARY_LOGGER = "celery_config_sync"


def configure_logging(tag: str, *, level: int | str = logging.INFO,
                      loggers: tuple[str, ...] = ()) -> None:
    """Send the library's records (and those of ``loggers``) to stderr as
    ``<time> <LEVEL> <tag> <message>``. Calling it again replaces the previous set-up."""
    formatter = logging.Formatter(f"%(asctime)s %(levelname)s {tag} %(message)s")
    for name in (LIBRARY_LOGGER, *loggers):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if getattr(handler, "celery_config_sync", False):
                logger.removeHandler(handler)
        # The process's real stderr: Celery replaces sys.stderr with a proxy that logs what is
        # written to it (worker_redirect_stdouts), which would wrap each line in another one.
        handler = logging.StreamHandler(sys.__stderr__ or sys.stderr)
        handler.celery_config_sync = True  # type: ignore[attr-defined]
        handler.setFormatter(formatter)
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
