"""The CLI's contract (issue 18, item 6), each case a run of the real CLI against a real
redis-server: one line on stderr, the documented exit code, never a traceback."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from celery_config_sync.fleet import write_record
from celery_config_sync.publishing import publish
from celery_config_sync.source import load_source
from tests.conftest import SOURCE, RedisServer
from tests.figures import figure
from tests.integration.test_cli import error_line, run, snapshot_of, write_source

pytestmark = pytest.mark.integration

MALFORMED_URLS = ("redis://[::1:6379/0", "redis://[::1]:abc/0", "redis://localhost:99999/0",
                  "redis://[fe80::1%zz:6379/0", "redis://u:secret@[::1/0")


@pytest.mark.parametrize("url", MALFORMED_URLS)
def test_a_malformed_redis_url_is_one_line_and_exit_2(url: str, tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("secret\n")
    for command, extra in ((["status"], {}), (["wait", "--timeout", "1"], {}),
                           (["publish", "--timeout", "1"], {}),
                           (["status"], {"CELERY_CONFIG_REDIS_PASSWORD_FILE": str(password)})):
        result = run(*command, url=url, **extra)
        assert result.returncode == 2, (command, result.stderr)
        line = error_line(result)
        assert "invalid Redis URL" in line and "secret" not in line, line


@pytest.mark.parametrize("body", ["import sys\nsys.exit(0)", "raise SystemExit('bye')",
                                  "import sys\nsys.exit()"])
def test_a_source_that_exits_while_importing_is_an_error(
        body: str, tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis) -> None:
    before = snapshot_of(redis_client)
    result = run("publish", "--source", write_source(tmp_path, body), url=redis_server.url)
    assert result.returncode == 2, result.stderr
    assert "sys.exit" in error_line(result)
    assert result.stdout == ""
    assert snapshot_of(redis_client) == before  # nothing published


def test_a_source_stuck_in_a_loop_ends_at_the_timeout(
        tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis) -> None:
    source = write_source(tmp_path, "while True:\n    pass")
    for command, extra in ((["publish", "--source", source, "--timeout", "2"], {}),
                           (["export", "--source", source], {"CELERY_CONFIG_WAIT_TIMEOUT": "1"}),
                           (["diff", "--source", source], {"CELERY_CONFIG_WAIT_TIMEOUT": "1"})):
        started = time.monotonic()
        result = run(*command, url=redis_server.url, **extra)
        elapsed = time.monotonic() - started
        assert result.returncode == 2, (command, result.stderr)
        assert "did not finish importing within" in error_line(result)
        figure(f"{command[0]}: a source stuck in a loop ended the command after "
               f"{elapsed:.1f} s (process start included)")
    assert redis_client.keys("*") == []


@pytest.mark.parametrize("content", ["/dev/zero", "big"])
def test_a_password_file_is_read_with_a_size_cap(content: str, tmp_path: Path) -> None:
    path = content
    if content == "big":
        big = tmp_path / "big"
        big.write_bytes(b"p" * 10_000)
        path = str(big)
    result = run("status", CELERY_CONFIG_REDIS_PASSWORD_FILE=path)
    assert result.returncode == 2
    assert "larger than 4096 bytes" in error_line(result)


HOSTILE = "\x1b[2J\x1b]0;owned\x07\u202eevil\r\n\x9bq"


def test_control_characters_from_redis_are_shown_escaped(
        redis_server: RedisServer, redis_client: redis.Redis) -> None:
    publish(redis_client, "celery_config", load_source(str(SOURCE)), source=HOSTILE)
    write_record(redis_client, "celery_config", {
        "service": "worker", "instance": f"host{HOSTILE}:1", "hostname": "host", "pid": "1",
        "version": "1", "sha256": HOSTILE, "source": HOSTILE, "applied_at": "",
        "restart_required": "", "last_error": HOSTILE, "live_reload": "true"}, ttl=60)
    for command in (["status", "--format", "table"], ["history", "--format", "table"]):
        result = run(*command, url=redis_server.url)
        assert result.returncode in (0, 1), result.stderr
        out = result.stdout
        assert not any(char in out for char in "\x1b\x07\u202e\r\x9b"), repr(out)
        assert "\\x1b[2J" in out and "\\u202e" in out, out
    # JSON output is JSON: its own escaping.
    history = json.loads(run("history", url=redis_server.url).stdout)
    assert history[0]["source"] == HOSTILE
