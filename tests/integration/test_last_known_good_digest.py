"""The digest beside last-known-good (issue 20): a load finds the file up to date by its digest
and the file's stamp (one stat), or one hash of its bytes when the stamp changed, instead of
parsing it; any doubt (no digest, a stale or corrupt one, a file changed under it) writes the
file again, never a wrong skip; and a file that is wrong is still refused when it is used,
whatever its digest says."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from celery_config_sync.codec import ConfigDocument, canonical_json
from celery_config_sync.environment import Environment
from celery_config_sync.fallback_files import (
    DIGEST_FORMAT,
    digest_path,
    file_stamp,
    render,
    write_atomic,
)
from celery_config_sync.loader import load_config
from celery_config_sync.publishing import publish
from celery_config_sync.redis_keys import Keys
from celery_config_sync.snapshot_reading import read_snapshot
from celery_config_sync.source import load_source
from celery_config_sync.strict_fields import concatenate
from celery_config_sync.validated_content import rules_fingerprint
from tests.conftest import SOURCE, free_port
from tests.polling import wait_for
from tests.tamper import reseal

pytestmark = pytest.mark.integration
NS = "celery_config"
DOCUMENT = load_source(str(SOURCE))
SNAPSHOT_DOCUMENT = ConfigDocument(DOCUMENT.queues, DOCUMENT.routes,
                                   {**DOCUMENT.base, "task_time_limit": 1234})


@pytest.fixture
def env(tmp_path: Path, redis_server) -> Environment:  # type: ignore[no-untyped-def]
    snapshot = tmp_path / "snapshot.json"
    write_atomic(snapshot, render(SNAPSHOT_DOCUMENT, version=0, meta={"source": "test"}))
    return Environment(redis_url=redis_server.url, namespace=NS,
                       fallback_path=str(tmp_path / "lkg.json"), snapshot_path=str(snapshot))


def unreachable(env: Environment) -> Environment:
    return Environment(**{**env.__dict__, "redis_url": f"redis://127.0.0.1:{free_port()}/0"})


def identity(path: str) -> tuple[int, int]:
    """Changes whenever the file is written again (write_atomic renames a new file in)."""
    stat = Path(path).stat()
    return stat.st_ino, stat.st_mtime_ns


def assert_digest_matches(env: Environment, version: int) -> None:
    body = Path(env.fallback_path).read_bytes()
    recorded = json.loads(digest_path(env.fallback_path).read_text())
    layout = concatenate(read_snapshot(redis.Redis.from_url(env.redis_url), NS).hashes).layout
    file_sha256 = hashlib.sha256(body).hexdigest()
    assert recorded == {"format": DIGEST_FORMAT, "version": version, "sha256": DOCUMENT.sha256,
                        "file_sha256": file_sha256,
                        "file_stamp": file_stamp(file_sha256, Path(env.fallback_path).stat()),
                        "validated": {"layout": layout, "allow": [],
                                      "release": rules_fingerprint()}}
    assert json.loads(body)["sha256"] == DOCUMENT.sha256


def _rewrite_digest(change: Callable[[dict[str, object]], object]) -> Callable[[Path], None]:
    def apply(digest: Path) -> None:
        recorded = json.loads(digest.read_text())
        change(recorded)
        digest.write_text(json.dumps(recorded))
    return apply


def _file(digest: Path) -> Path:
    return digest.with_name(digest.name.removesuffix(".digest"))


def _rewrite_in_place_keeping_size_and_times(digest: Path) -> None:
    """Other content of the same size, written into the same inode, its times set back: only
    the change time, which no call sets to a chosen value, tells the file changed. A kernel
    with coarse timestamps (one tick, a few ms) may give it the tick of the load's write, so
    the write is retried until the change time differs (at once, on a fine-grained kernel)."""
    path = _file(digest)
    before = path.stat()
    body = path.read_bytes()
    tampered = body.replace(b"\n  \"version\": 1\n", b"\n  \"version\": 2\n")
    assert tampered != body and len(tampered) == len(body)

    def rewrite() -> bool:
        with path.open("r+b") as handle:
            handle.write(tampered)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = path.stat()
        assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
            before.st_ino, before.st_size, before.st_mtime_ns)
        return after.st_ctime_ns != before.st_ctime_ns

    wait_for(rewrite, 5, "a change time other than the load's write's")


# What can happen to the digest or to the file under it -> the load must write both again.
DOUBTS: dict[str, Callable[[Path], object]] = {
    "digest missing": lambda digest: digest.unlink(),
    "digest empty": lambda digest: digest.write_bytes(b""),
    "digest not JSON": lambda digest: digest.write_bytes(b"\x00\xffgarbage"),
    "digest nested too deeply": lambda digest: digest.write_bytes(b"[" * 3000),
    "digest too large": lambda digest: digest.write_bytes(b" " * 10_000 + digest.read_bytes()),
    "digest of another format": _rewrite_digest(
        lambda r: r.update(format="celery-config-digest/0")),
    "digest of an older version": _rewrite_digest(lambda r: r.update(version=0)),
    "digest with version true": _rewrite_digest(lambda r: r.update(version=True)),
    "digest of other content": _rewrite_digest(lambda r: r.update(sha256="0" * 64)),
    "digest of other bytes": _rewrite_digest(lambda r: r.update(file_sha256="0" * 64)),
    "file deleted": lambda digest: _file(digest).unlink(),
    "file of other content": lambda digest: _file(digest).write_text(
        render(SNAPSHOT_DOCUMENT, version=1, meta={})),
    "file truncated": lambda digest: _file(digest).write_bytes(
        _file(digest).read_bytes()[:100]),
    "file reformatted": lambda digest: _file(digest).write_text(
        json.dumps(json.loads(_file(digest).read_text()))),
    "file rewritten in place, same size and times": _rewrite_in_place_keeping_size_and_times,
    "digest of another stamp": _rewrite_digest(
        lambda r: r.update(file_stamp=str(r["file_stamp"]).replace(":", ":1", 1))),
}


def test_an_unchanged_config_is_not_written_again(env: Environment,
                                                  redis_client: redis.Redis) -> None:
    publish(redis_client, NS, DOCUMENT, source="test")
    load_config(env)
    assert_digest_matches(env, 1)
    before = identity(env.fallback_path), identity(str(digest_path(env.fallback_path)))
    assert load_config(env).source == "redis"
    assert (identity(env.fallback_path), identity(str(digest_path(env.fallback_path)))) == before


def test_a_file_touched_or_copied_back_is_hashed_and_only_its_digest_written(
        env: Environment, redis_client: redis.Redis) -> None:
    """The same bytes under another stamp (a touch, a restore from a copy): the stamp is a
    doubt, the bytes' sha256 settles it, and the SD card gets the digest's write alone."""
    publish(redis_client, NS, DOCUMENT, source="test")
    load_config(env)
    path = Path(env.fallback_path)
    body = path.read_bytes()
    path.unlink()
    path.write_bytes(body)  # a new inode, the same bytes
    before = identity(env.fallback_path)
    assert load_config(env).source == "redis"
    assert identity(env.fallback_path) == before
    assert_digest_matches(env, 1)


@pytest.mark.parametrize("doubt", DOUBTS, ids=list(DOUBTS))
def test_any_doubt_writes_the_file_again(doubt: str, env: Environment,
                                         redis_client: redis.Redis) -> None:
    publish(redis_client, NS, DOCUMENT, source="test")
    load_config(env)
    digest = digest_path(env.fallback_path)
    DOUBTS[doubt](digest)
    assert load_config(env).source == "redis"
    assert_digest_matches(env, 1)
    # ... and what was written is a good last-known-good: Redis gone, it is what loads.
    fallback = load_config(unreachable(env))
    assert (fallback.source, fallback.version, fallback.document) == ("last-known-good", 1,
                                                                      DOCUMENT)


def test_a_forged_digest_spares_a_write_but_the_file_is_still_refused_when_used(
        env: Environment, redis_client: redis.Redis) -> None:
    """Someone who rewrites the file and its digest alike fools the write check (it only spares
    the SD card a write), never the fallback: the file is parsed and hash-checked when used."""
    publish(redis_client, NS, DOCUMENT, source="test")
    load_config(env)
    path = Path(env.fallback_path)
    data = json.loads(path.read_text())
    data["config"]["base"]["task_time_limit"] = 1
    path.write_text(json.dumps(data))
    digest_path(path).write_text(canonical_json({
        "format": DIGEST_FORMAT, "version": 1, "sha256": DOCUMENT.sha256,
        "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}))
    assert load_config(env).source == "redis"
    assert load_config(unreachable(env)).source == "snapshot"  # the tampered file refused


def test_a_new_version_writes_the_file_and_its_digest(env: Environment,
                                                      redis_client: redis.Redis) -> None:
    publish(redis_client, NS, DOCUMENT, source="test")
    load_config(env)
    publish(redis_client, NS, SNAPSHOT_DOCUMENT, source="test")
    assert load_config(env).version == 2
    recorded = json.loads(digest_path(env.fallback_path).read_text())
    assert (recorded["version"], recorded["sha256"]) == (2, SNAPSHOT_DOCUMENT.sha256)
    assert recorded["file_sha256"] == hashlib.sha256(
        Path(env.fallback_path).read_bytes()).hexdigest()


# The record of validated content (validated_content.py): a load that finds Redis holding the
# very fields this release validated skips their second validation; anything else is decoded
# and validated in full, exactly as without a record.


def test_the_same_text_split_into_other_fields_is_refused_despite_the_record(
        env: Environment, redis_client: redis.Redis) -> None:
    """One field holding two (the same text, hence the same sha256, no reseal needed): the
    layout differs from the record's, the field is parsed on its own and refused."""
    publish(redis_client, NS, DOCUMENT, source="test")
    assert load_config(env).source == "redis"  # writes the record
    base = Keys(NS).base
    first, second = sorted(redis_client.hkeys(base))[:2]
    merged = (redis_client.hget(base, first) + b',"' + second + b'":'
              + redis_client.hget(base, second))
    redis_client.hset(base, first, merged)
    redis_client.hdel(base, second)
    assert concatenate(read_snapshot(redis_client, NS).hashes).canonical == (
        DOCUMENT.canonical().encode())
    loaded = load_config(env)
    assert (loaded.source, loaded.document) == ("last-known-good", DOCUMENT)


