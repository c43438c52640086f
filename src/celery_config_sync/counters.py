"""Integers as Redis stores them: the version counter, history sizes, the layout's schema.

Whoever can write Redis can put anything in these fields. Redis' own counters are signed
64-bit (INCR refuses more), so a stored integer has at most 19 ASCII digits: checking that
first also keeps Python's ``int()`` away from its 4,300-digit limit, whose ``ValueError``
would otherwise escape as a traceback instead of one line and the fallback chain.
"""

from __future__ import annotations

MAX_COUNTER = 2**63 - 1  # Redis: "value is not an integer or out of range" beyond this


def parse_counter(raw: str | bytes | None) -> int | None:
    """``raw`` as an integer >= 0 in its one spelling (ASCII digits, no leading zero, within
    Redis' 64-bit range); None for anything else, never an exception."""
    if raw is None:
        return None
    text = raw.decode("ascii", errors="replace") if isinstance(raw, bytes) else raw
    if not 0 < len(text) <= len(str(MAX_COUNTER)) or not (text.isascii() and text.isdigit()):
        return None
    if text.startswith("0") and text != "0":
        return None
    value = int(text)
    return value if value <= MAX_COUNTER else None


def excerpt(text: str, limit: int = 40) -> str:
    """``text`` for an error line: its first ``limit`` characters, and its length if longer."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"
