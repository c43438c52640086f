"""The worker and the API as real processes (``celery worker``, ``uvicorn``) against a real
redis-server: used by the live-reload integration tests and by the reload benchmark
(bench/reload_bench.py), as tests/redis_process.py serves both with Redis itself."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.api_client import ApiEndpoint
from tests.polling import wait_for
from tests.redis_process import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def lines(self, pattern: str) -> list[str]:
        return [line for line in self.log().splitlines() if re.search(pattern, line)]

    def stop(self, timeout: float = 15) -> int:
        http = getattr(self, "http", None)
        if http is not None:
            http.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def service_environment(redis_url: str, workdir: Path, **extra: str) -> dict[str, str]:
    """The services' environment: the config and broker in db 0, results in db 1."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("CELERY_CONFIG_", "CELERY_BROKER", "CELERY_RESULT"))}
    return {**base,
            "CELERY_CONFIG_REDIS_URL": redis_url,
            "CELERY_BROKER_URL": redis_url,
            "CELERY_RESULT_BACKEND": redis_url.rsplit("/", 1)[0] + "/1",
            "CELERY_CONFIG_SNAPSHOT_PATH": str(workdir / "no-snapshot.json"),
            "PYTHONUNBUFFERED": "1",
            **extra}


def spawn(name: str, argv: list[str], redis_url: str, workdir: Path, cwd: Path,
          **extra: str) -> Service:
    """Start ``argv`` as service ``name``: the services' environment, its own last-known-good
    file in ``workdir``, its output in ``workdir/<name>.log``."""
    log_path = workdir / f"{name}.log"
    env = service_environment(redis_url, workdir,
                              CELERY_CONFIG_FALLBACK_PATH=str(workdir / f"{name}-lkg.json"),
                              **extra)
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    return Service(name, process, log_path)


def started(service: Service, line: str, what: str) -> Service:
    """``service`` once its log shows ``line`` (it must still run)."""
    wait_for(lambda: line in service.log() or service.process.poll() is not None, 60,
             lambda: f"{what}\n{service.log()[-3000:]}", interval=0.1)
    assert service.process.poll() is None, service.log()[-3000:]
    return service


def start_worker(redis_url: str, workdir: Path, *args: str, name: str = "worker",
                 gossip: bool = False, app: str = "worker_service.app",
                 cwd: Path = ROOT, **extra: str) -> Service:
    """A ``celery worker`` process of ``app`` (the demo's by default; without gossip unless
    ``gossip``: the image runs with it)."""
    argv = [str(BIN / "celery"), "--app", app, "worker", "--loglevel=INFO",
            "--hostname", f"{name}@%h", *([] if gossip else ["--without-gossip"]), *args]
    return started(spawn(name, argv, redis_url, workdir, cwd, **extra), " ready.",
                   "the worker's ready line")


def start_beat(redis_url: str, workdir: Path, *args: str, name: str = "beat",
               app: str = "worker_service.app", cwd: Path = ROOT, **extra: str) -> Service:
    """A ``celery beat`` process of ``app``, its schedule file in ``workdir``; returns once it
    runs its scheduler (active or standing by)."""
    argv = [str(BIN / "celery"), "--app", app, "beat", "--loglevel=INFO",
            "--schedule", str(workdir / f"{name}-schedule"), *args]
    return started(spawn(name, argv, redis_url, workdir, cwd, **extra), "beat scheduling",
                   "the beat's start line")


@dataclass
class Api(Service, ApiEndpoint):
    port: int = 0
    # The bearer token of its CELERY_CONFIG_API_TOKEN_FILE (None: started without one), sent
    # by ``client`` on every request.
    token: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def context(self) -> str:
        return self.log()[-3000:]


def start_api(redis_url: str, workdir: Path, *, name: str = "api",
              target: str = "api_service.app:app", cwd: Path = ROOT, token: bool = True,
              **extra: str) -> Api:
    """A ``uvicorn`` process serving ``target``; with ``token`` (unless ``extra`` names a token
    file of its own) a fresh bearer token in ``workdir/<name>-token`` that its client sends."""
    port = free_port()
    secret = None
    if token and "CELERY_CONFIG_API_TOKEN_FILE" not in extra:
        secret = secrets.token_urlsafe(32)
        token_file = workdir / f"{name}-token"
        token_file.write_text(secret + "\n")
        extra = {**extra, "CELERY_CONFIG_API_TOKEN_FILE": str(token_file)}
    spawned = spawn(name, [str(BIN / "uvicorn"), target, "--host", "127.0.0.1",
                           "--port", str(port)], redis_url, workdir, cwd, **extra)
    process = spawned.process
    api = Api(name, process, spawned.log_path, port, secret)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the API exited\n{api.log()[-3000:]}")
        try:
            return api.client.get("/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, 60, lambda: f"the API's /readyz\n{api.log()[-3000:]}", interval=0.1)
    return api


@contextmanager
def running(*services: Service) -> Iterator[None]:
    try:
        yield
    finally:
        for service in services:
            service.stop()
