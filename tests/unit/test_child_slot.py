"""The shared slot that hands the parent's applied configuration to prefork children: a codec,
so tested by property too (whatever is written is read back exactly, once)."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from celery_config_sync.child_slot import SharedSlot
from celery_config_sync.codec import ConfigDocument
from celery_config_sync.loader import LoadedConfig
from celery_config_sync.source import load_source
from tests.conftest import SOURCE

BASE = load_source(str(SOURCE))

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**53, 2**53), st.text(),
                         st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=20)


def loaded(document: ConfigDocument, version: int = 1, source: str = "redis") -> LoadedConfig:
    return LoadedConfig(document, version, document.sha256, source, {"publisher": "test"})


@settings(max_examples=60, deadline=None)
@given(base=st.dictionaries(st.text(min_size=1, max_size=20), json_values, max_size=8),
       version=st.integers(0, 2**40), source=st.sampled_from(["redis", "snapshot"]))
def test_what_is_written_is_read_back_exactly_once(base: dict[str, object], version: int,
                                                   source: str) -> None:
    slot = SharedSlot()
    reader = SharedSlot.__new__(SharedSlot)  # another process's view of the same memory
    reader._map, reader.sequence = slot._map, 0
    document = ConfigDocument(BASE.queues, BASE.routes, base)
    slot.write(loaded(document, version, source))
    got = reader.read_if_newer()
    assert got is not None
    assert (got.document, got.version, got.sha256, got.source) == (
        document, version, document.sha256, source)
    assert reader.read_if_newer() is None  # nothing new since


def test_a_forked_child_sees_what_the_parent_writes_after_the_fork() -> None:
    slot = SharedSlot()
    slot.write(loaded(BASE, 1))
    read_end, write_end = os.pipe()
    go_read, go_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: inherited sequence = 2, waits for the parent's next write
        os.close(read_end)
        os.read(go_read, 1)
        got = slot.read_if_newer()
        os.write(write_end, str(got.version if got else -1).encode())
        os._exit(0)
    os.close(write_end)
    changed = ConfigDocument(BASE.queues, BASE.routes, {**BASE.base, "task_default_queue": "scan"})
    slot.write(loaded(changed, 2))
    os.write(go_write, b"x")
    assert os.read(read_end, 16) == b"2"
    os.waitpid(pid, 0)
