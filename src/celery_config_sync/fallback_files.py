"""The two files of the fallback chain: last-known-good (written after every load from Redis)
and the snapshot (exported from the source at image build time). Same JSON format for both.

Last-known-good has a small digest file beside it (:func:`digest_path`): what it holds
(version, sha256), the sha256 of its bytes and the file's stamp (:func:`file_stamp`: that
sha256 and the inode, size, modification and change times the file had once written), so that
a load finds it up to date by one ``stat``, without reading it (by hashing its bytes when the
stamp differs: a copied or touched file); and the record of the validation that accepted that
content (celery_config_sync.validated_content), which spares the next load from Redis a second
validation of the same stored fields. The digest never vouches for the file: it is still
parsed, hash-checked and validated whenever it is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from .codec import ConfigDocument, canonical_json
from .errors import InvalidConfig
from .validation import LIMITS, validate

# 2: the declared order of queues and routes, and the application's keys (as layout 2 in Redis).
FORMAT = "celery-config/2"
DIGEST_FORMAT = "celery-config-digest/1"
DIGEST_MAX_BYTES = 4096  # a digest is ~200 bytes: whatever is larger is not one


def render(document: ConfigDocument, *, version: int, meta: dict[str, str]) -> str:
    return json.dumps({
        "format": FORMAT,
        "version": version,
        "sha256": document.sha256,
        "meta": meta,
        "config": document.as_mapping(),
    }, indent=2, sort_keys=True) + "\n"


def write_atomic(path: str | os.PathLike[str], text: str, mode: int = 0o644, *,
                 durable: bool = True) -> os.stat_result | None:
    """Temp file in the same directory, fsync, rename: a reader sees the old file or the new.
    Returns the file's ``stat`` once renamed, or None when another writer replaced it already.

    ``mode`` defaults to world-readable: validation keeps secrets out of the config, and a
    snapshot exported at image build time is read by the services' unprivileged user.
    ``durable=False`` leaves out the two fsyncs (file and directory): for a file that a power
    cut may lose or empty without harm (the digest of last-known-good).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)  # mkstemp creates 0600
        inode = os.fstat(fd).st_ino
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # After the rename, which sets the change time; an inode that is not ours is another
    # writer's file: its stat stamps nothing of ours.
    written = os.stat(target)
    if durable:
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return written if written.st_ino == inode else None


def file_stamp(file_sha256: str, stat: os.stat_result) -> str:
    """The file whose bytes hash to ``file_sha256``, as it stood at ``stat``: any write, rename,
    truncation, ``chmod`` or ``touch`` since changes its inode, size or change time (which no
    call sets to a chosen value), so a stamp still equal means those very bytes, without reading
    them. Bit rot under the file system goes unseen by a stamp, as it does by the digest of a
    file that is not read: the file is checked whole when it is used. The sha256 is part of the
    stamp, so that a digest whose ``file_sha256`` was changed since does not match either."""
    return (f"{file_sha256}:{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}:"
            f"{stat.st_ctime_ns}")


def digest_path(path: str | os.PathLike[str]) -> Path:
    """The digest file beside ``path``: same directory, ``.digest`` appended."""
    return Path(_digest_name(path))


def _digest_name(path: str | os.PathLike[str]) -> str:
    # A string, not a Path: every load reads the digest, and pathlib's parsing costs more than
    # the read (issue 20).
    return f"{os.fspath(path)}.digest"


def write_with_digest(path: str | os.PathLike[str], text: str, *, version: int,
                      sha256: str, validated: dict[str, Any] | None = None) -> None:
    """Write ``text`` (the rendering of version ``version``, content ``sha256``) to ``path``,
    then its digest beside it, each atomically. Interrupted between the two, the digest left
    names the previous file's bytes: it no longer matches, and the next load writes again.
    ``validated``: the record of the validation that accepted this content
    (celery_config_sync.validated_content), kept in the digest for the next load.

    The file is durable (fsynced) before its digest is written, and the digest is not fsynced:
    whatever a power cut leaves of it (nothing, an empty file, the previous digest) fails to
    match and costs one more write, never a wrong skip; an SD card is spared two fsyncs."""
    written = write_atomic(path, text)
    file_sha256 = hashlib.sha256(text.encode()).hexdigest()
    write_digest(path, version=version, sha256=sha256, file_sha256=file_sha256,
                 stamp=file_stamp(file_sha256, written) if written is not None else None,
                 validated=validated)


def write_digest(path: str | os.PathLike[str], *, version: int, sha256: str, file_sha256: str,
                 stamp: str | None, validated: dict[str, Any] | None = None) -> None:
    """The digest beside ``path`` alone (not fsynced: see :func:`write_with_digest`).
    ``stamp``: the file's (:func:`file_stamp`); None (unknown) leaves it out: the next load
    hashes the file's bytes instead."""
    record: dict[str, Any] = {"format": DIGEST_FORMAT, "version": version, "sha256": sha256,
                              "file_sha256": file_sha256}
    if stamp is not None:
        record["file_stamp"] = stamp
    if validated is not None:
        record["validated"] = validated
    write_atomic(digest_path(path), canonical_json(record) + "\n", durable=False)


