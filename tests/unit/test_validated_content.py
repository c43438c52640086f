"""The record of validated content (validated_content.py): the rules' fingerprint covers every
module that decides what a load accepts, and content it vouches for decodes to exactly what a
full decoding gives."""

from __future__ import annotations

import hashlib

import grimp

from celery_config_sync.codec import ConfigDocument
from celery_config_sync.redis_keys import SCHEMA_VERSION
from celery_config_sync.snapshot_decoding import decode_snapshot
from celery_config_sync.snapshot_reading import Snapshot
from celery_config_sync.source import load_source
from celery_config_sync.strict_fields import concatenate
from celery_config_sync.validated_content import (
    RULE_MODULES,
    ValidatedContent,
    rules_fingerprint,
)
from tests.conftest import SOURCE

PACKAGE = "celery_config_sync"


def test_the_fingerprint_covers_what_the_decoding_imports() -> None:
    """A module the decoding comes to import (a new rule's home) changes what a load accepts:
    the fingerprint must read it, or a record would outlive a change of the rules."""
    graph = grimp.build_graph(PACKAGE)
    decoding = f"{PACKAGE}.snapshot_decoding"
    imported = {decoding, *graph.find_upstream_modules(decoding)}
    assert {f"{PACKAGE}.{name}" for name in RULE_MODULES} == imported
    assert rules_fingerprint() is not None


def snapshot_of(document: ConfigDocument) -> Snapshot:
    hashes = {name: {key.encode(): text.encode() for key, text in fields.items()}
              for name, fields in document.encoded_fields().items()}
    sha = hashlib.sha256(concatenate(hashes).canonical).hexdigest()
    return Snapshot(hashes, b"1", {b"sha256": sha.encode(),
                                   b"schema_version": SCHEMA_VERSION.encode()})


def test_vouched_content_decodes_to_what_a_full_decoding_gives() -> None:
    snapshot = snapshot_of(load_source(str(SOURCE)))
    full = decode_snapshot(snapshot)
    assert full.validated is not None
    vouched = decode_snapshot(snapshot, trusted=full.validated)
    assert vouched.validated is full.validated
    assert (vouched.document, vouched.document.order()) == (full.document, full.document.order())
    assert (vouched.version, vouched.sha256, vouched.meta) == (full.version, full.sha256,
                                                               full.meta)


def test_a_record_survives_its_digest_and_nothing_else_passes_for_one() -> None:
    record = ValidatedContent("ab" * 32, "cd" * 32, frozenset({"task_serializer"}), "r")
    assert ValidatedContent.from_record(record.sha256, record.record()) == record
    for sha, body in [(None, record.record()), (record.sha256, None),
                      (record.sha256, {**record.record(), "allow": "task_serializer"}),
                      (record.sha256, {**record.record(), "allow": [1]}),
                      (record.sha256, {**record.record(), "layout": None}),
                      (record.sha256, {"layout": "x", "allow": []})]:
        assert ValidatedContent.from_record(sha, body) is None
