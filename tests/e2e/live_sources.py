"""Configurations for the live-reload cases of the e2e tier: the project's source folder copied,
with lines appended to source.py, bind-mounted read-only into a one-off seeder container."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from celery_config_sync.codec import ConfigDocument
from celery_config_sync.source import load_source
from tests.compose_stack import Stack, docker
from tests.conftest import ROOT

# v2: queue "reports" added (route report.build), queue lastfm and its routes removed,
# scan.discovery moved to the batch queue.
WITH_REPORTS = '''
task_queues = tuple(q for q in task_queues if q.name != "lastfm") + (
    Queue("reports", Exchange("reports", type="direct"), routing_key="reports"),)
task_routes = {k: v for k, v in task_routes.items() if not k.startswith("lastfm.")}
task_routes["report.build"] = {"queue": "reports"}
task_routes["scan.discovery"] = {"queue": "batch"}
'''


def source_dir(tmp: Path, extra: str) -> Path:
    """A copy of config/celery with ``extra`` appended to source.py, readable by uid 10001."""
    target = tmp / "celery"
    shutil.copytree(ROOT / "config" / "celery", target,
                    ignore=shutil.ignore_patterns("__pycache__"))
    source = target / "source.py"
    source.write_text(source.read_text() + "\n" + extra + "\n")
    for path in [tmp, target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


def document_of(directory: Path, overlay: str = "rpi") -> ConfigDocument:
    return load_source(str(directory / "source.py"), overlay)


def publish_from(stack: Stack, directory: Path, name: str) -> dict[str, Any]:
    """Run the seeder once with ``directory`` mounted over /etc/celery-config: its JSON line."""
    container = f"{stack.project}-{name}"
    try:
        result = stack.compose("run", "--no-deps", "-T", "--name", container, "--volume",
                               f"{directory}:/etc/celery-config:ro", "config-seeder",
                               check=False, timeout=300)
        assert result.returncode == 0, (result.stdout, result.stderr)
        printed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        return printed
    finally:
        docker("rm", "--force", "--volumes", container, check=False)


def fleet_status(stack: Stack) -> tuple[int, dict[str, Any]]:
    """``celery-config status`` run in a container of the stack (the seeder's image)."""
    container = f"{stack.project}-status"
    try:
        result = stack.compose("run", "--no-deps", "-T", "--name", container, "config-seeder",
                               "status", check=False, timeout=300)
        assert "Traceback" not in result.stderr, result.stderr
        report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        return result.returncode, report
    finally:
        docker("rm", "--force", "--volumes", container, check=False)


def starts(stack: Stack) -> dict[str, tuple[str, int]]:
    """Each service container's start time and restart count: unchanged means not restarted."""
    return {service: (stack.inspect(service)["State"]["StartedAt"],
                      int(stack.inspect(service)["RestartCount"]))
            for service in ("worker", "beat", "api")}


def recreate_api(stack: Stack, live_reload: str) -> None:
    """The API container made anew with live reload on ("true") or off ("false": it stays on
    the version it loaded at start, held back while new versions are published)."""
    stack.compose("up", "--detach", "--wait", "--no-deps", "--force-recreate", "api",
                  env={"CELERY_CONFIG_LIVE_RELOAD": live_reload})
