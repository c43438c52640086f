"""Every layer of every image: no CA bundle or build secret left behind, no other service's
code; both platforms run."""

from __future__ import annotations

import io
import json
import re
import tarfile
import tempfile

import docker
import pytest

from tests.compose_stack import REGISTRY, TAG
from tests.images.conftest import IMAGES, PYTHON_IMAGES, image_ref

pytestmark = pytest.mark.images

# What a leaked build secret or CA bundle would look like inside a layer; and a Redis
# password file, TLS key or ACL file (they exist only at run time: secret files, a tmpfs).
FORBIDDEN_PATH = re.compile(r"(^|/)(run/secrets/|.*\.(crt|pem|key)$|.*ca-certificates|secrets/"
                            r"|users\.acl$)")
PLATFORMS = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}
# The project's distributions in each Python image (the library, and the service it runs), and
# the service packages none of its layers may hold (services/*/pyproject.toml).
OWN_DISTRIBUTIONS = {"config-seeder": {"celery-config-sync"},
                     "worker": {"celery-config-sync", "celery-config-sync-worker"},
                     "api": {"celery-config-sync", "celery-config-sync-api"}}
SERVICE_PACKAGES = {"worker_service": "celery-config-sync-worker",
                    "api_service": "celery-config-sync-api"}
FOREIGN_SERVICES = {"config-seeder": ("worker_service", "api_service"),
                    "worker": ("api_service",), "api": ("worker_service",)}


def service_path(package: str) -> re.Pattern[str]:
    """A path of the package or of its distribution's metadata, anywhere, whiteouts included
    (a ``.wh.`` entry means a lower layer held it)."""
    dist_info = SERVICE_PACKAGES[package].replace("-", "_")
    return re.compile(rf"(^|/)(\.wh\.)?({package}|{dist_info}-[^/]*\.dist-info)(/|$)")


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


def platform_layers(client: docker.DockerClient, ref: str) -> dict[str, list[list[str]]]:
    """platform -> the file paths of each of its layers, following the saved image's index
    to each platform's manifest (attestation manifests skipped)."""
    layers: dict[str, list[list[str]]] = {}
    with tempfile.TemporaryFile() as saved:
        for chunk in client.images.get(ref).save(named=True):
            saved.write(chunk)
        saved.seek(0)
        with tarfile.open(fileobj=saved) as archive:

            def read(name: str) -> bytes:
                member = archive.extractfile(name)
                assert member is not None, name
                return member.read()

            def blob(digest: str) -> bytes:
                return read(f"blobs/{digest.replace(':', '/', 1)}")

            pending = list(json.loads(read("index.json"))["manifests"])
            seen: set[str] = set()
            while pending:
                descriptor = pending.pop()
                if descriptor["digest"] in seen or \
                        descriptor.get("platform", {}).get("os") == "unknown":
                    continue
                seen.add(descriptor["digest"])
                document = json.loads(blob(descriptor["digest"]))
                if "manifests" in document:  # an index: one manifest per platform
                    pending.extend(document["manifests"])
                    continue
                config = json.loads(blob(document["config"]["digest"]))
                platform = f"{config.get('os')}/{config.get('architecture')}"
                if platform not in PLATFORMS:
                    continue
                layers[platform] = []
                for layer in document["layers"]:
                    with tarfile.open(fileobj=io.BytesIO(blob(layer["digest"]))) as content:
                        layers[platform].append(content.getnames())
    return layers


@pytest.mark.parametrize("image", PYTHON_IMAGES)
def test_no_layer_holds_another_service_on_either_platform(docker_client: docker.DockerClient,
                                                           image: str) -> None:
    """The separation is in the bytes: the other service's package (or its metadata) is in no
    layer of either platform, the shared base included; the image's own service is there."""
    layers = platform_layers(docker_client, image_ref(image))
    assert set(layers) == set(PLATFORMS)
    for platform, contents in layers.items():
        for package in FOREIGN_SERVICES[image]:
            found = [name for names in contents for name in names
                     if service_path(package).search(name)]
            assert found == [], (platform, package)
        for package in set(SERVICE_PACKAGES) - set(FOREIGN_SERVICES[image]):
            assert any(f"/site-packages/{package}/__init__.py" in name
                       for names in contents for name in names), (platform, package)


