"""Prometheus metrics of one service instance (the worker or the API), from its LiveConfig.

Two kinds, so that nothing is sprinkled through the live-reload code:

- Events, counted as they happen: :class:`ServiceMetrics` is a
  :class:`~celery_config_sync.live_config.LiveObserver`, told by LiveConfig of each version
  applied (applies, restart-required, reload latency) or rejected.
- State, read when Prometheus scrapes (a collector, never a stale copy): the published and the
  applied version and sha256, the fallback in use, the settings waiting for a restart, the age
  of the fleet heartbeat and the depth of every declared queue in the broker's Redis. One is
  read by the heartbeat instead (every CELERY_CONFIG_HEARTBEAT_INTERVAL, off the scrape): how
  many live workers consume each declared queue, from the fleet view.

Plus the standard process, platform and GC collectors (resident memory on a Pi). Each instance
has a registry of its own (not prometheus_client's global one), so that a test or a process can
hold several. The registry (:mod:`celery_config_sync.metrics_exposition`, prometheus_client) is
built when it is first exposed; the events before it are counted here and carried into it, so
that a server imports prometheus_client at its first scrape, not before it is ready. The API
serves :meth:`ServiceMetrics.render` at ``GET /metrics``; the worker has no HTTP server and
calls :meth:`ServiceMetrics.serve` from its main process only.

Times are monotonic, never wall clocks (a Pi boots without a real-time clock): the reload
latency runs from the hint that woke the watcher to the switch, not from ``published_at``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from .live_config import Applied, LiveConfig
from .queue_depth import broker_client

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from .metrics_exposition import Exposition

log = logging.getLogger("celery_config_sync.metrics")

PREFIX = "celery_config_"
# From the 5 ms the watcher waits for a burst of messages to end, to a slow SD card.
RELOAD_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class EventCounts:
    """The events of one instance before its registry exists: one reload time per version
    applied until the first scrape (a handful: versions are published by people)."""

    since: float = field(default_factory=time.time)  # the counters' _created (wall clock)
    applies: int = 0
    rejections: int = 0
    restart_required: int = 0
    reload_seconds: list[float] = field(default_factory=list)

    def applied(self, new: Applied, seconds: float) -> None:
        self.applies += 1
        self.reload_seconds.append(seconds)
        if new.restart_required:
            self.restart_required += 1

    def rejected(self) -> None:
        self.rejections += 1


class ServiceMetrics:
    """The metrics of one LiveConfig; registers itself as its observer."""

    def __init__(self, live: LiveConfig, broker: redis.Redis | None = None) -> None:
        self.live = live
        self.broker = broker
        self._lock = threading.Lock()  # the watcher's thread counts, a scrape's thread exposes
        self._counted = EventCounts()
        self._exposition: Exposition | None = None
        live.observers.append(self)
        live.track_coverage = True  # the consumers per queue, read after each heartbeat
        if live.watcher is not None:
            live.watcher.tick_soon()  # already following: read it now, not a heartbeat later

    @property
    def exposition(self) -> Exposition:
        """The registry and its metrics, built at the first call (prometheus_client imported)."""
        with self._lock:
            if self._exposition is None:
                from .metrics_exposition import Exposition

                self._exposition = Exposition(self, self._counted)
            return self._exposition

    @property
    def registry(self) -> CollectorRegistry:
        return self.exposition.registry

    # ----------------------------------------------------------- LiveObserver (events)
    def applied(self, new: Applied, seconds: float) -> None:
        with self._lock:
            (self._exposition or self._counted).applied(new, seconds)

    def rejected(self, version: int | None, problem: str) -> None:
        with self._lock:
            (self._exposition or self._counted).rejected()

    # ------------------------------------------------------------------------ exposure
    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition (text format, or OpenMetrics when ``accept`` asks) and its type."""
        return self.exposition.render(accept)

    def serve(self, port: int, addr: str = "0.0.0.0") -> Any:  # noqa: S104 (a container's port)
        """An HTTP server of this registry in a daemon thread (the worker's): its server, whose
        socket a forked child closes (it must never answer in the parent's name)."""
        server = self.exposition.serve(port, addr)
        log.info("Prometheus metrics on http://%s:%d/metrics", addr, port)
        return server


__all__ = ["PREFIX", "EventCounts", "ServiceMetrics", "broker_client"]
