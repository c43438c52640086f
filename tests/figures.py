"""Figures the tests measure (how long something took, how many times something happened when
that depends on the machine's load): printed, never asserted.

CI machines are busy and noisy, so no test compares a wall-clock duration with a budget: it
asserts the behaviour and prints the figure, one line prefixed ``FIGURE`` and the test's name
(shown with ``pytest -s``, and in a failing test's captured output), listed again at the end of
the run (the "figures" section, tests/conftest.py). The e2e tier keeps its own list too
(tests/e2e/conftest.py, MEASUREMENTS).
"""

from __future__ import annotations

import os

FIGURES: list[str] = []


def current_test() -> str:
    """The running test's node id, as pytest sets it (empty outside a test)."""
    return os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]


def show(text: str) -> None:
    """Print one figure (not listed at the end of the run)."""
    print(f"FIGURE {current_test()}: {text}", flush=True)


def figure(text: str) -> None:
    """Print one figure, and list it again at the end of the run."""
    show(text)
    FIGURES.append(f"{current_test()}: {text}")
