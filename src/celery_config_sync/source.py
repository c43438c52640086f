"""Read the single source of truth: a Celery-style module, plus an optional overlay.

``--source`` takes a path to a ``.py`` file or a dotted module name. Every public name that is
not a module, class or function is a setting. An overlay (``overlays/<name>.py`` beside the
source) holds only what differs for one environment: its settings replace the source's, its
``task_routes`` and ``task_queues`` entries are added or replaced by name.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

from kombu.entity import Queue

from .codec import APP_SETTINGS, ConfigDocument
from .errors import SourceError
from .validation import validate


def load_source(source: str, overlay: str | None = None, *,
                allow: frozenset[str] = frozenset(),
                timeout: float | None = None) -> ConfigDocument:
    """Import ``source`` (and its overlay), then validate; raise on the first problem. With
    ``timeout`` (seconds), a source whose import has not ended by then is an error: the
    import runs on a daemon thread, which is left behind (a process that gives up ends)."""
    if timeout is None:
        return _load(source, overlay, allow)
    outcome: list[ConfigDocument | BaseException] = []

    def run() -> None:
        try:
            outcome.append(_load(source, overlay, allow))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, name="celery-config-source", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        raise SourceError(f"source {source} did not finish importing within {timeout:g} s "
                          "(a loop, or a wait, at import time?)")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _load(source: str, overlay: str | None, allow: frozenset[str]) -> ConfigDocument:
    module = _import(source)
    settings = module_settings(module)
    if overlay:
        overlay_path = Path(_module_file(module)).parent / "overlays" / f"{overlay}.py"
        if not overlay_path.is_file():
            raise SourceError(f"overlay {overlay!r} not found: {overlay_path} does not exist")
        settings = apply_overlay(settings, module_settings(_import(str(overlay_path))))
    document = ConfigDocument.from_celery_settings(settings)
    validate(document, allow=allow)
    return document


def module_settings(module: ModuleType) -> dict[str, Any]:
    return {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and not inspect.isclass(value)
        and not callable(value)
    }


def apply_overlay(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    plain = {k: v for k, v in overlay.items()
             if k not in ("task_queues", "task_routes", APP_SETTINGS)}
    merged = {**base, **plain}
    if "task_routes" in overlay:
        merged["task_routes"] = {**(base.get("task_routes") or {}), **overlay["task_routes"]}
    if APP_SETTINGS in overlay:
        merged[APP_SETTINGS] = {**(base.get(APP_SETTINGS) or {}), **overlay[APP_SETTINGS]}
    if "task_queues" in overlay:
        queues: dict[str, Queue] = {q.name: q for q in base.get("task_queues") or ()}
        queues.update({q.name: q for q in overlay["task_queues"]})
        merged["task_queues"] = tuple(queues.values())
    return merged


def _module_file(module: ModuleType) -> str:
    if not module.__file__:
        raise SourceError(f"source module {module.__name__} has no file")
    return module.__file__


def _import(source: str) -> ModuleType:
    try:
        if source.endswith(".py") or "/" in source:
            path = Path(source)
            if not path.is_file():
                raise SourceError(f"source file not found: {source}")
            name = f"_celery_config_source_{abs(hash(path.resolve()))}"
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise SourceError(f"cannot load source file: {source}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            finally:
                sys.modules.pop(name, None)
            return module
        return importlib.import_module(source)
    except SourceError:
        raise
    except SystemExit as exc:  # sys.exit() in a settings module: nothing to publish
        raise SourceError(f"source {source} called sys.exit({exc.code!r}) while "
                          "importing") from None
    except ModuleNotFoundError as exc:
        raise SourceError(f"source module not found: {source} ({exc})") from None
    except Exception as exc:  # the source is user code: any error it raises is invalid input
        raise SourceError(f"source {source} failed to import: "
                          f"{type(exc).__name__}: {exc}") from None
