"""Load the configuration: Redis -> last-known-good file -> snapshot file -> a clear error.

Nothing a link of the chain finds wrong escapes as an exception or yields half a config: the
link is logged with the bad key and the next one is tried.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import redis

from .codec import ConfigDocument
from .connection import make_client, redacted
from .counters import parse_counter
from .environment import Environment
from .errors import CeleryConfigError, NoConfigAvailable, RedisAccessDenied
from .fallback_files import (
    held_stamp,
    read_digest,
    read_file,
    render,
    write_digest,
    write_with_digest,
)
from .snapshot_decoding import Decoded, Published, decode_snapshot
from .snapshot_reading import Snapshot, read_snapshot
from .validated_content import ValidatedContent

log = logging.getLogger("celery_config_sync.loader")

SOURCES = ("redis", "last-known-good", "snapshot")


@dataclass(frozen=True)
class LoadedConfig:
    """The effective configuration and where it came from."""

    document: ConfigDocument
    version: int
    sha256: str
    source: str  # one of SOURCES
    meta: dict[str, Any] = field(default_factory=dict)
    # What the rules accepted (a load from Redis), recorded beside last-known-good.
    validated: ValidatedContent | None = field(default=None, compare=False, repr=False)

    @cached_property
    def settings(self) -> dict[str, Any]:
        """Celery settings for ``app.conf.update``: kombu Queues, routes, base settings (built
        once: a load, the routing state and the worker's install all read them)."""
        return self.document.to_celery_settings()

    @classmethod
    def from_published(cls, published: Published) -> LoadedConfig:
        return cls(published.document, published.version, published.sha256, "redis",
                   published.meta, published.validated)

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "version": self.version, "sha256": self.sha256,
                "queues": len(self.document.queues), "routes": len(self.document.routes),
                "settings": len(self.document.base)}


class RedisReader:
    """Reads the published config in one round trip; decoding is memoized on the exact bytes.

    Identical bytes always decode to the identical result, so re-reading an unchanged config
    costs one round trip and a comparison, not a re-parse; a new version is decoded from the
    last one (snapshot_decoding.decode_snapshot's ``previous``): only the fields whose bytes
    changed are parsed and validated again.
    """

    def __init__(self, client: redis.Redis, namespace: str, *,
                 allow: frozenset[str] = frozenset()) -> None:
        self.client = client
        self.namespace = namespace
        self.allow = allow  # unsafe settings this process accepts (CELERY_CONFIG_ALLOW_UNSAFE)
        self._last: Decoded | None = None
        self.last_snapshot: Snapshot | None = None  # what the last read found, even if invalid

    def last_seen(self) -> tuple[int | None, str | None]:
        """(version, sha256) that the last read found, as stored, decodable or not."""
        snapshot = self.last_snapshot
        if snapshot is None:
            return None, None
        version = snapshot.version.decode(errors="replace") if snapshot.version else ""
        sha = snapshot.meta.get(b"sha256", b"").decode(errors="replace")
        return parse_counter(version), sha or None

    def load(self, trusted: ValidatedContent | None = None) -> Published:
        """The published config; ``trusted``: a record of content validated before (the
        digest beside last-known-good), see decode_snapshot."""
        snapshot = read_snapshot(self.client, self.namespace)
        self.last_snapshot = snapshot
        if self._last is not None and self._last.snapshot == snapshot:
            return self._last.published
        published = decode_snapshot(snapshot, allow=self.allow, trusted=trusted,
                                    previous=self._last)
        self._last = Decoded(snapshot, published)
        return published


