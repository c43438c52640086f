"""cli_tables: the columns of show, status and history, rendered with every cell escaped and the
columns aligned (the commands' own output is tested through the CLI in tests/integration)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from celery_config_sync.cli_tables import (
    FLEET,
    HISTORY,
    QUEUES,
    Column,
    field,
    render_table,
    show_tables,
    status_tables,
)


def report(**extra: Any) -> dict[str, Any]:
    return {"version": 3, "sha256": "ab" * 32, "change": {"kind": "live"}, "publisher": "me",
            "fleet": [], "fleet_hidden": 0, "fleet_skipped": {}, "queues": [], **extra}


def test_columns_align_and_numbers_go_right() -> None:
    columns = (Column("NAME", field("name"), 6), Column("N", field("n"), 3, right=True),
               Column("NOTE", field("note")))
    lines = render_table(columns, [{"name": "a", "n": 7, "note": "x"}, {"name": "bbbbbb", "n": 12}])
    assert lines == ["NAME     N NOTE", "a        7 x", "bbbbbb  12"]


@given(st.dictionaries(st.sampled_from(["service", "instance", "version", "sha256", "source",
                                        "heartbeat_age"]), st.text()),
       st.lists(st.text(), max_size=3))
def test_a_fleet_record_of_any_content_is_one_escaped_line(record: dict[str, Any],
                                                           problems: list[str]) -> None:
    lines = render_table(FLEET, [{**record, "problems": problems}])
    assert len(lines) == 2 and all(line.isprintable() for line in lines)


def test_status_shows_the_rest_the_skipped_and_the_unconsumed_queue() -> None:
    lines = status_tables(report(
        fleet=[{"service": "worker", "instance": "w\x1b[2J:1", "version": "3",
                "sha256": "ab" * 32, "source": "s", "heartbeat_age": 2, "problems": []}],
        fleet_hidden=4, fleet_skipped={"wrong type": 2},
        queues=[{"name": "scan", "consumers": 0, "unknown": 1, "depth": None,
                 "state": "no consumer", "senders": ["r1", "r2", "r3", "r4"]}]))
    text = "\n".join(lines)
    assert lines[0] == f"published version 3  sha256 {'ab' * 6}  change live  by me"
    assert "w\\x1b[2J:1" in text and "in sync" in text
    assert "(and 4 more instances, not shown)" in text
    assert "(skipped 2 record(s) under the fleet's prefix: wrong type)" in text
    (queue,) = [line for line in lines if line.startswith("scan")]
    assert queue.split()[1:3] == ["0+1?", "-"]
    assert queue.endswith("NO CONSUMER (sent to by r1, r2, r3 and 1 more)")
    assert QUEUES[0].title == "QUEUE"


def test_an_empty_fleet_says_so() -> None:
    assert "(no running instance reports to this namespace)" in status_tables(report())


def test_show_escapes_what_it_read() -> None:
    lines = show_tables({"queues": {"q\n": {"exchange": {"name": "e", "type": "direct"},
                                            "routing_key": "k"}},
                         "routes": {"t.\x1b": {"queue": "q\n", "priority": 1}},
                         "base": {"task_default_queue": "q\n"}})
    assert all(line.isprintable() for line in lines)
    assert "q\\n" in lines[2] and "e (direct)" in lines[2]
    assert "t.\\x1b" in lines[5] and "{'priority': 1}" in lines[5]
    assert lines[8].startswith("task_default_queue") and lines[8].endswith('"q\\n"')


def test_history_columns_in_order() -> None:
    assert [column.title for column in HISTORY] == ["VERSION", "SHA256", "PUBLISHED_AT",
                                                    "PUBLISHER", "SOURCE", "CHANGE", "SUMMARY"]
