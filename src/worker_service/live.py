"""How the worker loads the shared configuration and follows it live.

- At start, in the loader's ``on_worker_init`` (``celery worker`` only, before the app is
  finalized and its tasks bound to the settings): the fallback chain, then the routing state.
  Importing ``worker_service.app`` touches neither Redis nor a file.
- Live: the library's watcher (a thread) hands each new state to the consumer's own event loop
  with ``consumer.call_soon``, as Celery's ``add_consumer``/``cancel_consumer`` control handlers
  run there: the switch starts consuming added queues, cancels removed ones (their messages
  stay in Redis) and keeps ``app.amqp.queues.consume_from`` equal to what is consumed, so a
  broker reconnect rebuilds the same set.
- Prefork children follow through a shared slot (celery_config_sync.child_slot), checked before
  each task: a task reports, and sends tasks by, the configuration its own process applies.
- Prometheus metrics (CELERY_CONFIG_METRICS_PORT, 0 = off; the image sets 9808): served by the
  main process, where the watcher applies and counts; started in ``on_worker_init`` so that they
  answer while the consumer still waits for the broker. Prefork children inherit the listening
  socket by fork and close their copy at once (``worker_process_init``): only the main process
  ever answers, and a child left behind never holds the port.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.exceptions import WorkerShutdown
from celery.loaders.app import AppLoader
from celery.signals import task_prerun, worker_process_init
from celery.worker.control import inspect_command

from celery import Celery, bootsteps
from celery_config_sync.celery_app import configure_app, enable_publish_on_start, service_wiring
from celery_config_sync.child_slot import SharedSlot
from celery_config_sync.environment import Environment
from celery_config_sync.live_config import Applied, LiveConfig
from celery_config_sync.log_setup import TAGS, configure_logging
from celery_config_sync.metrics import ServiceMetrics, broker_client
from celery_config_sync.routing import build_routing, install

log = logging.getLogger("worker_service.live")


class WorkerRuntime:
    """The worker process's live configuration, set when the worker starts (not at import)."""

    def __init__(self) -> None:
        self.app: Celery | None = None
        self.live: LiveConfig | None = None
        self.slot: SharedSlot | None = None
        self.consumer: Any = None
        # Queue names of ``-Q``, or None: consume every declared queue.
        self.selected: frozenset[str] | None = None
        self.selection_known = False
        self.switched: Applied | None = None  # what the consumer and app.amqp follow now
        self.metrics_server: Any = None  # the main process's HTTP server of the metrics

    def start(self, app: Celery) -> None:
        env = Environment.from_environ()
        configure_logging(env.log_tag or TAGS["worker"], loggers=("worker_service",))
        self.app = app
        self.live = LiveConfig("worker", env, on_apply=self.on_apply)
        applied = self.live.load()
        configure_app(app, applied.loaded, env)
        install(app, applied.routing)
        self.switched = applied
        self.slot = SharedSlot()
        self.slot.write(applied.loaded)
        if env.publish_on_start:
            enable_publish_on_start(env)
        if env.metrics_port:
            metrics = ServiceMetrics(self.live, broker_client(app.conf.broker_url,
                                                              env.redis_password))
            try:
                self.metrics_server = metrics.serve(env.metrics_port)
            except OSError as exc:  # the port taken: run the tasks all the same, say it loudly
                log.error("Prometheus metrics not served on port %d: %s (the worker runs "  # noqa: TRY400 (one line says it all)
                          "without them)", env.metrics_port, exc)

    def close_inherited_metrics_socket(self) -> None:
        """In a prefork child: drop the copy of the parent's listening socket."""
        if self.metrics_server is not None:
            self.metrics_server.socket.close()
            self.metrics_server = None

    # ------------------------------------------------------------- the parent's event loop
    def on_apply(self, old: Applied, new: Applied) -> None:
        """The watcher's thread: hand the switch to the consumer's event loop."""
        consumer = self.consumer
        if consumer is None:  # not consuming yet: the consumer will start on app.amqp.queues
            self.switch()
        else:
            consumer.call_soon(self.switch)

    def switch(self) -> None:
        """Follow the latest applied state (call_soon does not keep the order of callbacks: each
        switch goes from what the consumer follows to what is current, whatever came between)."""
        assert self.app is not None and self.live is not None and self.slot is not None
        old, new = self.switched, self.live.current
        if old is None or new is old:
            return
        self.switched = new
        queues = new.routing.queues
        if self.selected is not None:
            queues.select([name for name in sorted(self.selected) if name in queues])
        install(self.app, new.routing)
        task_consumer = getattr(self.consumer, "task_consumer", None)
        if task_consumer is not None:
            self._switch_consumers(task_consumer, old, new)
        self.slot.write(new.loaded)
        if new.restart_required and self.live.env.on_restart_required == "exit":
            log.warning("restart required for %s and CELERY_CONFIG_ON_RESTART_REQUIRED=exit: "
                        "finishing the running tasks, then exiting to restart on version %d",
                        ", ".join(new.restart_required), new.loaded.version)
            raise WorkerShutdown(0)  # exit 0: an expected stop, the restart policy restarts it

    def _switch_consumers(self, task_consumer: Any, old: Applied, new: Applied) -> None:
        wanted = dict(new.routing.queues.consume_from)
        before, after = old.loaded.document.queues, new.loaded.document.queues
        for queue in list(task_consumer.queues):
            name = queue.name
            if name not in wanted or before.get(name) != after.get(name):
                task_consumer.cancel_by_queue(name)
                if name not in wanted:
                    log.info("stopped consuming from %s (its messages stay in Redis)", name)
        added = [queue for name, queue in wanted.items()
                 if not task_consumer.consuming_from(name)]
        for queue in added:
            task_consumer.add_queue(queue)
        if added:
            task_consumer.consume()
            log.info("consuming from %s", ", ".join(q.name for q in added))

    # ------------------------------------------------------------------- prefork children
    def follow_parent(self) -> None:
        """Before each task: adopt what the parent applied since this process last looked."""
        if self.slot is None or self.live is None or self.app is None:
            return
        loaded = self.slot.read_if_newer()
        if loaded is None:
            return
        routing = build_routing(loaded)
        install(self.app, routing)
        self.live.adopt(Applied(routing))


