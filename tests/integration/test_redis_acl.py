"""Redis users per role (issue 10) against a real redis-server started by the redis image's own
entrypoint (images/redis/redis-entrypoint) from its own rules (images/redis/roles.acl) and
password files: every flow of the project works as its role, with ``ACL LOG`` empty after it
(tasks with results, events, mingle, pidbox control, a queue added and one removed live, the
fleet records, status), and each role is refused (NOPERM) what it may not do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from celery_config_sync.beat import BeatLock
from celery_config_sync.codec import ConfigDocument
from celery_config_sync.history import list_history, read_version
from celery_config_sync.publishing import clear, publish
from celery_config_sync.redis_keys import Keys
from celery_config_sync.source import load_source
from tests.conftest import ROOT, SOURCE, require
from tests.figures import figure
from tests.integration.test_cli import error_line, run
from tests.integration.test_live_reload import with_reports
from tests.polling import wait_for
from tests.redis_process import ROLES, AclRedis, free_port, redis_server_binary, start_acl_redis
from tests.service_processes import running, start_api, start_beat, start_worker

pytestmark = pytest.mark.integration
NS = "celery_config"
KEYS = Keys(NS)
IMAGE = ROOT / "images" / "redis"
V1 = load_source(str(SOURCE), "rpi")
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    require(redis_server_binary() is not None, "redis-server is not installed")
    server = start_acl_redis(tmp_path_factory.mktemp("acl-redis"))
    yield server
    server.process.terminate()
    server.process.wait(10)


def test_the_acl_file_holds_hashes_only(acl_redis: AclRedis,
                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    text = (acl_redis.secrets.parent / "users.acl").read_text()
    lines = {line.split()[1]: line for line in text.splitlines()}
    assert set(lines) == {*ROLES, "default"}
    assert lines["default"] == "user default off ~* &* +@all"  # nobody logs in as it
    for role in ROLES:
        assert acl_redis.password(role) not in text
    assert oct((acl_redis.secrets.parent / "users.acl").stat().st_mode & 0o777) == "0o600"


def test_a_missing_password_file_stops_the_start_with_one_line(tmp_path: Path) -> None:
    secret_dir = tmp_path / "secrets"
    secret_dir.mkdir()
    (secret_dir / "redis-health").write_text("x\n")
    env = {**os.environ, "REDIS_CONF": "/dev/null", "REDIS_ROLES_FILE": str(IMAGE / "roles.acl"),
           "REDIS_SECRETS_DIR": str(secret_dir), "REDIS_ACL_FILE": str(tmp_path / "users.acl")}
    result = subprocess.run(["sh", str(IMAGE / "redis-entrypoint")], env=env, timeout=10,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"redis-entrypoint: error: {secret_dir}/redis-seeder: missing, empty or unreadable "
        "(the password of Redis user seeder)"]
    assert not (tmp_path / "users.acl").exists()


def test_unauthenticated_clients_get_nothing(acl_redis: AclRedis) -> None:
    anonymous = redis.Redis(port=acl_redis.port)
    for command in (("PING",), ("GET", KEYS.version), ("KEYS", "*")):
        with pytest.raises(redis.AuthenticationError):
            anonymous.execute_command(*command)
    assert acl_redis.client("health").ping()  # the healthcheck's user: PING, nothing else
    with pytest.raises(redis.exceptions.NoPermissionError):
        acl_redis.client("health").get(KEYS.version)
    with pytest.raises(redis.AuthenticationError):  # the default user is off
        redis.Redis(port=acl_redis.port, username="default", password="").ping()


def test_every_flow_works_as_its_role_with_the_acl_log_empty(
        acl_redis: AclRedis, tmp_path: Path) -> None:
    acl_redis.client("admin").execute_command("ACL", "LOG", "RESET")
    seeder = acl_redis.as_role("seeder")
    published = run("publish", url=acl_redis.url("seeder"), **seeder)
    assert published.returncode == 0, published.stderr
    worker = start_worker(acl_redis.url("worker"), tmp_path, "-E", "--concurrency", "2",
                          gossip=True,  # as the image runs it: mingle, gossip, events
                          CELERY_RESULT_BACKEND=acl_redis.url("worker", 1),
                          # as the image: metrics on, so the fleet's queue coverage is read
                          CELERY_CONFIG_METRICS_PORT=str(free_port()),
                          CELERY_CONFIG_HEARTBEAT_INTERVAL="1", **acl_redis.as_role("worker"))
    api = start_api(acl_redis.url("api"), tmp_path, CELERY_RESULT_BACKEND=acl_redis.url("api", 1),
                    CELERY_CONFIG_HEARTBEAT_INTERVAL="1", **acl_redis.as_role("api"))
    with running(worker, api):
        task = api.enqueue("scan.discovery")  # a task, its result through the backend
        assert api.result(task["id"])["state"] == "SUCCESS"
        # Live: a queue added (add_consumer), one removed (cancel_consumer), new route followed.
        publish(acl_redis.client("admin"), NS, with_reports(V1), source="v2")
        wait_for(lambda: api.get("/readyz")["version"] == 2, 60, "the API on v2")
        wait_for(lambda: "reports" in worker.log(), 60, "the worker consuming reports")
        report = api.enqueue("report.build")
        assert report["queue"] == "reports"
        assert api.result(report["id"])["state"] == "SUCCESS"
        # Pidbox: an operator's control command through the worker's own credentials.
        control = subprocess.run(
            [str(BIN / "celery"), "--app", "worker_service.app", "inspect", "active_queues",
             "--json", "--timeout", "5"], cwd=ROOT, capture_output=True, text=True, timeout=60,
            check=False, env={**os.environ, **acl_redis.as_role("worker"),
                              "CELERY_BROKER_URL": acl_redis.url("worker"),
                              "CELERY_CONFIG_REDIS_URL": acl_redis.url("worker"),
                              "CELERY_RESULT_BACKEND": acl_redis.url("worker", 1)})
        assert control.returncode == 0, control.stderr[-2000:]
        assert "reports" in control.stdout
        status = run("status", "--format", "json", url=acl_redis.url("seeder"), **seeder)
        fleet = json.loads(status.stdout)["fleet"]
        assert {entry["service"] for entry in fleet} == {"worker", "api"}, status.stderr
        # Both read the fleet's queue coverage after each heartbeat, as their own users.
        wait_for(lambda: api.get("/readyz")["unconsumed_queues"] == [], 30, "the API's view")
    assert acl_redis.acl_log() == [], "denied during the run"
    # Celery's keys are all under its prefix; nothing outside it but the namespace.
    names = {key.decode() for key in acl_redis.client("admin").scan_iter(count=1000)}
    assert names and all(k.startswith(("celery:", f"{NS}:")) or k == NS for k in names), names


def test_history_diff_and_rollback_work_as_the_seeder_with_the_acl_log_empty(
        acl_redis: AclRedis) -> None:
    """Every history flow as the seeder (publish recording and trimming, history, diff of two
    versions, rollback, clear), and the services reading the history as theirs."""
    clear(acl_redis.client("admin"), NS)
    acl_redis.client("admin").execute_command("ACL", "LOG", "RESET")
    seeder = {**acl_redis.as_role("seeder"), "CELERY_CONFIG_HISTORY_LENGTH": "2"}
    url = acl_redis.url("seeder")
    for args in ((), ("--overlay", "rpi"), ("--overlay", "dev")):  # the third trims version 1
        assert run("publish", *args, url=url, **seeder).returncode == 0
    listed = run("history", url=url, **seeder)
    assert [entry["version"] for entry in json.loads(listed.stdout)] == [3, 2], listed.stderr
    assert run("diff", "--from", "2", "--to", "3", url=url, **seeder).returncode == 1
    assert run("diff", "--to", "2", url=url, **seeder).returncode == 1
    rolled = run("rollback", "--to", "2", url=url, **seeder)
    assert rolled.returncode == 0 and json.loads(rolled.stdout)["version"] == 4, rolled.stderr
    assert json.loads(run("rollback", "--to", "4", url=url, **seeder).stdout)["changed"] is False
    for role in ("worker", "api"):  # the health page and the services read it as their own
        client = acl_redis.client(role)
        assert [entry.version for entry in list_history(client, NS)] == [4, 3]
        assert read_version(client, NS, 4)[0].source == "rollback:2"
    assert run("clear", "--yes", url=url, **seeder).returncode == 0
    assert not acl_redis.client("admin").exists(KEYS.history, KEYS.history_documents)
    assert acl_redis.acl_log() == [], "denied during the run"


FORBIDDEN: dict[str, list[tuple[str, ...]]] = {
    "seeder": [("FLUSHALL",), ("CONFIG", "SET", "maxmemory", "1"), ("KEYS", "*"),
               ("GET", "celery:unacked"), ("LPUSH", "celery:scan", "x"),
               ("SUBSCRIBE", "celery:/0.celeryev"), ("SUBSCRIBE", f"{NS}_updates")],
    "worker": [("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "SET", "maxmemory", "1"), ("KEYS", "*"),
               ("HSET", KEYS.routes, "x", "{}"), ("SET", KEYS.version, "9"),
               ("DEL", KEYS.meta), ("HDEL", KEYS.history, "1"),
               ("HSET", KEYS.history_documents, "1", "{}"), ("PUBLISH", "elsewhere", "x"),
               ("SUBSCRIBE", "elsewhere"),
               ("PSUBSCRIBE", "celery:*x"), ("ACL", "LIST"), ("CLIENT", "KILL", "ID", "1"),
               ("SCRIPT", "FLUSH"), ("SHUTDOWN",), ("MONITOR",), ("GET", "other-app:secret")],
    "health": [("GET", KEYS.version), ("INFO",), ("SUBSCRIBE", f"{NS}_updates")],
}
FORBIDDEN["api"] = FORBIDDEN["worker"]


@pytest.mark.parametrize("role", FORBIDDEN)
def test_each_role_is_refused_what_it_may_not_do(acl_redis: AclRedis, role: str) -> None:
    client = acl_redis.client(role)
    for command in FORBIDDEN[role]:
        if command[0] in ("SUBSCRIBE", "PSUBSCRIBE"):
            pubsub = client.pubsub()
            with pytest.raises(redis.exceptions.NoPermissionError):
                getattr(pubsub, command[0].lower())(*command[1:])
                pubsub.get_message(timeout=1)  # the refusal arrives as the reply
            pubsub.close()
            continue
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)


def rules_of(role: str) -> list[str]:
    """The rules of ``role``'s line in roles.acl (a line may name several roles)."""
    for line in (IMAGE / "roles.acl").read_text().splitlines():
        if line and not line.startswith("#") and role in line.split()[0].split(","):
            return line.split()[1:]
    raise AssertionError(f"no line for {role} in roles.acl")


