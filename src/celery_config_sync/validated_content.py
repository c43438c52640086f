"""What this release has validated already: a record that lets a load skip a second strict
decoding and validation of the very same stored fields (issue 20).

A service that restarts on the configuration it ran finds, beside its last-known-good file, the
record its previous load wrote after validating: the content's sha256, its field layout
(celery_config_sync.strict_fields: the two name the stored fields exactly, byte for byte), the
unsafe settings that process allowed, and the fingerprint of the rules that decided. A load
whose Redis fields hash to that sha256 and have that layout, under the same allowed settings and
the same rules, would decide the same again: it parses the text whole instead, and skips
validation. Anything else (another sha256 or layout: a tampered field; other allowed settings;
another release, or another Celery or kombu whose option tables the rules read) is decoded and
validated in full, exactly as without a record.

The record is only as trusted as the service's own disk: it lets through nothing that Redis does
not hold byte for byte, and what it vouches for was refused or accepted by these very rules.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import kombu

import celery

# The modules whose code decides what a load accepts: the decoding, the strict fields, the
# validation and everything they import of this library (tests/unit/test_validated_content.py
# checks this table against the import graph), and this module.
RULE_MODULES = ("codec", "counters", "errors", "redis_keys", "snapshot_decoding",
                "snapshot_reading", "strict_fields", "terminal_text", "validated_content",
                "validation", "value_types")


@cache
def rules_fingerprint() -> str | None:
    """The sha256 of the rules' source (the modules of RULE_MODULES, as their files hold them)
    and of the Python, Celery and kombu versions; None when a source cannot be read (then no
    record is ever trusted). Computed once per process (about 0.1 ms: bench/load_bench.py)."""
    digest = hashlib.sha256(f"{sys.version}\0{celery.__version__}\0{kombu.__version__}".encode())
    package = sys.modules[__package__ or "celery_config_sync"]
    for name in RULE_MODULES:
        module = sys.modules.get(f"{package.__name__}.{name}")
        try:
            source = Path(module.__file__).read_bytes()  # type: ignore[union-attr,arg-type]
        except (AttributeError, TypeError, OSError):
            return None
        digest.update(f"\0{name}\0{len(source)}\0".encode() + source)
    return digest.hexdigest()


@dataclass(frozen=True)
class ValidatedContent:
    """Stored fields (``sha256`` of their concatenation, ``layout``) that the rules of
    ``release`` accepted, allowing the unsafe settings ``allow``."""

    sha256: str
    layout: str
    allow: frozenset[str]
    release: str

    @classmethod
    def now(cls, sha256: str, layout: str, allow: frozenset[str]) -> ValidatedContent | None:
        """The record of a validation this process just made (None: rules not fingerprinted)."""
        release = rules_fingerprint()
        return None if release is None else cls(sha256, layout, allow, release)

    def vouches_for(self, sha256: str, layout: str, allow: frozenset[str]) -> bool:
        """True when these stored fields, under ``allow``, were accepted by these very rules."""
        return (self.sha256 == sha256 and self.layout == layout and self.allow == allow
                and self.release == rules_fingerprint())

    def record(self) -> dict[str, Any]:
        """The JSON form kept in last-known-good's digest (its ``sha256`` is the digest's)."""
        return {"layout": self.layout, "allow": sorted(self.allow), "release": self.release}

    @classmethod
    def from_record(cls, sha256: object, record: object) -> ValidatedContent | None:
        """Back from a digest's ``sha256`` and ``validated`` record; None for anything that is
        not exactly such a record (a digest is read from disk: any bytes may be there)."""
        if not isinstance(sha256, str) or not isinstance(record, Mapping):
            return None
        layout, allow, release = (record.get(k) for k in ("layout", "allow", "release"))
        if not (isinstance(layout, str) and isinstance(release, str)
                and isinstance(allow, list) and all(isinstance(a, str) for a in allow)):
            return None
        return cls(sha256, layout, frozenset(allow), release)