@pytest.mark.parametrize("image", PYTHON_IMAGES)
@pytest.mark.parametrize("platform", PLATFORMS)
def test_only_its_own_distributions_on_either_platform(docker_client: docker.DockerClient,
                                                       image: str, platform: str) -> None:
    """What importlib.metadata (what `pip list` reads) finds in the image: the library and the
    image's own service, each package from its own distribution."""
    script = ("import importlib.metadata as m, json; print(json.dumps({"
              "'dists': sorted(d.metadata['Name'].lower() for d in m.distributions()), "
              "'packages': m.packages_distributions()}))")
    out = docker_client.containers.run(image_ref(image), ["-c", script], entrypoint="python3",
                                       platform=platform, remove=True)
    found = json.loads(out)
    own = {name for name in found["dists"] if name.startswith("celery-config-sync")}
    assert own == OWN_DISTRIBUTIONS[image]
    packages = found["packages"]
    assert packages["celery_config_sync"] == ["celery-config-sync"]
    for package, distribution in SERVICE_PACKAGES.items():
        if distribution in OWN_DISTRIBUTIONS[image]:
            assert packages[package] == [distribution]
        else:
            assert package not in packages


# The example project's images (examples/orders/Dockerfile, the README's recipe): built on
# ours, they must keep every promise of ours too.
EXAMPLE_REFS = {f"orders/{name}": f"{REGISTRY}/orders/{name}:{TAG}"
                for name in ("config-seeder", "worker", "api")}
REFS = {**{name: image_ref(name) for name in IMAGES}, **EXAMPLE_REFS}
PYTHON_REFS = {name: ref for name, ref in REFS.items()
               if name in PYTHON_IMAGES or name in EXAMPLE_REFS}


@pytest.mark.parametrize("image", REFS)
def test_no_ca_bundle_or_secret_in_any_layer(docker_client: docker.DockerClient,
                                             image: str) -> None:
    members = layer_members(docker_client, REFS[image])
    assert len(members) >= 2, "expected layers for both platforms"
    leaks = [f"{blob}: {name}" for blob, names in members.items()
             for name in names if FORBIDDEN_PATH.search(name)]
    assert leaks == []


@pytest.mark.parametrize("image", PYTHON_REFS)
def test_history_and_environment_carry_no_build_secret(docker_client: docker.DockerClient,
                                                       image: str) -> None:
    attrs = docker_client.images.get(PYTHON_REFS[image]).attrs
    env = " ".join(attrs["Config"].get("Env") or [])
    history = json.dumps(docker_client.api.history(PYTHON_REFS[image]))
    for needle in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "/run/secrets", "SSL_CERT_FILE"):
        assert needle not in env and needle not in history, needle


@pytest.mark.parametrize("image", REFS)
@pytest.mark.parametrize("platform", PLATFORMS)
def test_both_platforms_are_in_the_image(docker_client: docker.DockerClient, image: str,
                                         platform: str) -> None:
    out = docker_client.containers.run(REFS[image], ["-m"], entrypoint="uname",
                                       platform=platform, remove=True)
    assert out.decode().strip() == PLATFORMS[platform]


def test_arm64_worker_runs_celery_under_emulation(docker_client: docker.DockerClient) -> None:
    out = docker_client.containers.run(
        image_ref("worker"), ["-c", "uname -m && celery --version && celery-config --version"],
        entrypoint="sh", platform="linux/arm64", remove=True).decode().split("\n")
    assert out[0] == "aarch64"
    assert out[1].startswith("5.")
    assert "celery-config" in out[2]
