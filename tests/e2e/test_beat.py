"""celery beat in the compose stack (rpi profile, this machine's platform): the published
``beat_schedule`` is sent by the stack's one beat and executed by the worker; a publish that
adds an entry, then one that removes it, is followed live by the running beat (same container,
never restarted); ``celery-config status`` lists the beat, in sync; and beat holds the lock
that makes it the active one.

One stack serves the module, in the order written. The demo source sends ``demo.echo`` with
args ["from beat"] every 30 s (config/celery/source.py); Celery runs a new entry one interval
after beat starts, so the first one comes about 30 s after beat's start.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from celery_config_sync.source import load_source
from tests.compose_stack import Stack, docker, parse_docker_time
from tests.conftest import SOURCE
from tests.e2e.conftest import MEASUREMENTS, NAMESPACE, make_stack
from tests.e2e.live_sources import document_of, fleet_status, publish_from, source_dir
from tests.figures import show
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

DEMO_ENTRY = "demo-echo-every-30s"
ADDED_ENTRY = "demo-added-live"
# The source's own schedule plus one entry every 5 s (a live change: beat_schedule only).
WITH_ADDED_ENTRY = f'''
beat_schedule = {{**beat_schedule, "{ADDED_ENTRY}": {{
    "task": "demo.echo", "schedule": 5.0, "args": ["added live"]}}}}
'''
LOCK = f"{NAMESPACE}:beat:lock"
LAST_RUN = f"{NAMESPACE}:beat:last_run"


@pytest.fixture(scope="module")
def stack(engine: None) -> Iterator[Stack]:
    # A 2 s heartbeat, so that the fleet view follows within the test's patience.
    with make_stack("-beat", CELERY_CONFIG_HEARTBEAT_INTERVAL="2") as current:
        current.up(timeout=240)
        yield current


def lines_at(stack: Stack, service: str, pattern: str) -> list[tuple[datetime, str]]:
    """(docker's timestamp, line) of each line of ``service``'s log matching ``pattern``."""
    found = []
    for line in stack.logs(service, timestamps=True).splitlines():
        stamp, _, text = line.partition(" ")
        if re.search(pattern, text):
            found.append((parse_docker_time(stamp), text))
    return found


def executed(stack: Stack, argument: str) -> list[tuple[datetime, str]]:
    """The worker's lines for a demo.echo that succeeded with args [argument]."""
    return lines_at(stack, "worker", r"Task demo\.echo\[[0-9a-f-]+\] succeeded in .*"
                    rf"'args': \['{re.escape(argument)}'\]")


def sent(stack: Stack, entry: str) -> list[tuple[datetime, str]]:
    """Beat's lines sending ``entry``, with docker's timestamp (when the line reached it)."""
    return lines_at(stack, "beat", rf"Sending due task {re.escape(entry)} \(demo\.echo\)")


def own_time(line: str) -> datetime:
    """The time a line of beat's log carries itself (Celery's ``[%Y-%m-%d %H:%M:%S,%f: ...``
    or the library's ``%Y-%m-%d %H:%M:%S,%f LEVEL [TAG] ...``): when beat wrote it, whatever
    the delay until docker read it. The container's clock, naive."""
    found = re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", line)
    assert found, line
    return datetime.strptime(found.group(0), "%Y-%m-%d %H:%M:%S,%f")


def sent_times(stack: Stack, entry: str) -> list[datetime]:
    return [own_time(line) for _, line in sent(stack, entry)]


def measured(line: str) -> None:
    """A figure: printed now and at the end of the run, never asserted."""
    MEASUREMENTS.append(line)
    show(line)


def identity(stack: Stack) -> tuple[str, str, int]:
    """The beat container's id, start time and restart count: unchanged means not restarted."""
    attrs = stack.inspect("beat")
    return attrs["Id"], attrs["State"]["StartedAt"], int(attrs["RestartCount"])


def test_the_published_schedule_is_sent_by_beat_and_run_by_the_worker(stack: Stack) -> None:
    started = parse_docker_time(stack.inspect("beat")["State"]["StartedAt"])
    wait_until(lambda: executed(stack, "from beat"), 90,
               lambda: f"the worker running beat's demo.echo\n{stack.logs('beat')[-3000:]}\n"
               f"{stack.logs('worker')[-3000:]}")
    ran_at, line = executed(stack, "from beat")[0]
    assert "'config_source': 'redis'" in line, line
    (sent_at, _), *_ = sent(stack, DEMO_ENTRY)
    measured(f"beat: first scheduled demo.echo ({DEMO_ENTRY}) sent "
             f"{(sent_at - started).total_seconds():.1f} s after beat's container started, run "
             f"by the worker {(ran_at - started).total_seconds():.1f} s after (Celery runs a new "
             f"entry one interval, 30 s, after beat starts)")
    logs = stack.logs("beat")
    assert "[CELERY_BEAT] Celery configuration loaded from redis: version 1" in logs, logs
    assert "celery_config_sync.beat.LiveScheduler" in logs, logs
    assert "[CELERY_BEAT] active beat" in logs, logs
    assert "Traceback" not in logs, logs
    # The one beat holds the lock: its instance, <hostname>:<pid> (the container's short id,
    # and PID 1: the gate execs celery).
    holder = stack.redis_cli("GET", LOCK)
    assert holder == f"{stack.inspect('beat')['Config']['Hostname']}:1", holder
    assert stack.redis_cli("HEXISTS", LAST_RUN, DEMO_ENTRY) == "1"


def test_status_lists_the_beat_in_sync(stack: Stack) -> None:
    source = load_source(str(SOURCE), "rpi")

    def beat_in_sync() -> bool:
        code, report = fleet_status(stack)
        beats = [r for r in report["fleet"] if r["service"] == "beat"]
        return (code == 0 and len(beats) == 1 and beats[0]["sha256"] == source.sha256
                and beats[0]["source"] == "redis" and not beats[0]["problems"])

    wait_until(beat_in_sync, 60, "a beat record in sync in `celery-config status`")
    code, report = fleet_status(stack)
    assert code == 0, report
    assert sorted(r["service"] for r in report["fleet"]) == ["api", "beat", "worker"]
    (beat,) = [r for r in report["fleet"] if r["service"] == "beat"]
    assert beat["hostname"] == stack.inspect("beat")["Config"]["Hostname"], beat
    assert int(beat["version"]) == report["version"] == 1, (beat, report["version"])


def test_an_added_entry_is_followed_live_then_a_removed_one(stack: Stack,
                                                            tmp_path: Path) -> None:
    """A publish that adds an entry every 5 s: the running beat sends it and the worker runs
    it, the beat never restarted. The entry that was already there keeps its pace (a publish
    neither fires it again nor skips it). Then the source again without it: beat stops
    sending it, live too."""
    before = identity(stack)
    directory = source_dir(tmp_path / "added", WITH_ADDED_ENTRY)
    expected = document_of(directory)
    assert set(expected.base["beat_schedule"]) == {DEMO_ENTRY, ADDED_ENTRY}
    published = publish_from(stack, directory, "seed-beat-added")
    assert (published["version"], published["sha256"]) == (2, expected.sha256)
    assert published["change"]["kind"] == "live", published
    applied_at = time.monotonic()
    wait_until(lambda: executed(stack, "added live"), 60,
               lambda: f"the worker running the entry added live\n{stack.logs('beat')[-3000:]}")
    measured(f"beat: an entry added live (every 5 s) first run by the worker "
             f"{time.monotonic() - applied_at:.1f} s after the seeder exited")
    wait_until(lambda: len(sent(stack, ADDED_ENTRY)) >= 3, 60, "the added entry, 3 times")
    logs = stack.logs("beat")
    assert f"beat schedule applied live: 2 entries (added {ADDED_ENTRY}, removed none)" \
        in logs, logs
    assert identity(stack) == before  # the same container, never restarted
    # Each entry at its own pace, from the times beat wrote its lines: never sooner than its
    # interval after the previous send (later is possible on a busy machine). The demo entry
    # was there before the publish: the publish neither fires it again nor resets it.
    for entry, every in ((ADDED_ENTRY, 5), (DEMO_ENTRY, 30)):
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(sent_times(stack, entry))]
        assert all(gap > every - 1 for gap in gaps), (entry, gaps)

    def beat_on(sha256: str) -> bool:
        code, report = fleet_status(stack)
        return code == 0 and [r["sha256"] for r in report["fleet"]
                              if r["service"] == "beat"] == [sha256]

    wait_until(lambda: beat_on(expected.sha256), 60, "the beat's fleet record on version 2")

    # The project's source again (the entry gone): version 3, and no more sends of it once
    # beat applied it.
    again = publish_from(stack, source_dir(tmp_path / "original", ""), "seed-beat-removed")
    assert again["version"] == 3, again
    marker = f"beat schedule applied live: 1 entries (added none, removed {ADDED_ENTRY})"
    wait_until(lambda: lines_at(stack, "beat", re.escape(marker)), 60,
               lambda: f"beat applying the removal\n{stack.logs('beat')[-3000:]}")
    ((_, line),) = lines_at(stack, "beat", re.escape(marker))
    removed_at = own_time(line)
    time.sleep(12)  # more than two of its intervals
    assert not [at for at in sent_times(stack, ADDED_ENTRY) if at > removed_at], \
        stack.logs("beat")[-3000:]
    assert identity(stack) == before
    assert stack.redis_cli("GET", LOCK).endswith(":1")


def test_beat_stops_with_exit_0_and_gives_its_lock_back(stack: Stack) -> None:
    """SIGTERM (`compose stop`, a generous grace: a kill would be exit 137): beat exits 0 and
    releases the lock, so that a standby (Swarm, Kubernetes) takes over at its next tick
    rather than after the lock's TTL. How long it took is printed."""
    assert stack.redis_cli("GET", LOCK)
    started = time.monotonic()
    stack.compose("stop", "--timeout", "60", "beat", timeout=180)
    took = time.monotonic() - started
    state = stack.inspect("beat")["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 0), (state, stack.logs("beat"))
    assert stack.redis_cli("EXISTS", LOCK) == "0"
    measured(f"beat: `compose stop` to exit 0, lock released: {took:.1f} s")
    # `docker start`, not `compose start`, which would run the one-shot seeder again.
    docker("start", stack.container("beat"))
    wait_until(lambda: stack.health("beat") == "healthy", 120, "beat healthy again")
    wait_until(lambda: stack.redis_cli("GET", LOCK) != "", 30, "beat holding the lock again")
