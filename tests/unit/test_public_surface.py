"""The library's public surface (issue 16): the package root and the modules a user's Celery
and FastAPI apps import. The demo services may import nothing else (the import-linter contract
in pyproject.toml lists every other module): a new module is internal until said otherwise, and
this test fails until the contract names it."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from importlib.resources import files

import celery_config_sync
from tests.conftest import ROOT

PUBLIC = {"celery", "fastapi", "beat"}
CONTRACT = "The demo services import only the library's public modules"


def pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_contract_forbids_every_module_but_the_public_ones() -> None:
    contracts = pyproject()["tool"]["importlinter"]["contracts"]  # type: ignore[index]
    contract = next(c for c in contracts if c["name"] == CONTRACT)
    assert contract["type"] == "forbidden"
    assert set(contract["source_modules"]) == {"worker_service", "api_service"}
    modules = {m.name for m in pkgutil.iter_modules(celery_config_sync.__path__)}
    assert modules >= PUBLIC
    assert set(contract["forbidden_modules"]) == {
        f"celery_config_sync.{name}" for name in modules - PUBLIC}


def test_each_public_module_says_what_it_exports() -> None:
    for name in ("celery_config_sync", *(f"celery_config_sync.{m}" for m in sorted(PUBLIC))):
        module = importlib.import_module(name)
        exported = module.__all__
        assert exported and all(hasattr(module, item) for item in exported), name


def test_the_health_page_files_are_package_data_of_the_library() -> None:
    """The wheel carries what the page loads: package-data globs match every file there."""
    data = pyproject()["tool"]["setuptools"]["package-data"]  # type: ignore[index]
    globs = data["celery_config_sync.health_page"]
    folder = files("celery_config_sync.health_page")
    shipped = [f"{sub}/{entry.name}" for sub in ("static", "templates")
               for entry in (folder / sub).iterdir() if entry.is_file()]
    assert sorted(shipped) == ["static/health.css", "static/health.js",
                               "templates/health.html"]
    assert all(any(fnmatch(path, pattern) for pattern in globs) for path in shipped)
    service = tomllib.loads((ROOT / "services" / "api" / "pyproject.toml").read_text())
    assert "package-data" not in service["tool"]["setuptools"]  # nothing left in api_service


def test_services_that_only_load_never_import_the_publishing_side() -> None:
    """The package root gives ``publish`` and ``load_source`` at first use (PEP 562), and only
    a worker's opt-in publish-on-start imports them: the demo's API, worker and beat start
    without the publishing modules (issue 20: start-up and memory)."""
    publishing = {"celery_config_sync.publishing", "celery_config_sync.source",
                  "celery_config_sync.celery_forms"}
    code = ("import sys, api_service.app, worker_service.app, celery_config_sync.beat; "
            f"print(sorted(set(sys.modules) & {publishing!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "CELERY_CONFIG_LIVE_RELOAD": "false"})
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
    assert celery_config_sync.publish.__module__ == "celery_config_sync.publishing"
