"""The faults a Raspberry Pi meets, in the real compose stack (rpi profile, this machine's
platform): Redis killed while a loop publishes, a power cut that truncates the AOF inside the
last transaction, a service cut off the network, Redis's disk full, and a read-only
last-known-good volume (a worn SD card).

Each case asserts what the user sees, that nothing acknowledged is lost, and measures how long
recovery takes (printed at the end of the run, never asserted).

The disk-full case runs a stack of its own (redis alone, /data on a small tmpfs); the others
share one stack, in the order written, each leaving it as it found it: redis up, worker and
api running and in sync with what Redis holds.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.compose_stack import COMPOSE_FILE, Stack, docker, image_ref
from tests.e2e.conftest import MEASUREMENTS, NAMESPACE, make_stack
from tests.e2e.live_sources import document_of, fleet_status, publish_from, source_dir
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

VERSION, META = f"{NAMESPACE}:version", f"{NAMESPACE}:meta"


# ----------------------------------------------------------------------------- helpers
def variant(tmp: Path, tag: str) -> tuple[Path, str]:
    """A source folder whose content is the project's plus one route of its own (a live
    change): its path and its sha256."""
    where = tmp / tag
    where.mkdir(parents=True)
    tmp.chmod(0o755)  # the mount's root, entered by the seeder's uid 10001
    directory = source_dir(where, f'task_routes["fault.{tag}"] = {{"queue": "scan"}}')
    return directory, document_of(directory).sha256


def cli(stack: Stack, *args: str, volume: str | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``celery-config ARGS`` in a one-off container of the seeder's image, on the stack's
    network: what an operator runs."""
    options = ["--volume", volume] if volume else []
    return stack.compose("run", "--rm", "--no-deps", "-T", *options, "config-seeder", *args,
                         check=False, timeout=timeout)


def held(stack: Stack) -> dict[str, Any]:
    """What Redis holds, read two ways: raw keys (redis-cli) and ``celery-config show``, which
    reads every key in one transaction and verifies the sha256 over the stored bytes."""
    shown = cli(stack, "show")
    assert shown.returncode == 0, shown.stderr
    assert "Traceback" not in shown.stderr
    document = json.loads(shown.stdout)
    raw = {"version": stack.redis_cli("GET", VERSION),
           "meta_version": stack.redis_cli("HGET", META, "version"),
           "meta_sha256": stack.redis_cli("HGET", META, "sha256"),
           "routes": int(stack.redis_cli("HLEN", f"{NAMESPACE}:routes"))}
    # version, meta and hashes agree: one whole version.
    assert raw["version"] == raw["meta_version"] == str(document["version"]), (raw, document)
    assert raw["meta_sha256"] == document["sha256"], (raw, document["sha256"])
    assert raw["routes"] == len(document["routes"]), raw
    return {"version": int(document["version"]), "sha256": document["sha256"],
            "routes": document["routes"]}


def api_readyz_inside(stack: Stack) -> dict[str, Any] | None:
    """/readyz asked from inside the API container (its loopback): works while the container
    is cut off every network, when the published port cannot reach it."""
    probe = ("import json, urllib.request; print(urllib.request.urlopen("
             "'http://127.0.0.1:8000/readyz', timeout=5).read().decode())")
    result = docker("exec", stack.container("api"), "python3", "-c", probe, check=False,
                    timeout=30)
    if result.returncode != 0:
        return None
    body: dict[str, Any] = json.loads(result.stdout)
    return body


def in_sync(stack: Stack, sha256: str, seen: dict[str, Any] | None = None) -> bool:
    """Every service (worker, beat, api) applies ``sha256``, which is what Redis holds: /readyz
    and the fleet view.
    ``seen`` keeps what was last observed, for the failure's message."""
    seen = {} if seen is None else seen
    ready = seen["readyz"] = stack.readyz()
    if not ready or ready["sha256"] != sha256 or ready["source"] != "redis":
        return False
    code, report = fleet_status(stack)
    seen["status"] = (code, report)
    return (code == 0 and report["sha256"] == sha256 and len(report["fleet"]) == 3
            and all(record["sha256"] == sha256 for record in report["fleet"]))


def wait_in_sync(stack: Stack, sha256: str, timeout: float, what: str) -> None:
    seen: dict[str, Any] = {}
    try:
        wait_until(lambda: in_sync(stack, sha256, seen), timeout, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: wanted {sha256[:12]}, last seen {seen}\n"
                             f"{stack.logs()}") from None


def redis_answers(stack: Stack) -> bool:
    try:
        return stack.redis_cli("PING") == "PONG"
    except AssertionError:  # not running yet, or loading its AOF
        return False


