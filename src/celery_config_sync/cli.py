"""``celery-config``: check, publish, show, wait, load, export, diff, status, history and rollback.

Exit codes (DESIGN.md): 0 ok, 1 a difference or check failed, 2 usage or invalid input,
3 timed out (Redis unreachable counts as timed out: every command retries until its timeout).
Every failure is one line on stderr, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import click
import redis

from .cli_tables import HISTORY, render_table, show_tables, status_tables
from .codec import ConfigDocument
from .connection import make_client, redacted
from .diffing import diff
from .environment import Environment
from .errors import (
    CeleryConfigError,
    InvalidConfig,
    NotPublished,
    RedisAccessDenied,
    RedisUnavailable,
    SourceProblems,
    is_wrong_type,
)
from .fallback_files import render, write_atomic
from .history import list_history, read_version, rollback
from .live_settings import describe, label
from .loader import RedisReader, load_config
from .log_setup import TAGS, configure_logging
from .publishing import PublishResult, clear, publish
from .queue_depth import broker_client
from .redis_keys import Keys
from .snapshot_identity import foreign_snapshot
from .source import ReadSource, read_source
from .status_report import status_report
from .terminal_text import shown
from .validation import redact
from .waiting import wait_for_redis, wait_for_version

log = logging.getLogger("celery_config_sync.cli")
# A source's problems are listed one per line; past this many, the count of the rest.
MAX_PROBLEM_LINES = 100


class Failure(click.ClickException):
    """One line on stderr, ``celery-config: error: ...``, and the exit code of its kind."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]

    def show(self, file: Any = None) -> None:
        click.echo(f"celery-config: error: {self.format_message()}", err=True)


class CleanGroup(click.Group):
    """Turns every expected failure of a command into a :class:`Failure`: never a traceback.

    Redis refusing access (NOAUTH, WRONGPASS, NOPERM) is a usage error, exit 2; a key of the
    wrong Redis type (WRONGTYPE) is corrupt data, exit 2, naming the key when it can be found;
    any other error reply (MISCONF: Redis cannot write its disk) or Redis error counts as
    unavailable, exit 3."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SourceProblems as exc:
            for line in exc.lines()[:MAX_PROBLEM_LINES]:
                click.echo(f"celery-config: error: {line}", err=True)
            if len(exc.lines()) > MAX_PROBLEM_LINES:
                click.echo(f"celery-config: error: ... and "
                           f"{len(exc.problems) - MAX_PROBLEM_LINES} more", err=True)
            raise Failure(str(exc), exc.exit_code) from None
        except CeleryConfigError as exc:
            raise Failure(str(exc), exc.exit_code) from None
        except RedisAccessDenied.causes as exc:
            where = redacted(ctx.obj.env.redis_url) if isinstance(ctx.obj, Context) else "server"
            raise Failure(str(RedisAccessDenied.from_redis(exc, where)),
                          RedisAccessDenied.exit_code) from None
        except redis.ResponseError as exc:
            if not is_wrong_type(exc):  # e.g. MISCONF: its disk is full, it refuses writes
                raise Failure(f"Redis refused the command: {type(exc).__name__}: {exc}",
                              RedisUnavailable.exit_code) from None
            keys = self.wrong_type_keys(ctx.obj) if isinstance(ctx.obj, Context) else []
            raise Failure(f"corrupt data in Redis: wrong Redis type"
                          f"{' of ' + ', '.join(keys) if keys else ''} ({exc})",
                          InvalidConfig.exit_code) from None
        except redis.RedisError as exc:
            raise Failure(f"Redis unreachable: {type(exc).__name__}: {exc}",
                          RedisUnavailable.exit_code) from None
        except OSError as exc:
            raise Failure(f"{type(exc).__name__}: {exc}", 1) from None

    @staticmethod
    def wrong_type_keys(context: Context) -> list[str]:
        """The namespace's keys that hold another type than the layout's (best effort: one
        short look, nothing if Redis does not answer it)."""
        expected = Keys(context.env.namespace).layout()
        found = []
        try:
            client = make_client(context.env.redis_url, retries=0,
                                 deadline=time.monotonic() + 1.0)
            pipe = client.pipeline(transaction=False)
            for key in expected:
                pipe.type(key)
            for (key, wanted), held in zip(expected.items(), pipe.execute(), strict=True):
                actual = held.decode() if isinstance(held, bytes) else str(held)
                if actual not in ("none", wanted):
                    found.append(f"{key} (holds a {actual}, expected a {wanted})")
        except (redis.RedisError, CeleryConfigError, OSError):
            return []
        return found


class Context:
    """What every command shares: the environment, and the command's deadline.

    Every command's Redis work is bounded by one budget counted from the command's start:
    ``publish`` and ``wait`` by their ``--timeout`` (default ``CELERY_CONFIG_WAIT_TIMEOUT``);
    ``show``, ``status``, ``diff`` and ``load`` by ``CELERY_CONFIG_WAIT_TIMEOUT`` (default 30 s;
    at least 1 s, so that 0, "the gate never waits", still lets them read). A Redis that does
    not answer in time is exit 3, within about a second of the budget."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.deadline = time.monotonic() + max(env.wait_timeout, 1.0)

    @property
    def import_budget(self) -> float:
        """Seconds a source's import may take (what is left of the command's budget)."""
        return max(1.0, self.deadline - time.monotonic())

    def client(self, deadline: float | None = None) -> redis.Redis:
        """A client bounded by ``deadline`` (``time.monotonic()``), by default the command's."""
        return make_client(self.env.redis_url,
                           deadline=self.deadline if deadline is None else deadline)

    def reader(self) -> RedisReader:
        return RedisReader(self.client(), self.env.namespace, allow=self.env.allow_unsafe)


