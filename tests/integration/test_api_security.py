"""The API on a network (issue 18): the demo API served by a real uvicorn against a real
redis-server. Who may send tasks and read results (a bearer token from a secret file), JSON-only
posts, allowed Host names, the body limit, short error bodies, and a paused or gone Redis
answered 503 with Retry-After while /healthz keeps answering."""

from __future__ import annotations

import os
import signal
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis

from celery_config_sync.publishing import publish
from celery_config_sync.source import load_source
from tests.conftest import SOURCE, RedisServer
from tests.figures import figure
from tests.redis_process import free_port
from tests.service_processes import BIN, ROOT, Api, running, spawn, start_api

pytestmark = pytest.mark.integration
NS = "celery_config"
DOCUMENT = load_source(str(SOURCE), "rpi")


@pytest.fixture
def published(redis_client: redis.Redis) -> redis.Redis:
    publish(redis_client, NS, DOCUMENT, source="v1")
    return redis_client


@pytest.fixture
def api(redis_server: RedisServer, published: redis.Redis, tmp_path: Path) -> Iterator[Api]:
    service = start_api(redis_server.url, tmp_path,
                        CELERY_CONFIG_API_ALLOWED_HOSTS="pi.example, [fd00::1]",
                        CELERY_CONFIG_API_MAX_BODY_BYTES="4096")
    with running(service):
        yield service


def post(api: Api, path: str = "/tasks/scan.discovery", **kwargs: object) -> httpx.Response:
    return httpx.post(api.url + path, timeout=10, **kwargs)  # type: ignore[arg-type]