def read_digest(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The digest beside ``path`` as a JSON object, or None (absent, unreadable, too large to
    be one, not UTF-8, not a JSON object): never an exception, whatever bytes are there."""
    try:
        fd = os.open(_digest_name(path), os.O_RDONLY)
        try:
            raw = os.read(fd, DIGEST_MAX_BYTES + 1)
        finally:
            os.close(fd)
        recorded = _DIGEST_DECODER.decode(raw.decode())
    except (OSError, ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return recorded if isinstance(recorded, dict) else None


# The decoder's own method on a str: json.loads would detect the encoding of the bytes first
# (UTF-16, UTF-32), which a digest, written as UTF-8, never needs.
_DIGEST_DECODER = json.JSONDecoder()


def holds(path: str | os.PathLike[str], *, version: int, sha256: str,
          recorded: dict[str, Any] | Literal[False] | None = False) -> bool:
    """True when ``path`` holds version ``version`` with content ``sha256``, as its digest says
    and the file confirms (:func:`held_stamp`); False whenever that is not certain: then the
    caller writes the file again, it never skips a write it needed."""
    return held_stamp(path, version=version, sha256=sha256, recorded=recorded) is not None


def held_stamp(path: str | os.PathLike[str], *, version: int, sha256: str,
               recorded: dict[str, Any] | Literal[False] | None = False) -> str | None:
    """The file's stamp now (:func:`file_stamp`) when ``path`` holds version ``version`` with
    content ``sha256`` as its digest says; None whenever that is not certain (no digest or no
    file, either unreadable, a digest of another version or content, or of other bytes).

    The file confirms it by its stamp when the digest's is still the file's (one ``stat``, the
    common case: the file written by the last load); else by the sha256 of its bytes (a file
    copied, restored or touched, a digest without a stamp): then the stamp returned differs
    from the digest's, and the caller writes the digest again, not the file. ``recorded``: the
    digest as the caller read it already (:func:`read_digest`), else it is read here."""
    if recorded is False:
        recorded = read_digest(path)
    if not (recorded is not None and recorded.get("format") == DIGEST_FORMAT
            and type(recorded.get("version")) is int and recorded["version"] == version
            and recorded.get("sha256") == sha256):
        return None
    file_sha256 = recorded.get("file_sha256")
    if not isinstance(file_sha256, str):
        return None
    try:
        stat = os.stat(path)
        stamp = file_stamp(file_sha256, stat)
        if recorded.get("file_stamp") == stamp:
            return stamp
        with open(path, "rb") as handle:  # doubt: the bytes decide
            body = handle.read()
            stamp = file_stamp(file_sha256, os.fstat(handle.fileno()))
    except OSError:
        return None
    return stamp if hashlib.sha256(body).hexdigest() == file_sha256 else None


def read_file(path: str | os.PathLike[str], *, allow: frozenset[str] = frozenset(),
              ) -> tuple[ConfigDocument, int, dict[str, Any]]:
    """Parse, check the sha256 and validate a fallback file: (document, version, meta).

    Strict like a load from Redis: no NaN/Infinity, no duplicate keys, no nesting deep enough
    to exhaust the parser; every refusal is an :class:`InvalidConfig`."""
    target = Path(path)
    where = target.name
    size = target.stat().st_size  # FileNotFoundError is the caller's "absent"
    if size > LIMITS["total_bytes"] * 4:  # pretty-printed: allow for indentation
        raise InvalidConfig(where, f"{size} bytes, too large for a config file")
    try:
        data = json.loads(target.read_text(encoding="utf-8"), parse_constant=_no_constant,
                          object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise InvalidConfig(where, "nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidConfig(where, f"malformed JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise InvalidConfig(f"{where}.format", f"expected {FORMAT!r}, found {found!r}" + (
            " (written by an older celery-config: it is replaced at the next load from Redis)"
            if found == "celery-config/1" else ""))
    config = data.get("config")
    if not isinstance(config, dict):
        raise InvalidConfig(f"{where}.config", "missing or not an object")
    document = ConfigDocument.from_mapping(config)
    if document.sha256 != data.get("sha256"):
        raise InvalidConfig(f"{where}.sha256", "does not match the content")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise InvalidConfig(f"{where}.version", "must be an integer >= 0")
    validate(document, allow=allow)
    meta = data.get("meta")
    return document, version, meta if isinstance(meta, dict) else {}


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        keys = [key for key, _ in pairs]
        duplicate = next(key for key in keys if keys.count(key) > 1)
        raise ValueError(f"duplicate key {duplicate!r}")
    return result