pass_context = click.make_pass_decorator(Context)
source_option = click.option(
    "--source", metavar="PATH|MODULE", default=None,
    help="Source file or module [default: $CELERY_CONFIG_SOURCE or config/celery/source.py]")
overlay_option = click.option(
    "--overlay", metavar="NAME", default=None,
    help="Overlay overlays/NAME.py beside the source [default: $CELERY_CONFIG_OVERLAY]")


@click.group(cls=CleanGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--redis", "redis_url", metavar="URL", default=None,
              help="[default: $CELERY_CONFIG_REDIS_URL, then $REDIS_URL]")
@click.option("--namespace", default=None,
              help="[default: $CELERY_CONFIG_NAMESPACE or celery_config]")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.version_option(package_name="celery-config-sync")
@click.pass_context
def main(ctx: click.Context, redis_url: str | None, namespace: str | None, log_level: str) -> None:
    """One Celery configuration, published through Redis."""
    # The options win over the variables; read through the one table, so that a password
    # file (CELERY_CONFIG_REDIS_PASSWORD_FILE) applies to --redis too.
    options = {name: value for name, value in (("CELERY_CONFIG_REDIS_URL", redis_url),
                                               ("CELERY_CONFIG_NAMESPACE", namespace)) if value}
    try:
        env = Environment.from_environ({**os.environ, **options})
    except CeleryConfigError as exc:
        raise Failure(str(exc), exc.exit_code) from None
    # The tag of this process's log lines: the image's own (CELERY_CONFIG_LOG_TAG: the gate in
    # the worker logs as [CELERY_WORKER]), else the publisher's for publish.
    publishing = ctx.invoked_subcommand in ("publish", "rollback")
    default_tag = TAGS["publisher"] if publishing else TAGS["cli"]
    configure_logging(env.log_tag or default_tag, level=log_level.upper())
    ctx.obj = Context(env)


def _source(ctx: Context, source: str | None, overlay: str | None) -> tuple[str, str | None]:
    return source or ctx.env.source, overlay or ctx.env.overlay


