"""Attach the shared configuration to a Celery application someone else defined.

One call, in the module that defines the app::

    from celery import Celery
    from celery_config_sync.celery import attach

    app = Celery("proj")
    sync = attach(app)

Importing that module touches neither Redis nor a file: everything happens when a process
starts, in the role it starts in.

- ``celery -A proj worker``: the configuration is loaded through the fallback chain (Redis,
  last-known-good, snapshot) when the worker initialises its loader (Celery's
  ``import_modules`` signal, sent by this app), before the app is finalized and its tasks bound
  to the settings. The worker then follows each published version live: its consumers start
  and stop consuming queues on the consumer's own event loop (so a broker reconnect rebuilds the
  same set, celery#1048/#7733), ``app.amqp`` routes by the new state (celery#5617), prefork
  children follow before their next task, it keeps its record in the fleet view, serves its
  Prometheus metrics (``CELERY_CONFIG_METRICS_PORT``) and answers ``celery -A proj inspect
  config_status``.
- ``celery -A proj beat``: the same load; the scheduler (:mod:`celery_config_sync.beat`, made
  the app's default) follows the published ``beat_schedule`` live, and one beat at a time
  schedules, through a lock in Redis.
- Any other process that sends tasks (a web app): ``sync.start()`` when it starts (the FastAPI
  integration, :mod:`celery_config_sync.fastapi`, does it in its lifespan) and ``sync.stop()``
  when it ends; ``app.send_task`` and ``task.delay()`` then route by the live configuration, with
  no router argument to pass.

The state lives on the app (:func:`attached`), never in a module global; handlers are connected
for this app only (``import_modules`` and ``on_after_configure`` by sender, the bootsteps on the
app's own blueprints) or check that the task is this app's. The app's loader stays its own, and
what the service's environment sets (its broker and result URLs, its Redis password, Celery's
key prefix) stays the service's own: the shared settings never override it.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

import click
from celery.signals import import_modules, task_prerun, worker_process_init
from click.core import ParameterSource

from celery import Celery, bootsteps

from .celery_app import configure_app, enable_publish_on_start, service_wiring
from .child_slot import SharedSlot
from .environment import Environment
from .live_config import Applied, LiveConfig
from .log_setup import TAGS, configure_logging
from .routing import build_routing, install

log = logging.getLogger("celery_config_sync.celery")

# Where the attachment lives on the app.
ATTRIBUTE = "celery_config_sync"
# Celery's default scheduler: replaced by the live one unless the app chose its own.
CELERY_DEFAULT_SCHEDULER = "celery.beat:PersistentScheduler"
LIVE_SCHEDULER = "celery_config_sync.beat:LiveScheduler"


class ConfigSync:
    """The shared configuration of one Celery app in one process: its :class:`LiveConfig`
    once loaded, and what the process's role (worker, beat, producer) adds to it."""

    def __init__(self, app: Celery, *, env: Environment | None = None,
                 log_setup: bool = True, loggers: tuple[str, ...] = ()) -> None:
        self.app = app
        self.role: str | None = None  # worker, beat, or the producer's service name
        self.live: LiveConfig | None = None
        self._env = env
        self._log_setup = log_setup
        self._loggers = loggers
        self._lock = threading.Lock()
        # The worker's own parts.
        self.slot: SharedSlot | None = None
        self.consumer: Any = None
        self.selected: frozenset[str] | None = None  # -Q, or None: every declared queue
        self.selection_known = False
        self.switched: Applied | None = None  # what the consumer and app.amqp follow now
        self.metrics: Any = None  # ServiceMetrics, when metrics are on
        self.metrics_server: Any = None
        # Called on the watcher's thread after each apply (the live beat's scheduler).
        self.listeners: list[Any] = []

    # ------------------------------------------------------------------------ reading
    @property
    def env(self) -> Environment:
        if self._env is None:
            self._env = Environment.from_environ()
        return self._env

    @property
    def current(self) -> Applied:
        """What this process applies (RuntimeError before it loaded)."""
        if self.live is None:
            raise RuntimeError("the shared configuration is not loaded in this process yet")
        return self.live.current

    def consumed_queues(self) -> list[str] | None:
        """The queues this worker's task consumer is set to consume now (after -Q,
        add_consumer/cancel_consumer and live changes), for its fleet record; None while it has
        no task consumer (starting, or between two broker connections). Called on the
        watcher's thread: kombu's ``queues`` is a copy made in one step."""
        task_consumer = getattr(self.consumer, "task_consumer", None)
        if task_consumer is None:
            return None
        return [queue.name for queue in task_consumer.queues]

    def status(self) -> dict[str, Any]:
        """This instance's facts (the fleet record, what Redis holds, whether it lags)."""
        if self.live is None:
            return {"error": "configuration not loaded"}
        return self.live.status()

    # ------------------------------------------------------------------------ loading
    def load(self) -> Applied:
        """Walk the fallback chain once and configure the app (idempotent: a second call returns
        what the first loaded). Raises NoConfigAvailable when every link fails."""
        with self._lock:
            if self.live is not None:
                return self.live.current
            env = self.env
            role = self.role or _command_role() or "celery"
            if self._log_setup:
                configure_logging(env.log_tag or _tag(role), loggers=self._loggers)
            live = LiveConfig(role, env, on_apply=self._on_apply)
            applied = live.load()
            configure_app(self.app, applied.loaded, env)
            install(self.app, applied.routing)
            self.switched = applied
            self.live = live
            if env.publish_on_start:
                enable_publish_on_start(env)
            return applied

    def begin(self, role: str) -> LiveConfig:
        """Take ``role`` (the fleet's service name): load if not yet done, tag the logs."""
        self.role = role
        self.load()
        assert self.live is not None
        self.live.service = role
        if self._log_setup and self.env.log_tag is None:
            configure_logging(_tag(role), loggers=self._loggers)
        return self.live

    def start(self, service: str = "api") -> Applied:
        """A producer process (a web app, a script): load, route ``send_task`` by the shared
        configuration and follow it live, keep a fleet record as ``service``. Call
        :meth:`stop` when the process ends."""
        live = self.begin(service)
        live.watch()
        return live.current

    def stop(self) -> None:
        """Stop following (the watcher, the fleet record, the metrics server)."""
        if self.live is not None:
            self.live.stop()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()
            self.metrics_server = None

    def serve_metrics(self, port: int) -> None:
        """Prometheus metrics on ``port`` from this process (a worker's main process, a beat):
        a port already taken is one ERROR line, never a stop."""
        from .metrics import ServiceMetrics, broker_client  # the optional prometheus_client

        assert self.live is not None
        self.metrics = self.metrics or ServiceMetrics(
            self.live, broker_client(self.app.conf.broker_url, self.env.redis_password))
        try:
            self.metrics_server = self.metrics.serve(port)
        except OSError as exc:
            log.error("Prometheus metrics not served on port %d: %s (the %s runs "  # noqa: TRY400 (one line says it all)
                      "without them)", port, exc, self.role)

    # ------------------------------------------------------------------ following live
    def _on_apply(self, old: Applied, new: Applied) -> None:
        """The watcher's thread: a new version was switched to."""
        if self.role == "worker" and self.consumer is not None:
            self.consumer.call_soon(self._switch)  # the consumer's own event loop
        else:
            self._switch()
        for listener in list(self.listeners):
            try:
                listener(old, new)
            except Exception:
                log.exception("listener %r failed on version %d", listener, new.loaded.version)

    def _switch(self) -> None:
        """Follow the latest applied state (``call_soon`` does not keep the order of callbacks:
        each switch goes from what is followed to what is current, whatever came between)."""
        assert self.live is not None
        old, new = self.switched, self.live.current
        if old is None or new is old:
            return
        self.switched = new
        if self.role == "worker" and self.selected is not None:
            queues = new.routing.queues
            queues.select([name for name in sorted(self.selected) if name in queues])
        install(self.app, new.routing)
        task_consumer = getattr(self.consumer, "task_consumer", None)
        if task_consumer is not None:
            before = {queue.name for queue in task_consumer.queues}
            _switch_consumers(task_consumer, old, new)
            watcher = self.live.watcher
            if watcher is not None and before != {q.name for q in task_consumer.queues}:
                watcher.tick_soon()  # the fleet record says so now, not a heartbeat later
        if self.slot is not None:
            self.slot.write(new.loaded)
        if (self.role == "worker" and new.restart_required
                and self.live.env.on_restart_required == "exit"):
            from celery.exceptions import WorkerShutdown

            log.warning("restart required for %s and CELERY_CONFIG_ON_RESTART_REQUIRED=exit: "
                        "finishing the running tasks, then exiting to restart on version %d",
                        ", ".join(new.restart_required), new.loaded.version)
            raise WorkerShutdown(0)  # exit 0: an expected stop, the restart policy restarts it

    # ------------------------------------------------------------ signal handlers (per app)
    def _on_import_modules(self, sender: Any = None, **_: Any) -> None:
        """``celery worker`` and ``celery beat`` initialise the loader: load now, before the app
        is finalized. (Celery re-raises what a handler of this signal returns as an error.)"""
        if sender is self.app:
            self.load()

    def _on_after_configure(self, sender: Any = None, source: Any = None, **_: Any) -> None:
        """The app's conf is read (lazily, never at import): the service's own wiring, and the
        live scheduler as beat's default."""
        if sender is self.app and source is not None:
            _wire(self, source)

    def _follow_parent(self, sender: Any = None, **_: Any) -> None:
        """A prefork child, before each of this app's tasks: adopt what the parent applied."""
        if self.slot is None or self.live is None or getattr(sender, "app", None) is not self.app:
            return
        loaded = self.slot.read_if_newer()
        if loaded is None:
            return
        routing = build_routing(loaded)
        install(self.app, routing)
        self.live.adopt(Applied(routing))

    def _close_inherited_metrics_socket(self, **_: Any) -> None:
        """A prefork child: drop its copy of the parent's listening socket."""
        if self.metrics_server is not None:
            self.metrics_server.socket.close()
            self.metrics_server = None


