"""Block until Redis answers (publish) or until ``NS:version`` exists (the services' gate)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis
from redis.backoff import ExponentialWithJitterBackoff

from .connection import make_client, redacted
from .errors import RedisAccessDenied
from .redis_keys import Keys

log = logging.getLogger("celery_config_sync.wait")


def wait_for_version(url: str, namespace: str, timeout: float) -> bool:
    """True once ``NS:version`` exists, False when ``timeout`` seconds ran out first."""
    key = Keys(namespace).version
    return _poll(url, timeout, lambda client: bool(client.exists(key)),
                 f"{key} not published yet")


def wait_for_redis(url: str, timeout: float) -> bool:
    """True once Redis answers PING, False when ``timeout`` seconds ran out first.

    An error reply is an answer too: a Redis whose disk is full refuses PING with MISCONF
    (as every write), and waiting does not fix that; the command that follows reports it."""
    return _poll(url, timeout, _answers, "no PONG")


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except RedisAccessDenied.causes:
        raise
    except redis.ResponseError:
        return True


def _poll(url: str, timeout: float, ready: Callable[[redis.Redis], bool], not_ready: str) -> bool:
    """Each attempt's connect and socket timeouts are capped by the time left; between attempts,
    redis-py's exponential backoff with jitter (50 ms doubling up to 2 s). Redis refusing
    access (no or wrong password, missing ACL permission) raises :class:`RedisAccessDenied`
    at once: it is a configuration error, not something to wait out."""
    deadline = time.monotonic() + timeout
    backoff = ExponentialWithJitterBackoff(cap=2.0, base=0.05)
    attempt = 0
    problem = not_ready
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            log.warning("gave up after %.1f s: %s", timeout, problem)
            return False
        per_try = max(0.05, min(2.0, left))
        client = make_client(url, retries=0, connect_timeout=per_try, socket_timeout=per_try)
        try:
            if ready(client):
                log.info("Redis %s ready", redacted(url))
                return True
            problem = not_ready
        except RedisAccessDenied.causes as exc:  # a wrong password does not heal: no retry
            raise RedisAccessDenied.from_redis(exc, redacted(url)) from None
        except redis.RedisError as exc:
            problem = f"Redis {redacted(url)} unreachable ({type(exc).__name__}: {exc})"
        finally:
            client.close()
        attempt += 1
        if attempt == 1 or attempt % 10 == 0:
            log.info("waiting: %s", problem)
        time.sleep(max(0.0, min(backoff.compute(attempt), deadline - time.monotonic())))