def checked_source(ctx: Context, source: str, overlay: str | None, *,
                   timeout: float) -> ReadSource:
    """The source read and checked whole (every problem at once: exit 2, nothing touched),
    its import bounded by ``timeout`` seconds, its notices on stderr, one line each."""
    read = read_source(source, overlay, allow=ctx.env.allow_unsafe, timeout=timeout)
    for notice in read.notices:
        click.echo(f"celery-config: notice: {shown(notice)}", err=True)
    return read


@main.command("check")
@click.argument("path", metavar="[SOURCE]", required=False)
@source_option
@overlay_option
@pass_context
def check_command(ctx: Context, path: str | None, source: str | None,
                  overlay: str | None) -> None:
    """Check SOURCE (or --source) without Redis: every problem, one line each with what to
    change (exit 2), else a one-line summary (exit 0)."""
    if path and source and path != source:
        raise Failure("check takes the source as SOURCE or --source, not both", 2)
    source, overlay = _source(ctx, path or source, overlay)
    document = checked_source(ctx, source, overlay, timeout=ctx.import_budget).document
    click.echo(json.dumps({"ok": True, "queues": len(document.queues),
                           "routes": len(document.routes), "settings": len(document.base),
                           "app": len(document.app), "sha256": document.sha256}))


@main.command("publish")
@source_option
@overlay_option
@click.option("--force", is_flag=True,
              help="Publish a new version even if the content is unchanged.")
@click.option("--timeout", type=click.FloatRange(min=0), default=None,
              help="Seconds to wait for Redis [default: $CELERY_CONFIG_WAIT_TIMEOUT or 30]")
@pass_context
def publish_command(ctx: Context, source: str | None, overlay: str | None, force: bool,
                    timeout: float | None) -> None:
    """Validate the source and publish it in one transaction (no-op when unchanged)."""
    wait = ctx.env.wait_timeout if timeout is None else timeout
    deadline = time.monotonic() + wait  # the whole command: the wait for Redis and the publish
    source, overlay = _source(ctx, source, overlay)
    # An invalid source: exit 2 before touching Redis; its import counts in the budget.
    read = checked_source(ctx, source, overlay, timeout=max(1.0, deadline - time.monotonic()))
    if not wait_for_redis(ctx.env.redis_url, max(0.0, deadline - time.monotonic())):
        raise RedisUnavailable(f"Redis {redacted(ctx.env.redis_url)} still unreachable "
                               f"after {wait:g} s")
    with publishing_within(ctx, wait):
        result = publish(ctx.client(deadline), ctx.env.namespace, read.document, source=read.label,
                         force=force, history=ctx.env.history, allow=ctx.env.allow_unsafe)
    echo_published(result)


@contextlib.contextmanager
def publishing_within(ctx: Context, budget: float) -> Iterator[None]:
    """A publish that Redis answered, then did not complete in ``budget`` seconds: exit 3."""
    try:
        yield
    except RedisAccessDenied.causes:
        raise  # exit 2 (CleanGroup)
    except (redis.TimeoutError, redis.ConnectionError) as exc:
        raise RedisUnavailable(f"Redis {redacted(ctx.env.redis_url)} answered, then did not "
                               f"complete the publish within {budget:g} s "
                               f"({type(exc).__name__}: {exc})") from None


def echo_published(result: PublishResult, **extra: Any) -> None:
    """publish's and rollback's one JSON line: exit 0 whether a version was published or the
    content was already the published one (``changed`` false)."""
    click.echo(json.dumps({"version": result.version, "sha256": result.sha256,
                           "changed": result.changed,
                           **({"change": result.change} if result.change else {}), **extra}))


@main.command("wait")
@click.option("--timeout", type=click.FloatRange(min=0), default=None,
              help="Seconds [default: $CELERY_CONFIG_WAIT_TIMEOUT or 30]")
@click.option("--own-snapshot", is_flag=True,
              help="First refuse (exit 2) a snapshot exported from another source than "
                   "$CELERY_CONFIG_SOURCE (the gate of the images does).")
