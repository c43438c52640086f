"""The repository ships three distributions: the library at the root and one per service
(services/*). Each image installs the library and at most the service it runs, so each
distribution must hold only its own package (tests/images checks the layers themselves)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

LIBRARY = "celery-config-sync"
# distribution directory -> (distribution, its package, the library extra it requires)
SERVICES = {"worker": ("celery-config-sync-worker", "worker_service", "worker"),
            "api": ("celery-config-sync-api", "api_service", "api")}


def pyproject(path: Path) -> dict[str, Any]:
    return tomllib.loads((path / "pyproject.toml").read_text())


def test_the_library_distribution_holds_the_library_only() -> None:
    config = pyproject(ROOT)
    assert config["project"]["name"] == LIBRARY
    find = config["tool"]["setuptools"]["packages"]["find"]
    assert find["where"] == ["src"] and find["include"] == ["celery_config_sync*"]
    # what the services need is an extra of the library each service distribution asks for
    assert set(config["project"]["optional-dependencies"]) >= {"worker", "api"}


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_is_its_own_distribution(service: str) -> None:
    name, package, extra = SERVICES[service]
    directory = ROOT / "services" / service
    config = pyproject(directory)
    library = pyproject(ROOT)["project"]
    assert config["project"]["name"] == name
    assert config["project"]["version"] == library["version"]
    assert config["project"]["dependencies"] == [f"{LIBRARY}[{extra}]=={library['version']}"]
    setuptools = config["tool"]["setuptools"]
    assert setuptools["packages"] == [package]
    source = (directory / setuptools["package-dir"][package]).resolve()
    assert source == ROOT / "src" / package and (source / "__init__.py").is_file()


def test_the_bake_version_is_the_distributions() -> None:
    bake = (ROOT / "docker-bake.hcl").read_text()
    match = re.search(r'variable "VERSION" \{\s*default = "([^"]+)"', bake)
    assert match and match.group(1) == pyproject(ROOT)["project"]["version"]