def test_the_worker_line_is_the_api_line_plus_the_beat_keys() -> None:
    """The two lines are kept apart by what celery beat (the worker role) writes and by each
    service's own fleet records. Anything else added to one and not the other is a mistake."""
    worker, api = rules_of("worker"), rules_of("api")
    own = {"worker": ["~@NS@:applied:worker:*", "~@NS@:applied:beat:*", "~@NS@:beat:*"],
           "api": ["~@NS@:applied:api:*"]}
    assert [rule for rule in worker if rule not in own["worker"]] == [
        rule for rule in api if rule not in own["api"]]
    for role, rules in own.items():
        assert all(rules_of(role).count(rule) == 1 for rule in rules), role
    assert not any(rule.startswith("~@NS@:applied") and rule not in own[role]
                   for role in own for rule in rules_of(role))


@pytest.mark.parametrize(("role", "own", "others"), [
    ("worker", ("worker", "beat"), ("api", "shop")), ("api", ("api",), ("worker", "beat"))])
def test_each_service_writes_only_its_own_fleet_records(
        acl_redis: AclRedis, role: str, own: tuple[str, ...], others: tuple[str, ...]) -> None:
    """A client with one service's password cannot forge, flood or delete another's records
    (issue 18: any NS:applied:* key was writable by both)."""
    admin = acl_redis.client("admin")
    admin.execute_command("ACL", "LOG", "RESET")
    client = acl_redis.client(role)
    for service in own:
        key = f"{KEYS.applied_prefix}{service}:host:1"
        client.hset(key, "version", "1")
        client.expire(key, 30)
        client.delete(key)
    assert acl_redis.acl_log() == [], f"{role} refused its own records"
    for service in others:
        key = f"{KEYS.applied_prefix}{service}:host:1"
        admin.hset(key, "version", "1")
        for command in (("HSET", key, "version", "2"), ("DEL", key), ("EXPIRE", key, "1"),
                        ("SET", f"{KEYS.applied_prefix}{service}:x", "wrong type")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.execute_command(*command)
        assert admin.hget(key, "version") == b"1"
        assert client.hget(key, "version") == b"1"  # still readable: the fleet view
        admin.delete(key)


def test_the_worker_user_takes_the_beat_lock_and_the_api_user_cannot(
        acl_redis: AclRedis) -> None:
    admin = acl_redis.client("admin")
    admin.delete(KEYS.beat_lock, KEYS.beat_last_run)
    admin.execute_command("ACL", "LOG", "RESET")
    # The worker's user: the lock (SET NX PX, then redis-py's Lua scripts: renew, release) and
    # the last run times.
    lock = BeatLock(acl_redis.client("worker"), NS, 10, owner="beat-host:1")
    assert lock.hold() and admin.get(KEYS.beat_lock) == b"beat-host:1"
    assert lock.hold()  # renewed: reacquire's script
    assert 0 < admin.pttl(KEYS.beat_lock) <= 10_000
    worker = acl_redis.client("worker")
    worker.hset(KEYS.beat_last_run, "entry", "2024-01-01T00:00:00+00:00")
    assert worker.hgetall(KEYS.beat_last_run) == {b"entry": b"2024-01-01T00:00:00+00:00"}
    other = BeatLock(acl_redis.client("worker"), NS, 10, owner="beat-host:2")
    assert not other.hold()  # one active beat
    lock.release()  # the release script
    assert not admin.exists(KEYS.beat_lock)
    assert acl_redis.acl_log() == [], "denied to the worker's user"
    # The API's user reads them (the namespace is readable) and writes neither.
    api = acl_redis.client("api")
    for command in (("SET", KEYS.beat_lock, "api:1", "NX", "PX", "10000"),
                    ("HSET", KEYS.beat_last_run, "entry", "2030-01-01T00:00:00+00:00"),
                    ("PEXPIRE", KEYS.beat_last_run, "1"), ("DEL", KEYS.beat_last_run)):
        with pytest.raises(redis.exceptions.NoPermissionError):
            api.execute_command(*command)
    with pytest.raises(redis.exceptions.NoPermissionError):
        api.lock(KEYS.beat_lock, timeout=10).acquire(blocking=False)
    assert not BeatLock(api, NS, 10, owner="api:1").hold()
    assert not admin.exists(KEYS.beat_lock)
    assert api.hgetall(KEYS.beat_last_run) == {b"entry": b"2024-01-01T00:00:00+00:00"}
    admin.delete(KEYS.beat_last_run)


def test_celery_beat_runs_as_the_worker_user_with_the_acl_log_empty(
        acl_redis: AclRedis, tmp_path: Path) -> None:
    """``celery beat`` as the image runs it, as the worker's user: it loads, takes the lock,
    records its entries' last runs, sends their tasks and keeps its fleet record, and Redis
    denies it nothing."""
    admin = acl_redis.client("admin")
    base = {**V1.base, "beat_schedule": {
        "acl-echo": {"task": "demo.echo", "schedule": 1.0, "args": ["acl"]}}}
    publish(admin, NS, ConfigDocument(V1.queues, V1.routes, base, V1.app), source="beat-acl",
            force=True)
    admin.delete(KEYS.beat_lock, KEYS.beat_last_run)
    admin.execute_command("ACL", "LOG", "RESET")
    beat = start_beat(acl_redis.url("worker"), tmp_path,
                      CELERY_RESULT_BACKEND=acl_redis.url("worker", 1),
                      CELERY_CONFIG_BEAT_LOCK_TIMEOUT="6", CELERY_CONFIG_HEARTBEAT_INTERVAL="1",
                      **acl_redis.as_role("worker"))
    process = beat.process
    with running(beat):
        wait_for(lambda: beat.lines(r"Sending due task acl-echo \(demo\.echo\)")
                 or process.poll() is not None, 60, "beat sending acl-echo", interval=0.1)
        assert process.poll() is None, beat.log()[-3000:]
        holder = admin.get(KEYS.beat_lock)
        assert holder is not None and holder.decode().endswith(f":{process.pid}"), holder
        assert admin.hget(KEYS.beat_last_run, "acl-echo") is not None
        # Its task in demo.echo's queue, "celery" (nobody consumes it here), in one of the
        # lists of its priority steps; the log line comes just before the send.
        wait_for(lambda: sum(admin.llen(key) for key in admin.scan_iter("celery:celery*")
                             if admin.type(key) == b"list"), 60, "the task in its queue")
        wait_for(lambda: list(admin.scan_iter(f"{KEYS.applied_prefix}beat:*")), 60,
                 "beat's fleet record")
    assert beat.process.returncode == 0, beat.log()[-3000:]
    assert not admin.exists(KEYS.beat_lock)  # released on a clean stop
    assert "Traceback" not in beat.log(), beat.log()[-3000:]
    assert acl_redis.acl_log() == [], "denied during the run"
    admin.delete(*admin.scan_iter("celery:celery*"), KEYS.beat_last_run)


def test_a_wrong_password_file_is_one_line_exit_2(acl_redis: AclRedis, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    # A timeout far longer than run() waits (60 s): a retry loop would fail there.
    started = time.monotonic()
    result = run("show", url=acl_redis.url("seeder"),
                 CELERY_CONFIG_REDIS_PASSWORD_FILE=str(wrong), CELERY_CONFIG_WAIT_TIMEOUT="600")
    assert result.returncode == 2 and "refused access" in error_line(result)
    figure(f"show with a wrong password file, CELERY_CONFIG_WAIT_TIMEOUT=600: exit 2 after "
           f"{time.monotonic() - started:.2f} s")
    missing = run("show", url=acl_redis.url("seeder"),
                  CELERY_CONFIG_REDIS_PASSWORD_FILE=str(tmp_path / "absent"))
    assert missing.returncode == 2
    assert error_line(missing).startswith(f"celery-config: error: password file {tmp_path}")
    assert "No such file" in error_line(missing)
    both = run("show", url=f"redis://seeder:x@127.0.0.1:{acl_redis.port}/0",
               CELERY_CONFIG_REDIS_PASSWORD_FILE=acl_redis.password_file("seeder"))
    assert both.returncode == 2 and "keep the password in the file only" in error_line(both)


def test_a_restart_replays_every_transaction_from_the_aof(tmp_path: Path) -> None:
    """Redis 7.0 replays the AOF's MULTI/EXEC with the default user's permissions
    (redis/redis#14541): the ACL must not make a restart lose the published configuration."""
    server = start_acl_redis(tmp_path, aof=True)
    try:
        seeder = server.as_role("seeder")
        for _ in range(2):
            assert run("publish", "--force", url=server.url("seeder"), **seeder).returncode == 0
        before = run("show", url=server.url("seeder"), **seeder).stdout
    finally:
        server.process.terminate()
        server.process.wait(10)
    server = start_acl_redis(tmp_path, aof=True)  # the same data directory and passwords
    try:
        shown = run("show", url=server.url("seeder"), **seeder)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout == before
        assert server.client("admin").get(KEYS.version) == b"2"
    finally:
        server.process.terminate()
        server.process.wait(10)


def test_a_power_cut_inside_a_transaction_leaves_one_whole_version(tmp_path: Path) -> None:
    """The AOF cut inside the last publish's MULTI/EXEC: Redis comes back on the version
    before it, whole, and the next publish and restart keep version and meta agreeing (the
    entrypoint cuts the half transaction away: valkey-io/valkey#4342)."""
    server = start_acl_redis(tmp_path, aof=True)
    seeder = server.as_role("seeder")
    try:
        assert run("publish", url=server.url("seeder"), **seeder).returncode == 0
        first = run("show", url=server.url("seeder"), **seeder).stdout
        assert run("publish", "--force", url=server.url("seeder"), **seeder).returncode == 0
    finally:
        server.process.terminate()
        server.process.wait(10)
    incr = max((tmp_path / "appendonlydir").glob("*.incr.aof"),
               key=lambda path: int(path.name.split(".")[-3]))
    data = incr.read_bytes()
    # Cut a few bytes into the command after the transaction's INCRBY of the version: the
    # new hashes and the INCRBY are whole in the file, the rest of it and EXEC are not.
    bump = data.lower().rindex(b"incrby\r\n")
    assert data.lower().rindex(b"\r\nmulti\r\n") < bump
    after = data.index(b"*", bump)  # the next command
    incr.write_bytes(data[:after + 7])
    for expected_version in (b"1", b"2"):
        server = start_acl_redis(tmp_path, aof=True)
        try:
            admin = server.client("admin")
            assert admin.get(KEYS.version) == expected_version
            assert admin.hget(KEYS.meta, "version") == expected_version  # whole, agreeing
            shown = run("show", url=server.url("seeder"), **seeder)
            assert shown.returncode == 0, shown.stderr
            if expected_version == b"1":
                assert shown.stdout == first
                assert run("publish", "--force", url=server.url("seeder"),
                           **seeder).returncode == 0  # then restart once more
        finally:
            server.process.terminate()
            server.process.wait(10)