@pass_context
def wait_command(ctx: Context, timeout: float | None, own_snapshot: bool) -> None:
    """Block until the configuration is published. Exit 0 ready, 3 timed out."""
    foreign = foreign_snapshot(ctx.env) if own_snapshot else None
    if foreign:
        raise Failure(foreign, InvalidConfig.exit_code)
    wait = ctx.env.wait_timeout if timeout is None else timeout
    if not wait_for_version(ctx.env.redis_url, ctx.env.namespace, wait):
        raise Failure(f"timed out after {wait:g} s waiting for "
                      f"{Keys(ctx.env.namespace).version}", 3)


@main.command("load")
@click.option("--no-redis", is_flag=True, help="Skip Redis: last-known-good, then snapshot.")
@pass_context
def load_command(ctx: Context, no_redis: bool) -> None:
    """Walk the fallback chain (Redis, last-known-good, snapshot) and print what was used."""
    loaded = load_config(ctx.env, use_redis=not no_redis)
    click.echo(json.dumps(loaded.summary()))


@main.command("show")
@click.option("--format", "fmt", type=click.Choice(["json", "table"]), default="json",
              show_default=True)
@pass_context
def show_command(ctx: Context, fmt: str) -> None:
    """Print the published configuration, secrets redacted."""
    published = ctx.reader().load()
    sections = redact(published.document.sections())
    if fmt == "json":
        click.echo(json.dumps({"version": published.version, "sha256": published.sha256,
                               **sections}, indent=2, sort_keys=True))
        return
    click.echo(f"version {published.version}  sha256 {published.sha256}")
    click.echo("\n".join(show_tables(sections)))


@main.command("clear")
@click.option("--yes", is_flag=True, help="Confirm: unpublish the configuration.")
@pass_context
def clear_command(ctx: Context, yes: bool) -> None:
    """Unpublish the configuration (every key of the namespace but the fleet's records): gates
    wait again; running services keep what they apply. Needs --yes."""
    if not yes:
        raise Failure("clear deletes the published configuration: run it again with --yes", 2)
    version = clear(ctx.client(), ctx.env.namespace)
    click.echo(json.dumps({"cleared": True, "was_version": version}))


@main.command("export")
@source_option
@overlay_option
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default="-",
              help="File to write atomically, or - for stdout.")
@pass_context
def export_command(ctx: Context, source: str | None, overlay: str | None, output: str) -> None:
    """Write the snapshot file (the last fallback) from the source, without Redis."""
    source, overlay = _source(ctx, source, overlay)
    read = checked_source(ctx, source, overlay, timeout=ctx.import_budget)
    text = render(read.document, version=0,
                  meta={"source": read.label, "sha256": read.document.sha256})
    if output == "-":
        click.echo(text, nl=False)
    else:
        write_atomic(output, text)


@main.command("diff")
@source_option
@overlay_option
@click.option("--from", "from_version", type=click.IntRange(min=1), default=None,
              help="A version from the history: the old side [default: the published one]")
@click.option("--to", "to_version", type=click.IntRange(min=1), default=None,
              help="A version from the history: the new side [default: the published one]")
@pass_context
def diff_command(ctx: Context, source: str | None, overlay: str | None,
                 from_version: int | None, to_version: int | None) -> None:
    """Source vs published; with --from/--to, two versions of the history (either alone: vs
    the published one; --to V shows what rollback --to V would change). Exit 0 identical,
    1 different."""
    if from_version is None and to_version is None:
        source, overlay = _source(ctx, source, overlay)
        document = checked_source(ctx, source, overlay, timeout=ctx.import_budget).document
        try:
            published = ctx.reader().load().document
        except NotPublished:
            published = type(document)()
        _echo_diff(published, document)
        return
    if source or overlay:
        raise Failure("diff compares the source with the published version, or versions of "
                      "the history (--from/--to): not both", 2)
    reader = ctx.reader()
    old, new = (reader.load().document if version is None else
                read_version(reader.client, ctx.env.namespace, version,
                             allow=ctx.env.allow_unsafe)[1]
                for version in (from_version, to_version))
    _echo_diff(old, new)


