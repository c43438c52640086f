"""The one poll loop of the tests and reports: call a predicate until it returns something true,
or fail with what was awaited. Processes on loopback are polled often (``interval`` 0.02 s);
containers at the pace of the docker commands a predicate runs (``wait_until``, 0.5 s)."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any


def wait_for(predicate: Callable[[], Any], timeout: float, what: str | Callable[[], str],
             interval: float = 0.02) -> Any:
    """The predicate's first true value; AssertionError naming ``what`` after ``timeout`` s.
    ``what`` may be a function, called only then: diagnostics such as a stack's logs cost
    docker commands, which are worth running when the wait failed, not before it began."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g} s waiting for {said}")
        time.sleep(interval)


wait_until = partial(wait_for, interval=0.5)
