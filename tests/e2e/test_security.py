"""Locked-down Redis in the compose stack (issue 10): every service is its own ACL user with
its password in a secret file, the normal flows need nothing the ACL denies (``ACL LOG``
empty), every forbidden operation is NOPERM, an unauthenticated client gets nothing, no
password shows in ``docker inspect``, ``compose config`` or a log line, and a password is
rotated as the README says.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.compose_stack import MAKE_SECRETS, Stack, demo_tasks, docker
from tests.e2e.conftest import MEASUREMENTS, NAMESPACE, make_stack

pytestmark = pytest.mark.e2e
ROLES = ("health", "seeder", "worker", "api", "admin")

# Run inside a service container with its own credentials (its password file, its user):
# each command's outcome, "ok" or the error's class name.
PROBE = """
import json, sys, redis
user, commands = sys.argv[1], json.loads(sys.argv[2])
password = open("/run/secrets/redis-password").read().strip() if user else None
client = redis.Redis(host="redis", username=user or None, password=password)
outcomes = []
for command in commands:
    try:
        if command[0] in ("SUBSCRIBE", "PSUBSCRIBE"):
            pubsub = client.pubsub()
            getattr(pubsub, command[0].lower())(*command[1:])
            pubsub.get_message(timeout=2)
            pubsub.close()
        else:
            client.execute_command(*command)
        outcomes.append("ok")
    except redis.RedisError as exc:
        outcomes.append(type(exc).__name__)
print(json.dumps(outcomes))
"""

FORBIDDEN_FOR_SERVICES = [
    ["HSET", f"{NAMESPACE}:routes", "x", "{}"], ["SET", f"{NAMESPACE}:version", "9"],
    ["DEL", f"{NAMESPACE}:meta"], ["FLUSHALL"], ["FLUSHDB"], ["CONFIG", "SET", "maxmemory", "1"],
    ["KEYS", "*"], ["ACL", "LIST"], ["SHUTDOWN"], ["GET", "another-app:key"],
    ["SUBSCRIBE", "another-channel"], ["PSUBSCRIBE", "*"],
    ["PUBLISH", "another-channel", "x"],
]
# The API's user may not write what celery beat (the worker's user) writes: its lock and its
# entries' last run times (images/redis/roles.acl).
FORBIDDEN_FOR_API = [
    *FORBIDDEN_FOR_SERVICES,
    ["SET", f"{NAMESPACE}:beat:lock", "api:1", "NX", "PX", "10000"],
    ["HSET", f"{NAMESPACE}:beat:last_run", "x", "2030-01-01T00:00:00+00:00"],
]
FORBIDDEN_FOR_SEEDER = [
    ["FLUSHALL"], ["CONFIG", "SET", "maxmemory", "1"], ["KEYS", "*"],
    ["LPUSH", "celery:scan", "x"], ["GET", "celery:unacked"],
    ["SUBSCRIBE", f"{NAMESPACE}_updates"], ["HSET", "another-app:key", "f", "v"],
]


@pytest.fixture(scope="module")
def stack(engine: None) -> Iterator[Stack]:
    with make_stack("-sec") as current:
        current.up(timeout=240)
        yield current


def probe(stack: Stack, service: str, user: str, commands: list[list[str]]) -> list[str]:
    """Outcomes of ``commands`` run in ``service``'s container as ``user`` (empty: nobody)."""
    args = ["python3", "-c", PROBE, user, json.dumps(commands)]
    if service == "config-seeder":  # a one-shot: a fresh container of its image
        result = stack.compose("run", "--rm", "--no-deps", "-T", "--entrypoint", args[0],
                               "config-seeder", *args[1:], timeout=120)
    else:
        result = stack.compose("exec", "-T", service, *args, timeout=60)
    outcomes: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return outcomes


