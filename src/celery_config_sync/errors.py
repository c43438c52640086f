"""Errors, each carrying its CLI exit code (DESIGN.md): 1 check failed, 2 invalid, 3 timed out."""

from __future__ import annotations

import redis

from .terminal_text import shown


class CeleryConfigError(Exception):
    """Base class: a one-line, user-facing message and the exit code it maps to."""

    exit_code = 2


class InvalidConfig(CeleryConfigError):
    """The configuration (source, Redis content or a fallback file) breaks a rule.

    ``key`` names the offending entry (``routes['scan.discovery']``, ``base.task_serialiser``...).
    """

    exit_code = 2

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        # One line, whatever the names in it hold: a key read from Redis may contain a newline
        # or a terminal escape; shown escaped (\n, \x1b), never as what it would do.
        super().__init__(shown(f"{key}: {problem}"))


class SourceError(CeleryConfigError):
    """The source module cannot be found or imported."""

    exit_code = 2


class SourceProblems(CeleryConfigError):
    """Every problem of a source at once (``celery-config check``, publish, diff, export): one
    line each, then a summary; nothing is published while any remains."""

    exit_code = 2

    def __init__(self, source: str, problems: list[InvalidConfig]) -> None:
        self.source = source
        self.problems = problems
        # One problem is its own line (the one-line contract); more are listed, then counted.
        super().__init__(str(problems[0]) if len(problems) == 1 else
                         f"{len(problems)} problems in {shown(source)}: nothing published")

    def lines(self) -> list[str]:
        """The lines before the summary (none when the message is the one problem)."""
        return [str(problem) for problem in self.problems] if len(self.problems) > 1 else []


class RedisUnavailable(CeleryConfigError):
    """Redis did not answer within the configured retries and timeouts."""

    exit_code = 3


class NotPublished(CeleryConfigError):
    """Redis answers but holds no configuration under this namespace."""

    exit_code = 1


class NotInHistory(CeleryConfigError):
    """A version asked for by number (diff --from/--to, rollback --to) that the history does
    not hold: never published, or trimmed. Invalid input, like a bad option: exit 2."""

    exit_code = 2


class NoConfigAvailable(CeleryConfigError):
    """Every link of the fallback chain failed."""

    exit_code = 1


class RedisAccessDenied(CeleryConfigError):
    """Redis answered but refused this client: no or wrong password (NOAUTH, WRONGPASS) or an
    ACL user without the permissions it needs (NOPERM).

    A configuration error, not an outage: exit 2, never retried (waiting does not fix a
    password), and a service does not start on a stale fallback because of it.
    """

    exit_code = 2

    # What redis-py raises for these replies (8.x): AuthenticationError and AuthorizationError
    # are ConnectionErrors (so redis-py's own Retry would retry them), NoPermissionError and
    # AuthenticationWrongNumberOfArgsError are ResponseErrors.
    causes: tuple[type[redis.RedisError], ...] = (
        redis.exceptions.AuthenticationError,
        redis.exceptions.AuthorizationError,
        redis.exceptions.NoPermissionError,
        redis.exceptions.AuthenticationWrongNumberOfArgsError,
    )

    @classmethod
    def from_redis(cls, exc: BaseException, where: str) -> RedisAccessDenied:
        """``where``: the Redis URL, password already redacted."""
        return cls(f"Redis {where} refused access ({type(exc).__name__}: {exc}): check the "
                   "user and password in the Redis URL and that user's ACL permissions")


def is_wrong_type(exc: BaseException) -> bool:
    """A WRONGTYPE reply: a key of the namespace holds another Redis type than the layout's."""
    return isinstance(exc, redis.ResponseError) and "WRONGTYPE" in str(exc)


def wrong_type(key: str, expected: str, actual: str | None = None) -> InvalidConfig:
    """The corrupt-data error for a key of the wrong Redis type, naming the key."""
    holds = f"holds a {actual}" if actual else "holds another type"
    return InvalidConfig(key, f"corrupt data: wrong Redis type ({holds}, expected a {expected})")
