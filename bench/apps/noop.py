"""The no-op task both benchmark apps register, under the same name and options."""

from __future__ import annotations

from typing import Any

from celery import Celery

NAME = "demo.noop"  # routed by the source's "demo.*" route, to the default queue "celery"


def noop() -> None:
    """Nothing: what a worker pays per task, apart from the task itself."""


def register(app: Celery) -> Any:
    """``demo.noop`` on ``app``, its result ignored (no write to the result backend)."""
    return app.task(name=NAME, ignore_result=True)(noop)
