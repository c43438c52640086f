"""The Prometheus side of :mod:`celery_config_sync.metrics`: one instance's registry (the event
counters and histogram, the state read at each scrape, the process, platform and GC
collectors), built when it is first exposed (a scrape, or the worker's metrics server), so that
prometheus_client is imported then and not before a server is ready (issue 20)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from .live_config import Applied
from .metrics import PREFIX, RELOAD_BUCKETS, EventCounts, log
from .queue_depth import priority_steps, queue_depths

if TYPE_CHECKING:
    from .metrics import ServiceMetrics


class Exposition:
    """The registry of one :class:`ServiceMetrics`, with the events counted before it existed
    (``counted``) carried into its counters and histogram."""

    def __init__(self, metrics: ServiceMetrics, counted: EventCounts) -> None:
        self.registry = CollectorRegistry()
        self.applies = Counter(f"{PREFIX}applies", "Versions applied live (switched to).",
                               registry=self.registry)
        self.rejections = Counter(f"{PREFIX}rejections", "Versions refused (invalid): never "
                                  "applied; counted once per rejection logged.",
                                  registry=self.registry)
        self.restart_required = Counter(f"{PREFIX}restart_required", "Versions applied that "
                                        "change a setting which waits for a restart.",
                                        registry=self.registry)
        self.reload_seconds = Histogram(f"{PREFIX}reload_seconds", "From the hint that woke "
                                        "the watcher (update message, resubscribe or poll) to "
                                        "the switch to the new version (monotonic clock).",
                                        buckets=RELOAD_BUCKETS, registry=self.registry)
        for metric in (self.applies, self.rejections, self.restart_required,
                       self.reload_seconds):
            # Counting began when the metrics were made, not now: their _created says so.
            if hasattr(metric, "_created"):
                metric._created = counted.since
        self.applies.inc(counted.applies)
        self.rejections.inc(counted.rejections)
        self.restart_required.inc(counted.restart_required)
        for seconds in counted.reload_seconds:
            self.reload_seconds.observe(seconds)
        self.registry.register(StateCollector(metrics))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def applied(self, new: Applied, seconds: float) -> None:
        self.applies.inc()
        self.reload_seconds.observe(seconds)
        if new.restart_required:
            self.restart_required.inc()

    def rejected(self) -> None:
        self.rejections.inc()

    def render(self, accept: str | None) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def serve(self, port: int, addr: str) -> Any:
        server, _thread = start_http_server(port, addr, registry=self.registry)
        return server


@dataclass(frozen=True)
class Family:
    """One state metric: its name (after the prefix), type, help, labels and how to read it."""

    name: str
    kind: type[GaugeMetricFamily] | type[InfoMetricFamily]
    documentation: str
    labels: tuple[str, ...]
    samples: Callable[[ServiceMetrics], Iterator[tuple[Any, ...]]]


def _published_version(m: ServiceMetrics) -> Iterator[tuple[Any, ...]]:
    if m.live.published is not None:
        yield (), m.live.published[0]


def _published_info(m: ServiceMetrics) -> Iterator[tuple[Any, ...]]:
    if m.live.published is not None:
        version, sha256 = m.live.published
        yield (str(version), sha256), {}


def _applied_version(m: ServiceMetrics) -> Iterator[tuple[Any, ...]]:
    yield (), m.live.current.loaded.version


def _applied_info(m: ServiceMetrics) -> Iterator[tuple[Any, ...]]:
    loaded = m.live.current.loaded
    yield (m.live.service, str(loaded.version), loaded.sha256, loaded.source), {}


def _fallback(m: ServiceMetrics) -> Iterator[tuple[Any, ...]]:
    source = m.live.current.loaded.source
    yield (source,), 0 if source == "redis" else 1


def _restart_pending(m: ServiceMetrics) -> Iterator[tuple[Any, ...]]:
    for setting in m.live.current.restart_required:
        yield (setting,), 1


def _heartbeat_age(m: ServiceMetrics) -> Iterator[tuple[Any, ...]]:
    last = m.live.last_heartbeat
    yield (), time.monotonic() - (last if last is not None else m.live.created)


def _queue_depth(m: ServiceMetrics) -> Iterator[tuple[Any, ...]]:
    if m.broker is None:
        return
    applied = m.live.current
    try:
        depths = queue_depths(m.broker, applied.routing.queues.keys(),
                              m.live.env.celery_keyprefix, priority_steps(applied.loaded.settings))
    except (redis.RedisError, OSError) as exc:
        log.debug("queue depths left out of this scrape: %s", exc)
        return
    for queue, depth in depths.items():
        yield (queue,), depth


def _queue_consumers(m: ServiceMetrics) -> Iterator[tuple[Any, ...]]:
    """Known consumers per declared queue, as of the last heartbeat; none for a queue that no
    record lists while a worker that does not say what it consumes lives (it may)."""
    snapshot = m.live.coverage
    for row in snapshot.rows if snapshot is not None else ():
        if row.consumers or not row.unknown:
            yield (row.name, "true" if row.routed else "false"), row.consumers


# The state Prometheus reads at each scrape, one row per metric (README, "Metrics").
STATE: tuple[Family, ...] = (
    Family("published_version", GaugeMetricFamily, "Configuration version last read in Redis "
           "by this instance (absent until it read Redis once).", (), _published_version),
    Family("published", InfoMetricFamily, "Version and sha256 last read in Redis by this "
           "instance.", ("version", "sha256"), _published_info),
    Family("applied_version", GaugeMetricFamily, "Configuration version this instance "
           "applies.", (), _applied_version),
    Family("applied", InfoMetricFamily, "What this instance applies: service, version, sha256 "
           "and the source it came from (redis, last-known-good, snapshot).",
           ("service", "version", "sha256", "source"), _applied_info),
    Family("fallback_in_use", GaugeMetricFamily, "1 when the applied configuration came from a "
           "fallback (last-known-good, snapshot) rather than Redis; the label names it.",
           ("source",), _fallback),
    Family("restart_pending", GaugeMetricFamily, "1 for each setting of the applied version that "
           "waits for a restart of this instance.", ("setting",), _restart_pending),
    Family("heartbeat_age_seconds", GaugeMetricFamily, "Seconds since this instance last wrote "
           "its fleet record in Redis (since it started, if never).", (), _heartbeat_age),
    Family("queue_depth", GaugeMetricFamily, "Messages waiting in each declared queue, in the "
           "broker's Redis (every priority list; absent when Redis does not answer).",
           ("queue",), _queue_depth),
    Family("queue_consumers", GaugeMetricFamily, "Live workers consuming each declared queue, "
           "from their fleet records as of this instance's last heartbeat; routed=\"true\" when "
           "routes, beat entries or task_default_queue send to it (0 there: its tasks pile up). "
           "Absent for a queue no record lists while a worker of an older release lives.",
           ("queue", "routed"), _queue_consumers),
)


class StateCollector(Collector):
    """Reads the STATE table at each scrape (before the first load: nothing)."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        try:
            self.metrics.live.current  # noqa: B018 (raises before the first load)
        except RuntimeError:
            return
        for family in STATE:
            metric = family.kind(PREFIX + family.name, family.documentation,
                                 labels=family.labels)
            for labels, value in family.samples(self.metrics):
                metric.add_metric(list(labels), value)
            yield metric

    def describe(self) -> list[Metric]:
        # Known names without reading the state (a registry asks at register time).
        return [family.kind(PREFIX + family.name, family.documentation, labels=family.labels)
                for family in STATE]


__all__ = ["STATE", "Exposition", "Family", "StateCollector"]
