"""The digest beside last-known-good as a parser (fallback_files.holds): any bytes in the digest
file give True or False, never an exception, and True only for the exact record of the file's
version, content and bytes. The file's stamp decides how that is confirmed (one stat, or a
hash of the bytes), never the verdict."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from celery_config_sync.fallback_files import DIGEST_FORMAT, digest_path, file_stamp, holds

BODY = b'{"the": "last-known-good file"}\n'
RIGHT = {"format": DIGEST_FORMAT, "version": 7, "sha256": "ab" * 32,
         "file_sha256": hashlib.sha256(BODY).hexdigest()}
WRONG = {"format": st.sampled_from(["celery-config-digest/0", "", None, 1]),
         "version": st.sampled_from([6, 8, True, 7.0, "7", None, -7]),
         "sha256": st.sampled_from(["AB" * 32, "ab" * 31, "", None]),
         "file_sha256": st.sampled_from([hashlib.sha256(BODY + b" ").hexdigest(), None, 0])}


# The stamp, made once the file is written (check): the file's own (of its true bytes, whatever
# the record's file_sha256 says), or one of another inode, change time or bytes, or not one.
STAMPS: dict[str, Any] = {
          "right": file_stamp,
          "other inode": lambda sha, stat: file_stamp(sha, stat).replace(
              f":{stat.st_ino}:", f":{stat.st_ino + 1}:", 1),
          "other change time": lambda sha, stat: file_stamp(sha, stat) + "1",
          "of other bytes": lambda sha, stat: file_stamp(sha[::-1], stat),
          "not a string": lambda sha, stat: 7}


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    """The right record with any of its fields wrong, missing, or an extra field added; with
    any stamp or none."""
    record: dict[str, Any] = {}
    for field, right in RIGHT.items():
        choice = draw(st.sampled_from(["right", "wrong", "missing"]))
        if choice == "right":
            record[field] = right
        elif choice == "wrong":
            record[field] = draw(WRONG[field])
    if draw(st.booleans()):
        record["extra"] = draw(st.integers())
    if draw(st.booleans()):
        record["file_stamp"] = draw(st.sampled_from(sorted(STAMPS)))
    return record


def check(digest: bytes | dict[str, Any]) -> bool:
    with tempfile.TemporaryDirectory() as workdir:
        path = Path(workdir) / "lkg.json"
        path.write_bytes(BODY)
        if isinstance(digest, dict):
            stamp = digest.get("file_stamp")
            if stamp is not None:
                digest = {**digest, "file_stamp": STAMPS[stamp](RIGHT["file_sha256"],
                                                                path.stat())}
            digest = json.dumps(digest).encode()
        digest_path(path).write_bytes(digest)
        return holds(path, version=RIGHT["version"], sha256=RIGHT["sha256"])


@settings(max_examples=300, deadline=None)
@given(record=records())
def test_only_the_exact_record_holds(record: dict[str, Any]) -> None:
    exact = all(field in record and type(record[field]) is type(right) and record[field] == right
                for field, right in RIGHT.items())
    assert check(record) is exact


@settings(max_examples=300, deadline=None)
@given(digest=st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_any_bytes_are_a_verdict_never_an_exception(digest: bytes) -> None:
    assert check(digest) is False
