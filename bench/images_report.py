"""Image size report: each image per platform, the set's total, and what the Python images share.

Printed, never asserted. The figures come from the registry the images are pushed to (the
local one on 127.0.0.1:5000 here; this script pushes the baked tags there first), so they are
the compressed bytes a Raspberry Pi downloads, per platform, with layers identified by digest:

  image size     every layer of the image
  over base      the layers not in BASE_IMAGE (target: <= 150 MB per Python image)
  shared         layers common to config-seeder, worker and api (base, python3, venv)
  set total      every distinct layer of the four images, counted once (what the disk holds)

On-disk (uncompressed) sizes for this machine's platform come from the layers' history.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from dataclasses import dataclass
from typing import Any

import docker

IMAGES = ("redis", "config-seeder", "worker", "api")
PYTHON_IMAGES = ("config-seeder", "worker", "api")
TARGET_OVER_BASE = 150 * 10**6
INDEX_TYPES = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str

    @classmethod
    def parse(cls, name: str) -> Reference:
        registry, _, rest = name.partition("/")
        repository, _, tag = rest.rpartition(":")
        return cls(registry, repository, tag or "latest")

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"


def _get(ref: Reference, path: str) -> dict[str, Any]:
    request = urllib.request.Request(f"http://{ref.registry}/v2/{ref.repository}/{path}",
                                     headers={"Accept": INDEX_TYPES})
    with urllib.request.urlopen(request, timeout=30) as response:  # a loopback registry only
        document: dict[str, Any] = json.load(response)
        return document


def layers_by_platform(ref: Reference) -> dict[str, list[tuple[str, int]]]:
    """platform -> [(layer digest, compressed size)], attestation manifests left out."""
    index = _get(ref, f"manifests/{ref.tag}")
    result: dict[str, list[tuple[str, int]]] = {}
    for entry in index.get("manifests", []):
        platform = entry.get("platform", {})
        if platform.get("os") == "unknown":  # buildx provenance attestation
            continue
        manifest = _get(ref, f"manifests/{entry['digest']}")
        name = f"{platform['os']}/{platform['architecture']}"
        result[name] = [(layer["digest"], layer["size"]) for layer in manifest["layers"]]
    return result


def mb(size: int) -> str:
    return f"{size / 10**6:7.1f} MB"


def main() -> int:
    registry = os.environ.get("REGISTRY", "localhost:5000")
    tag = os.environ.get("TAG", "latest")
    base = Reference.parse(os.environ.get("BASE_IMAGE", "127.0.0.1:5000/debian:bookworm-slim"))
    host = registry.split(":")[0]
    if host not in ("localhost", "127.0.0.1"):
        print(f"images report: REGISTRY={registry} is not on this machine; it reads a local "
              "registry only", file=sys.stderr)
        return 2
    client = docker.from_env()
    refs = {name: Reference(registry, f"celery-config-sync/{name}", tag) for name in IMAGES}
    for ref in refs.values():  # the baked tags live in the local store: push them to read them
        client.images.push(f"{ref.registry}/{ref.repository}", tag=ref.tag)

    layers = {name: layers_by_platform(ref) for name, ref in refs.items()}
    try:
        base_layers = {digest for layers_ in layers_by_platform(
            Reference(registry, base.repository, base.tag)).values() for digest, _ in layers_}
    except OSError:  # a base from Docker Hub: its single layer is the first one
        base_layers = {layers_[0][0] for image in layers.values() for layers_ in image.values()}

    platforms = sorted({p for image in layers.values() for p in image})
    print(f"images {registry}/celery-config-sync/*:{tag}, base {base} (compressed, as pulled)")
    print(f"{'image':<15}{'platform':<14}{'size':>11}{'over base':>12}{'target':>11}  verdict")
    for name in IMAGES:
        for platform in platforms:
            image = layers[name].get(platform)
            if image is None:
                print(f"{name:<15}{platform:<14}{'missing':>11}")
                continue
            total = sum(size for _, size in image)
            over = sum(size for digest, size in image if digest not in base_layers)
            target = TARGET_OVER_BASE if name in PYTHON_IMAGES else None
            verdict = "" if target is None else ("met" if over <= target else "MISSED")
            print(f"{name:<15}{platform:<14}{mb(total):>11}{mb(over):>12}"
                  f"{mb(target) if target else '':>11}  {verdict}")

    print()
    for platform in platforms:
        per_image = [dict(layers[name].get(platform, [])) for name in PYTHON_IMAGES]
        shared = set.intersection(*(set(image) for image in per_image))
        shared_bytes = sum(per_image[0][digest] for digest in shared)
        shared_over_base = sum(per_image[0][d] for d in shared if d not in base_layers)
        distinct: dict[str, int] = {}
        for name in IMAGES:
            distinct.update(dict(layers[name].get(platform, [])))
        naive = sum(sum(size for _, size in layers[name].get(platform, [])) for name in IMAGES)
        set_total = sum(distinct.values())
        print(f"{platform}: set total {mb(set_total).strip()} on disk "
              f"(vs {mb(naive).strip()} if nothing were shared, {naive / set_total:.2f}x); "
              f"the 3 Python images share {len(shared)} layers = {mb(shared_bytes).strip()} "
              f"({mb(shared_over_base).strip()} of it over the base: python3 and the venv)")

    # Uncompressed, from each layer's size in the image history (this machine's platform).
    print("\nuncompressed, this machine's platform (docker history):")
    try:
        base_total = sum(entry["Size"] for entry in client.api.history(str(base)))
    except docker.errors.ImageNotFound:
        base_total = 0
    print(f"  {'base':<15}{mb(base_total)}")
    for name, ref in refs.items():
        total = sum(entry["Size"] for entry in client.api.history(str(ref)))
        target = TARGET_OVER_BASE if name in PYTHON_IMAGES else None
        verdict = "" if target is None else ("met" if total - base_total <= target else "MISSED")
        print(f"  {name:<15}{mb(total)}  over base {mb(total - base_total)}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