def _command_role() -> str | None:
    """``worker`` or ``beat`` when this process is ``celery ... worker`` or ``celery ... beat``
    (the running click command, Celery's CLI): the tag of the lines logged while loading,
    before the worker's or beat's own hook says for sure."""
    context = click.get_current_context(silent=True)
    name = context.info_name if context is not None else None
    return name if name in ("worker", "beat") else None


def _tag(role: str) -> str:
    return TAGS.get(role, f"[CELERY_{role.upper()}]")


def _wire(sync: ConfigSync, conf: Any) -> None:
    conf.update(service_wiring(sync.env, conf))
    if conf.get("beat_scheduler") == CELERY_DEFAULT_SCHEDULER:
        conf["beat_scheduler"] = LIVE_SCHEDULER


def _switch_consumers(task_consumer: Any, old: Applied, new: Applied) -> None:
    """Cancel the queues no longer wanted (or changed), consume the added ones."""
    wanted = dict(new.routing.queues.consume_from)
    before, after = old.loaded.document.queues, new.loaded.document.queues
    for queue in list(task_consumer.queues):
        name = queue.name
        if name not in wanted or before.get(name) != after.get(name):
            task_consumer.cancel_by_queue(name)
            if name not in wanted:
                log.info("stopped consuming from %s (its messages stay in Redis)", name)
    added = [queue for name, queue in wanted.items() if not task_consumer.consuming_from(name)]
    for queue in added:
        task_consumer.add_queue(queue)
    if added:
        task_consumer.consume()
        log.info("consuming from %s", ", ".join(q.name for q in added))


