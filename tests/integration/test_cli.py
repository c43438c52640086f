"""The CLI as a user runs it: one clear stderr line and the documented exit code, no traceback.
Exit codes: 0 ok, 1 difference or check failed, 2 usage or invalid input, 3 timed out."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from celery_config_sync.redis_keys import Keys
from tests.conftest import ROOT, SOURCE, RedisServer, free_port


def run(*args: str, url: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_CONFIG_")}
    environ.pop("REDIS_URL", None)
    if url:
        environ["CELERY_CONFIG_REDIS_URL"] = url
    environ.update(env)
    return subprocess.run([sys.executable, "-m", "celery_config_sync", *args], cwd=ROOT,
                          env=environ, capture_output=True, text=True, timeout=60, check=False)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("celery-config: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def snapshot_of(client: redis.Redis) -> dict[bytes, object]:
    return {key: client.dump(key) for key in sorted(client.keys("*"))}


@pytest.fixture
def published(redis_server: RedisServer, redis_client: redis.Redis) -> redis.Redis:
    result = run("publish", url=redis_server.url)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert (outcome["version"], outcome["changed"], len(outcome["sha256"])) == (1, True, 64)
    return redis_client


def write_source(tmp_path: Path, extra: str) -> str:
    path = tmp_path / "source.py"
    path.write_text(SOURCE.read_text() + "\n" + extra + "\n")
    return str(path)


INVALID_SOURCES = {
    "typo in a setting": ("task_serialiser = 'json'", "base.task_serialiser"),
    "route to an undeclared queue": ("task_routes['x.y'] = {'queue': 'ghost'}",
                                     "routes['x.y'].queue"),
    "credentials in a URL": ("broker_transport_options = {'fanout_url': 'redis://u:p@r:6379/0'}",
                             "base.broker_transport_options.fanout_url"),
    "unknown exchange type": ("task_queues = (*task_queues, Queue('h', Exchange('h', "
                              "type='headers')))", "queues['h'].exchange.type"),
    "source that raises": ("raise RuntimeError('boom')", "RuntimeError: boom"),
    "syntax error": ("def (:", "SyntaxError"),
}


@pytest.mark.parametrize("case", INVALID_SOURCES, ids=list(INVALID_SOURCES))
def test_invalid_source_is_refused_and_redis_is_untouched(case: str, tmp_path: Path,
                                                          redis_server: RedisServer,
                                                          published: redis.Redis) -> None:
    before = snapshot_of(published)
    extra, named = INVALID_SOURCES[case]
    result = run("publish", "--source", write_source(tmp_path, extra), url=redis_server.url)
    assert result.returncode == 2
    assert named in error_line(result)
    assert snapshot_of(published) == before


def test_missing_source_and_overlay(redis_server: RedisServer, published: redis.Redis) -> None:
    result = run("publish", "--source", "/nonexistent/source.py", url=redis_server.url)
    assert result.returncode == 2 and "not found" in error_line(result)
    result = run("publish", "--source", "no_such_module_anywhere", url=redis_server.url)
    assert result.returncode == 2 and "not found" in error_line(result)
    result = run("publish", "--overlay", "mars", url=redis_server.url)
    assert result.returncode == 2 and "overlay 'mars' not found" in error_line(result)


def test_publish_with_overlay_then_idempotent(redis_server: RedisServer,
                                              published: redis.Redis) -> None:
    result = run("publish", "--overlay", "rpi", url=redis_server.url)
    assert json.loads(result.stdout)["version"] == 2
    again = run("publish", url=redis_server.url, CELERY_CONFIG_OVERLAY="rpi")
    assert json.loads(again.stdout)["changed"] is False
    assert json.loads(published.hget(Keys("celery_config").base, "worker_concurrency")) == 2


def test_unreachable_redis_times_out_with_exit_3() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = run("publish", "--timeout", "1", url=url)
    assert result.returncode == 3 and "still unreachable after 1 s" in error_line(result)
    for command in (["wait", "--timeout", "1"], ["status"], ["show"]):
        result = run(*command, url=url)
        assert result.returncode == 3, (command, result.stderr)
        error_line(result)


def test_bad_url_and_bad_environment_are_usage_errors() -> None:
    result = run("status", url="http://example.invalid/")
    assert result.returncode == 2 and "invalid Redis URL" in error_line(result)
    result = run("wait", CELERY_CONFIG_WAIT_TIMEOUT="soon")
    assert result.returncode == 2 and "CELERY_CONFIG_WAIT_TIMEOUT" in error_line(result)
    result = run("wait", "--timeout", "-1")
    assert result.returncode == 2  # click's own usage error
    result = run("frobnicate")
    assert result.returncode == 2


def test_wait_exit_codes(redis_server: RedisServer, published: redis.Redis) -> None:
    assert run("wait", "--timeout", "2", url=redis_server.url).returncode == 0
    result = run("--namespace", "other", "wait", url=redis_server.url,
                 CELERY_CONFIG_WAIT_TIMEOUT="1")
    assert result.returncode == 3 and "timed out after 1 s" in error_line(result)


def test_status_and_show(redis_server: RedisServer, published: redis.Redis) -> None:
    status = json.loads(run("status", url=redis_server.url).stdout)
    assert status["version"] == 1 and len(status["sha256"]) == 64
    assert status["source"].endswith("source.py") and status["publisher"]
    assert isinstance(status["age_seconds"], int)
    shown = json.loads(run("show", url=redis_server.url).stdout)
    assert shown["routes"]["scan.discovery"] == {"queue": "scan"}
    table = run("show", "--format", "table", url=redis_server.url).stdout
    assert "covers" in table and "media (topic)" in table
    assert run("--namespace", "empty", "status", url=redis_server.url).returncode == 1


def test_diff_reports_each_change_and_exits_1(tmp_path: Path, redis_server: RedisServer,
                                              published: redis.Redis) -> None:
    same = run("diff", url=redis_server.url)
    assert (same.returncode, same.stdout.strip()) == (0, "identical")
    source = write_source(tmp_path, "task_time_limit = 1\ndel task_routes['scan.discovery']\n"
                                    "task_routes['scan.new'] = {'queue': 'scan'}")
    result = run("diff", "--source", source, url=redis_server.url)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "- routes['scan.discovery'] removed  (live)",
        "+ routes['scan.new'] added  (live)",
        "~ base['task_time_limit'] changed  (restart: worker)",
        "kind: restart-required; restart required: worker (task_time_limit)",
    ]
    live_only = write_source(tmp_path, "task_routes['scan.new'] = {'queue': 'scan'}")
    result = run("diff", "--source", live_only, url=redis_server.url)
    assert result.stdout.splitlines()[-1] == (
        "kind: live: every running service applies it without a restart")


def test_corrupt_data_is_one_line_not_a_traceback(redis_server: RedisServer,
                                                  published: redis.Redis) -> None:
    published.hset(Keys("celery_config").routes, "scan.discovery", "{oops")
    for command in ("show", "status"):
        result = run(command, url=redis_server.url)
        assert result.returncode == 2 and "meta.sha256" in error_line(result)


def test_export_then_load_without_redis(tmp_path: Path) -> None:
    snapshot = tmp_path / "snap" / "snapshot.json"
    assert run("export", "-o", str(snapshot)).returncode == 0
    data = json.loads(snapshot.read_text())
    assert data["version"] == 0 and len(data["config"]["queues"]) == 14
    # Readable by the services' unprivileged user when exported at image build time.
    assert snapshot.stat().st_mode & 0o777 == 0o644
    result = run("load", "--no-redis", CELERY_CONFIG_SNAPSHOT_PATH=str(snapshot),
                 CELERY_CONFIG_FALLBACK_PATH=str(tmp_path / "none.json"))
    assert result.returncode == 0
    assert json.loads(result.stdout)["source"] == "snapshot"
    nothing = run("load", "--no-redis", CELERY_CONFIG_SNAPSHOT_PATH=str(tmp_path / "x"),
                  CELERY_CONFIG_FALLBACK_PATH=str(tmp_path / "y"))
    assert nothing.returncode == 1 and "no Celery configuration available" in error_line(nothing)


def test_a_version_of_5000_digits_is_one_line_in_every_command(
        tmp_path: Path, redis_server: RedisServer, published: redis.Redis) -> None:
    """Python's int() refuses more than 4,300 digits with a ValueError of its own; each command
    reads the version through one parser that stops at Redis' 19 digits instead."""
    snapshot = tmp_path / "snapshot.json"
    assert run("export", "-o", str(snapshot)).returncode == 0
    files = {"CELERY_CONFIG_SNAPSHOT_PATH": str(snapshot),
             "CELERY_CONFIG_FALLBACK_PATH": str(tmp_path / "lkg.json")}
    published.set("celery_config:version", "9" * 5000)
    for command, code in (("show", 2), ("publish", 2), ("load", 0), ("status", 2)):
        result = run(command, url=redis_server.url, CELERY_CONFIG_WAIT_TIMEOUT="2", **files)
        assert "Traceback" not in result.stderr and len(result.stderr) < 2000, result.stderr
        assert result.returncode == code, (command, result.stderr)
        if code:
            assert "celery_config:version" in error_line(result) or (
                "version" in error_line(result)), result.stderr
    loaded = json.loads(run("load", url=redis_server.url, **files).stdout)
    assert loaded["source"] == "snapshot"  # the fallback chain, as for any malformed field


