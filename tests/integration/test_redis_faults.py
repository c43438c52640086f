"""Redis faults that are not an outage (issue #9), against real redis-server processes.

* A namespace key of the wrong Redis type (WRONGTYPE) is corrupt data: exit 2 naming the key,
  the fallback chain falls through, the watcher rejects it; never "Redis unreachable".
* A Redis that accepts connections and never answers (SIGSTOP, or a proxy that goes silent
  after the readiness PING): every command gives up at its timeout, exit 3, instead of hanging.
* Refused access (NOAUTH, WRONGPASS, NOPERM) is a configuration error: exit 2 at once, no retry
  loop, no start on a stale fallback (the gate stops too).

No wall-clock budget is asserted (CI machines are busy): a command that hangs, or that retries
until its timeout where it must not, runs into run()'s 60 s and fails there, and the cases that
must not retry are given a timeout of 600 s. How long each took is printed (tests/figures.py).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from celery_config_sync.connection import make_client
from celery_config_sync.environment import Environment
from celery_config_sync.errors import InvalidConfig, RedisAccessDenied
from celery_config_sync.live_config import LiveConfig
from celery_config_sync.loader import RedisReader, load_config
from celery_config_sync.redis_keys import Keys
from celery_config_sync.snapshot_reading import peek_published
from celery_config_sync.watcher import ConfigWatcher
from tests.conftest import ROOT, RedisServer, require
from tests.figures import figure
from tests.integration.test_cli import error_line, run
from tests.redis_process import redis_server_binary

NS = "celery_config"
KEYS = Keys(NS)
GATE = ROOT / "images" / "python-base" / "celery-config-gate"


def timed(*args: str, url: str | None = None,
          **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """run() (killed after 60 s: subprocess.TimeoutExpired) and the seconds it took."""
    started = time.monotonic()
    result = run(*args, url=url, **env)
    return result, time.monotonic() - started


def own_server(tmp_path_factory: pytest.TempPathFactory, name: str,
               extra_args: tuple[str, ...] = ()) -> RedisServer:
    require(redis_server_binary() is not None, "redis-server is not installed")
    server = RedisServer(tmp_path_factory.mktemp(name), extra_args)
    server.start()
    return server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """This module's own server: its cases corrupt it and stop it (SIGSTOP)."""
    own = own_server(tmp_path_factory, "faults-redis")
    yield own
    own.stop()


@pytest.fixture
def published(server: RedisServer) -> Iterator[redis.Redis]:
    client = server.client()
    client.flushall()
    result = run("publish", url=server.url)
    assert result.returncode == 0, result.stderr
    yield client
    client.close()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """Fallback paths: last-known-good (absent until a load writes it) and an exported snapshot."""
    snapshot = tmp_path / "snapshot.json"
    assert run("export", "-o", str(snapshot)).returncode == 0
    return {"CELERY_CONFIG_FALLBACK_PATH": str(tmp_path / "lkg.json"),
            "CELERY_CONFIG_SNAPSHOT_PATH": str(snapshot)}