class WorkerRole(bootsteps.Step):  # type: ignore[misc]
    """Worker bootstep (this app's blueprint only): the process is a worker. Runs when the
    worker is built, before its pool forks and its consumer waits for the broker, so that the
    metrics answer from the start, the children inherit the shared slot and the remote-control
    mailbox knows ``config_status``."""

    label = "celery-config-sync worker"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        sync = attached(worker.app)
        if sync is None:
            return
        _register_inspect_command()
        live = sync.begin("worker")
        _reapply_early_defaults(worker)
        sync.slot = SharedSlot()
        sync.slot.write(live.current.loaded)
        if sync.env.metrics_port:
            sync.serve_metrics(sync.env.metrics_port)


# Options of `celery worker` whose default Celery's command line reads from app.conf while it
# parses the options, before the shared configuration is loaded: when the option was not
# given, the worker takes the loaded setting instead (WorkController attribute, setting).
# Runs before the consumer is built (Celery's Consumer step is the blueprint's last).
EARLY_DEFAULTS = {"prefetch_multiplier": ("prefetch_multiplier", "worker_prefetch_multiplier")}


def _reapply_early_defaults(worker: Any) -> None:
    context = click.get_current_context(silent=True)
    if context is None or context.info_name != "worker":
        return  # a worker built in code: its arguments are its own
    for option, (attribute, setting) in EARLY_DEFAULTS.items():
        value = worker.app.conf.get(setting)
        if (context.get_parameter_source(option) is ParameterSource.DEFAULT
                and value is not None and getattr(worker, attribute, None) != value):
            log.info("%s %s from the shared configuration (Celery read its default before "
                     "it was loaded)", setting, value)
            setattr(worker, attribute, int(value))


