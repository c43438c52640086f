"""Every layer of every image: no CA bundle or build secret left behind; both platforms run."""

from __future__ import annotations

import io
import json
import re
import tarfile
import tempfile

import docker
import pytest

from tests.images.conftest import IMAGES, PYTHON_IMAGES, image_ref

pytestmark = pytest.mark.images

# What a leaked build secret or CA bundle would look like inside a layer; and a Redis
# password, TLS key or ACL file (they exist only at run time: secret files, a tmpfs).
FORBIDDEN_PATH = re.compile(r"(^|/)(run/secrets/|.*\.(crt|pem|key)$|.*ca-certificates|secrets/"
                            r"|redis-(default|seeder|worker|api|admin)$|users\.acl$)")
PLATFORMS = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}


def layer_members(client: docker.DockerClient, ref: str) -> dict[str, list[str]]:
    """blob digest -> file paths, for every layer blob (all platforms) of the saved image."""
    members: dict[str, list[str]] = {}
    with tempfile.TemporaryFile() as saved:
        for chunk in client.images.get(ref).save(named=True):
            saved.write(chunk)
        saved.seek(0)
        with tarfile.open(fileobj=saved) as archive:
            for entry in archive.getmembers():
                if not entry.name.startswith("blobs/sha256/") or not entry.isfile():
                    continue
                blob = archive.extractfile(entry)
                assert blob is not None
                data = blob.read()
                try:
                    with tarfile.open(fileobj=io.BytesIO(data)) as layer:
                        members[entry.name] = layer.getnames()
                except tarfile.ReadError:
                    continue  # a manifest, index or config blob (JSON)
    return members


@pytest.mark.parametrize("image", IMAGES)
def test_no_ca_bundle_or_secret_in_any_layer(docker_client: docker.DockerClient,
                                             image: str) -> None:
    members = layer_members(docker_client, image_ref(image))
    assert len(members) >= 2, "expected layers for both platforms"
    leaks = [f"{blob}: {name}" for blob, names in members.items()
             for name in names if FORBIDDEN_PATH.search(name)]
    assert leaks == []


@pytest.mark.parametrize("image", PYTHON_IMAGES)
def test_history_and_environment_carry_no_build_secret(docker_client: docker.DockerClient,
                                                       image: str) -> None:
    attrs = docker_client.images.get(image_ref(image)).attrs
    env = " ".join(attrs["Config"].get("Env") or [])
    history = json.dumps(docker_client.api.history(image_ref(image)))
    for needle in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "/run/secrets", "SSL_CERT_FILE"):
        assert needle not in env and needle not in history, needle


@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize("platform", PLATFORMS)
def test_both_platforms_are_in_the_image(docker_client: docker.DockerClient, image: str,
                                         platform: str) -> None:
    out = docker_client.containers.run(image_ref(image), ["-m"], entrypoint="uname",
                                       platform=platform, remove=True)
    assert out.decode().strip() == PLATFORMS[platform]


def test_arm64_worker_runs_celery_under_emulation(docker_client: docker.DockerClient) -> None:
    out = docker_client.containers.run(
        image_ref("worker"), ["-c", "uname -m && celery --version && celery-config --version"],
        entrypoint="sh", platform="linux/arm64", remove=True).decode().split("\n")
    assert out[0] == "aarch64"
    assert out[1].startswith("5.")
    assert "celery-config" in out[2]
