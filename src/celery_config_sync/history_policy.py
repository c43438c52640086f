"""How much history a publish keeps: the policy alone (the environment parses it, the publish
applies it), apart from Redis."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class HistoryLimits:
    """How much history a publish keeps (CELERY_CONFIG_HISTORY_LENGTH, _MAX_BYTES): the last
    ``length`` versions, while their documents add up to at most ``max_bytes``."""

    length: int = 20
    max_bytes: int = 1024 * 1024

    def keep(self, sizes: Mapping[int, int], newest: int) -> list[int]:
        """The versions to keep, newest first, from ``sizes`` (version -> document bytes).

        ``newest`` (the version being published) is always kept, even bigger than
        ``max_bytes`` alone: the published version must be in its history. Older ones follow
        while both limits hold; the first that does not fit ends the history, so the oldest
        are dropped first and what is kept has no holes."""
        kept, total = [newest], sizes[newest]
        for older in sorted((v for v in sizes if v < newest), reverse=True):
            total += sizes[older]
            if len(kept) >= self.length or total > self.max_bytes:
                break
            kept.append(older)
        return kept


DEFAULT_HISTORY = HistoryLimits()
