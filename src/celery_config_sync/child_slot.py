"""Hand the configuration a prefork parent applies to its children, without a restart.

Prefork children are forked copies of the parent: the parent's watcher applies a new version
in the parent only. Before forking, the parent maps one anonymous shared page range
(:class:`SharedSlot`); every apply writes the applied configuration there under a sequence
counter. A child compares the counter (a few bytes of shared memory) before each task and, when
it moved, decodes the slot and switches to the same state: the task it is about to run reports
and routes by what the parent applies. Idle, this costs no thread, no connection and no CPU;
a change costs each child one decode on its next task.

(Celery's pool restart was the other way: it re-forks every child after each change, and a
child that takes a task before it is replaced still runs it on the old configuration.)

Seqlock: the writer makes the counter odd, writes, makes it even; a reader retries while the
counter is odd or moved during its copy. One writer (the parent's event loop), many readers.
"""

from __future__ import annotations

import json
import mmap
import struct
import time
from typing import Any

from .codec import ConfigDocument, canonical_json
from .loader import LoadedConfig
from .validation import LIMITS

HEADER = struct.Struct("<QI")  # sequence counter, payload length
# The canonical document is capped at LIMITS["total_bytes"]; meta and framing fit in the rest.
SIZE = HEADER.size + LIMITS["total_bytes"] + 64 * 1024


class SharedSlot:
    """One shared, fork-inherited buffer holding the last applied configuration."""

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, SIZE)  # MAP_SHARED | MAP_ANONYMOUS: children see writes
        self.sequence = 0  # what this process last wrote or read

    def write(self, loaded: LoadedConfig) -> int:
        payload = canonical_json({
            "version": loaded.version, "sha256": loaded.sha256, "source": loaded.source,
            "meta": loaded.meta, "config": loaded.document.as_mapping(),
        }).encode()
        if HEADER.size + len(payload) > SIZE:
            raise ValueError(f"configuration of {len(payload)} bytes does not fit the slot")
        sequence, _ = HEADER.unpack_from(self._map, 0)
        HEADER.pack_into(self._map, 0, sequence + 1, 0)  # odd: writing
        self._map[HEADER.size:HEADER.size + len(payload)] = payload
        HEADER.pack_into(self._map, 0, sequence + 2, len(payload))
        self.sequence = sequence + 2
        return self.sequence

    def published_sequence(self) -> int:
        sequence: int = HEADER.unpack_from(self._map, 0)[0]
        return sequence

    def read_if_newer(self) -> LoadedConfig | None:
        """The configuration in the slot when it changed since this process last looked."""
        for _ in range(1000):
            sequence, length = HEADER.unpack_from(self._map, 0)
            if sequence == self.sequence:
                return None
            if sequence % 2:
                time.sleep(0.0005)
                continue
            payload = bytes(self._map[HEADER.size:HEADER.size + length])
            if HEADER.unpack_from(self._map, 0)[0] != sequence:
                continue
            self.sequence = sequence
            data: dict[str, Any] = json.loads(payload)
            return LoadedConfig(ConfigDocument.from_mapping(data["config"]), data["version"],
                                data["sha256"], data["source"], data["meta"])
        return None
