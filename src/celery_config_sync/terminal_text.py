"""Text from outside the program, made safe for one line of a terminal: a fleet or history record
is written by any process that may write the namespace, a key or a source path may hold anything,
and a control sequence in them (ESC [ 2 J, a title change, a right-to-left override, a newline
that forges a second log line) would act on the operator's terminal instead of being shown. One
rule for tables and error lines alike."""

from __future__ import annotations

from typing import Any

# The escapes a Python string literal uses, so that an operator reads what they would type.
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def shown(value: Any) -> str:
    """``value`` as text with every character that is not printable (C0 and C1 controls, DEL,
    line and paragraph separators, format characters such as U+202E, lone surrogates) written
    as its escape (``\\n``, ``\\x1b``, ``\\u202e``): visible, inert, and on one line."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def _escape(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


__all__ = ["shown"]
