"""``celery beat`` on the shared configuration: the published ``beat_schedule`` followed live,
and one active beat at a time.

:class:`LiveScheduler` is the default scheduler of an app given to
:func:`celery_config_sync.celery.attach` (unless the app chose another one), so ``celery -A proj
beat`` needs no option. It is Celery's own ``PersistentScheduler`` (its state in a shelve file:
give ``--schedule`` a path on a writable volume, the last-known-good one in our images) with two
additions:

- **Live schedule.** Each version the watcher applies is merged into the schedule at once, on
  the watcher's thread, with Celery's own ``merge_inplace``, under a lock that beat's ticks hold
  too (a tick never sees half a merge): entries added, removed or changed without a restart,
  and an entry that is still there keeps its last run time (nothing fires twice or is skipped
  because of a publish). The heap is rebuilt at the next tick, a few seconds apart at most.
- **One active beat** (celery-redbeat's idea, on this project's layout and Redis ACL): a lock
  ``NS:beat:lock`` with a TTL (``CELERY_CONFIG_BEAT_LOCK_TIMEOUT``), renewed at every tick, a
  third of the TTL apart at most. A beat without the lock sends nothing and tries again; when
  the active one dies its lock expires and another takes over within one TTL plus one tick.
  Every entry's last run time is written to ``NS:beat:last_run`` before its task is sent, and a
  beat that takes over starts from those times: no entry fires twice per due time (a crash
  between the write and the send skips one run rather than doubling it).

Beat keeps its record in the fleet view as service ``beat``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from datetime import datetime
from typing import Any

import redis
from celery.beat import PersistentScheduler, ScheduleEntry
from redis.exceptions import LockError

from .celery import attached
from .fleet import default_instance
from .live_config import Applied
from .redis_keys import Keys

log = logging.getLogger("celery_config_sync.beat")


class BeatLock:
    """The lock that makes one beat the active one: redis-py's :class:`redis.lock.Lock` (a
    token in ``NS:beat:lock`` set with NX and a TTL, renewed and released by Lua scripts that
    check the token), taken without blocking."""

    def __init__(self, client: redis.Redis, namespace: str, timeout: float,
                 owner: str | None = None) -> None:
        self.key = Keys(namespace).beat_lock
        self.client = client
        self.timeout = timeout
        self.owner = owner or default_instance()
        self._lock = client.lock(self.key, timeout=timeout, thread_local=False)
        self.held = False
        self._renewed_at = 0.0
        self._last_error: str | None = None

    def hold(self) -> bool:
        """Take the lock or renew it; True while this beat holds it."""
        try:
            if self.held:
                # Celery's loop ticks again and again in the last 10 ms before a due time:
                # renew at most once a second (the TTL is several seconds).
                if time.monotonic() - self._renewed_at < min(1.0, self.timeout / 10):
                    return True
                self._lock.reacquire()
            else:
                self.held = bool(self._lock.acquire(blocking=False, token=self.owner))
                if not self.held and self._lock.owned():
                    # Still this beat's in Redis (a renewal that timed out, a loaded Pi): keep
                    # it rather than wait for its own lock to expire.
                    self._lock.reacquire()
                    self.held = True
        except LockError:  # expired and taken by another beat (or Redis lost it)
            log.warning("lost the beat lock %s: another beat schedules now", self.key)
            self.held = False
        except (redis.RedisError, OSError) as exc:
            # Redis unreachable: the lock expires there by itself; stop scheduling here too.
            reason = f"{type(exc).__name__}: {exc}"
            if self.held:
                log.warning("beat lock not renewed (%s): standing by", reason)
            elif reason != self._last_error:  # e.g. NOPERM: said once, not at every tick
                log.warning("beat lock %s not taken (%s): standing by", self.key, reason)
            self._last_error = reason
            self.held = False
        else:
            if self.held:
                self._renewed_at = time.monotonic()
            self._last_error = None
        return self.held

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(LockError, redis.RedisError, OSError):
                self._lock.release()
            self.held = False


class LiveScheduler(PersistentScheduler):  # type: ignore[misc]
    """Celery's persistent scheduler, following the shared ``beat_schedule`` live, active only
    while it holds the beat lock."""

    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        self._tick_lock = threading.Lock()  # a tick, or a merge of a published schedule
        self._reserved: set[str] = set()  # entries this process ran (their times are its own)
        self.lock: BeatLock | None = None
        self.active = False
        super().__init__(app, *args, **kwargs)

    # ------------------------------------------------------------------------- start
    def setup_schedule(self) -> None:
        sync = attached(self.app)
        if sync is None:
            raise RuntimeError(f"{type(self).__name__} needs the app attached first: "
                               "celery_config_sync.celery.attach(app)")
        live = sync.begin("beat")
        env = live.env
        self.lock = BeatLock(live.reader.client, env.namespace, env.beat_lock_timeout,
                             owner=live.instance)
        self._last_run_key = Keys(env.namespace).beat_last_run
        # At least one tick per third of the lock's TTL (renewal), and every few seconds so
        # that a published change is merged soon.
        self.max_interval: float = min(float(self.max_interval), env.beat_lock_timeout / 3, 5.0)
        super().setup_schedule()
        sync.listeners.append(self._on_apply)
        live.watch()
        if env.metrics_port and sync.metrics_server is None:
            sync.serve_metrics(env.metrics_port)
        log.info("beat scheduling %d entries of version %d; the lock %s decides which beat "
                 "sends them", len(self.schedule), live.current.loaded.version, self.lock.key)

    def _on_apply(self, old: Applied, new: Applied) -> None:
        """The watcher's thread: merge a changed schedule (between two ticks)."""
        before = old.loaded.document.base.get("beat_schedule")
        after = new.loaded.document.base.get("beat_schedule")
        if before != after:
            with self._tick_lock:
                self._merge(dict(new.loaded.settings.get("beat_schedule") or {}))

    # -------------------------------------------------------------------------- tick
    def tick(self, *args: Any, **kwargs: Any) -> float:
        with self._tick_lock:
            return self._tick(*args, **kwargs)

    def _tick(self, *args: Any, **kwargs: Any) -> float:
        assert self.lock is not None
        was_active, self.active = self.active, self.lock.hold()
        if not self.active:
            if was_active:
                log.warning("standing by: another beat holds %s", self.lock.key)
            return float(self.max_interval)
        if not was_active:
            self._resume_from_shared_times()
            log.info("active beat (holds %s for %gs, renewed every tick)", self.lock.key,
                     self.lock.timeout)
        return float(min(super().tick(*args, **kwargs), self.max_interval))

    def _merge(self, schedule: dict[str, Any]) -> None:
        before = set(self.schedule)
        self.merge_inplace(schedule)
        self.install_default_entries(self.schedule)
        self._heap = None  # entries changed in place: rebuild the heap at this tick
        self.sync()
        after = set(self.schedule)
        log.info("beat schedule applied live: %d entries (added %s, removed %s)", len(after),
                 ", ".join(sorted(after - before)) or "none",
                 ", ".join(sorted(before - after)) or "none")

    # ---------------------------------------------------- the last run times, in Redis
    def reserve(self, entry: ScheduleEntry) -> ScheduleEntry:
        """Advance ``entry`` and record its run in Redis before its task is sent."""
        new_entry: ScheduleEntry = super().reserve(entry)
        self._reserved.add(entry.name)
        assert self.lock is not None
        try:
            self.lock.client.hset(self._last_run_key, entry.name,
                                       new_entry.last_run_at.isoformat())
        except (redis.RedisError, OSError) as exc:
            log.warning("last run of %s not recorded in Redis: %s", entry.name, exc)
        return new_entry

    def _resume_from_shared_times(self) -> None:
        """Taking over: start every entry from the last run the previous active beat recorded,
        when it is later than what this beat knows."""
        assert self.lock is not None
        try:
            recorded: dict[bytes, bytes] = self.lock.client.hgetall(self._last_run_key)  # type: ignore[assignment]
        except (redis.RedisError, OSError) as exc:
            log.warning("last run times not read from Redis: %s", exc)
            return
        for raw_name, raw_when in recorded.items():
            name = raw_name.decode(errors="replace")
            entry = self.schedule.get(name)
            if entry is None:
                continue
            try:
                when = datetime.fromisoformat(raw_when.decode())
                # The recorded time is the truth, unless this process ran the entry itself
                # later (its write to Redis failed): a standby's own last_run_at is only its
                # start time, and keeping it would push the entry back by that much.
                if (name not in self._reserved or entry.last_run_at is None
                        or when > entry.last_run_at):
                    entry.last_run_at = when
            except (ValueError, TypeError, UnicodeDecodeError):
                log.warning("ignored the recorded last run of %s: %r", name, raw_when[:64])
        self._heap = None

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.lock is not None:
                self.lock.release()
            sync = attached(self.app)
            if sync is not None:
                sync.stop()

    @property
    def info(self) -> str:
        lock = f"\n    . lock -> {self.lock.key}" if self.lock is not None else ""
        return f"{super().info}{lock}"


__all__ = ["BeatLock", "LiveScheduler"]
