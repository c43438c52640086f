"""The version history (issue 12) against a real redis-server: what a publish keeps (the last N,
capped in bytes, the oldest dropped in the publish's own transaction), its order, diff between
versions, rollback (a new version, the old content, validated again), and that it changes
nothing for the loaders. Corrupt history is one line and exit 2, never a traceback."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celery_config_sync.codec import ConfigDocument, canonical_json
from celery_config_sync.errors import InvalidConfig, NotInHistory
from celery_config_sync.history import list_history, read_version, rollback
from celery_config_sync.history_policy import HistoryLimits
from celery_config_sync.loader import RedisReader
from celery_config_sync.publishing import clear, publish
from celery_config_sync.redis_keys import Keys
from celery_config_sync.snapshot_reading import read_snapshot
from celery_config_sync.source import load_source
from tests.conftest import SOURCE, RedisServer
from tests.integration.test_cli import error_line, run, snapshot_of
from tests.tamper import history_record, store_version

pytestmark = pytest.mark.integration
NS = "celery_config"
KEYS = Keys(NS)
BASE = load_source(str(SOURCE))


def variant(i: int) -> ConfigDocument:
    """The source with one restart-required setting changed: every variant its own sha256."""
    return ConfigDocument(BASE.queues, BASE.routes, {**BASE.base, "task_time_limit": 600 + i},
                          BASE.app)


def publish_variants(client: redis.Redis, count: int, **limits: int) -> list[ConfigDocument]:
    documents = [variant(i) for i in range(count)]
    for document in documents:
        publish(client, NS, document, source="test", history=HistoryLimits(**limits))
    return documents


def history_state(client: redis.Redis) -> tuple[set[bytes], set[bytes]]:
    return set(client.hkeys(KEYS.history)), set(client.hkeys(KEYS.history_documents))


def test_the_last_n_are_kept_newest_first(redis_client: redis.Redis) -> None:
    documents = publish_variants(redis_client, 8, length=5)
    entries = list_history(redis_client, NS)
    assert [entry.version for entry in entries] == [8, 7, 6, 5, 4]
    assert history_state(redis_client) == ({b"4", b"5", b"6", b"7", b"8"},) * 2
    for entry in entries:
        assert entry.sha256 == documents[entry.version - 1].sha256
        assert entry.summary == "settings ~task_time_limit"
        assert entry.change == "restart-required" and entry.restart_required == ("task_time_limit",)
        assert entry.source == "test" and entry.publisher and entry.published_at
        _, document = read_version(redis_client, NS, entry.version)
        assert document == documents[entry.version - 1]
        assert list(document.routes) == list(BASE.routes)  # the declared order kept
    # Every version's record equals the meta it was published with.
    meta = {k.decode(): v.decode() for k, v in redis_client.hgetall(KEYS.meta).items()}
    assert {k: v for k, v in json.loads(redis_client.hget(KEYS.history, "8")).items()
            if k in meta} == meta


def test_bytes_are_capped_and_the_newest_always_kept(redis_client: redis.Redis) -> None:
    size = len(variant(0).canonical().encode())
    publish_variants(redis_client, 6, max_bytes=size * 3 - 1)  # room for two and a bit
    assert [entry.version for entry in list_history(redis_client, NS)] == [6, 5]
    assert sum(entry.size for entry in list_history(redis_client, NS)) <= size * 3 - 1
    publish(redis_client, NS, variant(100), source="test", history=HistoryLimits(max_bytes=10))
    assert [entry.version for entry in list_history(redis_client, NS)] == [7]
    assert history_state(redis_client) == ({b"7"}, {b"7"})


def test_the_history_is_written_inside_the_publish_transaction(
        redis_server: RedisServer, redis_client: redis.Redis) -> None:
    publish_variants(redis_client, 3, length=3)
    commands: list[str] = []
    ready = threading.Event()

    def monitor() -> None:
        with redis_server.client().monitor() as listening:
            ready.set()
            for command in listening.listen():
                commands.append(command["command"])
                if command["command"].upper().startswith("EXEC"):
                    return

    thread = threading.Thread(target=monitor)
    thread.start()
    assert ready.wait(60)  # MONITOR answered OK: it sees every command from now on
    publish(redis_client, NS, variant(3), source="test", history=HistoryLimits(length=3))
    thread.join(60)  # returns at the EXEC
    names = [" ".join(command.split()[:2]) for command in commands]
    assert names[0].startswith("WATCH") and KEYS.history in commands[0]
    assert KEYS.history_documents in commands[0]
    multi = names.index("MULTI")
    inside = names[multi:]
    assert f"HDEL {KEYS.history}" in inside and f"HDEL {KEYS.history_documents}" in inside
    assert f"HSET {KEYS.history}" in inside and f"INCRBY {KEYS.version}" in inside
    assert inside[-2].startswith("PUBLISH") and inside[-1] == "EXEC"  # the notification last
    assert [entry.version for entry in list_history(redis_client, NS)] == [4, 3, 2]


def test_an_aborted_publish_leaves_the_history_untouched(redis_client: redis.Redis) -> None:
    publish_variants(redis_client, 2)
    before = snapshot_of(redis_client)
    used = redis_client.info("memory")["used_memory"]
    redis_client.config_set("maxmemory", used)  # noeviction: the MULTI's writes are refused
    try:
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            publish(redis_client, NS, variant(9), source="test")
    finally:
        redis_client.config_set("maxmemory", 0)
    assert snapshot_of(redis_client) == before


def test_version_meta_and_history_always_agree_under_concurrent_publishers(
        redis_server: RedisServer, redis_client: redis.Redis) -> None:
    """Two publishers race (WATCH retries the loser) while a reader checks, in one MULTI, that
    the newest recorded version is the published one with its sha256, and nothing is more
    than the limit or without its document."""
    limits = HistoryLimits(length=4)
    publish(redis_client, NS, variant(0), source="test", history=limits)
    done, problems = threading.Event(), []

    def publisher(offset: int) -> None:
        client = redis_server.client()
        for i in range(60):
            publish(client, NS, variant(offset + i % 2), source="race", history=limits)

    def reader() -> None:
        client = redis_server.client()
        while not done.is_set():
            pipe = client.pipeline(transaction=True)
            pipe.get(KEYS.version)
            pipe.hget(KEYS.meta, "sha256")
            pipe.hgetall(KEYS.history)
            pipe.hkeys(KEYS.history_documents)
            version, sha, records, documents = pipe.execute()
            versions = sorted(int(field) for field in records)
            if versions[-1] != int(version) or set(records) != set(documents):
                problems.append(f"version {version}, history {versions}")
            if json.loads(records[version])["sha256"].encode() != sha or len(versions) > 4:
                problems.append(f"version {version}: record disagrees, or {len(versions)} kept")
            if versions != list(range(versions[0], versions[-1] + 1)):
                problems.append(f"holes in {versions}")

    threads = [threading.Thread(target=publisher, args=(offset,)) for offset in (10, 20)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    watcher.join()
    assert not problems, problems[:5]
    assert [entry.version for entry in list_history(redis_client, NS)] == [121, 120, 119, 118]


def test_unchanged_publishes_nothing_and_forced_records_same_content(
        redis_client: redis.Redis) -> None:
    publish(redis_client, NS, BASE, source="test")
    publish(redis_client, NS, BASE, source="test")
    assert [entry.version for entry in list_history(redis_client, NS)] == [1]
    assert list_history(redis_client, NS)[0].summary == "initial"
    publish(redis_client, NS, BASE, source="test", force=True)
    newest = list_history(redis_client, NS)[0]
    assert (newest.version, newest.summary, newest.change) == (2, "same content", "none")


def test_clear_removes_the_history_and_versions_start_again(redis_client: redis.Redis) -> None:
    publish_variants(redis_client, 3)
    clear(redis_client, NS)
    assert not redis_client.exists(KEYS.history, KEYS.history_documents)
    publish(redis_client, NS, BASE, source="test")
    assert [(e.version, e.summary) for e in list_history(redis_client, NS)] == [(1, "initial")]


def test_the_loaders_are_unaffected(redis_client: redis.Redis) -> None:
    documents = publish_variants(redis_client, 3)
    snapshot = read_snapshot(redis_client, NS)
    assert not {KEYS.history, KEYS.history_documents} & set(snapshot.hashes)
    published = RedisReader(redis_client, NS).load()
    assert (published.version, published.document) == (3, documents[-1])
    before = snapshot_of(redis_client)
    RedisReader(redis_client, NS).load()
    assert snapshot_of(redis_client) == before  # reading never touches the history


def test_a_corrupt_history_never_blocks_a_publish(redis_client: redis.Redis) -> None:
    publish_variants(redis_client, 2)
    redis_client.hset(KEYS.history, "1", "{oops")  # unreadable: dropped by the next publish
    redis_client.hset(KEYS.history_documents, "77", "{}")  # an orphan document: dropped too
    publish(redis_client, NS, variant(5), source="test")
    assert history_state(redis_client) == ({b"2", b"3"}, {b"2", b"3"})
    redis_client.delete(KEYS.history)
    redis_client.set(KEYS.history, "not a hash")
    with pytest.raises(InvalidConfig, match=f"^{KEYS.history}: corrupt data: wrong Redis type"):
        list_history(redis_client, NS)
    publish(redis_client, NS, variant(6), source="test")  # the history starts again
    assert [entry.version for entry in list_history(redis_client, NS)] == [4]


def test_versions_above_the_published_one_are_not_its_past(redis_client: redis.Redis) -> None:
    """A counter that went back (an AOF restored by hand): the next publish drops the records
    of the versions it will publish again, so no record describes other content."""
    documents = publish_variants(redis_client, 4)
    redis_client.set(KEYS.version, "1")
    publish(redis_client, NS, variant(9), source="test")
    assert [entry.version for entry in list_history(redis_client, NS)] == [2, 1]
    assert read_version(redis_client, NS, 1)[1] == documents[0]
    assert read_version(redis_client, NS, 2)[1] == variant(9)


def test_rollback_publishes_the_old_content_as_a_new_version(redis_client: redis.Redis) -> None:
    documents = publish_variants(redis_client, 3)
    result = rollback(redis_client, NS, 1)
    assert (result.version, result.changed, result.sha256) == (4, True, documents[0].sha256)
    assert RedisReader(redis_client, NS).load().document == documents[0]
    newest, *older = list_history(redis_client, NS)
    assert (newest.source, newest.sha256) == ("rollback:1", documents[0].sha256)
    assert [entry.sha256 for entry in older] == [d.sha256 for d in reversed(documents)]
    again = rollback(redis_client, NS, 4)  # the published content: nothing new
    assert (again.version, again.changed) == (4, False)
    with pytest.raises(NotInHistory, match="version 9 is not in the history of celery_config "
                                           r"\(it holds versions 1 to 4\)"):
        rollback(redis_client, NS, 9)


# ------------------------------------------------------------------------------ the CLI
@pytest.fixture
def three_versions(redis_server: RedisServer, redis_client: redis.Redis,
                   tmp_path: Path) -> redis.Redis:
    """1: the source, 2: a route added, 3: the rpi overlay over 2."""
    added = tmp_path / "source.py"
    added.write_text(SOURCE.read_text() + "\ntask_routes['scan.new'] = {'queue': 'scan'}\n")
    (tmp_path / "overlays").mkdir()
    (tmp_path / "overlays" / "rpi.py").write_text(
        (SOURCE.parent / "overlays" / "rpi.py").read_text())
    for args in ((), ("--source", str(added)), ("--source", str(added), "--overlay", "rpi")):
        result = run("publish", *args, url=redis_server.url)
        assert result.returncode == 0, result.stderr
    return redis_client


def test_history_command(redis_server: RedisServer, three_versions: redis.Redis) -> None:
    listed = run("history", url=redis_server.url)
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)
    assert [entry["version"] for entry in entries] == [3, 2, 1]
    assert [entry["summary"] for entry in entries][1:] == ["routes +1", "initial"]
    assert entries[0]["source"].endswith("source.py+rpi")
    table = run("history", "--format", "table", url=redis_server.url).stdout.splitlines()
    assert table[0].split() == ["VERSION", "SHA256", "PUBLISHED_AT", "PUBLISHER", "SOURCE",
                                "CHANGE", "SUMMARY"]
    assert table[2].split()[:2] == ["2", entries[1]["sha256"][:12]]
    assert table[2].endswith("live             routes +1")
    empty = run("--namespace", "empty", "history", url=redis_server.url)
    assert empty.returncode == 1 and "no version history under empty" in error_line(empty)


def test_diff_between_versions(redis_server: RedisServer, three_versions: redis.Redis) -> None:
    result = run("diff", "--from", "1", "--to", "2", url=redis_server.url)
    assert (result.returncode, result.stdout.splitlines()) == (1, [
        "+ routes['scan.new'] added  (live)",
        "kind: live: every running service applies it without a restart"])
    backwards = run("diff", "--from", "2", "--to", "1", url=redis_server.url)
    assert backwards.stdout.splitlines()[0] == "- routes['scan.new'] removed  (live)"
    same = run("diff", "--from", "3", url=redis_server.url)  # 3 vs the published: itself
    assert (same.returncode, same.stdout.strip()) == (0, "identical")
    # --to alone: published -> V, what `rollback --to V` would change.
    to_two = run("diff", "--to", "2", url=redis_server.url)
    assert to_two.returncode == 1 and "restart required" in to_two.stdout
    assert "routes" not in to_two.stdout
    for args, code, message in (
            (("--from", "9"), 2, "version 9 is not in the history"),
            (("--from", "1", "--source", str(SOURCE)), 2, "not both"),
            (("--to", "0"), 2, "")):
        result = run("diff", *args, url=redis_server.url)
        assert result.returncode == code, (args, result.stderr)
        if message:
            assert message in error_line(result)


def test_rollback_command(redis_server: RedisServer, three_versions: redis.Redis) -> None:
    old = json.loads(run("history", url=redis_server.url).stdout)[2]
    result = run("rollback", "--to", "1", url=redis_server.url)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert (outcome["version"], outcome["changed"], outcome["sha256"]) == (4, True, old["sha256"])
    assert outcome["rolled_back_to"] == 1
    assert "[CELERY_CONFIG_PUBLISHER] published version 4" in result.stderr
    newest = json.loads(run("history", url=redis_server.url).stdout)[0]
    assert (newest["source"], newest["summary"]) == (
        "rollback:1", "routes -1, settings -broker_pool_limit -worker_concurrency "
                      "-worker_max_memory_per_child ~worker_max_tasks_per_child")
    assert json.loads(run("show", url=redis_server.url).stdout)["sha256"] == old["sha256"]
    again = run("rollback", "--to", "1", url=redis_server.url)
    assert again.returncode == 0 and json.loads(again.stdout)["changed"] is False
    assert "unchanged: version 4 already holds" in again.stderr
    missing = run("rollback", "--to", "42", url=redis_server.url)
    assert missing.returncode == 2 and "version 42 is not in the history" in error_line(missing)
    assert run("rollback", url=redis_server.url).returncode == 2  # --to is required


def test_rollback_to_content_this_release_refuses_publishes_nothing(
        redis_server: RedisServer, three_versions: redis.Redis) -> None:
    # A version recorded by a release that knew a setting this one refuses (here a typo of
    # one), its sha256 right: decoding passes, validation must refuse it.
    store_version(three_versions, 2, ConfigDocument(BASE.queues, BASE.routes,
                                                    {**BASE.base, "task_serialiser": "json"}))
    before = snapshot_of(three_versions)
    result = run("rollback", "--to", "2", url=redis_server.url)
    assert result.returncode == 2
    assert error_line(result) == (
        "celery-config: error: rollback to version 2 refused: history[2]: "
        "base.task_serialiser: is not a Celery setting (see celery.app.defaults): did you mean "
        "task_serializer?")
    assert snapshot_of(three_versions) == before
    diffed = run("diff", "--from", "2", url=redis_server.url)
    assert diffed.returncode == 2 and "history[2]: base.task_serialiser" in error_line(diffed)


CORRUPTIONS = {
    "record not JSON": (KEYS.history, "{oops", "history[2].record: malformed JSON"),
    "document changed": (KEYS.history_documents, "{}", "history[2]: content hashes to"),
    "document gone": (KEYS.history_documents, None, "history[2]: a record without its document"),
}


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_corrupt_history_is_one_line_exit_2(case: str, redis_server: RedisServer,
                                            three_versions: redis.Redis) -> None:
    key, value, message = CORRUPTIONS[case]
    if value is None:
        three_versions.hdel(key, "2")
    else:
        three_versions.hset(key, "2", value)
    for command in (("diff", "--from", "2"), ("rollback", "--to", "2")):
        result = run(*command, url=redis_server.url)
        assert result.returncode == 2 and message in error_line(result), result.stderr
    if key == KEYS.history and value is not None:
        listed = run("history", url=redis_server.url)
        assert listed.returncode == 2 and message in error_line(listed)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=st.binary(max_size=120) | st.sampled_from([b"", b"{}", b"[]", b"null"]),
       document=st.binary(max_size=120) | st.just(BASE.canonical().encode()),
       sealed=st.booleans())
def test_any_bytes_stored_in_redis_read_back_as_the_document_or_one_error(
        redis_client: redis.Redis, record: bytes, document: bytes, sealed: bool) -> None:
    """Through Redis itself: whatever bytes a history entry holds (with its record's sha256
    right, or anything), read_version gives the document or the one InvalidConfig."""
    redis_client.delete(KEYS.history, KEYS.history_documents)
    if sealed:
        record = canonical_json(history_record(5, document)).encode()
    redis_client.hset(KEYS.history, "5", record)
    redis_client.hset(KEYS.history_documents, "5", document)
    try:
        entry, decoded = read_version(redis_client, NS, 5)
    except InvalidConfig as exc:
        assert str(exc).startswith("history[5]") and "\n" not in str(exc)
    else:
        assert entry.sha256 == hashlib.sha256(document).hexdigest() == decoded.sha256
