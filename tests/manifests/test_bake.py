"""docker-bake.hcl as `docker buildx bake --print` resolves it (no engine needed): what `make
push` publishes to the registry a user names, and the example's images built on ours."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest

from tests.conftest import ROOT, require

# The variables of docker-bake.hcl: the caller's (make exports them) never reach these runs.
BAKE_VARIABLES = ("REGISTRY", "TAG", "BASE_IMAGE", "PLATFORMS", "CA_BUNDLE", "VERSION",
                  "REVISION", "SOURCE_URL", "CELERY_CONFIG_OVERLAY")
VERSION = next(line.split('"')[1] for line in (ROOT / "pyproject.toml").read_text().splitlines()
               if line.startswith("version = "))


def resolved(*groups: str, **env: str) -> dict[str, Any]:
    require(shutil.which("docker") is not None, "no docker CLI (.ci/install-engine.sh)")
    result = subprocess.run(["docker", "buildx", "bake", "--print", *groups], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False,
                            env={**{k: v for k, v in os.environ.items() if k not in BAKE_VARIABLES},
                                 **env})
    require(result.returncode == 0, f"docker buildx bake --print failed: {result.stderr[-500:]}")
    targets: dict[str, Any] = json.loads(result.stdout)["target"]
    return targets


@pytest.mark.parametrize("group", ["default", "example"])
def test_every_image_is_tagged_latest_and_the_version_in_the_named_registry(group: str) -> None:
    targets = resolved(group, REGISTRY="registry.example.org:5000", TAG="latest",
                       REVISION="0123abc")
    images = {name: target for name, target in targets.items() if target.get("tags")}
    assert images, targets
    for name, target in images.items():
        assert len(target["tags"]) == 2, (name, target["tags"])
        for tag in target["tags"]:
            assert tag.startswith("registry.example.org:5000/"), tag
        assert {tag.rsplit(":", 1)[1] for tag in target["tags"]} == {"latest", VERSION}
        labels = target["labels"]
        assert labels["org.opencontainers.image.version"] == VERSION, name
        assert labels["org.opencontainers.image.revision"] == "0123abc", name
        assert labels["org.opencontainers.image.title"], name
        assert set(target["platforms"]) == {"linux/arm64", "linux/amd64"}, name
    if group == "default":
        assert {"redis", "config-seeder", "worker", "api", "builder"} <= set(images)
    else:
        for name in ("example-worker", "example-api", "example-seeder"):
            assert images[name]["context"] == "examples/orders", name
            assert images[name]["contexts"]  # built on our targets, not on a registry's


def test_the_source_label_when_a_source_url_is_given() -> None:
    url = "https://git.example.org/celery-config-sync"
    labelled = resolved("default", SOURCE_URL=url)
    assert all(target["labels"]["org.opencontainers.image.source"] == url
               for target in labelled.values() if target.get("tags"))
    plain = resolved("default")
    assert not any("org.opencontainers.image.source" in target.get("labels", {})
                   for target in plain.values())
