"""Prometheus metrics against a real redis-server: a LiveConfig with its real watcher, counted
and scraped (the exposition parsed with prometheus_client's own parser); queue depths of
messages kombu itself sent; and the real worker and API processes serving them over HTTP, the
worker from its main process alone."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from kombu import Exchange, Queue

from celery import Celery
from celery_config_sync.codec import ConfigDocument, canonical_json
from celery_config_sync.environment import Environment
from celery_config_sync.live_config import LiveConfig
from celery_config_sync.loader import LoadedConfig, remember
from celery_config_sync.metrics import ServiceMetrics, broker_client
from celery_config_sync.publishing import publish
from celery_config_sync.queue_depth import list_keys, priority_steps, queue_depths
from celery_config_sync.redis_keys import Keys
from celery_config_sync.source import load_source
from tests.conftest import SOURCE, RedisServer, free_port
from tests.figures import figure
from tests.polling import wait_for
from tests.prometheus_text import Samples, parse, value
from tests.service_processes import start_api, start_worker
from tests.tamper import reseal

pytestmark = pytest.mark.integration
NS = "celery_config"
KEYS = Keys(NS)
V1 = load_source(str(SOURCE), "rpi")
V2 = ConfigDocument(V1.queues, {**V1.routes, "report.build": {"queue": "batch"}}, dict(V1.base))


def scrape(metrics: ServiceMetrics) -> Samples:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return parse(body.decode())


def environment(url: str, tmp: Path) -> Environment:
    return Environment(redis_url=url, fallback_path=str(tmp / "lkg.json"),
                       snapshot_path=str(tmp / "no-snapshot.json"), heartbeat_interval=0.2,
                       celery_keyprefix="celery:")


@pytest.fixture
def watched(redis_server: RedisServer, redis_client: redis.Redis,
            tmp_path: Path) -> Iterator[ServiceMetrics]:
    """The worker's LiveConfig on version 1, its watcher running, and its metrics."""
    publish(redis_client, NS, V1, source="v1")
    live = LiveConfig("worker", environment(redis_server.url, tmp_path))
    live.load()
    metrics = ServiceMetrics(live, broker_client(redis_server.url, None))
    live.watch()
    wait_for(lambda: live.last_heartbeat is not None, 60, "the first heartbeat")
    try:
        yield metrics
    finally:
        live.stop()


def test_the_state_is_what_runs(watched: ServiceMetrics) -> None:
    heartbeat = watched.live.last_heartbeat  # the fixture waited for the first one
    assert heartbeat is not None
    samples = scrape(watched)
    scraped = time.monotonic()
    assert value(samples, "celery_config_applied_version") == 1
    assert value(samples, "celery_config_published_version") == 1
    assert value(samples, "celery_config_applied_info", service="worker", version="1",
                 sha256=V1.sha256, source="redis") == 1
    assert value(samples, "celery_config_published_info", version="1", sha256=V1.sha256) == 1
    assert value(samples, "celery_config_fallback_in_use", source="redis") == 0
    assert "celery_config_restart_pending" not in samples
    assert value(samples, "celery_config_applies_total") == 0
    assert value(samples, "celery_config_rejections_total") == 0
    assert value(samples, "celery_config_reload_seconds_count") == 0
    # Counted from the last heartbeat (at or after ``heartbeat``), not from the start.
    age = value(samples, "celery_config_heartbeat_age_seconds")
    assert age is not None and 0 <= age <= scraped - heartbeat, (age, scraped - heartbeat)
    figure(f"heartbeat age {age:.3f} s (heartbeat every 0.2 s)")
    depths = {labels["queue"]: v for labels, v in samples["celery_config_queue_depth"]}
    assert depths == dict.fromkeys(V1.queues, 0)
    assert value(samples, "process_resident_memory_bytes")  # the standard collectors too


def test_a_published_version_counts_one_apply_and_its_latency(
        watched: ServiceMetrics, redis_client: redis.Redis) -> None:
    published = time.monotonic()
    publish(redis_client, NS, V2, source="v2")
    # The latency is observed right after the switch: wait for it, not for the version alone.
    wait_for(lambda: value(scrape(watched), "celery_config_reload_seconds_count") == 1, 60,
             "version 2's apply counted")
    seen, alive = time.monotonic() - published, time.monotonic() - watched.live.created
    samples = scrape(watched)
    assert value(samples, "celery_config_applied_version") == 2
    assert value(samples, "celery_config_applies_total") == 1
    assert value(samples, "celery_config_reload_seconds_count") == 1
    # From the hint to the switch (monotonic seconds): the hint came after the watcher started
    # (its subscribe confirmation may have been the hint that found version 2).
    seconds = value(samples, "celery_config_reload_seconds_sum")
    assert seconds is not None and 0 < seconds <= alive, (seconds, alive)
    figure(f"reload latency {seconds * 1000:.1f} ms (publish to version 2 scraped: "
           f"{seen * 1000:.1f} ms)")
    assert value(samples, "celery_config_applied_info", sha256=V2.sha256) == 1
    assert value(samples, "celery_config_published_info", version="2", sha256=V2.sha256) == 1
    assert value(samples, "celery_config_restart_required_total") == 0