def test_task_endpoints_require_the_token_the_probes_and_views_do_not(api: Api) -> None:
    assert api.token
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": api.token},
                    {"Authorization": f"Basic {api.token}"}):
        response = post(api, json={}, headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
    accepted = post(api, json={}, headers=api.auth)
    assert accepted.status_code == 202, accepted.text
    task = accepted.json()["id"]
    assert httpx.get(f"{api.url}/tasks/{task}", timeout=10).status_code == 401
    assert httpx.get(f"{api.url}/tasks/{task}", headers=api.auth, timeout=10).status_code == 200
    # Probes and (by default) the read-only views: open.
    for path in ("/healthz", "/readyz", "/config", "/config/status", "/health.json", "/metrics"):
        assert httpx.get(api.url + path, timeout=10).status_code == 200, path
    # The OpenAPI document declares the bearer scheme on the task endpoints (TaskGate is a
    # security scheme): /docs offers "Authorize" for them, and for nothing else.
    document = httpx.get(f"{api.url}/openapi.json", timeout=10).json()
    assert document["components"]["securitySchemes"]["api-token"] == {
        "type": "http", "scheme": "bearer",
        "description": "The token of CELERY_CONFIG_API_TOKEN_FILE (make secrets)"}
    secured = {(path, method) for path, operations in document["paths"].items()
               for method, operation in operations.items() if "security" in operation}
    assert secured == {("/tasks/{name}", "post"), ("/tasks/{task_id}", "get")}
    assert document["paths"]["/tasks/{name}"]["post"]["security"] == [{"api-token": []}]
    # Seven refusals from one address: one log line (bounded rate), no token in it.
    refused = api.lines("refused .* from 127.0.0.1")
    assert len(refused) == 1, refused
    assert api.token not in api.log()


def test_the_token_file_may_hold_two_tokens_for_a_rotation(
        redis_server: RedisServer, published: redis.Redis, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("old-token-0123456789\nnew-token-9876543210\n")
    service = start_api(redis_server.url, tmp_path, CELERY_CONFIG_API_TOKEN_FILE=str(tokens))
    with running(service):
        for token, expected in (("old-token-0123456789", 202), ("new-token-9876543210", 202),
                                ("new-token", 401), ("x", 401)):
            response = post(service, json={}, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == expected, (token, response.text)


def test_one_variable_protects_the_read_only_views(
        redis_server: RedisServer, published: redis.Redis, tmp_path: Path) -> None:
    service = start_api(redis_server.url, tmp_path, CELERY_CONFIG_API_PROTECT_VIEWS="true")
    with running(service):
        for path in ("/config", "/config/status", "/health", "/health.json", "/metrics"):
            assert httpx.get(service.url + path, timeout=10).status_code == 401, path
            assert service.client.get(path).status_code == 200, path
        for path in ("/healthz", "/readyz"):
            assert httpx.get(service.url + path, timeout=10).status_code == 200, path


# A token file the API cannot use: (what to put at the path, the line the API must print).
BAD_TOKEN_FILES = {
    "missing": (None, "cannot read it (No such file or directory)"),
    "empty": ("", "empty"),
    "over the size cap": ("x" * 5000, "larger than 4096 bytes, not a secret file"),
    "unreadable": ("a directory", "cannot read it (Is a directory)"),  # root reads any file
}


@pytest.mark.parametrize("case", list(BAD_TOKEN_FILES))
def test_a_bad_token_file_stops_the_start_with_one_line_and_no_traceback(
        redis_server: RedisServer, published: redis.Redis, tmp_path: Path, case: str) -> None:
    """The real ``uvicorn api_service.app:app``, as the api image starts it: the error's line,
    uvicorn's closing line, a non-zero exit; never uvicorn's print of the traceback."""
    content, line = BAD_TOKEN_FILES[case]
    path = tmp_path / "api-token"
    if content == "a directory":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    api = spawn("api", [str(BIN / "uvicorn"), "api_service.app:app", "--host", "127.0.0.1",
                        "--port", str(free_port())], redis_server.url, tmp_path, ROOT,
                CELERY_CONFIG_API_TOKEN_FILE=str(path))
    try:
        code = api.process.wait(60)
    finally:
        api.stop()
    log = api.log()
    assert code != 0, log
    assert f"ERROR:    API token file {path}: {line}\n" in log, log
    assert "Traceback" not in log and "  File " not in log, log
    assert log.count(str(path)) == 1, log


def test_task_posts_accept_json_only(api: Api) -> None:
    """A form another site submits (urlencoded, multipart, text/plain, or no body at all)
    cannot post, even with the token."""
    for headers, body in (({"Content-Type": "application/x-www-form-urlencoded"}, b""),
                          ({"Content-Type": "application/x-www-form-urlencoded"}, b"args=1"),
                          ({"Content-Type": "text/plain"}, b"{}"),
                          ({"Content-Type": "multipart/form-data; boundary=x"}, b""),
                          ({}, b"")):
        response = post(api, content=body, headers={**api.auth, **headers})
        assert response.status_code == 415, (headers, response.text)
    ok = post(api, content=b"{}", headers={**api.auth,
                                           "Content-Type": "application/json; charset=utf-8"})
    assert ok.status_code == 202, ok.text


@pytest.mark.parametrize(("host", "expected"), [
    ("evil.example", 400), ("evil.example:8000", 400), ("127.0.0.1.evil.example", 400),
    ("localhost.evil.example", 400), ("", 400), ("10.1.2.3:8000", 200), ("[fe80::2]:80", 200),
    ("localhost:8000", 200), ("127.0.0.1", 200), ("api:8000", 200), ("pi.example", 200),
    ("PI.example:80", 200), ("[fd00::1]:8000", 200), ("[::1]", 200)])
def test_only_the_allowed_host_names_are_served(api: Api, host: str, expected: int) -> None:
    """DNS rebinding: a page of evil.example whose name now points here sends its own Host."""
    response = httpx.get(api.url + "/config", headers={"Host": host}, timeout=10)
    assert response.status_code == expected, response.text
    if expected == 400:
        assert "host not allowed" in response.json()["detail"]
    # The probes answer whatever the Host: an orchestrator probes the container's address.
    assert httpx.get(api.url + "/readyz", headers={"Host": host}, timeout=10).status_code == 200


def test_a_body_over_the_limit_is_refused_before_it_is_read_whole(api: Api) -> None:
    big = b'{"args": ["' + b"x" * 10_000 + b'"]}'
    # Declared: refused on its Content-Length.
    response = post(api, content=big, headers={**api.auth, "Content-Type": "application/json"})
    assert response.status_code == 413, response.text

    # Chunked, no Content-Length: counted as it arrives. 40 KB of a body that never ends (no
    # last chunk is ever sent): the 413 must come without the rest, or it would never come.
    # (Over a plain client the figure would depend on socket buffers, not on the server.)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(b"POST /tasks/scan.discovery HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Authorization: Bearer " + api.token.encode() + b"\r\n"
                     b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b'b\r\n{"args": ["\r\n')
        for _ in range(40):
            sock.sendall(b"3e8\r\n" + b"x" * 1000 + b"\r\n")
        reply = sock.recv(4096)  # socket.timeout (10 s) if the server waited for the end
    figure(f"chunked body without an end: 413 after 40 KB, "
           f"{time.monotonic() - started:.3f} s from the first byte")
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    # The server is unharmed, and a body under the limit still posts.
    assert post(api, json={"args": ["x" * 1000]}, headers=api.auth).status_code == 202


def test_error_bodies_quote_only_an_excerpt_of_the_input(api: Api) -> None:
    huge = "y" * 3_000
    response = post(api, json={"args": {"k": huge}}, headers=api.auth)  # args not a list
    assert response.status_code == 422 and huge not in response.text
    response = post(api, content=b'{"args": [1, 2', headers={
        **api.auth, "Content-Type": "application/json"})  # malformed JSON
    assert response.status_code == 422, response.text
    assert len(response.content) < 1000
    name = "a." + "b" * 2000
    response = post(api, path=f"/tasks/{name}", json={}, headers=api.auth)
    assert response.status_code == 422 and len(response.content) < 300, response.text
    response = api.client.get(f"/tasks/{'c' * 5000}")
    assert response.status_code == 422 and len(response.content) < 300, response.text


# --------------------------------- Redis paused, then gone (own_redis: tests/conftest.py)


def test_a_paused_redis_is_a_503_within_the_deadline_and_healthz_keeps_answering(
        own_redis: RedisServer, tmp_path: Path) -> None:
    client = own_redis.client()
    publish(client, NS, DOCUMENT, source="v1")
    timeout = 2.0
    api = start_api(own_redis.url, tmp_path, CELERY_CONFIG_API_REDIS_TIMEOUT=str(timeout))
    with running(api):
        task = api.enqueue("scan.discovery")["id"]  # connections made while Redis answers
        assert own_redis.process is not None
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        probes: list[tuple[int, float]] = []
        stop = threading.Event()

        def probe() -> None:
            with httpx.Client(base_url=api.url, timeout=10) as http:
                while not stop.is_set():
                    started = time.monotonic()
                    for path in ("/healthz", "/readyz"):
                        probes.append((http.get(path).status_code, time.monotonic() - started))
                    time.sleep(0.05)

        def call(index: int) -> tuple[int, str | None, float]:
            started = time.monotonic()
            with httpx.Client(base_url=api.url, timeout=60, headers=api.auth) as http:
                response = (http.post("/tasks/scan.discovery", json={}) if index % 2 == 0
                            else http.get(f"/tasks/{task}"))
            return (response.status_code, response.headers.get("retry-after"),
                    time.monotonic() - started)

        prober = threading.Thread(target=probe)
        prober.start()
        try:
            with ThreadPoolExecutor(60) as pool:  # more than the server's 40 threads
                answers = list(pool.map(call, range(60)))
        finally:
            stop.set()
            prober.join()
        statuses = sorted({status for status, _, _ in answers})
        assert statuses == [503], answers
        assert {after for _, after, _ in answers} == {"2"}
        assert probes and all(status == 200 for status, _ in probes), probes
        times = sorted(elapsed for _, _, elapsed in answers)
        figure(f"Redis paused, 60 requests (30 posts, 30 result reads) at once, deadline "
               f"{timeout:g} s: all 503 with Retry-After; answered in median "
               f"{statistics.median(times):.2f} s, max {times[-1]:.2f} s")
        figure(f"meanwhile {len(probes)} probes of /healthz and /readyz, all 200, slowest "
               f"{max(elapsed for _, elapsed in probes) * 1000:.0f} ms")

        os.kill(own_redis.process.pid, signal.SIGCONT)
        # Redis back: posts are accepted again (a dropped connection is replaced once).
        assert api.enqueue("scan.discovery")["queue"] == "scan"

        own_redis.stop()  # gone: connections refused
        started = time.monotonic()
        response = api.client.post("/tasks/scan.discovery", json={})
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "2"
        figure(f"Redis gone: a post answered 503 in {time.monotonic() - started:.2f} s")
        assert api.client.get("/healthz").status_code == 200
        assert api.process.poll() is None


# The views that read Redis: the page, its fragment and JSON, a diff, the metrics' depths.
REDIS_VIEWS = ("/health", "/health/live", "/health.json", "/health/diff.json?from=1&to=1",
               "/metrics")


def test_a_paused_redis_is_a_503_within_the_deadline_on_the_views_too(
        own_redis: RedisServer, tmp_path: Path) -> None:
    """The read-only views are bounded by CELERY_CONFIG_API_REDIS_TIMEOUT as the task routes are
    (503 with Retry-After), not by redis-py's socket timeouts and retry (about 10 s); the views
    that read memory only, and the probes, keep answering."""
    client = own_redis.client()
    publish(client, NS, DOCUMENT, source="v1")
    timeout = 1.0
    api = start_api(own_redis.url, tmp_path, CELERY_CONFIG_API_REDIS_TIMEOUT=str(timeout))
    with running(api):
        for path in REDIS_VIEWS:  # connections made while Redis answers
            assert api.client.get(path).status_code == 200, path
        assert own_redis.process is not None
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        try:
            # One client (its TLS context made once), as many connections as requests.
            http = httpx.Client(base_url=api.url, timeout=60,
                                limits=httpx.Limits(max_connections=len(REDIS_VIEWS) * 3))

            def call(path: str) -> tuple[str, int, str | None, float]:
                started = time.monotonic()
                response = http.get(path)
                return (path, response.status_code, response.headers.get("retry-after"),
                        time.monotonic() - started)

            # Each view three times at once: more than the view slots, fewer than the threads.
            with http, ThreadPoolExecutor(len(REDIS_VIEWS) * 3) as pool:
                answers = list(pool.map(call, REDIS_VIEWS * 3))
            memory_only = {path: api.client.get(path).status_code
                           for path in ("/healthz", "/readyz", "/config", "/config/status")}
        finally:
            os.kill(own_redis.process.pid, signal.SIGCONT)
        assert {(status, after) for _, status, after, _ in answers} == {(503, "1")}, answers
        assert memory_only == dict.fromkeys(memory_only, 200), memory_only
        times = sorted(elapsed for *_, elapsed in answers)
        figure(f"Redis paused, {len(answers)} view requests at once, deadline {timeout:g} s: "
               f"all 503 with Retry-After; median {statistics.median(times):.2f} s, "
               f"max {times[-1]:.2f} s")
        # Redis back: the views answer again.
        for path in REDIS_VIEWS:
            assert api.client.get(path).status_code == 200, path