def restore(stack: Stack, *services: str) -> None:
    """Whatever a case stopped, started again (a no-op for what runs): a failed case does not
    take the next ones down with it. ``docker start``, not ``compose start``, which would run
    the one-shot seeder again (a dependency of worker and api) and publish the image's source
    over what the case published."""
    for service in services or ("redis", "worker", "beat", "api"):
        docker("start", stack.container(service), check=False, timeout=120)


def with_override(stack: Stack, override: Path, *args: str,
                  timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """compose ARGS with an override file of this module's on top of compose/compose.yaml."""
    command = stack.command(*args)
    at = command.index(str(COMPOSE_FILE)) + 1
    command[at:at] = ["-f", str(override)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                            env=stack.environ(), check=False)
    assert result.returncode == 0, (command, result.stdout, result.stderr, stack.logs())
    return result


def redis_volume(stack: Stack) -> str:
    mounts = stack.inspect("redis")["Mounts"]
    return str(next(m["Name"] for m in mounts if m["Destination"] == "/data"))


def in_redis_volume(stack: Stack, volume: str, script: str) -> subprocess.CompletedProcess[bytes]:
    """``sh -c SCRIPT`` in a throwaway container of the redis image (its user, 999, owns the
    files) with the stack's redis-data volume on /data, Redis itself stopped."""
    result = subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "sh",
                             "--volume", f"{volume}:/data", image_ref("redis"), "-c", script],
                            capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, (script, result.stdout, result.stderr)
    return result


# ----------------------------------------------------------------------- 4. disk full
# /data a tmpfs instead of the redis-data volume (redis's only volume). The short syntax,
# since compose 2.26 ignores a tmpfs mount's mode in the long one: /data would be root's.
DISK_FULL_OVERRIDE = """\
services:
  redis:
    volumes: !reset []
    tmpfs:
      - /data:size=160k,uid=999,gid=999,mode=0750
"""


def test_disk_full_publish_fails_in_one_line_and_the_published_version_stays_whole(
        engine: None, tmp_path: Path) -> None:
    """Redis's /data on a 160 KiB tmpfs (an SD card with no room left): each forced publish
    adds about 14 KiB to the AOF, until a write fails. Redis then refuses every write
    (MISCONF) and keeps serving reads."""
    override = tmp_path / "disk-full.yaml"
    override.write_text(DISK_FULL_OVERRIDE)
    with make_stack("-disk") as stack:
        with_override(stack, override, "up", "--detach", "--wait", "--no-deps", "redis")
        assert stack.inspect("redis")["HostConfig"]["Tmpfs"]["/data"].startswith("size=160k")
        script = ("for i in $(seq 1 40); do celery-config --log-level WARNING publish --force "
                  "--timeout 5 || { echo \"exit $?\"; exit 0; }; done")
        started = time.monotonic()
        loop = stack.compose("run", "--rm", "--no-deps", "-T", "--entrypoint", "sh",
                             "config-seeder", "-c", script, check=False, timeout=600)
        loop_s = time.monotonic() - started
        lines = loop.stdout.strip().splitlines()
        assert lines and lines[-1].startswith("exit "), (loop.stdout, loop.stderr)
        code = int(lines[-1].split()[1])
        acked = [json.loads(line) for line in lines[:-1]]
        # What the user sees: a non-zero exit and exactly one error line, naming the cause.
        assert code != 0 and len(acked) >= 2, (loop.stdout, loop.stderr)
        errors = [line for line in loop.stderr.splitlines() if "celery-config: error:" in line]
        assert len(errors) == 1 and errors[0].startswith("celery-config: error: "), loop.stderr
        assert "No space left on device" in errors[0], errors[0]
        assert "Traceback" not in loop.stderr
        # Once more, as an operator would, with a timeout longer than cli() waits for the
        # command (120 s): Redis answers, so the refusal is reported at once; a publish that
        # waited its timeout out would fail there. How long it took is printed.
        tried = time.monotonic()
        again = cli(stack, "publish", "--force", "--timeout", "600")
        refused_in = time.monotonic() - tried
        assert again.returncode == code and again.stdout == "", (again.stdout, again.stderr)
        assert [line for line in again.stderr.splitlines()
                if line.startswith("celery-config: error:")] == [errors[0]], again.stderr
        last = acked[-1]
        # Nothing lost: the last acknowledged version is there, whole (show checks the sha256).
        assert [entry["version"] for entry in acked] == list(range(1, len(acked) + 1))
        now = held(stack)
        assert (now["version"], now["sha256"]) == (last["version"], last["sha256"]), (now, last)
        # A gate still sees the published version: reads keep working on a full disk.
        waited = cli(stack, "wait", "--timeout", "5")
        assert waited.returncode == 0, waited.stderr
        MEASUREMENTS.append(
            f"fault disk full (160 KiB tmpfs): {len(acked)} versions published, then publish "
            f"exit {code} in one line, {refused_in:.2f} s for a publish to report it "
            f"({errors[0][:100]}...); loop {loop_s:.1f} s; version {last['version']} still "
            f"readable and whole")


