"""Differences between two configurations, section by section, and their one-line summary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .codec import ORDER_KEY, ORDERED_SECTIONS, SECTIONS, ConfigDocument

SIGNS = {"added": "+", "removed": "-", "changed": "~"}
# How the one-line summary names each section; routes are many, with long glob names, so they
# are counted, the rest named.
SUMMARY_TITLES = {"queues": "queues", "routes": "routes", "base": "settings", "app": "app",
                  ORDER_KEY: "order"}
COUNTED_SECTIONS = frozenset({"routes"})


@dataclass(frozen=True)
class Change:
    section: str
    key: str
    kind: str  # "added" (in the source only), "removed" (published only), "changed"
    published: Any = None
    source: Any = None

    def line(self) -> str:
        return f"{SIGNS[self.kind]} {self.section}[{self.key!r}] {self.kind}"


def diff(published: ConfigDocument, source: ConfigDocument) -> list[Change]:
    """What publishing ``source`` would change in ``published``, sorted by section and key."""
    changes = []
    for section in SECTIONS:
        old, new = getattr(published, section), getattr(source, section)
        for key in sorted(old.keys() | new.keys()):
            if key not in old:
                changes.append(Change(section, key, "added", source=new[key]))
            elif key not in new:
                changes.append(Change(section, key, "removed", published=old[key]))
            elif old[key] != new[key]:
                changes.append(Change(section, key, "changed", old[key], new[key]))
    for section in ORDERED_SECTIONS:  # the declared order of what both hold
        old_order = [k for k in published.order()[section] if k in getattr(source, section)]
        new_order = [k for k in source.order()[section] if k in getattr(published, section)]
        if old_order != new_order:
            changes.append(Change(ORDER_KEY, section, "changed", old_order, new_order))
    return changes


def describe_change(old: ConfigDocument, new: ConfigDocument) -> str:
    """``queues +reports -lastfm, routes +1 -1 ~2, settings ~worker_concurrency``: one line,
    as the services log a live apply and as the history records each version."""
    changes, parts = diff(old, new), []
    for section, title in SUMMARY_TITLES.items():
        mine = [change for change in changes if change.section == section]
        if section in COUNTED_SECTIONS:
            bits = [f"{sign}{count}" for sign in SIGNS.values()
                    if (count := sum(SIGNS[c.kind] == sign for c in mine))]
        else:
            bits = [f"{sign}{c.key}" for sign in SIGNS.values() for c in mine
                    if SIGNS[c.kind] == sign]
        if bits:
            parts.append(f"{title} {' '.join(bits)}")
    return ", ".join(parts) or "same content"
