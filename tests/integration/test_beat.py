"""``celery beat`` on the shared configuration, against a real redis-server, real ``celery beat``
processes and a real ``celery worker`` (the demo's app, attached with
celery_config_sync.celery.attach): the published ``beat_schedule`` is followed live, and of two
beats exactly one sends, the other taking over when the first is killed, without an entry firing
twice for one due time. And the worker's own start: what `celery worker` reads of app.conf
before the configuration is loaded takes the published value.

Assertions are on behaviour (which beat sends, that an entry never fires again before its
interval is over, that the same process goes on); the times measured are printed, never
asserted against a budget.
"""

from __future__ import annotations

import re
import signal
import time
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import pytest
import redis

from celery import Celery
from celery_config_sync.codec import ConfigDocument
from celery_config_sync.fleet import read_fleet
from celery_config_sync.publishing import publish
from celery_config_sync.redis_keys import Keys
from celery_config_sync.source import load_source
from tests.conftest import SOURCE, RedisServer
from tests.polling import wait_for
from tests.service_processes import Service, running, start_beat, start_worker

pytestmark = pytest.mark.integration
NS = "celery_config"
KEYS = Keys(NS)
BASE = load_source(str(SOURCE), "rpi")
SENT = re.compile(r"\[(?P<when>[\d-]+ [\d:,]+): INFO/MainProcess\] Scheduler: Sending due task "
                  r"(?P<entry>\S+) \((?P<task>[^)]+)\)")


def with_schedule(**entries: dict[str, object]) -> ConfigDocument:
    base = {**BASE.base, "beat_schedule": entries}
    return ConfigDocument(BASE.queues, BASE.routes, base)


def sends(service: Service, entry: str) -> list[datetime]:
    """When ``service`` sent ``entry``, from Celery beat's own log lines."""
    found = []
    for line in service.log().splitlines():
        match = SENT.search(line)
        if match and match["entry"] == entry:
            found.append(datetime.strptime(match["when"], "%Y-%m-%d %H:%M:%S,%f"))
    return found


def gaps(times: list[datetime]) -> list[float]:
    ordered = sorted(times)
    return [(b - a).total_seconds() for a, b in pairwise(ordered)]


@pytest.fixture
def server(own_redis: RedisServer) -> RedisServer:
    return own_redis


@pytest.fixture
def client(server: RedisServer) -> redis.Redis:
    return server.client()


def test_beat_follows_the_published_schedule_live(server: RedisServer, client: redis.Redis,
                                                  tmp_path: Path) -> None:
    publish(client, NS, with_schedule(tick={"task": "demo.echo", "schedule": 1.0,
                                            "args": ["v1"]}), source="v1")
    worker = start_worker(server.url, tmp_path, "--concurrency", "1")
    beat = start_beat(server.url, tmp_path, CELERY_CONFIG_HEARTBEAT_INTERVAL="1",
                      CELERY_CONFIG_BEAT_LOCK_TIMEOUT="3")
    with running(beat, worker):
        wait_for(lambda: len(sends(beat, "tick")) >= 2, 60, "two sends of tick")
        # The worker ran what beat sent, routed by the shared configuration (demo.* -> celery).
        wait_for(lambda: worker.lines(r"Task demo\.echo\[.*\] succeeded.*'args': \['v1'\]"),
                 60, "the worker running beat's demo.echo")
        fleet = wait_for(lambda: [r for r in read_fleet(client, NS) if r["service"] == "beat"],
                         30, "beat's fleet record")
        assert fleet[0]["version"] == "1" and fleet[0]["source"] == "redis"

        # Add an entry, change nothing else: no restart, the new entry fires, tick goes on.
        started = time.monotonic()
        second = publish(client, NS, with_schedule(
            tick={"task": "demo.echo", "schedule": 1.0, "args": ["v1"]},
            added={"task": "demo.echo", "schedule": 1.0, "args": ["added live"]}), source="v2")
        wait_for(lambda: sends(beat, "added"), 60, "the added entry sent")
        print(f"\n[beat] published entry first sent {time.monotonic() - started:.2f} s after "
              "the publish")
        wait_for(lambda: worker.lines(r"'args': \['added live'\]"), 60,
                 "the worker running the added entry")
        wait_for(lambda: [r for r in read_fleet(client, NS)
                          if r["service"] == "beat" and r["version"] == str(second.version)],
                 30, "beat's record on version 2")

        # Remove tick, change added's arguments: tick stops, added sends the new ones.
        publish(client, NS, with_schedule(
            added={"task": "demo.echo", "schedule": 1.0, "args": ["changed live"]}),
            source="v3")
        wait_for(lambda: worker.lines(r"'args': \['changed live'\]"), 60,
                 "the changed entry's new arguments")
        removed_at = len(sends(beat, "tick"))
        time.sleep(3)
        assert len(sends(beat, "tick")) <= removed_at + 1  # at most one already under way
        assert beat.process.poll() is None  # the same process throughout
        assert beat.lines(r"beat schedule applied live")
        # An entry kept across publishes keeps its last run: never sent twice in one interval.
        assert min(gaps(sends(beat, "added"))) >= 0.9, gaps(sends(beat, "added"))


