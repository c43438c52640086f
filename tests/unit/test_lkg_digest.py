"""The digest beside last-known-good as a parser (fallback_files.holds): any bytes in the digest
file give True or False, never an exception, and True only for the exact record of the file's
version, content and bytes."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from celery_config_sync.fallback_files import DIGEST_FORMAT, digest_path, holds

BODY = b'{"the": "last-known-good file"}\n'
RIGHT = {"format": DIGEST_FORMAT, "version": 7, "sha256": "ab" * 32,
         "file_sha256": hashlib.sha256(BODY).hexdigest()}
WRONG = {"format": st.sampled_from(["celery-config-digest/0", "", None, 1]),
         "version": st.sampled_from([6, 8, True, 7.0, "7", None, -7]),
         "sha256": st.sampled_from(["AB" * 32, "ab" * 31, "", None]),
         "file_sha256": st.sampled_from([hashlib.sha256(BODY + b" ").hexdigest(), None, 0])}


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    """The right record with any of its fields wrong, missing, or an extra field added."""
    record: dict[str, Any] = {}
    for field, right in RIGHT.items():
        choice = draw(st.sampled_from(["right", "wrong", "missing"]))
        if choice == "right":
            record[field] = right
        elif choice == "wrong":
            record[field] = draw(WRONG[field])
    if draw(st.booleans()):
        record["extra"] = draw(st.integers())
    return record


def check(digest: bytes) -> bool:
    with tempfile.TemporaryDirectory() as workdir:
        path = Path(workdir) / "lkg.json"
        path.write_bytes(BODY)
        digest_path(path).write_bytes(digest)
        return holds(path, version=RIGHT["version"], sha256=RIGHT["sha256"])


@settings(max_examples=300, deadline=None)
@given(record=records())
def test_only_the_exact_record_holds(record: dict[str, Any]) -> None:
    exact = all(field in record and type(record[field]) is type(right) and record[field] == right
                for field, right in RIGHT.items())
    assert check(json.dumps(record).encode()) is exact


@settings(max_examples=300, deadline=None)
@given(digest=st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_any_bytes_are_a_verdict_never_an_exception(digest: bytes) -> None:
    assert check(digest) is False
