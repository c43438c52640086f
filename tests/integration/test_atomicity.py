"""Two configs published alternately, over and over, while readers load continuously: every
load is exactly one of the two (never a mix), matches its version, and no reader ever sees the
version go backwards."""

import threading

from celery_config_sync.codec import ConfigDocument
from celery_config_sync.loader import RedisReader
from celery_config_sync.publishing import publish
from celery_config_sync.source import load_source
from tests.conftest import SOURCE, RedisServer

PUBLISHES = 1200
READERS = 3


def test_loads_are_never_a_mix_and_versions_never_go_back(redis_server: RedisServer) -> None:
    full = load_source(str(SOURCE))
    # B differs from A in every hash, and drops entries: a torn read could not pass as either.
    b_queues = {k: v for k, v in full.queues.items() if k not in ("lastfm", "enrichment")}
    config_a = full
    config_b = ConfigDocument(
        b_queues,
        {k: v for k, v in full.routes.items() if v["queue"] in b_queues},
        {**full.base, "task_time_limit": 42, "worker_prefetch_multiplier": 4},
    )
    by_sha = {config_a.sha256: config_a, config_b.sha256: config_b}
    publisher_client = redis_server.client()
    publisher_client.flushall()
    publish(publisher_client, "atomic", config_a, source="a")  # version 1 is A: odd A, even B
    done = threading.Event()
    problems: list[str] = []
    loads = [0] * READERS

    def reader(index: int) -> None:
        loader = RedisReader(redis_server.client(), "atomic")
        last_version = 0
        while not done.is_set():
            published = loader.load()
            loads[index] += 1
            document = published.document
            if document not in (config_a, config_b):
                problems.append(f"mixed config at version {published.version}")
            if by_sha.get(published.sha256) != document:
                problems.append(f"sha256 does not match content at {published.version}")
            expected = config_a if published.version % 2 else config_b
            if document != expected:
                problems.append(f"version {published.version} holds the other config")
            if published.version < last_version:
                problems.append(f"version went back {last_version} -> {published.version}")
            last_version = published.version

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(READERS)]
    for thread in threads:
        thread.start()
    try:
        for i in range(PUBLISHES):
            result = publish(publisher_client, "atomic", config_b if i % 2 == 0 else config_a,
                             source="alternate")
            assert result.changed and result.version == i + 2
    finally:
        done.set()
        for thread in threads:
            thread.join()
    assert not problems, problems[:5]
    assert min(loads) > 100, loads  # the readers really raced the publisher