def _echo_diff(old: ConfigDocument, new: ConfigDocument) -> None:
    """Each change tagged live or restart, then the kind of the whole; exit 1 if any."""
    changes = diff(old, new)
    for change in changes:
        click.echo(f"{change.line()}  ({label(change.section, change.key)})")
    if changes:
        summary = describe(old, new)
        needing = summary["restart_required"]
        click.echo(f"kind: {summary['kind']}" + (
            "; restart required: " + "; ".join(f"{service} ({', '.join(keys)})" for service, keys
                                               in summary["services"].items()) if needing else
            ": every running service applies it without a restart"))
        sys.exit(1)
    click.echo("identical")


@main.command("status")
@click.option("--format", "fmt", type=click.Choice(["json", "table"]), default="json",
              show_default=True)
@click.option("--broker", "broker_url", metavar="URL", default=None,
              help="Read the queues' depths in this Redis, the broker's (a user allowed to read "
                   "Celery's lists; CELERY_CONFIG_REDIS_PASSWORD_FILE applies) [default: no "
                   "depths]")
@pass_context
def status_command(ctx: Context, fmt: str, broker_url: str | None) -> None:
    """The published version, every running instance and every declared queue. Exit 1 when an
    instance drifts (another sha256), runs on a fallback, waits for a restart or rejected a
    version, or when a queue that routes or beat entries send to has no live consumer; 2 when
    the published content itself is invalid (the fleet is printed first)."""
    # The depths only when asked: the publisher's Redis user may not read Celery's lists (the
    # stack's seeder may not), and a refusal would fill Redis's ACL LOG at every status.
    broker = broker_client(broker_url, ctx.env.redis_password) if broker_url else None
    if broker_url and broker is None:
        raise Failure(f"--broker {redacted(broker_url)!r}: expected redis://, rediss:// or "
                      "unix://", InvalidConfig.exit_code)
    try:
        report, _ = status_report(ctx.reader(), broker=broker,
                                  keyprefix=ctx.env.celery_keyprefix)
    finally:
        if broker is not None:
            broker.close()
    published_error = report["published_error"]
    failing = [record for record in report["fleet"] if record["problems"]]
    if fmt == "json":
        click.echo(json.dumps(report))
    else:
        click.echo("\n".join(status_tables(report)))
    if published_error:  # the report is printed, and the contract's line and code follow
        raise Failure(f"published content is invalid: {published_error}",
                      InvalidConfig.exit_code)
    if failing or report["unconsumed_queues"]:
        sys.exit(1)


@main.command("history")
@click.option("--format", "fmt", type=click.Choice(["json", "table"]), default="json",
              show_default=True)
@pass_context
def history_command(ctx: Context, fmt: str) -> None:
    """The versions the history keeps, newest first. Exit 1 when it holds none."""
    entries = list_history(ctx.client(), ctx.env.namespace)
    if not entries:
        raise NotPublished(f"no version history under {ctx.env.namespace}: nothing published "
                           "yet, or only by a celery-config older than the history")
    if fmt == "json":
        click.echo(json.dumps([entry.as_dict() for entry in entries]))
        return
    click.echo("\n".join(render_table(HISTORY, [entry.as_dict() for entry in entries])))


@main.command("rollback")
@click.option("--to", "to_version", type=click.IntRange(min=1), required=True,
              help="The version of the history whose content to publish again.")
@pass_context
def rollback_command(ctx: Context, to_version: int) -> None:
    """Publish an old version's content again, as a new version (source rollback:V); the
    history is never rewritten. Validated again: exit 2 if this release refuses it; exit 0
    without a new version when it is the published content already."""
    with publishing_within(ctx, max(ctx.env.wait_timeout, 1.0)):
        result = rollback(ctx.client(), ctx.env.namespace, to_version,
                          history=ctx.env.history, allow=ctx.env.allow_unsafe)
    echo_published(result, rolled_back_to=to_version)
