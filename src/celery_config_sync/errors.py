"""Errors, each carrying its CLI exit code (DESIGN.md): 1 check failed, 2 invalid, 3 timed out."""


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
        super().__init__(f"{key}: {problem}")


class SourceError(CeleryConfigError):
    """The source module cannot be found or imported."""

    exit_code = 2


class RedisUnavailable(CeleryConfigError):
    """Redis did not answer within the configured retries and timeouts."""

    exit_code = 3


class NotPublished(CeleryConfigError):
    """Redis answers but holds no configuration under this namespace."""

    exit_code = 1


class NoConfigAvailable(CeleryConfigError):
    """Every link of the fallback chain failed."""

    exit_code = 1
