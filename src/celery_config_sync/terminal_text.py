"""Text read from Redis, made safe for a terminal: a fleet or history record is written by any
process that may write the namespace, and a control sequence in it (ESC [ 2 J, a title change,
a right-to-left override) would act on the operator's terminal instead of being shown."""

from __future__ import annotations

from typing import Any


def shown(value: Any) -> str:
    """``value`` as text with every character that is not printable (C0 and C1 controls, DEL,
    format characters such as U+202E, lone surrogates) written as a Python escape: visible, and
    inert."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


__all__ = ["shown"]