@contextmanager
def stopped(server: RedisServer) -> Iterator[None]:
    """redis-server frozen: the kernel still accepts connections, nothing ever answers."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


# ------------------------------------------------------------------- 1. wrong Redis types
WRONG_TYPES: dict[str, tuple[str, Callable[[redis.Redis], Any], str]] = {
    "routes holds a string": (KEYS.routes, lambda c: c.set(KEYS.routes, "x"), "string"),
    "version holds a hash": (KEYS.version, lambda c: c.hset(KEYS.version, "v", "1"), "hash"),
    "meta holds a list": (KEYS.meta, lambda c: c.rpush(KEYS.meta, "x"), "list"),
}


def corrupt(client: redis.Redis, case: str) -> str:
    key, write, _ = WRONG_TYPES[case]
    client.delete(key)
    write(client)
    return key


@pytest.mark.parametrize("case", WRONG_TYPES, ids=list(WRONG_TYPES))
def test_wrong_type_is_corrupt_data_exit_2_naming_the_key(case: str, server: RedisServer,
                                                          published: redis.Redis) -> None:
    key = corrupt(published, case)
    holds = WRONG_TYPES[case][2]
    for command in (["show"], ["status"], ["diff"], ["publish", "--force"]):
        result = run(*command, url=server.url)
        line = error_line(result)
        assert result.returncode == 2, (command, result.stderr)
        assert key in line and "wrong Redis type" in line and f"holds a {holds}" in line, line
        assert "unreachable" not in line, line


@pytest.mark.parametrize("case", WRONG_TYPES, ids=list(WRONG_TYPES))
def test_wrong_type_falls_down_the_chain(case: str, server: RedisServer, published: redis.Redis,
                                         files: dict[str, str]) -> None:
    assert json.loads(run("load", url=server.url, **files).stdout)["source"] == "redis"
    key = corrupt(published, case)
    result = run("load", url=server.url, **files)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["source"] == "last-known-good"
    warning = next(line for line in result.stderr.splitlines() if f"redis: {key}" in line)
    assert "wrong Redis type" in warning and "unreachable" not in warning
    Path(files["CELERY_CONFIG_FALLBACK_PATH"]).unlink()
    result = run("load", url=server.url, **files)
    assert (result.returncode, json.loads(result.stdout)["source"]) == (0, "snapshot")


@pytest.mark.parametrize("case", WRONG_TYPES, ids=list(WRONG_TYPES))
def test_watcher_rejects_a_wrong_type_as_invalid_content(case: str, server: RedisServer,
                                                         published: redis.Redis,
                                                         tmp_path: Path) -> None:
    env = Environment(redis_url=server.url, namespace=NS,
                      fallback_path=str(tmp_path / "lkg.json"),
                      snapshot_path=str(tmp_path / "none.json"))
    live = LiveConfig("api", env, instance="test:1")
    assert live.load().loaded.source == "redis"
    key = corrupt(published, case)
    failures: list[Exception] = []
    found: list[Any] = []
    for read in (live.reader.load, lambda: peek_published(live.reader.client, NS)):
        watcher: ConfigWatcher[Any] = ConfigWatcher(read, NS, server.url, on_read=found.append,
                                                    on_failure=failures.append)
        watcher._reread()  # one re-read, as on a hint
    if key == KEYS.routes:  # peek reads only version and meta
        assert isinstance(failures[0], InvalidConfig) and len(failures) == 1
    else:
        assert [type(f) for f in failures] == [InvalidConfig, InvalidConfig]
    assert all(isinstance(f, InvalidConfig) and f.key == key for f in failures), failures
    live.failed(failures[0])
    assert live.last_error.startswith("rejected ") and key in live.last_error
    assert "unreachable" not in live.last_error
    assert live.current.loaded.source == "redis"  # kept what it had
    live.stop()


# ----------------------------------------------------------------------------- 2. timeouts
@pytest.mark.parametrize("command", ["show", "status", "diff"])
def test_reads_against_a_silent_redis_time_out_with_exit_3(command: str, server: RedisServer,
                                                           published: redis.Redis) -> None:
    with stopped(server):
        result, elapsed = timed(command, url=server.url, CELERY_CONFIG_WAIT_TIMEOUT="2")
    assert result.returncode == 3, result.stderr
    error_line(result)
    figure(f"{command} against a silent Redis, CELERY_CONFIG_WAIT_TIMEOUT=2: exit 3 after "
           f"{elapsed:.2f} s")


def test_load_against_a_silent_redis_times_out_and_falls_back(
        server: RedisServer, published: redis.Redis, files: dict[str, str]) -> None:
    assert run("load", url=server.url, **files).returncode == 0  # writes last-known-good
    with stopped(server):
        result, elapsed = timed("load", url=server.url, CELERY_CONFIG_WAIT_TIMEOUT="2", **files)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["source"] == "last-known-good"
    figure(f"load against a silent Redis, CELERY_CONFIG_WAIT_TIMEOUT=2: on last-known-good "
           f"after {elapsed:.2f} s")


@pytest.mark.parametrize("command", [["publish", "--timeout", "2"], ["wait", "--timeout", "2"]])
def test_publish_and_wait_against_a_silent_redis_time_out_with_exit_3(
        command: list[str], server: RedisServer, published: redis.Redis) -> None:
    with stopped(server):
        result, elapsed = timed(*command, url=server.url)
    assert result.returncode == 3, result.stderr
    error_line(result)
    figure(f"{' '.join(command)} against a silent Redis: exit 3 after {elapsed:.2f} s")


class SilentAfterPing:
    """A TCP proxy to a real redis-server that relays everything until it has relayed the
    answer to a PING (the publish readiness check), then accepts connections and reads
    requests but never answers again: Redis answered the ping, then hung."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.pinged = threading.Event()
        self.silent = threading.Event()
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.sockets.append(client)
            if self.silent.is_set():
                threading.Thread(target=self._swallow, args=(client,), daemon=True).start()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.sockets.append(upstream)
            threading.Thread(target=self._pump, args=(client, upstream, True),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False),
                             daemon=True).start()

    def _swallow(self, client: socket.socket) -> None:
        with client:
            while True:
                try:
                    if not client.recv(65536):
                        return
                except OSError:
                    return

    def _pump(self, source: socket.socket, target: socket.socket, from_client: bool) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                target.close()
                return
            if self.silent.is_set():
                continue
            if from_client and b"PING" in data.upper():
                self.pinged.set()
            try:
                target.sendall(data)
            except OSError:
                return
            if not from_client and self.pinged.is_set():
                self.silent.set()

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def test_publish_when_redis_answered_the_ping_then_went_silent(server: RedisServer,
                                                               published: redis.Redis) -> None:
    proxy = SilentAfterPing(server.port)
    try:
        result, elapsed = timed("publish", "--force", "--timeout", "2", url=proxy.url)
        assert proxy.silent.is_set()  # the readiness PING was answered
    finally:
        proxy.close()
    assert result.returncode == 3, result.stderr
    assert "did not complete the publish within 2 s" in error_line(result)
    figure(f"publish --timeout 2, Redis silent after the PING: exit 3 after {elapsed:.2f} s")
    assert published.get(KEYS.version) == b"1"  # nothing half-written


