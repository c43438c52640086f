"""Differences between two configurations, section by section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .codec import ORDER_KEY, ORDERED_SECTIONS, SECTIONS, ConfigDocument


@dataclass(frozen=True)
class Change:
    section: str
    key: str
    kind: str  # "added" (in the source only), "removed" (published only), "changed"
    published: Any = None
    source: Any = None

    def line(self) -> str:
        sign = {"added": "+", "removed": "-", "changed": "~"}[self.kind]
        return f"{sign} {self.section}[{self.key!r}] {self.kind}"


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
