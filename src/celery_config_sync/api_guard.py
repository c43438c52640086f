"""The API on a network: who may call it, how big a request may be, and what a client is told
when Redis does not answer. Used by celery_config_sync.fastapi (its public names are there).

- Credentials: a bearer token in the ``Authorization`` header, compared in constant time with
  each token of a secret file (one per line: two side by side while clients move to a new
  one). A header, never a cookie nor basic credentials, because a browser attaches neither a
  header nor a token by itself to a request another site makes it send; it does cache basic
  credentials and replay them cross-site.
- Failed attempts are logged once per client address and per minute, with the count of the
  ones not logged: a client trying tokens cannot fill the log.
- :class:`RequestGuard`, an ASGI middleware: the Host header must be an allowed name or an IP
  address (DNS rebinding; the probes /healthz and /readyz excepted), a body larger than the limit is
  refused with 413 before it is read whole (its Content-Length, then the bytes counted as
  they arrive, for a chunked body).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from .environment import Environment
from .errors import CeleryConfigError
from .secret_files import read_secret

log = logging.getLogger("celery_config_sync.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# What the stack serves: loopback, and the service's name on the stack's network (prometheus,
# the other services). CELERY_CONFIG_API_ALLOWED_HOSTS adds to these.
DEFAULT_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "api"})
PROBES = ("/healthz", "/readyz")
EXCERPT = 80  # characters of a client's input an error body may quote


def excerpt(value: Any, limit: int = EXCERPT) -> str:
    """A short, printable quote of ``value`` for an error body or a log line."""
    text = value if isinstance(value, str) else repr(value)
    shown = text[:limit].encode("unicode_escape").decode("ascii")
    return shown + (f"... ({len(text)} characters)" if len(text) > limit else "")


@dataclass(frozen=True)
class ApiSecurity:
    """What the API enforces, from the environment (README, "The API on a network")."""

    token_digests: tuple[bytes, ...] = ()
    token_file: str | None = None
    protect_views: bool = False
    allowed_hosts: frozenset[str] = DEFAULT_HOSTS
    max_body_bytes: int = 32768
    redis_timeout: float = 3.0

    @classmethod
    def from_environment(cls, env: Environment | None = None, *,
                         read_token: bool = True) -> ApiSecurity:
        """Read the variables, and (``read_token``) the token file with a size cap (a one-line
        error if it cannot be read or holds no token)."""
        env = env or Environment.from_environ()
        if env.api_protect_views and not env.api_token_file:
            # Protected views with no token to check would be open: refuse, do not guess.
            raise CeleryConfigError("CELERY_CONFIG_API_PROTECT_VIEWS=true needs "
                                    "CELERY_CONFIG_API_TOKEN_FILE (the token the views require)")
        digests: tuple[bytes, ...] = ()
        if env.api_token_file and read_token:
            text = read_secret(env.api_token_file, "API token file")
            digests = tuple(_digest(line.strip()) for line in text.splitlines() if line.strip())
        return cls(digests, env.api_token_file, env.api_protect_views,
                   DEFAULT_HOSTS | env.api_allowed_hosts, env.api_max_body_bytes,
                   env.api_redis_timeout)

    @property
    def requires_token(self) -> bool:
        return bool(self.token_digests)

    @property
    def retry_after(self) -> str:
        """Retry-After of a 503: one Redis deadline, in whole seconds."""
        return str(max(1, math.ceil(self.redis_timeout)))

    def token_accepted(self, authorization: str | None) -> bool:
        """True when ``authorization`` is ``Bearer <a token of the file>``; every token is
        compared, each in constant time, so the time taken tells nothing about which matched
        or how much of one did."""
        scheme, _, presented = (authorization or "").partition(" ")
        digest = _digest(presented.strip())
        matched = False
        for known in self.token_digests:
            matched |= hmac.compare_digest(digest, known)
        return matched and scheme.lower() == "bearer"

    def host_allowed(self, host: str | None) -> bool:
        """An allowed name, or any IP address: DNS rebinding needs a name of the attacker's
        (the browser sends the name it resolved), so an address as Host is never one. That
        lets Prometheus (it scrapes the address DNS gives it), an orchestrator's probes and a
        client typing the Pi's address in without a list of addresses to keep."""
        if "*" in self.allowed_hosts:
            return True
        name = host_name(host or "")
        if name in self.allowed_hosts:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True