# ------------------------------------------------------------------- the shared stack
@pytest.fixture(scope="module")
def shared_stack(engine: None) -> Iterator[Stack]:
    # A 2 s heartbeat, so that the fleet view follows within the test's patience.
    with make_stack("-faults", CELERY_CONFIG_HEARTBEAT_INTERVAL="2") as current:
        current.up(timeout=240)
        yield current


@pytest.fixture
def stack(shared_stack: Stack) -> Iterator[Stack]:
    """The shared stack, given back running and with a configuration published, whatever the
    case did to it (a case that lost the data would otherwise fail every case after it)."""
    yield shared_stack
    restore(shared_stack)
    wait_until(lambda: redis_answers(shared_stack), 60, "redis answering")
    if cli(shared_stack, "show").returncode != 0:
        assert cli(shared_stack, "publish", "--force").returncode == 0


# ------------------------------------------------------------ 1. Redis killed mid-publish
class PublishLoop:
    """One seeder container publishing the variants one after another (``try N`` before each,
    the publish's JSON line after it); it stops at the first failure."""

    def __init__(self, stack: Stack, root: Path, count: int) -> None:
        script = (f"for i in $(seq 1 {count}); do echo \"try $i\"; celery-config --log-level "
                  "WARNING publish --source /variants/v$i/celery/source.py --timeout 2 "
                  "|| exit 0; done")
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            stack.command("run", "--rm", "--no-deps", "-T", "--volume", f"{root}:/variants:ro",
                          "--entrypoint", "sh", "config-seeder", "-c", script),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=stack.environ())
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.strip())

    def published(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.lines) if line.startswith("{")]

    def tried(self) -> list[int]:
        return [int(line.split()[1]) for line in list(self.lines) if line.startswith("try ")]

    def finish(self, timeout: float) -> str:
        try:
            _, err = self.process.communicate(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        self.reader.join(5)
        return err


def test_redis_killed_while_publishing_restarts_on_one_whole_published_version(
        stack: Stack, tmp_path: Path) -> None:
    count = 30
    shas = {i: variant(tmp_path, f"v{i}")[1] for i in range(1, count + 1)}
    before = held(stack)["version"]
    loop = PublishLoop(stack, tmp_path, count)
    try:
        wait_until(lambda: len(loop.published()) >= 4 or loop.process.poll() is not None, 120,
                   "four publishes", interval=0.05)
        assert loop.process.poll() is None, (loop.lines, loop.finish(10))
        docker("kill", "--signal", "KILL", stack.container("redis"))
        killed = time.monotonic()
    finally:
        err = loop.finish(60)
    acked = loop.published()
    tried = loop.tried()
    assert "Traceback" not in err, err
    # Every acknowledged publish: (version, sha256) of the variant it published.
    assert [entry["sha256"] for entry in acked] == [shas[i] for i in tried[:len(acked)]]
    assert [entry["version"] for entry in acked] == list(
        range(before + 1, before + 1 + len(acked)))
    candidates = {(entry["version"], entry["sha256"]) for entry in acked}
    if len(tried) > len(acked):  # the publish in flight at the kill may or may not have landed
        candidates.add((before + len(acked) + 1, shas[tried[len(acked)]]))

    # Compose's restart policy (unless-stopped) does not restart a container stopped by
    # `docker kill`: the operator (or a reboot) starts it again.
    time.sleep(2)
    restarted_by_policy = stack.inspect("redis")["State"]["Running"]
    if not restarted_by_policy:
        restore(stack, "redis")
    wait_until(lambda: redis_answers(stack), 60, "redis answering again", interval=0.1)
    redis_back = time.monotonic() - killed
    now = held(stack)
    # Exactly one of the published versions, and none acknowledged is lost (a kill loses no
    # write() already made: the AOF is in the page cache).
    assert (now["version"], now["sha256"]) in candidates, (now, candidates)
    assert now["version"] >= acked[-1]["version"], (now, acked[-1])
    assert f'fault.v{tried[now["version"] - before - 1]}' in now["routes"]

    wait_in_sync(stack, now["sha256"], 90, "worker, beat and api on what Redis holds")
    caught_up = time.monotonic() - killed
    body = stack.enqueue("scan.discovery")
    status = stack.result(body["id"], 90)
    assert status["state"] == "SUCCESS" and status["result"]["config_version"] == now[
        "version"], status
    MEASUREMENTS.append(
        f"fault redis SIGKILL during a publish loop: {len(acked)} published, kill, "
        f"{'restart policy' if restarted_by_policy else 'compose start'}: redis answering "
        f"{redis_back:.2f} s after the kill, on version {now['version']} (last acknowledged "
        f"{acked[-1]['version']}); worker and api in sync {caught_up:.2f} s after the kill")


# ------------------------------------------------------------------------ 2. power cut
# The AOF's commands, as Redis writes them (it propagates MULTI and EXEC in lower case).
# redis-py sends INCR as INCRBY key 1.
INCR_VERSION = re.compile(rb"\*[23]\r\n\$[46]\r\nincr(?:by)?\r\n\$%d\r\n%s\r\n(?:\$\d+\r\n\d+\r\n)?"
                          % (len(VERSION), re.escape(VERSION.encode())), re.IGNORECASE)
MULTI = re.compile(rb"\*1\r\n\$5\r\nmulti\r\n", re.IGNORECASE)
EXEC = re.compile(rb"\*1\r\n\$4\r\nexec\r\n", re.IGNORECASE)


def test_power_cut_inside_the_last_transaction_leaves_one_whole_version(
        stack: Stack, tmp_path: Path) -> None:
    previous = held(stack)
    # Nothing but the publish writes after it: worker, beat and api stopped (no heartbeat, no
    # broker, no beat lock).
    stack.compose("stop", "--timeout", "10", "worker", "beat", "api")
    directory, sha = variant(tmp_path, "cut")
    printed = publish_from(stack, directory, "seed-cut")
    assert (printed["version"], printed["sha256"]) == (previous["version"] + 1, sha)
    volume = redis_volume(stack)
    stack.compose("stop", "--timeout", "10", "redis")

    # The incr file holding the publish's transaction; cut inside it, mid-command, just
    # after its INCR of the version: the hashes of the new version are in the file, its
    # version and meta are not, nor EXEC.
    names = in_redis_volume(stack, volume, "ls /data/appendonlydir").stdout.decode().split()
    incr = sorted((n for n in names if n.endswith(".incr.aof")),
                  key=lambda n: int(n.split(".")[-3]))[-1]
    path = f"/data/appendonlydir/{incr}"
    data = in_redis_volume(stack, volume, f"cat {path}").stdout
    bump = list(INCR_VERSION.finditer(data))[-1]
    multi = [m.start() for m in MULTI.finditer(data, 0, bump.start())][-1]
    ending = EXEC.search(data, bump.end())
    assert ending is not None and multi < bump.start(), (multi, bump, ending)
    cut = bump.end() + 7  # into the next command (DEL meta)
    in_redis_volume(stack, volume, f"truncate -s {cut} {path}")

    restore(stack, "redis")
    started = time.monotonic()
    wait_until(lambda: redis_answers(stack), 60, "redis answering after the power cut",
               interval=0.1)
    back = time.monotonic() - started
    logs = stack.logs("redis")
    assert "redis-entrypoint: the AOF ends inside a command or a transaction" in logs, \
        logs[-3000:]
    # One whole version: the one before the cut transaction (which never completed).
    now = held(stack)
    assert (now["version"], now["sha256"]) == (previous["version"], previous["sha256"]), now
    assert "fault.cut" not in now["routes"]

    MEASUREMENTS.append(
        f"fault power cut (AOF cut inside the last transaction): redis answering {back:.2f} s "
        f"after start, on version {previous['version']} whole; the cut publish (version "
        f"{printed['version']}) is lost as a whole and must be published again")

    # Published again, and Redis restarted once more: no half of the cut transaction comes
    # back with it (the entrypoint cut it away; valkey-io/valkey#4342): version, meta and
    # hashes agree.
    again = publish_from(stack, directory, "seed-after-cut")
    assert (again["version"], again["sha256"]) == (previous["version"] + 1, sha)
    stack.compose("restart", "--timeout", "10", "redis")
    wait_until(lambda: redis_answers(stack), 60, "redis answering after a restart")
    now = held(stack)
    assert (now["version"], now["sha256"]) == (again["version"], sha), now
    restore(stack, "worker", "beat", "api")
    wait_in_sync(stack, sha, 120, "worker, beat and api on the version published again")


# ---------------------------------------------------------------------- 3. network cut
def test_network_cut_the_api_keeps_serving_and_catches_up_when_it_returns(
        stack: Stack, tmp_path: Path) -> None:
    previous = held(stack)
    api = stack.container("api")
    networks = stack.inspect("api")["NetworkSettings"]["Networks"]
    assert len(networks) == 1, networks
    network = next(iter(networks))
    directory, sha = variant(tmp_path, "net")

    docker("network", "disconnect", network, api)
    cut = time.monotonic()
    try:
        printed = publish_from(stack, directory, "seed-net")
        assert printed["sha256"] == sha
        # The API answers from what it has; its watcher notices Redis is gone (the poll or
        # the channel's health check) and says so.
        seen: dict[str, Any] = {}

        def noticed() -> bool:
            body = api_readyz_inside(stack)
            if body is None:
                return False
            seen.clear()
            seen.update(body)
            return bool(body["last_error"])

        wait_until(noticed, 90, "the API reporting Redis unreachable", interval=1)
        detected = time.monotonic() - cut
        assert seen["ready"] is True and seen["source"] == "redis", seen
        assert (seen["version"], seen["sha256"]) == (previous["version"], previous["sha256"])
        assert "unreachable" in seen["last_error"], seen
    finally:
        docker("network", "connect", network, api)
    back = time.monotonic()
    wait_until(lambda: (api_readyz_inside(stack) or {}).get("sha256") == sha, 120,
               "the API on the version published during the cut", interval=0.5)
    recovered = time.monotonic() - back
    body = api_readyz_inside(stack)
    assert body is not None and body["version"] == printed["version"] and not body["lagging"]
    wait_in_sync(stack, sha, 60, "worker and api in sync")
    assert stack.enqueue("fault.net")["queue"] == "scan"
    assert "[CELERY_API] applied version" in stack.logs("api")
    MEASUREMENTS.append(
        f"fault network cut of the api: serving throughout, Redis reported unreachable "
        f"{detected:.1f} s after the cut; version published during the cut applied "
        f"{recovered:.1f} s after reconnect (CELERY_CONFIG_POLL_INTERVAL default 30 s)")


# -------------------------------------------------------------- 5. read-only SD card
READ_ONLY_LKG = """\
services:
  api:
    volumes:
      - api-lkg:/var/lib/celery-config:ro
"""


def test_read_only_last_known_good_the_api_starts_on_redis_and_says_so_once(
        stack: Stack, tmp_path: Path) -> None:
    directory, sha = variant(tmp_path, "ro")
    publish_from(stack, directory, "seed-ro")
    # Both services apply it, and the API's last-known-good holds it.
    wait_in_sync(stack, sha, 60, "the fleet on the new version")
    override = tmp_path / "read-only-lkg.yaml"
    override.write_text(READ_ONLY_LKG)
    directory2, sha2 = variant(tmp_path, "ro2")
    stack.compose("stop", "--timeout", "10", "api")
    printed = publish_from(stack, directory2, "seed-ro2")
    started = time.monotonic()
    with_override(stack, override, "up", "--detach", "--no-deps", "--force-recreate", "api")
    ready = stack.wait_ready(120)
    elapsed = time.monotonic() - started
    mounts = {m["Destination"]: m for m in stack.inspect("api")["Mounts"]}
    assert mounts["/var/lib/celery-config"]["RW"] is False
    assert (ready["source"], ready["version"], ready["sha256"]) == (
        "redis", printed["version"], sha2), ready
    lines = [line for line in stack.logs("api").splitlines()
             if "cannot write last-known-good" in line]
    assert len(lines) == 1, stack.logs("api")
    assert "Read-only file system" in lines[0], lines
    assert "Traceback" not in stack.logs("api")
    assert stack.enqueue("fault.ro2")["queue"] == "scan"  # the new version's route
    body = stack.enqueue("scan.discovery")
    status = stack.result(body["id"], 60)
    assert status["state"] == "SUCCESS", status
    assert status["result"]["config_version"] == printed["version"], status
    # Nothing lost on disk: the file there is the previous version, whole.
    kept = json.loads(docker("exec", stack.container("api"), "cat",
                             "/var/lib/celery-config/last-known-good.json").stdout)
    assert (kept["version"], kept["sha256"]) == (printed["version"] - 1, sha), kept
    MEASUREMENTS.append(
        f"fault read-only last-known-good (api): ready on redis {elapsed:.2f} s after "
        f"`up --force-recreate`, one WARNING line, the file keeps version {kept['version']}")