class AfterMetrics:
    """An observer told after the metrics (observers are told in order): what it has seen, the
    metrics have counted."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def applied(self, new: object, seconds: float) -> None:
        self.seconds.append(seconds)

    def rejected(self, version: int | None, problem: str) -> None:
        pass


def test_what_happened_before_the_first_scrape_is_counted(
        watched: ServiceMetrics, redis_client: redis.Redis) -> None:
    """The registry is built at the first scrape (prometheus_client is imported then, not
    before a server is ready): a version applied before it is in its counters, and the
    counters' _created is when the metrics were made, not the first scrape."""
    after = AfterMetrics()
    watched.live.observers.append(after)
    before_publish = time.time()
    publish(redis_client, NS, V2, source="v2")
    wait_for(lambda: after.seconds, 60, "version 2 applied")
    samples = scrape(watched)  # the first one
    assert value(samples, "celery_config_applies_total") == 1
    assert value(samples, "celery_config_reload_seconds_count") == 1
    assert value(samples, "celery_config_reload_seconds_sum") == pytest.approx(after.seconds[0])
    assert value(samples, "celery_config_restart_required_total") == 0
    created = value(samples, "celery_config_applies_created")
    assert created is not None and created <= before_publish, (created, before_publish)


def test_a_rejected_version_counts_once_and_shows_as_drift(
        watched: ServiceMetrics, redis_client: redis.Redis) -> None:
    # Version 2 written straight into Redis with a valid sha256: a route to an undeclared queue.
    redis_client.hset(KEYS.routes, "report.build", canonical_json({"queue": "ghost"}))
    sha = reseal(redis_client)
    redis_client.hset(KEYS.meta, "version", "2")
    redis_client.incr(KEYS.version)
    for _ in range(2):  # heard twice, rejected (and counted) once
        redis_client.publish(KEYS.channel, canonical_json({"version": 2, "sha256": sha}))
        wait_for(lambda: value(scrape(watched), "celery_config_rejections_total") == 1, 60,
                 "the rejection counted")
        time.sleep(0.1)
    samples = scrape(watched)
    assert value(samples, "celery_config_rejections_total") == 1
    assert value(samples, "celery_config_applies_total") == 0
    assert value(samples, "celery_config_applied_version") == 1
    # what the drift alert compares: the applied sha256 is not the published one
    assert value(samples, "celery_config_published_info", version="2", sha256=sha) == 1
    assert value(samples, "celery_config_applied_info", sha256=V1.sha256) == 1


def test_a_restart_required_version_is_counted_and_its_settings_named(
        watched: ServiceMetrics, redis_client: redis.Redis) -> None:
    publish(redis_client, NS, ConfigDocument(V1.queues, V1.routes,
                                             {**V1.base, "worker_concurrency": 3}), source="v2")
    wait_for(lambda: value(scrape(watched), "celery_config_applies_total") == 1, 60, "applied")
    samples = scrape(watched)
    assert value(samples, "celery_config_restart_required_total") == 1
    assert samples["celery_config_restart_pending"] == [({"setting": "worker_concurrency"}, 1)]


def test_on_a_fallback_without_redis_the_scrape_still_answers(tmp_path: Path) -> None:
    """Redis nowhere: last-known-good in use, nothing published known, queue depths left out,
    and the scrape is not held up by Redis's timeouts."""
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    env = environment(nowhere, tmp_path)
    remember(env.fallback_path, LoadedConfig(V1, 1, V1.sha256, "redis", {"sha256": V1.sha256}),
             check_existing=False)
    live = LiveConfig("api", env)
    live.load()
    metrics = ServiceMetrics(live, broker_client(nowhere, None))
    started = time.monotonic()
    samples = scrape(metrics)
    figure(f"scrape without Redis: {time.monotonic() - started:.3f} s")
    assert value(samples, "celery_config_fallback_in_use", source="last-known-good") == 1
    assert value(samples, "celery_config_applied_info", source="last-known-good") == 1
    assert "celery_config_published_version" not in samples
    assert "celery_config_published_info" not in samples
    assert "celery_config_queue_depth" not in samples
    age = value(samples, "celery_config_heartbeat_age_seconds")
    assert age is not None and age >= 0  # never written: counted from the start