def _digest(token: str) -> bytes:
    # Digests of equal length: compare_digest's time then does not depend on the lengths.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def host_name(host: str) -> str:
    """The name of a Host header, without its port: ``[::1]:8000`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


class FailedAttempts:
    """Log a refused credential once per client address per ``interval`` seconds, with the
    number of refusals since the last line; at most ``addresses`` addresses remembered (the
    oldest forgotten first), so that many sources cannot grow it."""

    def __init__(self, interval: float = 60.0, addresses: int = 1024) -> None:
        self.interval = interval
        self.addresses = addresses
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.logged = 0  # lines written (what the tests read)

    def refused(self, address: str, path: str, reason: str) -> None:
        now = time.monotonic()
        with self._lock:
            last, count = self._seen.pop(address, (-math.inf, 0))
            count += 1
            if now - last < self.interval:
                self._seen[address] = (last, count)
                return
            self._seen[address] = (now, 0)
            while len(self._seen) > self.addresses:
                self._seen.popitem(last=False)
            self.logged += 1
        log.warning("refused %s from %s on %s (%d refusal(s) from it since the last line; "
                    "one line per address per %g s)", reason, excerpt(address, 64),
                    excerpt(path, 64), count, self.interval)


class RequestGuard:
    """ASGI middleware: the Host header must be one of the allowed names (else 400), and a
    request body may hold at most ``max_body_bytes`` (else 413, before it is read whole).

    Settings default to the environment's (:meth:`ApiSecurity.from_environment`), read when
    the server builds its middleware stack, i.e. at start. A bad variable does not raise here:
    uvicorn would take that for an app without a lifespan and serve it unconfigured. The
    app's lifespan reads the same variables and stops the start with the error; until then
    (or with the lifespan off) every request is a 503."""

    def __init__(self, app: ASGIApp, security: ApiSecurity | None = None) -> None:
        self.app = app
        self.error: str | None = None
        try:
            self.security = security or ApiSecurity.from_environment(read_token=False)
        except CeleryConfigError as exc:
            self.security, self.error = ApiSecurity(), str(exc)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.error is not None:
            await _answer(send, 503, f"misconfigured: {self.error}")
            return
        host, length = _host_and_length(scope.get("headers", ()))
        # The probes answer any Host: an orchestrator probes the container's address (a
        # Kubernetes httpGet sends the pod's IP), and they tell nothing worth a rebinding.
        probe = scope["method"] == "GET" and scope["path"].endswith(PROBES)
        if not probe and not self.security.host_allowed(host):
            await _answer(send, 400, f"host not allowed: {excerpt(host or '')}; "
                                     "see CELERY_CONFIG_API_ALLOWED_HOSTS")
            return
        limit = self.security.max_body_bytes
        if length is not None and (not length.strip().isdigit() or int(length) > limit):
            await _answer(send, 413, f"request body larger than {limit} bytes")
            return
        body = _BoundedBody(receive, send, limit)
        await self.app(scope, body.receive, body.send)


def _host_and_length(headers: Any) -> tuple[str | None, str | None]:
    """The Host and Content-Length headers of an ASGI scope's list (the last of each, as a
    dict of them would keep), decoded; the others are not decoded at all (every request)."""
    host = length = None
    for key, value in headers:
        name = key.lower()  # servers send lowercase names; an ASGI app may not
        if name == b"host":
            host = value.decode("latin-1")
        elif name == b"content-length":
            length = value.decode("latin-1")
    return host, length


class _BoundedBody:
    """One request's ``receive`` and ``send`` as the app sees them: ``receive`` counts the
    body's bytes and, past the limit, answers 413 itself and tells the app that the client
    left (so it stops reading); ``send`` then drops whatever the app answers."""

    def __init__(self, receive: Receive, send: Send, limit: int) -> None:
        self._receive, self._send, self.limit = receive, send, limit
        self.received = 0
        self.refused = False
        self.started = False  # the app began its answer: too late for a 413 of ours

    async def receive(self) -> Message:
        if self.refused:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                self.refused = True
                if self.started:
                    return {"type": "http.disconnect"}
                await _answer(self._send, 413, f"request body larger than {self.limit} bytes")
                return {"type": "http.disconnect"}
        return message

    async def send(self, message: Message) -> None:
        if not self.refused:
            self.started = True
            await self._send(message)


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


__all__ = ["ApiSecurity", "FailedAttempts", "RequestGuard", "excerpt", "host_name"]
