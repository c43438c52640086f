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
import logging
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from kombu.entity import Queue

from .celery_forms import is_setting_name, normalize
from .codec import APP_SETTINGS, ConfigDocument
from .errors import InvalidConfig, SourceError, SourceProblems
from .validation import problems

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReadSource:
    """A source read and checked: its document, and the notices to show (settings set aside,
    old names mapped, route entries never used)."""

    document: ConfigDocument
    notices: tuple[str, ...]
    label: str  # how publish and export record it: the source, and the overlay if one applied


def read_source(source: str, overlay: str | None = None, *,
                allow: frozenset[str] = frozenset(),
                timeout: float | None = None) -> ReadSource:
    """Import ``source`` (and its overlay) and check it whole: :class:`SourceProblems` lists
    every problem found, one per entry. With ``timeout`` (seconds), a source whose import has
    not ended by then is an error: the import runs on a daemon thread, which is left behind
    (a process that gives up ends)."""
    if timeout is None:
        return _read(source, overlay, allow)
    outcome: list[ReadSource | BaseException] = []

    def run() -> None:
        try:
            outcome.append(_read(source, overlay, allow))
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


def _read(source: str, overlay: str | None, allow: frozenset[str]) -> ReadSource:
    module = _import(source)
    normalized = normalize(module_settings(module))
    settings, notices, found = normalized.settings, normalized.notices, normalized.problems
    overlays = Path(_module_file(module)).parent / "overlays"
    if overlay and not overlays.is_dir():
        # A source of one environment has no overlays at all: the stack's CELERY_CONFIG_OVERLAY
        # (rpi) then asks for nothing. One with overlays must have the one asked for (a typo
        # must not publish the wrong environment's settings).
        notices.append(f"overlay {overlay!r} not applied: the source has no overlays folder "
                       f"({overlays})")
        overlay = None
    if overlay:
        overlay_path = overlays / f"{overlay}.py"
        if not overlay_path.is_file():
            raise SourceError(f"overlay {overlay!r} not found: {overlay_path} does not exist")
        # Each module in Celery's forms first: the overlay's routes then replace by name.
        extra = normalize(module_settings(_import(str(overlay_path))))
        settings = apply_overlay(settings, extra.settings)
        notices += [f"overlay {overlay}: {notice}" for notice in extra.notices]
        found += extra.problems
    return _checked(settings, notices, found, f"{source}+{overlay}" if overlay else source,
                    allow)


def read_settings(settings: Mapping[str, Any], label: str = "settings", *,
                  allow: frozenset[str] = frozenset()) -> ReadSource:
    """Settings as a module holds them (names -> values), read and checked as
    :func:`read_source` reads a module."""
    normalized = normalize(settings)
    return _checked(normalized.settings, normalized.notices, normalized.problems, label, allow)


def _checked(settings: dict[str, Any], notices: list[str], found: list[InvalidConfig],
             label: str, allow: frozenset[str]) -> ReadSource:
    document = ConfigDocument.from_celery_settings(settings, found)
    if not document.is_empty() or not found:
        found.extend(problems(document, allow=allow))
    if found:
        raise SourceProblems(label, found)
    return ReadSource(document, tuple(notices), label)


def load_source(source: str, overlay: str | None = None, *,
                allow: frozenset[str] = frozenset(),
                timeout: float | None = None) -> ConfigDocument:
    """The document of :func:`read_source`, its notices logged (INFO)."""
    read = read_source(source, overlay, allow=allow, timeout=timeout)
    for notice in read.notices:
        log.info("%s: %s", source, notice)
    return read.document


def module_settings(module: ModuleType) -> dict[str, Any]:
    """The module's settings: every public name but its imports, classes and functions; a
    Celery setting's name is a setting whatever it holds (``task_routes = route_task``: a
    router function, reported as code, never skipped)."""
    return {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (is_setting_name(name) or not (inspect.ismodule(value) or inspect.isclass(value)
                                           or callable(value)))
    }


def apply_overlay(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    plain = {k: v for k, v in overlay.items()
             if k not in ("task_queues", "task_routes", APP_SETTINGS)}
    merged = {**base, **plain}
    # Merged by name where both sides have the form to merge; otherwise each value stays
    # as it is, for the checks that follow to name what is wrong with it.
    for name in ("task_routes", APP_SETTINGS):
        if name in overlay:
            ours, theirs = base.get(name) or {}, overlay[name]
            both = isinstance(ours, dict) and isinstance(theirs, dict)
            merged[name] = {**ours, **theirs} if both else theirs
    if "task_queues" in overlay:
        ours, theirs = base.get("task_queues") or (), overlay["task_queues"]
        if _queue_list(ours) and _queue_list(theirs):
            queues: dict[str, Queue] = {q.name: q for q in ours}
            queues.update({q.name: q for q in theirs})
            theirs = tuple(queues.values())
        merged["task_queues"] = theirs
    return merged


def _queue_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(q, Queue) for q in value)


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
