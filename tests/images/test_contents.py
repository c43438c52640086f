"""What is inside each image, checked with testinfra on running containers (docker backend)."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from celery_config_sync.fallback_files import FORMAT
from tests.images.conftest import PYTHON_IMAGES, Stack

pytestmark = pytest.mark.images

LONG_RUNNING = ("redis", "worker", "api")
ALL = ("redis", "config-seeder", "worker", "api")
COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "x86_64-linux-gnu-gcc", "aarch64-linux-gnu-gcc")
DEV_PACKAGES = ("gcc", "g++", "build-essential", "python3-dev", "libpython3.11-dev",
                "python3-pip", "python3-venv")
# distribution -> major version every image that has it must carry
PYTHON_DISTRIBUTIONS = {"celery": "5", "kombu": "5", "redis": "", "click": "8"}
EXTRA_DISTRIBUTIONS = {"worker": {"supervisor": "4", "prometheus-client": "0."},
                       "api": {"fastapi": "", "uvicorn": "", "prometheus-client": "0.",
                               "fastapi-offline": "1"}}


def distributions(stack: Stack, image: str) -> dict[str, str]:
    script = ("import importlib.metadata as m, json; "
              "print(json.dumps({d.metadata['Name'].lower(): d.version "
              "for d in m.distributions()}))")
    out = stack.host(image).check_output(f'python3 -c "{script}"')
    # Names as PEP 503 compares them (fastapi_offline's metadata spells it with "_").
    return {re.sub(r"[-_.]+", "-", name): version for name, version in json.loads(out).items()}


def listening_ports(stack: Stack, image: str) -> set[int]:
    """TCP ports in LISTEN state, from /proc (slim images ship neither ss nor netstat)."""
    host = stack.host(image)
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not host.file(table).exists:
            continue
        for line in host.file(table).content_string.splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def processes(stack: Stack, image: str) -> dict[int, str]:
    """pid -> command line, from /proc (no ps in the images)."""
    out = stack.host(image).check_output(
        "for p in /proc/[0-9]*; do printf '%s ' \"${p#/proc/}\"; "
        "tr '\\0' ' ' < \"$p/cmdline\" 2>/dev/null; echo; done")
    result = {}
    for line in out.splitlines():
        pid, _, cmdline = line.partition(" ")
        if cmdline.strip():
            result[int(pid)] = cmdline.strip()
    return result


@pytest.mark.parametrize("image", ALL)
def test_runs_as_a_non_root_user(stack: Stack, image: str) -> None:
    user = stack.host(image).user()
    assert user.uid != 0 and user.gid != 0
    assert user.name == ("redis" if image == "redis" else "app")


@pytest.mark.parametrize("image", ALL)
def test_root_filesystem_is_read_only(stack: Stack, image: str) -> None:
    host = stack.host(image)
    assert host.run("touch /usr/probe").rc != 0
    assert host.run("touch /etc/probe").rc != 0


@pytest.mark.parametrize("image", PYTHON_IMAGES)
def test_python_and_libraries(stack: Stack, image: str) -> None:
    host = stack.host(image)
    assert host.check_output("python3 --version").startswith("Python 3.11")
    assert host.check_output("command -v python3") == "/opt/venv/bin/python3"
    installed = distributions(stack, image)
    expected = {**PYTHON_DISTRIBUTIONS, **EXTRA_DISTRIBUTIONS.get(image, {})}
    for name, major in expected.items():
        assert name in installed, f"{name} missing from {image}"
        assert installed[name].startswith(major), (name, installed[name])
    assert "celery-config-sync" in installed
    assert host.check_output("celery --version").startswith("5.")


def test_only_the_worker_has_supervisor_and_only_the_api_fastapi(stack: Stack) -> None:
    assert "supervisor" not in distributions(stack, "api")
    assert "fastapi" not in distributions(stack, "worker")
    assert "fastapi" not in distributions(stack, "config-seeder")
    assert "prometheus-client" not in distributions(stack, "config-seeder")  # it serves none


def test_the_api_holds_every_file_its_pages_load(stack: Stack) -> None:
    """The health page's template, script and style (package data of the library, which
    celery_config_sync.fastapi serves), and Swagger UI's and ReDoc's files: what /health and
    /docs load comes from the image, never from a CDN."""
    page = "files('celery_config_sync.health_page')"
    script = ("from importlib.resources import files; "
              "print(sorted(str(p) for p in ("
              f"{page} / 'templates' / 'health.html', "
              f"{page} / 'static' / 'health.js', "
              f"{page} / 'static' / 'health.css', "
              "files('fastapi_offline') / 'static' / 'swagger-ui-bundle.js', "
              "files('fastapi_offline') / 'static' / 'swagger-ui.css', "
              "files('fastapi_offline') / 'static' / 'redoc.standalone.js') "
              "if not p.is_file()))")
    assert stack.host("api").check_output(f'python3 -c "{script}"') == "[]"


@pytest.mark.parametrize(("image", "absent"), [("worker", "api_service"),
                                                ("api", "worker_service"),
                                                ("config-seeder", "api_service"),
                                                ("config-seeder", "worker_service")])
def test_services_do_not_ship_each_other(stack: Stack, image: str, absent: str) -> None:
    result = stack.host(image).run(f"python3 -c 'import {absent}'")
    assert result.rc != 0 and "ModuleNotFoundError" in result.stderr


def test_redis_server_from_debian(stack: Stack) -> None:
    host = stack.host("redis")
    package = host.package("redis-server")
    assert package.is_installed
    assert package.version.split(":")[-1].startswith("7.")
    conf = host.file("/etc/redis/redis-pi.conf")
    assert conf.exists and conf.user == "root" and conf.mode == 0o644
    for line in ("maxmemory 256mb", "maxmemory-policy noeviction", "appendonly yes",
                 "dir /data"):
        assert line in conf.content_string.splitlines()
    assert stack.redis_cli("CONFIG", "GET", "maxmemory").split() == ["maxmemory", "268435456"]
    assert stack.redis_cli("CONFIG", "GET", "appendonly").split() == ["appendonly", "yes"]
    data = host.file("/data")
    assert data.is_directory and data.user == "redis"


def test_redis_users_come_from_the_secrets_as_hashes(stack: Stack) -> None:
    """The ACL file redis-entrypoint wrote: on the tmpfs, the redis user's alone, one user per
    role with the SHA-256 of its password file, never the password itself."""
    host = stack.host("redis")
    acl = host.file("/run/redis/users.acl")
    assert acl.user == "redis" and acl.mode == 0o600
    lines = {line.split()[1]: line for line in acl.content_string.splitlines()}
    assert lines.pop("default") == "user default off ~* &* +@all"  # nobody logs in as it
    users = {role: line.split()[3] for role, line in lines.items()}
    assert set(users) == {"health", "seeder", "worker", "api", "admin"}
    for role, hashed in users.items():
        password = (stack.secrets / f"redis-{role}").read_text().strip()
        assert hashed == "#" + hashlib.sha256(password.encode()).hexdigest()
        assert password not in acl.content_string
    assert stack.redis_cli("CONFIG", "GET", "protected-mode").split() == ["protected-mode",
                                                                           "yes"]
    assert host.file("/etc/redis/roles.acl").mode == 0o644


@pytest.mark.parametrize("image", PYTHON_IMAGES)
def test_gate_source_and_snapshot(stack: Stack, image: str) -> None:
    host = stack.host(image)
    gate = host.file("/usr/local/bin/celery-config-gate")
    assert gate.is_file and gate.user == "root" and gate.mode == 0o755
    assert gate.content_string.startswith("#!/bin/sh\n")
    assert host.file("/etc/celery-config/source.py").is_file
    assert host.file("/etc/celery-config/overlays/rpi.py").is_file
    snapshot_file = host.file("/usr/share/celery-config/snapshot.json")
    assert snapshot_file.user == "root" and snapshot_file.mode == 0o644
    snapshot = json.loads(snapshot_file.content_string)
    assert snapshot["format"] == FORMAT  # the format this release reads
    assert snapshot["config"]["base"]["worker_concurrency"] == 2  # the rpi overlay
    lkg_dir = host.file("/var/lib/celery-config")
    assert lkg_dir.is_directory and lkg_dir.user == "app"


@pytest.mark.parametrize(("image", "entrypoint", "cmd"), [
    ("redis", ["redis-entrypoint"], None),
    ("config-seeder", ["celery-config"], ["publish"]),
    ("worker", ["celery-config-gate"], ["supervisord", "-c", "/etc/supervisor/supervisord.conf"]),
    ("api", ["celery-config-gate"], ["uvicorn", "--host", "0.0.0.0", "--port", "8000"]),
])
def test_exec_form_entrypoints(stack: Stack, image: str, entrypoint: list[str],
                               cmd: list[str] | None) -> None:
    from tests.images.conftest import image_ref

    config = stack.client.images.get(image_ref(image)).attrs["Config"]
    assert config["Entrypoint"] == entrypoint
    assert config["Cmd"] == cmd


@pytest.mark.parametrize(("image", "port"), [("redis", 6379), ("api", 8000), ("worker", 9808)])
def test_listening_ports(stack: Stack, image: str, port: int) -> None:
    assert port in listening_ports(stack, image)


def test_only_celerys_main_process_holds_the_metrics_port(stack: Stack) -> None:
    """The worker's metrics socket (9808) belongs to Celery's main process alone: the prefork
    children close the copy fork gave them, supervisord never had one."""
    host = stack.host("worker")
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in host.file(table).content_string.splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == 9808:
                inodes.add(fields[9])
    assert inodes
    out = host.check_output("for p in /proc/[0-9]*; do printf '%s ' \"${p#/proc/}\"; "
                            "ls -l \"$p/fd\" 2>/dev/null | tr '\\n' ' '; echo; done")
    holders = {int(line.split(" ", 1)[0]) for line in out.splitlines()
               if any(f"socket:[{inode}]" in line for inode in inodes)}
    procs = processes(stack, "worker")
    celery = {pid for pid, cmd in procs.items() if "celery" in cmd and " worker" in cmd}
    main = {pid for pid in celery if host.file(f"/proc/{pid}/stat").content_string.split()[3]
            not in {str(p) for p in celery}}
    assert len(celery) >= 3 and len(main) == 1, procs
    assert holders == main, (holders, procs)


def test_supervisord_is_pid_1_with_celery_children(stack: Stack) -> None:
    procs = processes(stack, "worker")
    assert "supervisord" in procs[1]
    celery = {pid: cmd for pid, cmd in procs.items() if "celery" in cmd and "worker" in cmd}
    # The main process and the two pool children of the rpi overlay (worker_concurrency 2).
    assert len(celery) >= 3, procs
    status = stack.host("worker").run("supervisorctl -c /etc/supervisor/supervisord.conf status")
    assert status.rc == 0 and "RUNNING" in status.stdout


@pytest.mark.parametrize("image", ("api", "redis"))
def test_service_is_pid_1(stack: Stack, image: str) -> None:
    expected = "uvicorn" if image == "api" else "redis-server"
    assert expected in processes(stack, image)[1]


@pytest.mark.parametrize("image", ALL)
def test_no_compiler_in_runtime_images(stack: Stack, image: str) -> None:
    host = stack.host(image)
    for compiler in COMPILERS:
        assert not host.exists(compiler), f"{compiler} found in {image}"
    for package in DEV_PACKAGES:
        assert not host.package(package).is_installed, f"{package} installed in {image}"


@pytest.mark.parametrize("image", ALL)
def test_oci_labels(stack: Stack, image: str) -> None:
    from tests.images.conftest import image_ref

    labels = stack.client.images.get(image_ref(image)).attrs["Config"]["Labels"]
    assert labels["org.opencontainers.image.title"] == f"celery-config-sync {image}"
    for key in ("description", "version", "revision", "base.name"):
        assert labels.get(f"org.opencontainers.image.{key}"), key


@pytest.mark.parametrize("image", LONG_RUNNING)
def test_healthcheck_declared_and_healthy(stack: Stack, image: str) -> None:
    from tests.images.conftest import health

    assert stack.containers[image].attrs["Config"]["Healthcheck"]["Test"][0] == "CMD"
    assert health(stack.containers[image]) == "healthy"
