"""One Celery configuration, published through Redis, shared by services that never import
each other. See DESIGN.md for the Redis layout and the start-up contract."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .codec import ConfigDocument
from .environment import Environment
from .errors import CeleryConfigError, InvalidConfig, NoConfigAvailable
from .loader import LoadedConfig, load_config
from .redis_keys import Keys

if TYPE_CHECKING:
    from .publishing import publish
    from .source import load_source

# The publishing side, imported at first use (PEP 562): a service that only loads its
# configuration (an API, a worker) does not import it at start.
_PUBLISHING = {"publish": ".publishing", "load_source": ".source"}


def __getattr__(name: str) -> Any:
    if name not in _PUBLISHING:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLISHING[name], __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "CeleryConfigError",
    "ConfigDocument",
    "Environment",
    "InvalidConfig",
    "Keys",
    "LoadedConfig",
    "NoConfigAvailable",
    "load_config",
    "load_source",
    "publish",
]