def test_queue_depth_counts_what_kombu_sent_at_every_priority(
        redis_server: RedisServer, redis_client: redis.Redis) -> None:
    """Messages sent by kombu itself (key prefix celery:, four priority steps) are counted on
    every priority list; LPUSHed ones too; kombu's own count agrees."""
    options = {"global_keyprefix": "celery:", "priority_steps": [0, 3, 6, 9]}
    queues = [Queue(name, Exchange(name, type="direct"), routing_key=name,
                    queue_arguments={"x-max-priority": 9}) for name in ("scan", "batch")]
    app = Celery("probe", broker=redis_server.url, set_as_current=False)
    app.conf.update(broker_transport_options=options, task_queues=queues)
    try:
        with app.producer_or_acquire() as producer:
            for priority in (0, 4, 7, 9):
                app.send_task("scan.discovery", queue="scan", priority=priority,
                              producer=producer)
            app.send_task("batch.process_entities", queue="batch", producer=producer)
        with app.connection_for_read() as connection:
            channel = connection.default_channel
            kombu_sizes = {name: channel._size(name) for name in ("scan", "batch")}
    finally:
        app.close()
    steps = priority_steps({"broker_transport_options": options})
    keys = {key.decode() for key in redis_client.keys("celery:*")}
    assert {"celery:scan", "celery:batch"} <= keys
    assert keys & set(list_keys("scan", "celery:", steps)) == {
        key for key in keys if key.startswith("celery:scan")}  # no list of scan missed
    found = queue_depths(redis_client, ["scan", "batch", "idle"], "celery:", steps)
    assert found == {"scan": 4, "batch": 1, "idle": 0}
    assert kombu_sizes == {"scan": 4, "batch": 1}
    redis_client.lpush("celery:idle", b"{}", b"{}")
    redis_client.lpush("celery:idle\x06\x166", b"{}")
    assert queue_depths(redis_client, ["idle"], "celery:", steps) == {"idle": 3}
    assert queue_depths(redis_client, ["idle"], "", steps) == {"idle": 0}  # another prefix


def holders_of_listening_port(port: int) -> set[int]:
    """Every pid holding the socket listening on ``port`` (from /proc, any address)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    assert inodes, f"nothing listens on {port}"
    pids = set()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            links = {str(fd.readlink()) for fd in fd_dir.iterdir()}
        except OSError:
            continue  # gone, or not ours to read
        if any(f"socket:[{inode}]" in links for inode in inodes):
            pids.add(int(fd_dir.parent.name))
    return pids


def test_the_worker_and_the_api_serve_their_metrics(
        redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path) -> None:
    """Over HTTP: the API on /metrics of its own port, the worker on CELERY_CONFIG_METRICS_PORT
    from its main process alone (two prefork children, neither holding the socket); a publish
    counts one apply in each."""
    publish(redis_client, NS, V1, source="v1")
    port = free_port()
    worker = start_worker(redis_server.url, tmp_path, "--concurrency", "2",
                          CELERY_CONFIG_METRICS_PORT=str(port))
    try:
        api = start_api(redis_server.url, tmp_path)
        try:
            worker_url = f"http://127.0.0.1:{port}/metrics"
            for url in (worker_url, f"{api.url}/metrics"):
                samples = parse(httpx.get(url, timeout=5).text)
                assert value(samples, "celery_config_applied_version") == 1, url
                assert value(samples, "celery_config_applies_total") == 0, url
            assert holders_of_listening_port(port) == {worker.pid}
            publish(redis_client, NS, V2, source="v2")
            for url in (worker_url, f"{api.url}/metrics"):
                wait_for(lambda u=url: value(parse(httpx.get(u, timeout=5).text),  # type: ignore[misc]
                                             "celery_config_applies_total") == 1, 60, url)
            response = httpx.get(f"{api.url}/metrics", timeout=5,
                                 headers={"accept": "application/openmetrics-text"})
            assert response.headers["content-type"].startswith("application/openmetrics-text")
            assert response.text.rstrip().endswith("# EOF")
        finally:
            api.stop()
    finally:
        worker.stop()
    assert "Prometheus metrics on http://0.0.0.0:" in worker.log()


def test_a_worker_whose_metrics_port_is_taken_runs_and_says_so(
        redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path) -> None:
    publish(redis_client, NS, V1, source="v1")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = start_worker(redis_server.url, tmp_path, "--concurrency", "1",
                              CELERY_CONFIG_METRICS_PORT=str(port))  # waits for "ready."
        try:
            assert worker.lines(rf"ERROR .*Prometheus metrics not served on port {port}: ")
            assert worker.process.poll() is None
        finally:
            worker.stop()
