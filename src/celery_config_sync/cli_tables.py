"""The CLI's tables (``show``, ``status``, ``history`` with ``--format table``): each declared once
as its columns (title, width, alignment, where the value comes from), rendered by one function
that escapes every cell (terminal_text): what a table shows is read from Redis, which any process
allowed to write the namespace may have filled, and no column may forget that. The commands in
cli.py only choose the table and echo its lines."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .terminal_text import shown

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Column:
    """One column: its title, its value from a row, its width (a minimum: a longer value pushes
    the rest of its line, as ``ls -l`` does; 0 for the last column) and its alignment."""

    title: str
    value: Callable[[Row], Any]
    width: int = 0
    right: bool = False

    def pad(self, text: str) -> str:
        return text.rjust(self.width) if self.right else text.ljust(self.width)


def field(name: str, default: str = "", *, cut: int | None = None) -> Callable[[Row], Any]:
    """The row's ``name`` (``default`` when absent), the first ``cut`` characters when given."""
    def value(row: Row) -> Any:
        text = row.get(name)
        text = default if text is None else text
        return str(text)[:cut] if cut else text
    return value


def render_table(columns: tuple[Column, ...], rows: Iterable[Row]) -> list[str]:
    """The title line, then a line per row; every cell escaped, then padded (the escape counts
    in the width, so that the columns stay aligned on the terminal)."""
    def line(cells: Iterable[str]) -> str:
        return " ".join(column.pad(cell)
                        for column, cell in zip(columns, cells, strict=True)).rstrip()
    return [line(column.title for column in columns),
            *(line(shown(column.value(row)) for column in columns) for row in rows)]


# ------------------------------------------------------------------ show: the published content
SHOW_QUEUES = (
    Column("QUEUE", field("name"), 20),
    Column("EXCHANGE (TYPE)", lambda q: f"{q['exchange'].get('name', '')} "
                                        f"({q['exchange'].get('type', '')})", 31),
    Column("ROUTING KEY", field("routing_key")),
)
SHOW_ROUTES = (
    Column("ROUTE", field("pattern"), 34),
    Column("QUEUE", field("queue")),
    Column("", lambda r: r["options"] or ""),
)
SHOW_SETTINGS = (
    Column("SETTING", field("name"), 34),
    Column("VALUE", lambda s: json.dumps(s["value"])),
)


def show_tables(sections: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """``show``'s three tables (queues, routes, settings), sorted by name, a blank line before
    each."""
    queues = [{"name": name, "exchange": queue.get("exchange") or {},
               "routing_key": queue.get("routing_key") or ""}
              for name, queue in sorted(sections["queues"].items())]
    routes = [{"pattern": pattern, "queue": route.get("queue"),
               "options": {k: v for k, v in route.items() if k != "queue"}}
              for pattern, route in sorted(sections["routes"].items())]
    settings = [{"name": name, "value": value} for name, value in sorted(sections["base"].items())]
    return ["", *render_table(SHOW_QUEUES, queues), "", *render_table(SHOW_ROUTES, routes),
            "", *render_table(SHOW_SETTINGS, settings)]


# ------------------------------------------------------------------ status: the fleet and queues
FLEET = (
    Column("SERVICE", field("service"), 8),
    Column("INSTANCE", field("instance"), 28),
    Column("VERSION", field("version"), 7, right=True),
    Column("SHA256", field("sha256", cut=12), 12),
    Column("SOURCE", field("source"), 16),
    Column("BEAT", field("heartbeat_age", "-"), 5, right=True),
    Column("STATE", lambda record: "; ".join(record["problems"]) or "in sync"),
)


def _consumers(queue: Row) -> str:
    return f"{queue['consumers']}" + (f"+{queue['unknown']}?" if queue["unknown"] else "")


def _queue_state(queue: Row) -> str:
    if queue["state"] != "no consumer":
        return str(queue["state"])
    senders = queue["senders"]
    more = f" and {len(senders) - 3} more" if len(senders) > 3 else ""
    return f"NO CONSUMER (sent to by {', '.join(senders[:3])}{more})"


QUEUES = (
    Column("QUEUE", field("name"), 24),
    Column("CONSUMERS", _consumers, 9, right=True),
    Column("WAITING", field("depth", "-"), 7, right=True),
    Column("STATE", _queue_state),
)


def status_tables(report: Mapping[str, Any]) -> list[str]:
    """``status``'s heading, its fleet (with what was hidden or skipped) and its queues."""
    lines = [f"published version {shown(report['version'])}  "
             f"sha256 {shown(str(report['sha256'])[:12])}  "
             f"change {shown(report['change']['kind'])}  by {shown(report['publisher'])}",
             "", *render_table(FLEET, report["fleet"])]
    if not report["fleet"]:
        lines.append("(no running instance reports to this namespace)")
    if report["fleet_hidden"]:
        lines.append(f"(and {report['fleet_hidden']} more instances, not shown)")
    for reason, count in sorted(report["fleet_skipped"].items()):
        lines.append(f"(skipped {count} record(s) under the fleet's prefix: {shown(reason)})")
    if report["queues"]:
        lines += ["", *render_table(QUEUES, report["queues"])]
    return lines


# ------------------------------------------------------------------ history: the kept versions
HISTORY = (
    Column("VERSION", field("version"), 7, right=True),
    Column("SHA256", field("sha256", cut=12), 12),
    Column("PUBLISHED_AT", field("published_at"), 25),
    Column("PUBLISHER", field("publisher"), 20),
    Column("SOURCE", field("source"), 28),
    Column("CHANGE", field("change"), 16),
    Column("SUMMARY", field("summary")),
)


__all__ = ["HISTORY", "Column", "render_table", "show_tables", "status_tables"]