def test_the_normal_flows_need_nothing_the_acl_denies(stack: Stack) -> None:
    stack.redis_cli("ACL", "LOG", "RESET")
    ids = [stack.enqueue(task)["id"] for task in demo_tasks()]
    for task_id in ids:
        assert stack.result(task_id, 60)["state"] == "SUCCESS"
    # The operator's tools, each as its service's user: status (seeder image), inspect.
    status = stack.compose("run", "--rm", "--no-deps", "-T", "config-seeder", "status",
                           "--format", "json", check=False, timeout=120)
    assert status.returncode == 0, status.stderr
    assert {entry["service"] for entry in json.loads(status.stdout)["fleet"]} == {
        "worker", "beat", "api"}
    inspect = stack.compose("exec", "-T", "worker", "celery", "--app", "worker_service.app",
                            "inspect", "ping", "--timeout", "10", check=False, timeout=60)
    assert inspect.returncode == 0 and "pong" in inspect.stdout, inspect.stdout + inspect.stderr
    # celery beat (as the worker's user) holds its lock: its instance, <hostname>:<pid>.
    assert stack.redis_cli("GET", f"{NAMESPACE}:beat:lock") == \
        f"{stack.inspect('beat')['Config']['Hostname']}:1"
    assert stack.redis_cli("ACL", "LOG") == "", "denied during normal flows"
    keys = stack.redis_cli("--scan").split()
    assert keys and all(k.startswith(("celery:", f"{NAMESPACE}:")) for k in keys), keys


@pytest.mark.parametrize(("service", "forbidden"), [
    ("worker", FORBIDDEN_FOR_SERVICES), ("beat", FORBIDDEN_FOR_SERVICES),
    ("api", FORBIDDEN_FOR_API), ("config-seeder", FORBIDDEN_FOR_SEEDER)])
def test_each_service_is_refused_what_its_role_may_not_do(
        stack: Stack, service: str, forbidden: list[list[str]]) -> None:
    user = {"config-seeder": "seeder", "beat": "worker"}.get(service, service)
    outcomes = probe(stack, service, user, forbidden)
    assert outcomes == ["NoPermissionError"] * len(forbidden), list(zip(forbidden, outcomes,
                                                                        strict=True))
    # ...and may do what it is for: read the namespace.
    assert probe(stack, service, user, [["GET", f"{NAMESPACE}:version"]]) == ["ok"]


def test_an_unauthenticated_client_gets_nothing(stack: Stack) -> None:
    outcomes = probe(stack, "api", "", [["PING"], ["GET", f"{NAMESPACE}:version"], ["INFO"]])
    assert outcomes == ["AuthenticationError"] * 3
    config = stack.redis_cli("CONFIG", "GET", "protected-mode").split()
    assert config == ["protected-mode", "yes"]


def test_no_password_in_inspect_compose_config_or_logs(stack: Stack) -> None:
    passwords = {role: stack.password(role) for role in ROLES}
    assert len(set(passwords.values())) == len(ROLES)
    places = {"compose config": stack.compose("config").stdout,
              "logs": stack.compose("logs", "--no-color").stdout}
    for service in ("redis", "config-seeder", "worker", "beat", "api"):
        attrs = stack.inspect(service)
        places[f"inspect {service}"] = json.dumps({
            "env": attrs["Config"]["Env"], "labels": attrs["Config"]["Labels"],
            "cmd": attrs["Config"]["Cmd"], "entrypoint": attrs["Config"]["Entrypoint"],
            "args": attrs["Args"]})
        image = docker("image", "inspect", attrs["Image"]).stdout
        places[f"image {service}"] = image
    for where, text in places.items():
        for role, password in passwords.items():
            assert password not in text, f"the {role} password shows in {where}"


def test_rotating_a_password(stack: Stack) -> None:
    """README, "Rotate a password": replace the file, recreate Redis and the service."""
    old = stack.password("api")
    (stack.secrets / "redis-api").unlink()
    subprocess.run(["sh", str(MAKE_SECRETS), str(stack.secrets)], check=True)  # a new one
    new = stack.password("api")
    assert new != old
    started = time.monotonic()
    stack.compose("up", "--detach", "--wait", "--force-recreate", "--no-deps", "redis", "api",
                  timeout=240)
    stack.wait_ready(60)
    MEASUREMENTS.append(f"password rotation (api): redis and api recreated and ready in "
                        f"{time.monotonic() - started:.1f} s")
    assert probe(stack, "api", "api", [["GET", f"{NAMESPACE}:version"]]) == ["ok"]
    refused = stack.compose("exec", "-T", "api", "python3", "-c",
                            "import redis; redis.Redis(host='redis', username='api', "
                            f"password='{old}').ping()", check=False)
    assert "WRONGPASS" in refused.stderr or "invalid username-password" in refused.stderr
    # The worker kept its password: it reconnects to the new Redis and serves again.
    assert stack.result(stack.enqueue("demo.echo")["id"], 90)["state"] == "SUCCESS"
