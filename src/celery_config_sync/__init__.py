"""One Celery configuration, published through Redis, shared by services that never import
each other. See DESIGN.md for the Redis layout and the start-up contract."""

from .codec import ConfigDocument
from .environment import Environment
from .errors import CeleryConfigError, InvalidConfig, NoConfigAvailable
from .loader import LoadedConfig, load_config
from .publishing import publish
from .redis_keys import Keys
from .source import load_source

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
