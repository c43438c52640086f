"""The rpi profile once more with the linux/arm64 images, under qemu emulation on an amd64
machine (natively on an arm64 one): what a Raspberry Pi 4 runs.

compose honours DOCKER_DEFAULT_PLATFORM for every service without a `platform:` of its own;
the images are multi-platform in the local store, so nothing is pulled. Emulation is several
times slower: the gate waits long enough never to fall back here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_config_sync.source import load_source
from tests.compose_stack import Stack, docker, image_ref
from tests.conftest import SOURCE, require
from tests.e2e.conftest import MEASUREMENTS, make_stack, up_measured
from tests.e2e.live_sources import WITH_REPORTS, publish_from, source_dir, starts
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

PLATFORM = "linux/arm64"


@pytest.fixture(scope="module")
def arm64_stack(engine: None) -> Iterator[Stack]:
    probe = docker("run", "--rm", "--platform", PLATFORM, "--pull", "never", "--network", "none",
                   "--entrypoint", "uname", image_ref("redis"), "-m", check=False, timeout=120)
    require(probe.returncode == 0 and probe.stdout.strip() == "aarch64",
            f"no {PLATFORM} image variant in the local store or no qemu binfmt emulation "
            f"({probe.stdout.strip()} {probe.stderr.strip()})")
    with make_stack("-arm64", DOCKER_DEFAULT_PLATFORM=PLATFORM,
                    CELERY_CONFIG_WAIT_TIMEOUT="300") as stack:
        up_measured(stack, "arm64 stack (emulated)", timeout=480)
        yield stack


def test_rpi_profile_runs_the_arm64_images(arm64_stack: Stack) -> None:
    stack = arm64_stack
    for service in ("redis", "worker", "beat", "api"):
        machine = stack.compose("exec", "-T", service, "uname", "-m").stdout.strip()
        assert machine == "aarch64", (service, machine)
    seeder = stack.inspect("config-seeder")["State"]
    assert (seeder["Status"], seeder["ExitCode"]) == ("exited", 0)

    source = load_source(str(SOURCE), "rpi")
    ready = stack.wait_ready(120)
    assert (ready["source"], ready["version"], ready["sha256"]) == ("redis", 1, source.sha256)

    body = stack.enqueue("covers.fetch_album")
    assert body["queue"] == "covers"
    status = stack.result(body["id"], 180)
    assert status["state"] == "SUCCESS", status
    assert (status["result"]["queue"], status["result"]["config_source"]) == ("covers", "redis")


def test_arm64_services_apply_an_added_queue_live(arm64_stack: Stack, tmp_path: Path) -> None:
    stack = arm64_stack
    before = starts(stack)
    published = publish_from(stack, source_dir(tmp_path, WITH_REPORTS), "seed-v2")
    assert published["version"] == 2
    started = time.monotonic()
    wait_until(lambda: (stack.readyz() or {}).get("version") == 2, 60, "the API on version 2",
               interval=0.1)
    MEASUREMENTS.append(f"arm64 (emulated) live reload: API on version 2 "
                        f"{time.monotonic() - started:.2f} s after the seeder exited")
    body = stack.enqueue("report.build")
    assert body["queue"] == "reports"
    status = stack.result(body["id"], 180)
    assert status["state"] == "SUCCESS", status
    assert (status["result"]["queue"], status["result"]["config_version"]) == ("reports", 2)
    assert starts(stack) == before
