"""The watcher: hears of new versions and re-reads the namespace, in a thread of its own.

A message on the update channel is only a hint. The truth is one re-read of the namespace (one
round trip, :class:`~celery_config_sync.loader.RedisReader`, which returns its memoized result
when the bytes have not changed), compared by the caller on sha256, not on the version number:
a version can go backwards when Redis loses its data. The watcher also re-reads on every
(re)subscribe confirmation, which catches what was published while it was disconnected, and
on a slow jittered poll, which catches a message lost for any other reason.

A burst of messages is one re-read: after a hint the watcher keeps draining the channel while
messages keep coming (a short quiet period, bounded), then reads once.

redis-py's PubSub with ``health_check_interval`` (a dead connection is noticed even when the
channel is quiet), driven by our own ``get_message`` loop: ``run_in_thread`` would hide the
subscribe confirmations this depends on.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import redis
from redis.backoff import ExponentialWithJitterBackoff

from .connection import make_client, redacted
from .errors import CeleryConfigError, InvalidConfig, is_wrong_type
from .redis_keys import Keys

log = logging.getLogger("celery_config_sync.watcher")

# After a hint, keep draining while messages arrive less than QUIET apart, for at most
# COALESCE_MAX: 50 publishes in a row become one or a few re-reads, one publish costs QUIET.
QUIET = 0.005
COALESCE_MAX = 0.25
HEALTH_CHECK_INTERVAL = 15.0


T = TypeVar("T")


class ConfigWatcher(Generic[T]):
    """Calls ``read`` on every hint, and ``on_read`` with what it returned, ``on_failure`` with
    every failed read (invalid content, nothing published, Redis unreachable), and ``on_tick``
    every ``tick_interval`` seconds (the caller's heartbeat), all from the watcher's own thread.

    ``read`` is the caller's long-lived ``RedisReader.load`` (live reload), or a peek at the
    published version and sha256 alone (live reload off: the service only reports a lag)."""

    def __init__(self, read: Callable[[], T], namespace: str, redis_url: str, *,
                 on_read: Callable[[T], None],
                 on_failure: Callable[[Exception], None],
                 on_tick: Callable[[], None] | None = None,
                 poll_interval: float = 30.0, tick_interval: float = 10.0) -> None:
        self.read = read
        self.redis_url = redis_url
        self.channel = Keys(namespace).channel
        self.on_read = on_read
        self.on_failure = on_failure
        self.on_tick = on_tick
        self.poll_interval = poll_interval
        self.tick_interval = tick_interval
        self.rereads = 0  # how many times the namespace was read (the benchmark reports it)
        # monotonic time of the hint (message, subscribe confirmation) or poll that started the
        # re-read under way: the reload latency is measured from it (celery_config_sync.metrics)
        self.woken_at: float | None = None
        self._stop = threading.Event()
        self._tick_soon = threading.Event()
        self._thread: threading.Thread | None = None
        self._subscriber: redis.Redis | None = None

    # ------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="celery-config-watcher",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def tick_soon(self) -> None:
        """Run ``on_tick`` at the loop's next turn (within a second) rather than at its time:
        the caller's heartbeat has news (a worker's consumed queues changed)."""
        self._tick_soon.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------------------ loop
    def _next_poll(self) -> float:
        # Jittered (+-20%) so that a fleet restarted together does not poll together.
        return time.monotonic() + self.poll_interval * random.uniform(0.8, 1.2)  # noqa: S311

    def _run(self) -> None:
        backoff = ExponentialWithJitterBackoff(cap=5.0, base=0.1)
        failures = 0
        next_tick = time.monotonic()
        while not self._stop.is_set():
            try:
                next_tick = self._listen(next_tick)
                failures = 0
            except (redis.RedisError, OSError) as exc:
                failures += 1
                if failures == 1:
                    log.warning("update channel %s lost (%s: %s): keeping the applied version, "
                                "reconnecting", self.channel, type(exc).__name__, exc)
                    self.on_failure(exc)
                self._stop.wait(backoff.compute(failures))
            except Exception:  # never let the thread die: it is the service's only update path
                log.exception("watcher error; restarting the subscription")
                self._stop.wait(1.0)

    def _listen(self, next_tick: float) -> float:
        """Subscribe, then read hints until stopped or the connection fails (which raises)."""
        self._subscriber = make_client(self.redis_url, retries=0,
                                       health_check_interval=HEALTH_CHECK_INTERVAL)
        pubsub = self._subscriber.pubsub(ignore_subscribe_messages=False)
        try:
            pubsub.subscribe(self.channel)
            next_poll = self._next_poll()
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_tick or self._tick_soon.is_set():
                    self._tick_soon.clear()
                    self._tick()
                    next_tick = now + self.tick_interval
                wait = max(0.0, min(next_poll, next_tick, now + 1.0) - now)
                message = pubsub.get_message(timeout=wait)
                woken = time.monotonic()
                hint = message is not None and message["type"] in ("subscribe", "message")
                if message is not None and message["type"] == "subscribe":
                    log.info("subscribed to %s on %s", self.channel, redacted(self.redis_url))
                if hint:
                    self._coalesce(pubsub)
                if hint or time.monotonic() >= next_poll:
                    self.woken_at = woken
                    self._reread()
                    next_poll = self._next_poll()
        finally:
            pubsub.close()
            self._subscriber.close()
        return next_tick

    def _coalesce(self, pubsub: redis.client.PubSub) -> None:
        deadline = time.monotonic() + COALESCE_MAX
        while time.monotonic() < deadline and pubsub.get_message(timeout=QUIET) is not None:
            pass

    def _reread(self) -> None:
        self.rereads += 1
        try:
            found = self.read()
        except redis.ResponseError as exc:
            # WRONGTYPE is corrupt content (snapshot_reading's readers already say so, naming
            # the key): never report it as an unreachable Redis.
            self.on_failure(InvalidConfig("Redis content", f"corrupt data: wrong Redis type "
                                                           f"({exc})")
                            if is_wrong_type(exc) else exc)
            return
        except CeleryConfigError as exc:
            self.on_failure(exc)
            return
        self.on_read(found)

    def _tick(self) -> None:
        if self.on_tick is None:
            return
        try:
            self.on_tick()
        except (redis.RedisError, OSError) as exc:
            log.debug("heartbeat failed: %s", exc)