def load_config(env: Environment, *, client: redis.Redis | None = None, use_redis: bool = True,
                reader: RedisReader | None = None) -> LoadedConfig:
    """Walk the fallback chain; raise :class:`NoConfigAvailable` only when every link failed.

    ``reader`` is the caller's long-lived reader (a service's watcher keeps using it). Without
    ``reader`` or ``client``, the Redis link gets a client of its own, bounded by
    ``CELERY_CONFIG_WAIT_TIMEOUT`` (at least 1 s, so that 0, "never wait", still reads): a
    Redis that accepts connections and never answers costs at most that before the files.

    What each failure of the Redis link means:

    * unreachable (connection refused, timed out): the next link, last-known-good, then the
      snapshot: Redis may come back, the watcher will catch up;
    * corrupt content (a bad field, a sha256 mismatch, a key of the wrong Redis type:
      WRONGTYPE): the next link too, the log naming the key;
    * access refused (no or wrong password, ACL user lacking a permission: NOAUTH, WRONGPASS,
      NOPERM): :class:`RedisAccessDenied` is raised (exit 2 in the CLI), no fallback.
      Decision: it is a configuration error that waiting does not fix, so a service stops
      on it, as when no configuration exists at all, rather than run, maybe for weeks, on
      a stale fallback that its watcher could never replace (it would be refused too).
    """
    failures: list[str] = []
    if use_redis:
        recorded = read_digest(env.fallback_path)
        trusted = ValidatedContent.from_record(
            recorded.get("sha256"), recorded.get("validated")) if recorded else None
        if log.isEnabledFor(logging.INFO):  # redacted() parses the URL: only for a line shown
            log.info("loading the Celery configuration from Redis %s (namespace %s)...",
                     redacted(env.redis_url), env.namespace)
        try:
            published = _read_redis(env, client, reader, trusted)
        except RedisAccessDenied.causes as exc:
            raise RedisAccessDenied.from_redis(exc, redacted(env.redis_url)) from None
        except redis.RedisError as exc:
            failures.append(f"redis: unreachable ({type(exc).__name__}: {exc})")
        except CeleryConfigError as exc:
            failures.append(f"redis: {exc}")
        else:
            loaded = LoadedConfig.from_published(published)
            remember(env.fallback_path, loaded, recorded=recorded)
            return _announce(loaded)
        log.warning("%s", failures[-1])

    for source, path in (("last-known-good", env.fallback_path),
                         ("snapshot", env.snapshot_path)):
        try:
            document, version, meta = read_file(path, allow=env.allow_unsafe)
        except FileNotFoundError:
            failures.append(f"{source}: {path} does not exist")
        except (CeleryConfigError, OSError) as exc:
            failures.append(f"{source}: {path}: {exc}")
        else:
            return _announce(LoadedConfig(document, version, document.sha256, source, meta))
        log.warning("%s", failures[-1])
    raise NoConfigAvailable("no Celery configuration available: " + "; ".join(failures))


def _read_redis(env: Environment, client: redis.Redis | None, reader: RedisReader | None,
                trusted: ValidatedContent | None) -> Published:
    """The Redis link: the caller's reader, else a reader on the caller's client, else on a
    client of this call alone (closed when done, not left to the garbage collector)."""
    if reader is not None:
        return reader.load(trusted)
    if client is not None:
        return RedisReader(client, env.namespace, allow=env.allow_unsafe).load(trusted)
    deadline = time.monotonic() + max(env.wait_timeout, 1.0)
    own = make_client(env.redis_url, retries=1, deadline=deadline)
    try:
        return RedisReader(own, env.namespace, allow=env.allow_unsafe).load(trusted)
    finally:
        own.close()


def remember(path: str, loaded: LoadedConfig, *, check_existing: bool = True,
             recorded: dict[str, Any] | Literal[False] | None = False) -> None:
    """Write last-known-good, unless it already holds this version and sha256 (spare the SD
    card). The check is the digest beside the file and the file's stamp (one ``stat``), or one
    hash of its bytes when the stamp changed, never a parse (fallback_files.held_stamp); a file
    found wrong there is written again. A file found right whose digest lacks this load's
    validation record or the file's stamp now gets its digest alone written again.
    ``check_existing=False``: the caller knows the file holds something else (a live apply).
    ``recorded``: the digest as the caller read it already."""
    validated = loaded.validated.record() if loaded.validated is not None else None
    try:
        if check_existing:
            if recorded is False:
                recorded = read_digest(path)
            stamp = held_stamp(path, version=loaded.version, sha256=loaded.sha256,
                               recorded=recorded)
            if stamp is not None:
                assert recorded
                if recorded.get("file_stamp") != stamp or (
                        validated is not None and recorded.get("validated") != validated):
                    write_digest(path, version=loaded.version, sha256=loaded.sha256,
                                 file_sha256=recorded["file_sha256"], stamp=stamp,
                                 validated=validated)
                return
        write_with_digest(path, render(loaded.document, version=loaded.version,
                                       meta={**loaded.meta, "sha256": loaded.sha256}),
                          version=loaded.version, sha256=loaded.sha256, validated=validated)
    except OSError as exc:  # a read-only or full disk must not stop a service that has its config
        log.warning("cannot write last-known-good %s: %s", path, exc)


def _announce(loaded: LoadedConfig) -> LoadedConfig:
    level = logging.INFO if loaded.source == "redis" else logging.WARNING
    log.log(level, "Celery configuration loaded from %s: version %d, sha256 %s, "
                   "%d queues, %d routes, %d settings", loaded.source, loaded.version,
            loaded.sha256[:12], len(loaded.document.queues), len(loaded.document.routes),
            len(loaded.document.base))
    return loaded