def test_wait_refuses_a_snapshot_exported_from_another_source(
        tmp_path: Path, redis_server: RedisServer, published: redis.Redis) -> None:
    snapshot = tmp_path / "snapshot.json"
    assert run("export", "--source", str(SOURCE), "-o", str(snapshot)).returncode == 0
    ours = {"CELERY_CONFIG_SNAPSHOT_PATH": str(snapshot), "CELERY_CONFIG_SOURCE": str(SOURCE)}
    assert run("wait", "--own-snapshot", url=redis_server.url, **ours).returncode == 0
    theirs = {**ours, "CELERY_CONFIG_SOURCE": "orders.celeryconfig"}
    refused = run("wait", "--own-snapshot", url=redis_server.url, **theirs)
    assert refused.returncode == 2
    assert f"exported from '{SOURCE}'" in error_line(refused)
    assert "export --source orders.celeryconfig" in error_line(refused)
    # Without the flag (a plain wait), or without a snapshot at all, nothing is refused.
    assert run("wait", url=redis_server.url, **theirs).returncode == 0
    snapshot.unlink()
    assert run("wait", "--own-snapshot", url=redis_server.url, **theirs).returncode == 0


def test_an_overlay_asked_of_a_source_without_overlays_is_a_notice(
        tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis) -> None:
    """The stack sets CELERY_CONFIG_OVERLAY=rpi; a project whose source has no overlays folder
    publishes without one, and says so. A source with overlays still refuses a missing one."""
    source = tmp_path / "celeryconfig.py"
    source.write_text("task_default_queue = 'default'\ntask_acks_late = True\n")
    result = run("publish", "--source", str(source), url=redis_server.url,
                 CELERY_CONFIG_OVERLAY="rpi")
    assert result.returncode == 0, result.stderr
    assert "celery-config: notice: overlay 'rpi' not applied: the source has no overlays" in (
        result.stderr)
    (tmp_path / "overlays").mkdir()
    missing = run("publish", "--source", str(source), url=redis_server.url,
                  CELERY_CONFIG_OVERLAY="rpi")
    assert missing.returncode == 2 and "overlay 'rpi' not found" in error_line(missing)
