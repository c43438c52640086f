"""The fleet view read against a real redis-server, whoever wrote under its prefix: a key of
another type, a record too big to be an instance's, or thousands of records never blank the
view nor make it read them all; what is left out is counted and said."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import redis

from celery_config_sync.fleet import MAX_FIELD_BYTES, RECORD_FIELDS, scan_fleet, write_record
from celery_config_sync.publishing import publish
from celery_config_sync.source import load_source
from tests.conftest import ROOT, SOURCE, RedisServer

pytestmark = pytest.mark.integration
NS = "fleettest"
DOCUMENT = load_source(str(SOURCE), "rpi")


def record(service: str, instance: str, sha256: str, **extra: str) -> dict[str, str]:
    base = {name: "" for name in RECORD_FIELDS if name != "ttl"}
    return {**base, "service": service, "instance": instance, "version": "1",
            "sha256": sha256, "source": "redis", "live_reload": "true", **extra}


def status(server: RedisServer, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "celery_config_sync", "--redis", server.url,
                             "--namespace", NS, "status", *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_bad_keys_under_the_prefix_are_skipped_and_counted(redis_server: RedisServer,
                                                          redis_client: redis.Redis) -> None:
    redis_client.flushall()
    sha = publish(redis_client, NS, DOCUMENT, source="fleet").sha256
    write_record(redis_client, NS, record("worker", "w:1", sha), ttl=30)
    write_record(redis_client, NS, record("api", "a:1", sha), ttl=30)
    redis_client.set(f"{NS}:applied:worker:string", "not a hash", ex=30)
    redis_client.rpush(f"{NS}:applied:api:list", "x")
    write_record(redis_client, NS, record("worker", "big", sha,
                                          last_error="x" * (MAX_FIELD_BYTES + 1)), ttl=30)

    fleet = scan_fleet(redis_client, NS)
    assert [r["instance"] for r in fleet.records] == ["a:1", "w:1"]
    assert fleet.skipped == {"wrong type": 2, "oversized": 1} and fleet.hidden == 0

    result = status(redis_server)
    assert result.returncode == 0, result.stdout + result.stderr  # both real ones in sync
    report = json.loads(result.stdout)
    assert report["in_sync"] and report["fleet_skipped"] == {"wrong type": 2, "oversized": 1}
    table = status(redis_server, "--format", "table").stdout
    assert "skipped 2 record(s) under the fleet's prefix: wrong type" in table
    assert "skipped 1 record(s) under the fleet's prefix: oversized" in table


def test_thousands_of_records_show_the_freshest_and_count_the_rest(
        redis_server: RedisServer, redis_client: redis.Redis) -> None:
    redis_client.flushall()
    sha = publish(redis_client, NS, DOCUMENT, source="fleet").sha256
    pipe = redis_client.pipeline(transaction=False)
    for index in range(5000):
        key = f"{NS}:applied:worker:fake{index}"
        pipe.hset(key, mapping=record("worker", f"fake{index}", sha, ttl="30"))
        pipe.expire(key, 30)
    pipe.execute()
    write_record(redis_client, NS, record("api", "fresh", sha), ttl=300)  # the most TTL left

    fleet = scan_fleet(redis_client, NS, limit=50)
    assert len(fleet.records) == 50 and fleet.hidden == 4951
    assert "fresh" in {r["instance"] for r in fleet.records}
    table = status(redis_server, "--format", "table").stdout
    assert "(and 4801 more instances, not shown)" in table