def test_a_record_made_allowing_an_unsafe_setting_vouches_for_nothing_without_it(
        env: Environment, redis_client: redis.Redis) -> None:
    """Validated allowing task_serializer=pickle; the same content, loaded by a process that
    does not allow it, is validated again and refused (last-known-good too: the snapshot)."""
    unsafe = ConfigDocument(DOCUMENT.queues, DOCUMENT.routes,
                            {**DOCUMENT.base, "task_serializer": "pickle"})
    allowing = Environment(**{**env.__dict__, "allow_unsafe": frozenset({"task_serializer"})})
    publish(redis_client, NS, unsafe, source="test", allow=allowing.allow_unsafe)
    assert load_config(allowing).document == unsafe
    assert json.loads(digest_path(env.fallback_path).read_text())["validated"]["allow"] == [
        "task_serializer"]
    loaded = load_config(env)
    assert (loaded.source, loaded.document) == ("snapshot", SNAPSHOT_DOCUMENT)
    assert load_config(allowing).source == "redis"


def test_a_record_of_another_release_vouches_for_nothing(env: Environment,
                                                         redis_client: redis.Redis) -> None:
    """Content this release refuses (a setting of the wrong type, resealed), with a record
    that says another release accepted exactly these fields: validated again, refused."""
    publish(redis_client, NS, DOCUMENT, source="test")
    load_config(env)
    redis_client.hset(Keys(NS).base, "worker_prefetch_multiplier", b'"four"')
    sha = reseal(redis_client)
    layout = concatenate(read_snapshot(redis_client, NS).hashes).layout
    digest = digest_path(env.fallback_path)
    recorded = json.loads(digest.read_text())
    digest.write_text(json.dumps({**recorded, "sha256": sha, "validated": {
        "layout": layout, "allow": [], "release": "another release"}}))
    assert load_config(env).source == "last-known-good"


def test_a_restart_rewrites_a_record_of_another_release_and_nothing_else(
        env: Environment, redis_client: redis.Redis) -> None:
    """The first start of a new release validates in full and records it in the digest alone:
    the file (fsynced, an SD card's write) is left as it is."""
    publish(redis_client, NS, DOCUMENT, source="test")
    load_config(env)
    digest = digest_path(env.fallback_path)
    recorded = json.loads(digest.read_text())
    digest.write_text(json.dumps({**recorded, "validated": {**recorded["validated"],
                                                            "release": "another release"}}))
    before = identity(env.fallback_path)
    assert load_config(env).source == "redis"
    assert identity(env.fallback_path) == before
    assert_digest_matches(env, 1)
