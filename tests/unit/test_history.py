"""The history's pure parts: what a publish keeps (the last N, capped in bytes, the oldest
dropped first, the newest always), and the decoder: any bytes stored as a version give its
document, or one InvalidConfig naming ``history[<version>]`` (the CLI's one line, exit 2)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from kombu import Exchange, Queue

from celery_config_sync.codec import (
    ORDER_KEY,
    SECTIONS,
    ConfigDocument,
    canonical_json,
    queue_to_dict,
)
from celery_config_sync.environment import Environment
from celery_config_sync.errors import CeleryConfigError, InvalidConfig
from celery_config_sync.history import decode_version
from celery_config_sync.history_policy import HistoryLimits
from celery_config_sync.value_types import to_json
from tests.tamper import history_record

# Small, so that random mutations often land in its structure rather than in a long value.
DOCUMENT = ConfigDocument(
    queues={"q": to_json(queue_to_dict(Queue("q", Exchange("q"), routing_key="q")), "q")},
    routes={"t.*": {"queue": "q"}}, base={"task_default_queue": "q"}, app={"FLAG": True})
CANONICAL = DOCUMENT.canonical().encode()
RECORD = history_record(7, CANONICAL)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5)
                    | st.floats(allow_nan=False, allow_infinity=False),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=10)


def test_the_last_n_are_kept() -> None:
    limits = HistoryLimits(length=3, max_bytes=10**9)
    assert limits.keep(dict.fromkeys(range(1, 8), 10), 7) == [7, 6, 5]
    assert HistoryLimits(length=1).keep({1: 1, 2: 1}, 2) == [2]


def test_bytes_are_capped_and_the_oldest_dropped_first() -> None:
    limits = HistoryLimits(length=20, max_bytes=25)
    assert limits.keep({1: 10, 2: 10, 3: 10}, 3) == [3, 2]
    # No holes: a small old version behind one that does not fit goes too.
    assert limits.keep({1: 1, 2: 20, 3: 10}, 3) == [3]


def test_the_newest_is_kept_alone_when_bigger_than_the_cap() -> None:
    assert HistoryLimits(length=20, max_bytes=5).keep({1: 1, 2: 100}, 2) == [2]


def test_the_limits_come_from_the_environment() -> None:
    env = Environment.from_environ({"CELERY_CONFIG_HISTORY_LENGTH": "5",
                                    "CELERY_CONFIG_HISTORY_MAX_BYTES": "0"})
    assert env.history == HistoryLimits(5, 0)
    assert Environment.from_environ({}).history == HistoryLimits(20, 1024 * 1024)
    for name, value in (("CELERY_CONFIG_HISTORY_LENGTH", "0"),
                        ("CELERY_CONFIG_HISTORY_MAX_BYTES", "-1"),
                        ("CELERY_CONFIG_HISTORY_LENGTH", "many")):
        with pytest.raises(CeleryConfigError, match=f"^{name}="):
            Environment.from_environ({name: value})


def test_a_whole_version_decodes_to_its_document() -> None:
    entry, document = decode_version(7, canonical_json(RECORD).encode(), CANONICAL)
    assert document == DOCUMENT and list(document.routes) == ["t.*"]
    assert (entry.version, entry.sha256, entry.size) == (7, DOCUMENT.sha256, len(CANONICAL))
    assert entry.source == "tampered" and entry.restart_required == ()


@st.composite
def stored_documents(draw: st.DrawFn) -> bytes:
    """Bytes as a history document: anything, a valid one mutated, JSON of any shape, a valid
    one with a section replaced, the valid one."""
    mutated = st.tuples(st.integers(0, len(CANONICAL) - 1), st.binary(max_size=3),
                        st.integers(0, 3)).map(
        lambda cut: CANONICAL[:cut[0]] + cut[1] + CANONICAL[cut[0] + cut[2]:])
    reshaped = st.tuples(st.sampled_from([*SECTIONS, ORDER_KEY, "extra"]), JSON).map(
        lambda change: canonical_json({**DOCUMENT.as_mapping(),
                                       change[0]: change[1]}).encode())
    return draw(st.one_of(st.binary(max_size=200), mutated, reshaped,
                          JSON.map(lambda value: canonical_json(value).encode()),
                          st.just(CANONICAL)))


@st.composite
def stored_records(draw: st.DrawFn, document: bytes) -> bytes | None:
    """Bytes as a history record: mostly one whose sha256 is the document's (so decoding goes
    on into the document), or anything, one field changed or removed, or no record at all."""
    good = {**RECORD, "sha256": hashlib.sha256(document).hexdigest()}
    changed = st.tuples(st.sampled_from(sorted(good)), JSON | st.text(max_size=6)).map(
        lambda change: canonical_json({**good, change[0]: change[1]}).encode())
    removed = st.sampled_from(sorted(good)).map(
        lambda name: canonical_json({k: v for k, v in good.items() if k != name}).encode())
    return draw(st.one_of(st.just(canonical_json(good).encode()), st.binary(max_size=200),
                          changed, removed, st.none()))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_bytes_give_the_document_or_one_error(data: st.DataObject) -> None:
    document = data.draw(stored_documents())
    record = data.draw(stored_records(document))
    try:
        entry, decoded = decode_version(7, record, document)
    except InvalidConfig as exc:
        message = str(exc)
        assert message.startswith("history[7]") and "\n" not in message, message
        event(f"refused at {exc.key.split(':')[-1].strip()}")
    else:  # accepted: exactly the stored bytes, hashed as recorded
        event("accepted")
        assert decoded.canonical().encode() == document
        assert entry.sha256 == decoded.sha256 == hashlib.sha256(document).hexdigest()