runtime = WorkerRuntime()


class SharedConfigLoader(AppLoader):  # type: ignore[misc]
    """Loads the shared configuration when ``celery worker`` starts."""

    def read_configuration(self, env: str = "CELERY_CONFIG_MODULE") -> dict[str, Any]:
        """Before any shared setting: the service's own wiring (Redis password, Celery's key
        prefix), so that ``celery -A worker_service.app inspect ...`` in the container reaches
        the worker too. Reads the environment only."""
        return service_wiring(Environment.from_environ(), {})

    def on_worker_init(self) -> None:
        runtime.start(self.app)


class LiveReload(bootsteps.StartStopStep):  # type: ignore[misc]
    """Consumer bootstep: starts the watcher once the task consumer exists."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c: Any) -> None:
        runtime.consumer = c
        if not runtime.selection_known:  # -Q was applied to app.amqp.queues by now
            chosen = c.app.amqp.queues._consume_from
            runtime.selected = frozenset(chosen) if chosen is not None else None
            runtime.selection_known = True
        if runtime.live is not None:
            runtime.live.watch()

    def shutdown(self, c: Any) -> None:
        if runtime.live is not None:
            runtime.live.stop()


@task_prerun.connect(weak=False)  # type: ignore[untyped-decorator]
def _follow_parent(**_: Any) -> None:
    runtime.follow_parent()


@worker_process_init.connect(weak=False)  # type: ignore[untyped-decorator]
def _close_metrics_socket(**_: Any) -> None:
    runtime.close_inherited_metrics_socket()


@inspect_command()  # type: ignore[untyped-decorator]
def config_status(state: Any, **_: Any) -> dict[str, Any]:
    """``celery -A worker_service.app inspect config_status``: what this worker applies."""
    if runtime.live is None:
        return {"error": "configuration not loaded"}
    return runtime.live.status()
