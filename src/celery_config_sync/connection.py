"""Redis clients with bounded timeouts and redis-py's own jittered exponential backoff."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from .errors import CeleryConfigError

CONNECT_TIMEOUT = 2.0
SOCKET_TIMEOUT = 5.0


def redacted(url: str) -> str:
    """The URL with its password hidden, safe for logs and error lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def make_client(url: str, *, retries: int = 3, connect_timeout: float = CONNECT_TIMEOUT,
                socket_timeout: float = SOCKET_TIMEOUT, **kwargs: Any) -> redis.Redis:
    """A client that retries connection errors ``retries`` times with full-jitter backoff."""
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise CeleryConfigError(f"invalid Redis URL {redacted(url)!r}: "
                                "expected redis://, rediss:// or unix://")
    try:
        return redis.Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
            retry=Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), retries),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            **kwargs,
        )
    except ValueError as exc:
        raise CeleryConfigError(f"invalid Redis URL {redacted(url)!r}: {exc}") from None