def raised_by(call: Callable[[], object], timeout: float = 60) -> BaseException | None:
    """What ``call()`` raised (None: nothing), run in a thread: fails if it has not returned
    after ``timeout`` seconds (a hang, not a budget; the thread is left to its fate)."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            call()
        except BaseException as exc:  # handed to the test
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert outcome, f"still blocked after {timeout:g} s"
    return outcome[0]


def test_a_client_with_a_deadline_stops_at_it_instead_of_hanging(server: RedisServer) -> None:
    deadline = time.monotonic() + 1.0
    client = make_client(server.url, deadline=deadline)
    with stopped(server):
        assert isinstance(raised_by(lambda: client.get("x")), redis.TimeoutError)
        figure(f"a client with a deadline 1 s away, Redis frozen: TimeoutError "
               f"{time.monotonic() - deadline:+.3f} s from the deadline")
    time.sleep(max(0.0, deadline - time.monotonic()))
    with pytest.raises(redis.TimeoutError):  # the budget is spent: no new operation starts
        client.get("x")


# ---------------------------------------------------------------- 3. authentication and ACL
@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """requirepass secret, a publish done, and an ACL user ``limited`` allowed PING alone."""
    own = own_server(tmp_path_factory, "auth-redis", ("--requirepass", "secret"))
    admin = redis.Redis(port=own.port, password="secret")
    admin.execute_command("ACL", "SETUSER", "limited", "on", ">pw", "~*", "-@all", "+ping")
    admin.close()
    assert run("publish", url=f"redis://:secret@127.0.0.1:{own.port}/0").returncode == 0
    yield own
    own.stop()


CREDENTIALS = {
    "no password (NOAUTH)": "redis://127.0.0.1:{port}/0",
    "wrong password (WRONGPASS)": "redis://:hunter2@127.0.0.1:{port}/0",
    "user without permissions (NOPERM)": "redis://limited:pw@127.0.0.1:{port}/0",
}
# Timeouts (600 s) far longer than run() waits for a command (60 s): a retry loop fails there.
COMMANDS = [["wait", "--timeout", "600"], ["publish", "--timeout", "600"], ["show"], ["status"],
            ["load"]]


@pytest.mark.parametrize("credentials", CREDENTIALS, ids=list(CREDENTIALS))
def test_refused_access_is_exit_2_without_a_retry_loop(
        credentials: str, auth_server: RedisServer, files: dict[str, str]) -> None:
    good = f"redis://:secret@127.0.0.1:{auth_server.port}/0"
    assert json.loads(run("load", url=good, **files).stdout)["source"] == "redis"  # lkg written
    url = CREDENTIALS[credentials].format(port=auth_server.port)
    took = []
    for command in COMMANDS:
        result, elapsed = timed(*command, url=url, CELERY_CONFIG_WAIT_TIMEOUT="600", **files)
        line = error_line(result)
        assert result.returncode == 2, (command, result.stderr)
        assert "refused access" in line and "unreachable" not in line, (command, line)
        assert "hunter2" not in result.stderr and "secret" not in result.stderr
        assert not result.stdout, (command, result.stdout)  # load did not fall back
        took.append(f"{command[0]} {elapsed:.2f} s")
    figure(f"refused access ({credentials}), timeouts 600 s: exit 2 after {', '.join(took)}")


def test_load_config_raises_instead_of_starting_on_a_stale_fallback(
        auth_server: RedisServer, tmp_path: Path) -> None:
    env = Environment(redis_url=f"redis://:secret@127.0.0.1:{auth_server.port}/0", namespace=NS,
                      fallback_path=str(tmp_path / "lkg.json"),
                      snapshot_path=str(tmp_path / "none.json"))
    assert load_config(env).source == "redis"  # last-known-good written
    for url in CREDENTIALS.values():
        denied = Environment(**{**env.__dict__, "redis_url": url.format(port=auth_server.port)})
        with pytest.raises(RedisAccessDenied) as error:
            load_config(denied)
        assert "\n" not in str(error.value) and error.value.exit_code == 2
        reader = RedisReader(make_client(denied.redis_url), NS)
        with pytest.raises(RedisAccessDenied):
            load_config(denied, reader=reader)


def test_the_gate_stops_the_container_instead_of_starting_on_the_fallback(
        auth_server: RedisServer) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_CONFIG_")}
    bin_dir = Path(sys.executable).parent  # the virtualenv's: celery-config is there
    environ.update(PATH=f"{bin_dir}{os.pathsep}{environ.get('PATH', '')}",
                   CELERY_CONFIG_REDIS_URL=f"redis://127.0.0.1:{auth_server.port}/0",
                   CELERY_CONFIG_WAIT_TIMEOUT="600")  # a gate that waited it out: killed at 60 s
    started = time.monotonic()
    result = subprocess.run(["sh", str(GATE), "echo", "service started"], cwd=ROOT, env=environ,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert "service started" not in result.stdout
    assert "refused access" in error_line(result)
    figure(f"the gate, access refused, CELERY_CONFIG_WAIT_TIMEOUT=600: exit 2 after "
           f"{time.monotonic() - started:.2f} s")
