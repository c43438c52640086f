"""The environment interface of DESIGN.md, one table shared by the CLI, the entrypoints and the
services. Each variable: name, default and parser; nothing else reads ``os.environ``."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .connection import read_password, redacted, with_password
from .errors import CeleryConfigError
from .history_policy import HistoryLimits


def _at_least(kind: Callable[[str], float], minimum: float, *, strict: bool = False,
              unit: str = "") -> Callable[[str], Any]:
    """A number parser: ``kind`` (int or float) >= ``minimum`` (> when ``strict``)."""
    what = "an integer " if kind is int else ""
    bound = f"must be {what}{'>' if strict else '>='} {minimum:g}{unit}"

    def parse(text: str) -> Any:
        value = kind(text)
        # nan compares false with everything and inf never ends a wait: neither is a duration.
        if not math.isfinite(value) or value < minimum or (strict and value == minimum):
            raise ValueError(f"{bound} and finite" if kind is float else bound)
        return value

    return parse


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError("must be " + " or ".join(repr(choice) for choice in choices))
        return text

    return parse


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("", "0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _optional(text: str) -> str | None:
    return text or None


def _names(text: str) -> frozenset[str]:
    return frozenset(name.strip() for name in text.split(",") if name.strip())


def _host_names(text: str) -> frozenset[str]:
    """Comma-separated Host names (``*``: any), compared lower-case and without a port."""
    names = _names(text.lower())
    for name in names:
        bare_ipv6_or_port = ":" in name and not name.startswith("[")
        if name != "*" and (bare_ipv6_or_port or any(c.isspace() or c in "/@" for c in name)):
            raise ValueError(f"{name!r} is not a host name (no port, no scheme; IPv6 in [])")
    return frozenset(name.strip("[]") for name in names)


def _port(text: str) -> int:
    value = int(text or "0")
    if not 0 <= value <= 65535:
        raise ValueError("must be a TCP port, or 0 for off")
    return value


@dataclass(frozen=True)
class Environment:
    redis_url: str = "redis://localhost:6379/0"
    namespace: str = "celery_config"
    wait_timeout: float = 30.0
    on_timeout: str = "fallback"
    fallback_path: str = "/var/lib/celery-config/last-known-good.json"
    snapshot_path: str = "/usr/share/celery-config/snapshot.json"
    source: str = "config/celery/source.py"
    overlay: str | None = None
    publish_on_start: bool = False
    live_reload: bool = True
    poll_interval: float = 30.0
    heartbeat_interval: float = 10.0
    on_restart_required: str = "report"
    log_tag: str | None = None
    allow_unsafe: frozenset[str] = frozenset()
    redis_password_file: str | None = None
    celery_keyprefix: str = ""
    history_length: int = HistoryLimits.length
    history_max_bytes: int = HistoryLimits.max_bytes
    # The worker's Prometheus endpoint (the API serves /metrics on its own port): 0 is off, so
    # a worker started by hand binds nothing; the worker image sets 9808.
    metrics_port: int = 0
    # How long the active beat's lock lives without renewal: a standby beat takes over within
    # this (plus one tick) when the active one dies.
    beat_lock_timeout: float = 30.0
    # The API on a network (celery_config_sync.fastapi; README, "The API on a network"): the
    # file of bearer tokens that task endpoints require (None: they are open, with a warning),
    # whether the read-only views require one too, Host names allowed besides the stack's own,
    # the largest request body, and the deadline of each Redis call on a request path.
    api_token_file: str | None = None
    api_protect_views: bool = False
    api_allowed_hosts: frozenset[str] = frozenset()
    api_max_body_bytes: int = 32768
    api_redis_timeout: float = 3.0
    # Read from redis_password_file once, at start: it is in redis_url too. Never shown.
    redis_password: str | None = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:  # what a log line may show: the URL without its password
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                          if f.repr and f.name != "redis_url")
        return f"Environment(redis_url={redacted(self.redis_url)!r}, {shown})"

    @property
    def history(self) -> HistoryLimits:
        """What each publish keeps of the history."""
        return HistoryLimits(self.history_length, self.history_max_bytes)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Environment:
        """Read every ``CELERY_CONFIG_*`` variable; a bad value is one clear error."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in VARIABLES:
                continue
            name, parse = VARIABLES[f.name]
            text = env.get(name)
            if text is None and f.name == "redis_url":
                text = env.get("REDIS_URL")
            if text is None:
                continue
            try:
                values[f.name] = parse(text)
            except ValueError as exc:
                raise CeleryConfigError(f"{name}={text!r}: {exc}") from None
        if values.get("redis_password_file"):
            password = read_password(values["redis_password_file"])
            values["redis_url"] = with_password(values.get("redis_url", cls.redis_url), password)
            values["redis_password"] = password
        return cls(**values)


VARIABLES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "redis_url": ("CELERY_CONFIG_REDIS_URL", str),  # then REDIS_URL
    "namespace": ("CELERY_CONFIG_NAMESPACE", str),
    "wait_timeout": ("CELERY_CONFIG_WAIT_TIMEOUT", _at_least(float, 0)),
    "on_timeout": ("CELERY_CONFIG_ON_TIMEOUT", _one_of("fallback", "fail")),
    "fallback_path": ("CELERY_CONFIG_FALLBACK_PATH", str),
    "snapshot_path": ("CELERY_CONFIG_SNAPSHOT_PATH", str),
    "source": ("CELERY_CONFIG_SOURCE", str),
    "overlay": ("CELERY_CONFIG_OVERLAY", _optional),
    "publish_on_start": ("CELERY_CONFIG_PUBLISH_ON_START", _flag),
    "live_reload": ("CELERY_CONFIG_LIVE_RELOAD", _flag),
    "poll_interval": ("CELERY_CONFIG_POLL_INTERVAL", _at_least(float, 0, strict=True)),
    "heartbeat_interval": ("CELERY_CONFIG_HEARTBEAT_INTERVAL",
                           _at_least(float, 0, strict=True)),
    "on_restart_required": ("CELERY_CONFIG_ON_RESTART_REQUIRED",
                            _one_of("report", "exit")),
    "log_tag": ("CELERY_CONFIG_LOG_TAG", _optional),
    "allow_unsafe": ("CELERY_CONFIG_ALLOW_UNSAFE", _names),
    "redis_password_file": ("CELERY_CONFIG_REDIS_PASSWORD_FILE", _optional),
    "celery_keyprefix": ("CELERY_CONFIG_CELERY_KEYPREFIX", str),
    "history_length": ("CELERY_CONFIG_HISTORY_LENGTH", _at_least(int, 1)),
    "history_max_bytes": ("CELERY_CONFIG_HISTORY_MAX_BYTES",
                          _at_least(int, 0, unit=" (bytes)")),
    "metrics_port": ("CELERY_CONFIG_METRICS_PORT", _port),
    "beat_lock_timeout": ("CELERY_CONFIG_BEAT_LOCK_TIMEOUT", _at_least(float, 0, strict=True)),
    "api_token_file": ("CELERY_CONFIG_API_TOKEN_FILE", _optional),
    "api_protect_views": ("CELERY_CONFIG_API_PROTECT_VIEWS", _flag),
    "api_allowed_hosts": ("CELERY_CONFIG_API_ALLOWED_HOSTS", _host_names),
    "api_max_body_bytes": ("CELERY_CONFIG_API_MAX_BODY_BYTES", _at_least(int, 1, unit=" (bytes)")),
    "api_redis_timeout": ("CELERY_CONFIG_API_REDIS_TIMEOUT", _at_least(float, 0, strict=True)),
}
