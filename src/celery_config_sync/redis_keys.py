"""The Redis layout of DESIGN.md: the name of every key of a namespace, and the layout's
version (``meta.schema_version``)."""

from __future__ import annotations

from dataclasses import dataclass

from .codec import ORDER_KEY, SECTIONS

# 2: the declared order of queues and routes (NS:order) and the application's keys (NS:app).
# The history (NS:history, NS:history:documents) needs no new layout: it is additive, and a
# reader that does not know it never reads it.
SCHEMA_VERSION = "2"
# The hashes of one configuration: its sections, then the declared order.
HASHES = (*SECTIONS, ORDER_KEY)


@dataclass(frozen=True)
class Keys:
    namespace: str

    @property
    def queues(self) -> str:
        return f"{self.namespace}:queues"

    @property
    def routes(self) -> str:
        return f"{self.namespace}:routes"

    @property
    def base(self) -> str:
        return f"{self.namespace}:base"

    @property
    def version(self) -> str:
        return f"{self.namespace}:version"

    @property
    def meta(self) -> str:
        return f"{self.namespace}:meta"

    @property
    def channel(self) -> str:
        return f"{self.namespace}_updates"

    @property
    def beat_lock(self) -> str:
        """The lock that makes one beat the active one (celery_config_sync.beat)."""
        return f"{self.namespace}:beat:lock"

    @property
    def beat_last_run(self) -> str:
        """Hash: schedule entry name -> ISO time of its last run, written by the active beat."""
        return f"{self.namespace}:beat:last_run"

    @property
    def applied_prefix(self) -> str:
        """Prefix of the fleet's instance records (celery_config_sync.fleet)."""
        return f"{self.namespace}:applied:"

    @property
    def history(self) -> str:
        """Hash: version -> that version's record (its meta, the one-line summary of its change
        and its document's size in ``bytes``), as canonical JSON."""
        return f"{self.namespace}:history"

    @property
    def history_documents(self) -> str:
        """Hash: version -> that version's canonical document (``ConfigDocument.canonical``,
        whose sha256 is the version's)."""
        return f"{self.namespace}:history:documents"

    def section(self, name: str) -> str:
        return f"{self.namespace}:{name}"

    def layout(self) -> dict[str, str]:
        """Every key of the published configuration -> the Redis type it holds (what ``clear``
        deletes; the fleet's records are not the configuration's)."""
        return {**{self.section(name): "hash" for name in HASHES}, self.version: "string",
                self.meta: "hash", self.history: "hash", self.history_documents: "hash"}