def test_of_two_beats_one_sends_and_the_other_takes_over(server: RedisServer,
                                                         client: redis.Redis,
                                                         tmp_path: Path) -> None:
    interval = 6.0  # long against the lock's TTL: a takeover must wait for the due time
    publish(client, NS, with_schedule(slow={"task": "demo.echo", "schedule": interval,
                                            "args": ["slow"]}), source="v1")
    timing = {"CELERY_CONFIG_BEAT_LOCK_TIMEOUT": "1.5", "CELERY_CONFIG_HEARTBEAT_INTERVAL": "1"}
    first = start_beat(server.url, tmp_path, name="beat-a", **timing)
    wait_for(lambda: first.lines("active beat"), 30, "the first beat active")
    second = start_beat(server.url, tmp_path, name="beat-b", **timing)
    with running(first, second):
        holder = client.get(KEYS.beat_lock)
        assert holder is not None and holder.decode().endswith(f":{first.pid}")
        wait_for(lambda: len(sends(first, "slow")) >= 1, 60, "the first beat sending")
        assert not sends(second, "slow") and not second.lines("active beat")
        beats = [r for r in read_fleet(client, NS) if r["service"] == "beat"]
        assert len(beats) == 2, beats

        # Kill the active beat just after a send: the other must wait for the due time.
        count = len(sends(first, "slow"))
        wait_for(lambda: len(sends(first, "slow")) > count, 60, "the next send")
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
        killed = time.monotonic()
        wait_for(lambda: second.lines("active beat"), 60, "the second beat taking over")
        took_over = time.monotonic() - killed
        wait_for(lambda: sends(second, "slow"), 60, "the second beat sending")
        holder = client.get(KEYS.beat_lock)
        assert holder is not None and holder.decode().endswith(f":{second.pid}")
        every = sorted(sends(first, "slow") + sends(second, "slow"))
        print(f"\n[beat] takeover {took_over:.2f} s after SIGKILL (lock TTL 1.5 s); sends of "
              f"'slow' {gaps(every)} s apart (interval {interval:g} s)")
        # Never twice for one due time: the second beat started from the last run the first
        # recorded in Redis, not from its own start.
        assert min(gaps(every)) >= interval - 0.5, gaps(every)


@pytest.mark.parametrize(("flags", "expected"), [((), 1 * 2), (("--prefetch-multiplier", "3"),
                                                               3 * 2)])
def test_the_worker_prefetches_by_the_published_multiplier_unless_told(
        server: RedisServer, client: redis.Redis, tmp_path: Path,
        flags: tuple[str, ...], expected: int) -> None:
    """`celery worker` reads its --prefetch-multiplier default from app.conf while it parses its
    options, before the shared configuration is loaded: the attached worker takes the published
    value (1 in the demo's rpi overlay) unless the flag is given."""
    assert BASE.base["worker_prefetch_multiplier"] == 1
    publish(client, NS, BASE, source="v1")
    worker = start_worker(server.url, tmp_path, "--concurrency", "2", *flags)
    with running(worker):
        app = Celery("probe", broker=server.url, set_as_current=False)
        try:
            replies = wait_for(lambda: app.control.inspect(timeout=2).stats(), 30,
                               "the worker's stats")
        finally:
            app.close()
        (stats,) = replies.values()
        assert stats["prefetch_count"] == expected, stats
