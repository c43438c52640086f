"""Redis clients with bounded timeouts and redis-py's own jittered exponential backoff."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import SplitResult, quote, urlsplit

import redis
from redis.backoff import AbstractBackoff, ExponentialWithJitterBackoff
from redis.retry import Retry

from .errors import CeleryConfigError, RedisAccessDenied
from .secret_files import read_secret

CONNECT_TIMEOUT = 2.0
SOCKET_TIMEOUT = 5.0
MIN_TIMEOUT = 0.05  # the shortest connect or socket timeout a client gets, deadline or not

T = TypeVar("T")


def _lean_handshake() -> dict[str, Any]:
    """Client options that keep a new connection's handshake to what this library uses: every
    step of it is a round trip, and a service's first load pays them all (issue 20).

    * No CLIENT SETINFO: for it, redis-py looks its own version up in the package metadata on
      every new connection (about 15% of a whole load), then spends two round trips sending
      it; Debian's Redis 7.0 (the redis image) refuses the command anyway, and on a later
      Redis it only labels the connection in CLIENT LIST.
    * RESP2: redis-py 8 speaks RESP3 by default, which costs a HELLO round trip; nothing here
      uses what RESP3 adds (client-side caching, push notifications). A password still goes
      in one AUTH, as with HELLO.
    """
    try:
        from redis.driver_info import DriverInfo  # noqa: F401  (redis-py >= 7.1)
    except ImportError:  # older redis-py: its older keywords, None meaning "do not send"
        return {"protocol": 2, "lib_name": None, "lib_version": None}
    return {"protocol": 2, "driver_info": None}


LEAN_HANDSHAKE = _lean_handshake()


def redacted(url: str) -> str:
    """The URL with its password hidden, safe for logs and error lines."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a malformed host or port raises here, not later)
    except ValueError:
        return "<unparsable URL>"  # it may hold a password that cannot be located
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    netloc = f"{user.partition(':')[0]}:***@{host}"  # rebuilt: the password may be %-quoted
    return parts._replace(netloc=netloc).geturl()


def read_password(path: str) -> str:
    """The password in the file ``path`` (a mounted secret), without its trailing newline; read
    with a size cap (secret_files.read_secret)."""
    return read_secret(path, "password file")


def with_password(url: str, password: str) -> str:
    """``url`` carrying ``password`` for the user it names (``redis://worker@redis:6379/0``);
    refused when the URL holds a password already (two sources, one would be ignored)."""
    parts = split_url(url)
    if parts.password is not None:
        raise CeleryConfigError(f"Redis URL {redacted(url)!r} holds a password and a password "
                                "file is set too: keep the password in the file only")
    user, _, host = parts.netloc.rpartition("@")
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    return parts._replace(netloc=netloc).geturl()


def split_url(url: str) -> SplitResult:
    """``url`` split, or one clear error (exit 2) for a malformed one (an unclosed IPv6
    bracket, a port that is not a number) instead of urllib's ValueError."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (validates the port)
    except ValueError as exc:
        raise CeleryConfigError(f"invalid Redis URL {redacted(url)!r}: {exc}") from None
    return parts


class BoundedRetry(Retry):
    """redis-py's Retry with two limits: an access error (NOAUTH, WRONGPASS, NOPERM) is never
    retried, and with a ``deadline`` (``time.monotonic()``) no operation starts once it has
    passed and a retry starts only when its backoff and one whole attempt (``attempt_time``
    seconds at most) end before it."""

    def __init__(self, backoff: AbstractBackoff, retries: int, *, deadline: float | None = None,
                 attempt_time: float = 0.0) -> None:
        super().__init__(backoff, retries)
        self.deadline = deadline
        self.attempt_time = attempt_time

    def call_with_retry(self, do: Callable[[], T], fail: Callable[..., Any],
                        is_retryable: Callable[[Exception], bool] | None = None,
                        with_failure_count: bool = False) -> T:
        # Retry.call_with_retry's loop (redis-py 8), with the two limits added.
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise redis.TimeoutError("the command's time budget ran out")
        self._backoff.reset()
        failures = 0
        while True:
            try:
                return do()
            except self._supported_errors as error:
                if is_retryable is not None and not is_retryable(error):
                    raise
                failures += 1
                if with_failure_count:
                    fail(error, failures)
                else:
                    fail(error)
                if isinstance(error, RedisAccessDenied.causes) or (
                        0 <= self._retries < failures):
                    raise
                pause = self._backoff.compute(failures)
                if self.deadline is not None and (
                        time.monotonic() + pause + self.attempt_time > self.deadline):
                    raise
                if pause > 0:
                    time.sleep(pause)


def make_client(url: str, *, retries: int = 3, connect_timeout: float = CONNECT_TIMEOUT,
                socket_timeout: float = SOCKET_TIMEOUT, deadline: float | None = None,
                **kwargs: Any) -> redis.Redis:
    """A client that retries connection errors ``retries`` times with full-jitter backoff.

    Access errors (wrong or missing password, missing ACL permission) are never retried.

    ``deadline`` (a ``time.monotonic()`` value) bounds everything the client does: its
    connect and socket timeouts are capped so that its ``retries + 1`` attempts fit in the
    time left, no retry starts unless it ends before the deadline, and no operation starts
    after it (``redis.TimeoutError``). Without it, an operation against a Redis that accepts
    connections and never answers takes ``(retries + 1) x socket_timeout`` plus the backoff
    (about 20 s with the defaults)."""
    if split_url(url).scheme not in ("redis", "rediss", "unix"):
        raise CeleryConfigError(f"invalid Redis URL {redacted(url)!r}: "
                                "expected redis://, rediss:// or unix://")
    attempt_time = 0.0
    if deadline is not None:
        per_attempt = max(MIN_TIMEOUT, (deadline - time.monotonic()) / (retries + 1))
        socket_timeout = max(MIN_TIMEOUT, min(socket_timeout, per_attempt))
        connect_timeout = max(MIN_TIMEOUT, min(connect_timeout, socket_timeout))
        attempt_time = max(socket_timeout, connect_timeout)
    retry = BoundedRetry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), retries,
                         deadline=deadline, attempt_time=attempt_time)
    try:
        return redis.Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
            retry=retry,
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            **{**LEAN_HANDSHAKE, **kwargs},
        )
    except ValueError as exc:
        raise CeleryConfigError(f"invalid Redis URL {redacted(url)!r}: {exc}") from None
