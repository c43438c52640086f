"""terminal_text.shown: one rule for tables and error lines. Any text comes out printable, on one
line, with nothing that a terminal acts on; printable text comes out unchanged (Hypothesis)."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from celery_config_sync.errors import InvalidConfig, SourceProblems
from celery_config_sync.terminal_text import shown


@given(st.text())
def test_any_text_is_shown_printable_on_one_line(text: str) -> None:
    out = shown(text)
    assert out.isprintable() and "\n" not in out and "\r" not in out
    assert not any(unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp") for char in out)
    assert (out == text) is text.isprintable()


@given(st.text(st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")),
               min_size=1))
def test_printable_text_is_left_as_it_is(text: str) -> None:
    if text.isprintable():  # a space separator other than U+0020 is not printable for Python
        assert shown(text) == text


def test_escapes_read_as_a_python_literal_would() -> None:
    assert shown("a\nb\r\tc\x1b[2J\x7f\x9b\u202e\U000e0001") == \
        "a\\nb\\r\\tc\\x1b[2J\\x7f\\x9b\\u202e\\U000e0001"
    assert shown(12) == "12" and shown(None) == "None"


def test_error_lines_follow_the_same_rule() -> None:
    problem = InvalidConfig("routes['a\nb']", "bad\x1b[2J")
    assert str(problem) == "routes['a\\nb']: bad\\x1b[2J" == shown("routes['a\nb']: bad\x1b[2J")
    many = SourceProblems("x\u202e.py", [problem, problem])
    assert str(many) == "2 problems in x\\u202e.py: nothing published"
