"""A service's configuration at run time: loaded once at start, then kept up to date live.

:class:`LiveConfig` is what the worker and the API share. It loads through the fallback chain
with a long-lived reader, builds the routing state, and (live reload on, the default) runs the
watcher: each re-read that brings a different sha256, version or source is validated (the
reader does that), turned into a complete new :class:`Applied` state off to the side and
switched to with one assignment; the service's ``on_apply`` hook then does what only it can
(the worker changes its consumers on its own event loop). An invalid version is never applied:
the service keeps what it has, logs one line naming the bad key and reports it.

Every instance keeps its record in the fleet view (:mod:`celery_config_sync.fleet`; a worker
adds the queues it consumes through :attr:`LiveConfig.consumes`); an instance that reports on
the whole fleet (the API, a process serving metrics) sets :attr:`LiveConfig.track_coverage` and
reads, after each heartbeat, which routed queues no live worker consumes
(:mod:`celery_config_sync.queue_coverage`). It tells
its observers (:class:`LiveObserver`: the Prometheus metrics, :mod:`celery_config_sync.metrics`)
of each version it applies or rejects, from the one place where that happens.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import redis

from .codec import ConfigDocument
from .connection import make_client
from .diffing import describe_change
from .environment import Environment
from .errors import CeleryConfigError, NotPublished
from .fleet import (
    CONSUMES,
    default_instance,
    delete_record,
    encode_consumes,
    scan_fleet,
    write_record,
)
from .live_settings import restart_required
from .loader import LoadedConfig, RedisReader, load_config, remember
from .queue_coverage import QueueCoverage, coverage
from .routing import RoutingState, build_routing
from .snapshot_decoding import Published
from .snapshot_reading import peek_published
from .watcher import ConfigWatcher

log = logging.getLogger("celery_config_sync.live")


@dataclass(frozen=True)
class Applied:
    """What a service applies: the configuration, its routing state, and what waits for a
    restart. Immutable: a change is a new object, swapped in with one assignment."""

    routing: RoutingState
    restart_required: tuple[str, ...] = ()
    applied_at: str = ""

    @property
    def loaded(self) -> LoadedConfig:
        return self.routing.loaded


OnApply = Callable[["Applied", "Applied"], None]


@dataclass(frozen=True)
class CoverageSnapshot:
    """The queues' coverage as one heartbeat read it (monotonic time ``at``): immutable, swapped
    in with one assignment, read by the probes and the metrics without touching Redis."""

    rows: tuple[QueueCoverage, ...]
    at: float

    @property
    def unconsumed(self) -> list[str]:
        return [row.name for row in self.rows if row.unconsumed]


class LiveObserver(Protocol):
    """Told, under LiveConfig's lock, of each version applied or rejected. Must be quick and
    must not raise: it runs on the watcher's thread, between the switch and the service's hook.
    """

    def applied(self, new: Applied, seconds: float) -> None:
        """``new`` is switched to, ``seconds`` after the hint (update message, resubscribe or
        poll) whose re-read found it (monotonic clock)."""

    def rejected(self, version: int | None, problem: str) -> None:
        """A version was refused (logged once, as this is called once)."""


class LiveConfig:
    """The running configuration of one service instance (``service``: worker, api)."""

    def __init__(self, service: str, env: Environment, *, on_apply: OnApply | None = None,
                 instance: str | None = None) -> None:
        self.service = service
        self.env = env
        self.instance = instance or default_instance()
        self.on_apply = on_apply
        self.reader = RedisReader(make_client(env.redis_url, retries=1), env.namespace,
                                  allow=env.allow_unsafe)
        self.watcher: ConfigWatcher[Any] | None = None
        self.last_error = ""
        self.published: tuple[int, str] | None = None  # last (version, sha256) read in Redis
        self.applies = 0
        self.observers: list[LiveObserver] = []
        # monotonic time of the last fleet record written (None: none yet), and of the start
        self.last_heartbeat: float | None = None
        self.created = time.monotonic()
        # A worker's: the queues it consumes now (None: not known yet), for its fleet record.
        self.consumes: Callable[[], Iterable[str] | None] | None = None
        # Read the fleet's queue coverage after each heartbeat (the API, a metrics server).
        self.track_coverage = False
        self.coverage: CoverageSnapshot | None = None
        self._consumes_too_long = False
        self._current: Applied | None = None
        self._started_with: ConfigDocument | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------ state
    @property
    def current(self) -> Applied:
        if self._current is None:
            raise RuntimeError("LiveConfig.load() has not run")
        return self._current

    def load(self) -> Applied:
        """Walk the fallback chain once (raises NoConfigAvailable when every link fails)."""
        loaded = load_config(self.env, reader=self.reader)
        if loaded.source == "redis":
            self.published = (loaded.version, loaded.sha256)
        self._started_with = loaded.document
        self._current = Applied(build_routing(loaded), applied_at=_now())
        return self._current

    def adopt(self, applied: Applied) -> None:
        """Take a state applied elsewhere (a prefork child adopts its parent's)."""
        self._current = applied

    # ---------------------------------------------------------------------- live reload
    def watch(self) -> None:
        """Start the watcher (when live reload is on) and the fleet heartbeat."""
        if not self.env.live_reload:
            log.info("live reload off (CELERY_CONFIG_LIVE_RELOAD=false): a new version is "
                     "applied at the next restart")
        if self.watcher is not None:
            return
        timing = {"poll_interval": self.env.poll_interval,
                  "tick_interval": self.env.heartbeat_interval}
        watcher: ConfigWatcher[Any]
        if self.env.live_reload:
            watcher = ConfigWatcher(self.reader.load, self.env.namespace, self.env.redis_url,
                                    on_read=self.consider, on_failure=self.failed,
                                    on_tick=self.heartbeat, **timing)
        else:
            # Off: nothing is applied; a hint costs a peek at the version and sha256 (no
            # decode), so that the fleet view and /readyz still say this instance lags.
            watcher = ConfigWatcher(lambda: peek_published(self.reader.client,
                                                           self.env.namespace),
                                    self.env.namespace, self.env.redis_url,
                                    on_read=self._note_published, on_failure=self.failed,
                                    on_tick=self.heartbeat, **timing)
        self.watcher = watcher
        watcher.start()

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        with contextlib.suppress(redis.RedisError, OSError):
            delete_record(self.reader.client, self.env.namespace, self.service, self.instance)

    def _note_published(self, seen: tuple[int | None, str | None]) -> None:
        version, sha = seen
        if sha is not None:
            self.published = (version or 0, sha)

    def consider(self, published: Published) -> None:
        """A re-read: apply it if it differs from what runs (the watcher's thread)."""
        woken = self.watcher.woken_at if self.watcher is not None else None
        woken = woken if woken is not None else time.monotonic()
        with self._lock:
            self.published = (published.version, published.sha256)
            old = self.current
            running = old.loaded
            if (running.sha256, running.version, running.source) == (
                    published.sha256, published.version, "redis"):
                # A good read of what runs: whatever failed before (Redis unreachable, a
                # rejected version since replaced) is over, and no longer reported.
                beat, self.last_error = bool(self.last_error), ""
                if beat:
                    log.info("Redis answers with version %d again: in sync", running.version)
            else:
                beat = self._apply(published, old, woken)
        if beat:
            self.heartbeat()

    def _apply(self, published: Published, old: Applied, woken: float) -> bool:
        """Switch to ``published`` (under the lock): True once applied, False if refused."""
        running = old.loaded
        loaded = LoadedConfig.from_published(published)
        try:
            routing = build_routing(loaded)
        except Exception as exc:  # validated content kombu still refuses: never applied
            self._reject(published.version, f"{type(exc).__name__}: {exc}")
            return False
        assert self._started_with is not None
        waiting = tuple(restart_required(self._started_with, loaded.document, self.service))
        new = Applied(routing, waiting, _now())
        self._current = new  # the switch: one assignment
        seconds = time.monotonic() - woken
        self.applies += 1
        self.last_error = ""
        self._tell("applied", new, seconds)
        log.info("applied version %d (sha256 %s) live, was version %d from %s: %s%s",
                 loaded.version, loaded.sha256[:12], running.version, running.source,
                 describe_change(running.document, loaded.document),
                 f"; restart required for {', '.join(waiting)}" if waiting else "")
        if self.on_apply is not None:
            self.on_apply(old, new)
        # Last: the disk (two fsyncs; an SD card is slow) never delays the switch.
        remember(self.env.fallback_path, loaded, check_existing=False)
        return True

    def _tell(self, event: str, *args: Any) -> None:
        """Every observer, each on its own: a failing one (a bug) must not stop the switch
        half-way (the worker's consumers, last-known-good) nor the observers after it."""
        for observer in self.observers:
            try:
                getattr(observer, event)(*args)
            except Exception:
                log.exception("observer %r failed on %s", observer, event)

    def failed(self, exc: Exception) -> None:
        """A re-read that failed: nothing is applied, the reason is kept and reported."""
        if isinstance(exc, NotPublished):
            problem = "nothing published in Redis (flushed or lost?)"
        elif isinstance(exc, CeleryConfigError):
            version, sha = self.reader.last_seen()
            if sha is not None:
                self.published = (version or 0, sha)
            self._reject(version, str(exc))
            return
        else:
            problem = f"Redis unreachable: {type(exc).__name__}"
        if problem != self.last_error:
            log.warning("%s: keeping version %d", problem, self.current.loaded.version)
            self.last_error = problem

    def _reject(self, version: int | None, problem: str) -> None:
        what = f"version {version}" if version is not None else "the published configuration"
        message = f"rejected {what}: {problem}"
        if message != self.last_error:  # one line per rejection, not one per re-read
            log.error("%s; still on version %d", message, self.current.loaded.version)
            self.last_error = message
            self._tell("rejected", version, problem)
        self.heartbeat()

    # -------------------------------------------------------------------------- reporting
    def status(self) -> dict[str, Any]:
        """This instance's facts: the fleet record, plus what Redis holds and whether it lags."""
        applied = self.current
        loaded = applied.loaded
        published_version, published_sha = self.published or (None, None)
        return {
            "service": self.service,
            "instance": self.instance,
            "version": loaded.version,
            "sha256": loaded.sha256,
            "source": loaded.source,
            "applied_at": applied.applied_at,
            "restart_required": list(applied.restart_required),
            "last_error": self.last_error,
            "live_reload": self.env.live_reload,
            "published_version": published_version,
            "published_sha256": published_sha,
            "lagging": published_sha is not None and published_sha != loaded.sha256,
        }

    def record(self) -> dict[str, str]:
        status = self.status()
        return {
            "service": self.service,
            "instance": self.instance,
            "hostname": self.instance.rsplit(":", 1)[0],
            "pid": self.instance.rsplit(":", 1)[-1],
            "version": str(status["version"]),
            "sha256": status["sha256"],
            "source": status["source"],
            "applied_at": status["applied_at"],
            "restart_required": ",".join(status["restart_required"]),
            "last_error": status["last_error"],
            "live_reload": "true" if self.env.live_reload else "false",
            **self._consumes_field(),
        }

    def _consumes_field(self) -> dict[str, str]:
        names = self.consumes() if self.consumes is not None else None
        encoded = encode_consumes(names) if names is not None else None
        if names is not None and encoded is None and not self._consumes_too_long:
            self._consumes_too_long = True  # said once, not at every heartbeat
            log.warning("the queues this instance consumes do not fit its fleet record: "
                        "reported as unknown")
        return {CONSUMES: encoded} if encoded is not None else {}

    def heartbeat(self) -> None:
        """Write this instance's record with a TTL of three heartbeats."""
        try:
            write_record(self.reader.client, self.env.namespace, self.record(),
                         ttl=max(3 * self.env.heartbeat_interval, 5))
            self.last_heartbeat = time.monotonic()
        except (redis.RedisError, OSError) as exc:
            log.debug("fleet record not written: %s", exc)
        if self.track_coverage:
            self.read_coverage()

    def read_coverage(self) -> None:
        """Which queues of the applied configuration the live workers consume (kept on failure:
        the snapshot's time says how old it is)."""
        try:
            fleet = scan_fleet(self.reader.client, self.env.namespace)
        except (redis.RedisError, OSError) as exc:
            log.debug("queue coverage not read: %s", exc)
            return
        rows = coverage(self.current.loaded.settings, fleet.records, hidden=fleet.hidden)
        self.coverage = CoverageSnapshot(tuple(rows), time.monotonic())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


__all__ = ["Applied", "CoverageSnapshot", "LiveConfig", "LiveObserver"]
