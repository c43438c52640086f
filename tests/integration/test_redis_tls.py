"""Optional TLS between the services and Redis (issue 10): the redis image's entrypoint serves
TLS only when its certificate is mounted (compose/tls.yaml), and every part of the project
works over ``rediss://`` URLs that verify it against the CA compose/make-tls.sh made."""

from __future__ import annotations

import json
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import ROOT, require
from tests.integration.test_cli import error_line, run
from tests.redis_process import AclRedis, redis_server_binary, start_acl_redis
from tests.service_processes import running, start_api, start_worker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    require(redis_server_binary() is not None, "redis-server is not installed")
    server = start_acl_redis(tmp_path_factory.mktemp("tls-redis"), tls=True)
    yield server
    server.process.terminate()
    server.process.wait(10)


def test_plain_text_is_refused(tls_redis: AclRedis) -> None:
    plain = redis.Redis(port=tls_redis.port, username="health",
                        password=tls_redis.password("health"),
                        socket_timeout=2)
    with pytest.raises(redis.ConnectionError):
        plain.ping()


def test_a_certificate_from_another_ca_is_refused(tls_redis: AclRedis, tmp_path: Path) -> None:
    other = tmp_path / "other"
    subprocess.run(["sh", str(ROOT / "compose" / "make-tls.sh"), str(other)], check=True,
                   capture_output=True)
    url = tls_redis.url("seeder").replace(str(tls_redis.secrets / "redis-tls-ca"),
                                          str(other / "tls" / "ca.crt"))
    client = redis.Redis.from_url(url, password="x", socket_timeout=2)
    with pytest.raises(redis.ConnectionError) as error:
        client.ping()
    assert isinstance(error.value.__context__, ssl.SSLError) or "certificate" in str(error.value)


def test_every_flow_works_over_tls(tls_redis: AclRedis, tmp_path: Path) -> None:
    seeder = tls_redis.as_role("seeder")
    published = run("publish", url=tls_redis.url("seeder"), **seeder)
    assert published.returncode == 0, published.stderr
    loaded = run("load", url=tls_redis.url("worker"),
                 CELERY_CONFIG_FALLBACK_PATH=str(tmp_path / "lkg.json"),
                 **tls_redis.as_role("worker"))
    assert json.loads(loaded.stdout)["source"] == "redis", loaded.stderr
    worker = start_worker(tls_redis.url("worker"), tmp_path, gossip=True,
                          CELERY_RESULT_BACKEND=tls_redis.url("worker", 1),
                          **tls_redis.as_role("worker"))
    api = start_api(tls_redis.url("api"), tmp_path, CELERY_RESULT_BACKEND=tls_redis.url("api", 1),
                    **tls_redis.as_role("api"))
    with running(worker, api):
        task = api.enqueue("scan.discovery")
        assert api.result(task["id"])["state"] == "SUCCESS"
        assert api.get("/readyz")["source"] == "redis"
    assert tls_redis.acl_log() == []
    status = run("status", url=tls_redis.url("seeder"), **seeder)
    assert status.returncode in (0, 1), error_line(status)
