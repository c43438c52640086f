"""The stack with TLS between the services and Redis (compose/tls.yaml, `make up TLS=1`): it
starts, tasks run through the TLS broker and result backend, and Redis speaks TLS only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.compose_stack import Stack
from tests.e2e.conftest import make_stack, up_measured

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(engine: None) -> Iterator[Stack]:
    with make_stack("-tls", tls=True) as current:
        up_measured(current, "amd64 stack with TLS")
        yield current


def test_the_stack_runs_over_tls(stack: Stack) -> None:
    ready = stack.wait_ready(30)
    assert (ready["source"], ready["version"]) == ("redis", 1)
    task = stack.enqueue("scan.discovery")
    assert stack.result(task["id"], 60)["state"] == "SUCCESS"
    assert stack.redis_cli("CONFIG", "GET", "tls-port").split() == ["tls-port", "6379"]
    assert stack.redis_cli("CONFIG", "GET", "port").split() == ["port", "0"]
    assert stack.redis_cli("ACL", "LOG") == ""


def test_plain_text_is_refused(stack: Stack) -> None:
    plain = stack.compose("exec", "-T", "redis", "sh", "-c",
                          "redis-cli --user health --askpass PING < /run/secrets/redis-health",
                          check=False)
    assert "PONG" not in plain.stdout, plain.stdout
    for service in ("worker", "beat", "api"):
        env = stack.inspect(service)["Config"]["Env"]
        urls = [e for e in env if e.startswith(("CELERY_CONFIG_REDIS_URL=", "CELERY_BROKER_URL=",
                                                "CELERY_RESULT_BACKEND="))]
        assert len(urls) == 3 and all("=rediss://" in u and "ssl_cert_reqs=required" in u
                                      for u in urls), urls