class LiveConsumers(bootsteps.StartStopStep):  # type: ignore[misc]
    """Consumer bootstep: once the task consumer exists, follow the configuration live."""

    requires = ("celery.worker.consumer.tasks:Tasks",)
    label = "celery-config-sync live"

    def start(self, c: Any) -> None:
        sync = attached(c.app)
        if sync is None or sync.live is None:
            return
        sync.consumer = c
        sync.live.consumes = sync.consumed_queues
        if not sync.selection_known:  # -Q was applied to app.amqp.queues by now
            chosen = c.app.amqp.queues._consume_from
            sync.selected = frozenset(chosen) if chosen is not None else None
            sync.selection_known = True
        sync.live.watch()

    def shutdown(self, c: Any) -> None:
        sync = attached(c.app)
        if sync is not None:
            sync.stop()


def _config_status(state: Any, **_: Any) -> dict[str, Any]:
    """``celery -A proj inspect config_status``: what this worker applies."""
    app = getattr(getattr(state, "consumer", None), "app", None)
    sync = attached(app) if app is not None else None
    if sync is None:
        return {"error": "celery-config-sync is not attached to this worker's app"}
    return sync.status()


def _register_inspect_command() -> None:
    """Celery's control commands are one table per process (``Panel``): registered once, when
    a worker is built (before its consumer starts the remote-control mailbox, whose handlers
    are that table), answering for the worker's own app, or at :func:`attach` in a process of
    Celery's command line. Only a worker answers control commands and only that command line
    checks their names: an API or a beat never imports Celery's control panel (issue 20)."""
    from celery.worker.control import Panel, inspect_command

    if "config_status" not in Panel.data:
        inspect_command(name="config_status")(_config_status)


def attached(app: Celery) -> ConfigSync | None:
    """The attachment of ``app``, or None."""
    found = vars(app).get(ATTRIBUTE)
    return found if isinstance(found, ConfigSync) else None


def attach(app: Celery, *, env: Environment | None = None, log_setup: bool = True,
           loggers: tuple[str, ...] = ()) -> ConfigSync:
    """Attach the shared configuration to ``app`` (idempotent: the same attachment again).

    ``env``: the environment to use instead of the process's (read when the process starts,
    not now). ``log_setup``: send the library's log lines (and those of ``loggers``, e.g. your
    own package's) to stderr with the role's tag (``[CELERY_WORKER]``...); False keeps the
    logging you configured."""
    found = attached(app)
    if found is not None:
        return found
    sync = ConfigSync(app, env=env, log_setup=log_setup, loggers=loggers)
    setattr(app, ATTRIBUTE, sync)
    uid = f"celery_config_sync.{id(app)}"
    import_modules.connect(sync._on_import_modules, sender=app, weak=False,
                           dispatch_uid=f"{uid}.load")
    if app.configured:
        _wire(sync, app.conf)
    else:
        app.on_after_configure.connect(sync._on_after_configure, weak=False,
                                       dispatch_uid=f"{uid}.wire")
    task_prerun.connect(sync._follow_parent, weak=False, dispatch_uid=f"{uid}.follow")
    worker_process_init.connect(sync._close_inherited_metrics_socket, weak=False,
                                dispatch_uid=f"{uid}.child")
    app.steps["worker"].add(WorkerRole)
    app.steps["consumer"].add(LiveConsumers)
    if "celery.worker.control" in sys.modules:
        # Celery's command line (``celery inspect``, ``celery worker``) imported its control
        # panel before loading the app: ``inspect`` checks a command's name against that table,
        # so a client process must know ours too. Anywhere else, WorkerRole registers it.
        _register_inspect_command()
    return sync


__all__ = ["ConfigSync", "LiveConsumers", "WorkerRole", "attach", "attached"]
