"""FastAPI integration: your app follows the shared configuration and serves its probes,
status, Prometheus metrics and health page.

One router, included like any other::

    from celery import Celery
    from fastapi import FastAPI
    from celery_config_sync.celery import attach
    from celery_config_sync.fastapi import AppliedConfig, config_router

    celery_app = Celery("proj")
    attach(celery_app)                      # optional: the router attaches it if you did not
    app = FastAPI(lifespan=your_lifespan)   # your own lifespan, if any, still runs
    app.include_router(config_router(celery_app))

    @app.post("/reports")
    def report(config: AppliedConfig) -> dict[str, int]:
        celery_app.send_task("report.build")   # routed by the live configuration
        return {"config_version": config.loaded.version}

Why a router with a lifespan of its own: FastAPI (0.112.2 and later) merges the lifespan of an
included router into the app's, so the user's lifespan and ours compose with no code: the app's
own starts first, then ours; ours stops first. When the server starts, ours loads the
configuration through the fallback chain (Redis, last-known-good, snapshot; nothing at all is
an error and the server does not start), configures ``celery_app``, makes its ``send_task``
route by the live configuration (:mod:`celery_config_sync.celery`: no ``router=`` to pass),
and starts the watcher and the fleet heartbeat under the name ``service``. When the server
stops, it stops them. Nothing happens at import, nor when the router is built.

Without the routes, or to run code of your own once the configuration is loaded, enter
:func:`config_lifespan` from your lifespan and pass its state on (then include
``config_router()`` without a Celery app, so that it brings no second lifespan)::

    config = config_lifespan(celery_app)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with config(app) as state:
            ...                             # celery_app routes by the live configuration here
            yield {**state, "db": db}

State: no module global. What one app serves lives in its lifespan state (FastAPI's
``yield {key: value}`` read back as ``request.state.key``): a :class:`ConfigState` under
``request.state.celery_config_sync``, one per app and per server run, so that two apps with
two Celery apps in one process never see each other's. The attachment itself lives on the
Celery app. Your endpoints reach it through the dependencies :data:`AppliedConfig` (what this
process applies now: one immutable state, so a request routes and answers with one version)
and :data:`ConfigStateDep`; an endpoint behind :data:`TaskAccess` takes :data:`AppliedForTasks`
(both in one dependency). A request before the lifespan ran (a server started with
``--lifespan off``) is a 503.

Routes (paths relative to the ``prefix`` you include the router with):

==================================  ====================================================
``GET /healthz``                    liveness: the process answers (no Redis, no state)
``GET /readyz``                     200 once the configuration is loaded (its version,
                                    source, sha256, lagging, restart_required, and the
                                    routed queues no live worker consumes), else 503
``GET /config/status``              what this instance applies, what Redis holds, lag
``GET /config``                     the applied configuration, secrets redacted
``GET /metrics``                    Prometheus exposition (OpenMetrics when asked for)
``GET /health``                     the operator's page (``?from=V1&to=V2``: their diff)
``GET /health/live``                the fragment the page refreshes every few seconds
``GET /health.json``                the page's view as JSON
``GET /health/diff.json``           the changes between two versions of the history
``GET /static/health.{css,js}``     the page's style and script (package data)
==================================  ====================================================

The page sends a strict Content-Security-Policy (scripts, styles and fetches from the app
alone, nothing inline) and escapes every value read from Redis on the server; its links are
relative, so that it works under any prefix and behind a proxy. ``page=False`` leaves the
page and its files out. The probes and the status answer on the event loop (they read memory
only); the routes that read Redis run in the thread pool, a few at once, each answered within
CELERY_CONFIG_API_REDIS_TIMEOUT or a 503 with ``Retry-After`` (:func:`within_deadline`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, Any, TypeVar

import kombu.exceptions
import redis
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security.base import SecurityBase
from starlette.concurrency import run_in_threadpool

from celery import Celery

from .api_guard import ApiSecurity, FailedAttempts, RequestGuard, excerpt
from .api_guard import log as api_log
from .celery import ConfigSync, attach
from .connection import make_client
from .health_page import STATIC_FILES, static_file
from .health_page.source import HealthSource
from .live_config import Applied
from .metrics import ServiceMetrics, broker_client
from .startup_errors import OneLineStartupErrors
from .validation import redact

# The key of the lifespan state: request.state.celery_config_sync.
STATE_KEY = "celery_config_sync"
DEFAULT_TAGS: tuple[str, ...] = ("celery-config-sync",)

Lifespan = Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]
T = TypeVar("T")


@dataclass(frozen=True)
class ConfigState:
    """What one app's routes read, built by :func:`config_lifespan` when the server starts:
    the Celery app's attachment, its Prometheus metrics (a registry of their own), and the
    health page's reader (on the configuration's Redis client and the metrics' broker client:
    no connection pool of its own)."""

    sync: ConfigSync
    metrics: ServiceMetrics
    health: HealthSource
    # Who may call what (the token file and its companions, read when the server starts), and
    # the log of refused credentials.
    security: ApiSecurity = field(default_factory=ApiSecurity)
    failures: FailedAttempts = field(default_factory=FailedAttempts)
    # Task endpoints running at once (broker_pool_limit: one producer each). A request waits
    # at most one Redis deadline for a slot, then is a 503: a slow Redis cannot queue requests
    # without bound, nor hold more than these of the server's threads.
    task_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(10))
    # The same for the views that read Redis (the page, its JSON, the metrics' queue depths):
    # answered within one Redis deadline or 503 (:func:`within_deadline`).
    view_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(4))

    @property
    def current(self) -> Applied:
        """What this process applies now (routing state, version, restart_required)."""
        return self.sync.current


def config_lifespan(celery_app: Celery, *, service: str = "api") -> Lifespan:
    """A lifespan that follows the shared configuration of ``celery_app`` while the server runs,
    as ``service`` in the fleet view and the log tag (``api``: ``[CELERY_API]``). It yields
    ``{"celery_config_sync": ConfigState}``; pass it to ``FastAPI(lifespan=...)``, enter it from
    your own lifespan, or let :func:`config_router` bring it.

    If this process already follows ``celery_app`` (its worker, or a ``sync.start()`` of your
    own), it serves that and leaves starting and stopping to whoever started it."""

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[dict[str, Any]]:
        sync = attach(celery_app)
        # The token file first: a token that cannot be read stops the start (one line).
        security = ApiSecurity.from_environment(sync.env)
        if not security.requires_token:
            api_log.warning("CELERY_CONFIG_API_TOKEN_FILE is not set: task endpoints are open "
                            "to every client that reaches this port")
        started_here = not _following(sync)
        if started_here:
            # Redis with its retries, then the fallback files: blocking work, kept off the
            # event loop that the app's other lifespans may already use.
            await in_a_passing_thread(lambda: sync.start(service))
        # After the load: the shared settings replace broker_transport_options whole.
        bound_redis_calls(celery_app, security.redis_timeout)
        try:
            live = sync.live
            assert live is not None
            metrics = ServiceMetrics(live, broker_client(celery_app.conf.broker_url,
                                                         sync.env.redis_password))
            # The views' own client: one attempt, socket timeouts of one deadline (the
            # configuration client's 5 s and retry would hold a view's thread about 10 s).
            views_client = make_client(live.env.redis_url, retries=0,
                                       connect_timeout=security.redis_timeout,
                                       socket_timeout=security.redis_timeout)
            try:
                slots = asyncio.Semaphore(max(1, int(celery_app.conf.broker_pool_limit or 10)))
                yield {STATE_KEY: ConfigState(
                    sync, metrics, HealthSource.of(live, metrics.broker, views_client),
                    security, task_slots=slots)}
            finally:
                views_client.close()
                with contextlib.suppress(ValueError):
                    live.observers.remove(metrics)  # this run's metrics stop counting
                if metrics.broker is not None:
                    metrics.broker.close()
        finally:
            if started_here:
                # The watcher's join, the record's delete.
                await in_a_passing_thread(sync.stop)

    return lifespan


async def in_a_passing_thread(work: Callable[[], T]) -> T:
    """``work`` (blocking) in a thread of its own that ends with it: the lifespan's load and
    stop. Not Starlette's run_in_threadpool: anyio's thread machinery (about 20 ms of imports)
    is then loaded by the first request that needs it, not before the server is ready; and not
    asyncio.to_thread: its executor's thread would stay, idle, beside anyio's (with the memory
    arena of the load; the thread anyio starts later takes that arena over instead). Issue 20.
    """
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="celery-config-sync")
    try:
        return await asyncio.get_running_loop().run_in_executor(pool, work)
    finally:
        pool.shutdown(wait=False)  # the thread ends with its work, now or once it is done


def bound_redis_calls(celery_app: Celery, timeout: float) -> None:
    """Give every Redis call the API makes through ``celery_app`` (a task sent, a result read)
    a deadline of about ``timeout`` seconds: socket timeouts on the broker's and the result
    backend's clients, no reconnect loop in the result backend, and one publish retry at most
    (a connection Redis dropped is replaced once; a Redis that does not answer is an error,
    which :func:`protect` answers 503). Without them a paused Redis holds each request, and
    its thread, for minutes.

    Called by :func:`config_lifespan` once the configuration is loaded (the shared settings
    replace ``broker_transport_options`` whole): the broker's connection pool, made at the
    first task sent, keeps these options across later versions."""
    conf = celery_app.conf
    # A send makes up to three calls that may each wait (the result channel's subscription,
    # its reconnect, the publish): together within the deadline.
    per_call = max(timeout / 3, 0.05)
    options = {"socket_timeout": per_call, "socket_connect_timeout": per_call}
    conf.broker_transport_options = {**(conf.broker_transport_options or {}), **options}
    # The result backend's reconnect (when it subscribes to a sent task's channel) retries 20
    # times by default while the thread holds one of the broker_pool_limit producers: the
    # other sends queue behind it with no deadline at all.
    conf.result_backend_transport_options = {
        **(conf.result_backend_transport_options or {}),
        "retry_policy": {"max_retries": 0, "interval_start": 0, "interval_step": 0,
                         "interval_max": 0}}
    conf.redis_socket_timeout = per_call
    conf.redis_socket_connect_timeout = per_call
    conf.broker_connection_timeout = per_call
    conf.task_publish_retry_policy = {"max_retries": 1, "interval_start": 0,
                                      "interval_step": 0, "interval_max": 0}


def _following(sync: ConfigSync) -> bool:
    """True when the process already follows the configuration (its watcher runs)."""
    return sync.live is not None and sync.live.watcher is not None


def _state(request: Request) -> ConfigState | None:
    found = getattr(request.state, STATE_KEY, None)
    return found if isinstance(found, ConfigState) else None


async def config_state(request: Request) -> ConfigState:
    """Dependency: this app's :class:`ConfigState` (503 before the lifespan ran)."""
    found = _state(request)
    if found is None:
        raise HTTPException(503, "configuration not loaded")
    return found


async def applied_config(request: Request) -> Applied:
    """Dependency: what this process applies now. Take it once per request and use that one
    object for routing, sending and answering: a new version may be switched to meanwhile."""
    return (await config_state(request)).current


def _refuse(request: Request, state: ConfigState, reason: str) -> HTTPException:
    address = request.client.host if request.client else "unknown"
    state.failures.refused(address, request.url.path, reason)
    return HTTPException(401, "a valid bearer token is required (Authorization: Bearer ...)",
                         headers={"WWW-Authenticate": "Bearer"})


class TaskGate(SecurityBase):
    """The dependency of the endpoints that send tasks or read their results
    (:data:`TaskAccess`): the bearer token of CELERY_CONFIG_API_TOKEN_FILE (401 without it or
    with another; open when the variable is not set), for a request with a body (POST, PUT,
    PATCH) ``Content-Type: application/json`` (415 otherwise: a form another site submits
    cannot post), and one of the task slots (``broker_pool_limit`` at once; 503 with
    ``Retry-After`` when none frees within the Redis deadline).

    Why a security scheme of its own rather than a function depending on ``HTTPBearer``:
    FastAPI declares a dependency that is a :class:`SecurityBase` in the OpenAPI document
    (/docs then offers "Authorize" for these endpoints), and solves it as one dependency. The
    sub-dependency ``HTTPBearer`` would parse the header a second time, for nothing: the check
    is ours (its own 401 and log line). One dependency per task post instead of two (issue 20).

    What it yields is what the process applies now (as :data:`AppliedConfig`): an endpoint
    that needs both takes :data:`AppliedForTasks`, one dependency where two would be solved.
    """

    def __init__(self) -> None:
        self.model = HTTPBearerModel(
            description="The token of CELERY_CONFIG_API_TOKEN_FILE (make secrets)")
        self.scheme_name = "api-token"

    async def __call__(self, request: Request) -> AsyncIterator[Applied]:
        state = await config_state(request)
        security = state.security
        if security.requires_token and not security.token_accepted(
                request.headers.get("authorization")):
            reason = "a missing" if "authorization" not in request.headers else "a wrong"
            raise _refuse(request, state, f"{reason} bearer token")
        if request.method in ("POST", "PUT", "PATCH"):
            media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
            if media_type != "application/json":
                raise HTTPException(415, "the body must be application/json, not "
                                         f"{excerpt(media_type or 'none', 40)}")
        slots = state.task_slots
        await _take_slot(slots, security, "every task slot is waiting for Redis")
        try:
            yield state.current
        finally:
            slots.release()


# The one gate of every app (its state is the request's: ConfigState), as a dependency.
task_access = TaskGate()


async def view_access(request: Request) -> None:
    """Dependency of the read-only views (status, configuration, metrics, the health page): the
    bearer token too when CELERY_CONFIG_API_PROTECT_VIEWS is true, else open."""
    state = await config_state(request)
    if state.security.protect_views and state.security.requires_token and not (
            state.security.token_accepted(request.headers.get("authorization"))):
        raise _refuse(request, state, "a missing or wrong bearer token (views)")


async def within_deadline(state: ConfigState, work: Callable[[], T]) -> T:
    """``work`` (blocking: it reads Redis) run in the thread pool, answered within one Redis
    deadline (CELERY_CONFIG_API_REDIS_TIMEOUT), waiting for one of the view slots included;
    else a 503 with ``Retry-After``. A thread cannot be stopped: one the deadline left behind
    ends by its client's socket timeouts and holds its slot until then, so that a slow Redis
    never holds more than ``view_slots`` of the server's threads for the views."""
    security = state.security
    loop = asyncio.get_running_loop()
    ends = loop.time() + security.redis_timeout
    await _take_slot(state.view_slots, security, _too_slow(security))
    running = asyncio.ensure_future(run_in_threadpool(work))

    def finished(done: asyncio.Future[T]) -> None:
        state.view_slots.release()
        if not done.cancelled():
            done.exception()  # retrieved: a late failure is no "never retrieved" warning

    running.add_done_callback(finished)
    try:
        return await asyncio.wait_for(asyncio.shield(running), max(0.0, ends - loop.time()))
    except TimeoutError:
        raise _try_again_later(security, _too_slow(security)) from None


async def _take_slot(slots: asyncio.Semaphore, security: ApiSecurity, busy: str) -> None:
    """One of ``slots``, waited for at most one Redis deadline (CELERY_CONFIG_API_REDIS_TIMEOUT),
    else a 503 with ``Retry-After`` saying ``busy``. The slots' holders are waiting for Redis:
    a slow Redis must not queue requests behind them without bound."""
    if not slots.locked():
        await slots.acquire()  # a free slot: taken at once, no task, no timer
        return
    try:  # wait_for runs the acquire as a task of its own: paid only when there is a wait
        await asyncio.wait_for(slots.acquire(), security.redis_timeout)
    except TimeoutError:
        raise _try_again_later(security, busy) from None


def _too_slow(security: ApiSecurity) -> str:
    return f"Redis did not answer within {security.redis_timeout:g} s"


def _try_again_later(security: ApiSecurity, what: str) -> HTTPException:
    return HTTPException(503, f"{what}, try again later",
                         headers={"Retry-After": security.retry_after})


def protect(app: FastAPI, security: ApiSecurity | None = None) -> None:
    """What an app on a network needs besides :data:`TaskAccess` on its task endpoints: the Host
    header checked and the body size capped (:class:`RequestGuard`, settings from the
    environment unless given), validation errors (422) that quote at most a short excerpt of
    the input, a Redis that does not answer in time answered 503 with ``Retry-After``
    rather than a 500, and a start that fails on a setting (an unreadable token file) reported
    in the error's one line rather than a traceback (:class:`OneLineStartupErrors`). Call it
    once, before the app serves."""
    app.add_middleware(RequestGuard, security=security)  # type: ignore[arg-type]
    app.add_middleware(OneLineStartupErrors)  # type: ignore[arg-type]
    retry_after = (security or ApiSecurity()).retry_after

    async def short_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [{"loc": list(error.get("loc", ()))[:8], "msg": excerpt(error.get("msg", "")),
                   "type": error.get("type"),
                   **({"input": excerpt(error["input"])} if "input" in error else {})}
                  for error in exc.errors()[:10]]
        return JSONResponse({"detail": errors}, status_code=422)

    async def redis_unavailable(request: Request, exc: Exception) -> JSONResponse:
        state = _state(request)
        after = state.security.retry_after if state is not None else retry_after
        api_log.warning("Redis did not answer %s %s: %s: %s", request.method,
                        excerpt(request.url.path, 64), type(exc).__name__, excerpt(str(exc)))
        return JSONResponse({"detail": "Redis is unavailable, try again later"},
                            status_code=503, headers={"Retry-After": after})

    async def runtime_error(request: Request, exc: Exception) -> Response:
        # Celery's result consumer turns a failed reconnect into a RuntimeError ("the Celery
        # application must be restarted"); it reconnects on the next call once Redis is back.
        if isinstance(exc.__cause__, REDIS_ERRORS):
            return await redis_unavailable(request, exc)
        api_log.error("%s %s failed: %s", request.method, excerpt(request.url.path, 64),
                      excerpt(f"{type(exc).__name__}: {exc}", 200))
        return JSONResponse({"detail": "Internal Server Error"}, status_code=500)

    app.add_exception_handler(RequestValidationError, short_validation_error)
    app.add_exception_handler(RuntimeError, runtime_error)
    for kind in REDIS_ERRORS:
        app.add_exception_handler(kind, redis_unavailable)


# What a Redis that is paused, gone or refusing raises through redis-py, kombu and Celery.
REDIS_ERRORS: tuple[type[Exception], ...] = (
    redis.RedisError, kombu.exceptions.OperationalError, TimeoutError, ConnectionError)

ConfigStateDep = Annotated[ConfigState, Depends(config_state)]
TaskAccess = Depends(task_access)
ViewAccess = Depends(view_access)
AppliedConfig = Annotated[Applied, Depends(applied_config)]
# TaskAccess and AppliedConfig in one dependency: ``def send(applied: AppliedForTasks)``.
AppliedForTasks = Annotated[Applied, TaskAccess]
Version = Annotated[int, Query(ge=1)]


def config_router(celery_app: Celery | None = None, *, service: str = "api", page: bool = True,
                  tags: list[str | Enum] | None = None) -> APIRouter:
    """The routes listed in this module's documentation, as a router to include (with any
    ``prefix``). With ``celery_app``, the router brings :func:`config_lifespan` (``service``)
    and FastAPI merges it into the app's lifespan; ``None``: your own lifespan enters
    :func:`config_lifespan` itself. ``page=False``: the probes, status and metrics only."""
    router = APIRouter(tags=list(tags) if tags is not None else list(DEFAULT_TAGS),
                       lifespan=(config_lifespan(celery_app, service=service)
                                 if celery_app is not None else None))
    _probes_and_status(router)
    if page:
        _health_page(router)
    return router


def _probes_and_status(router: APIRouter) -> None:
    """/healthz and /readyz are always open (an orchestrator's probe has no token); the other
    routes are views (:func:`view_access`)."""
    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "alive"}

    @router.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        """Readiness: the configuration is loaded (from Redis or a fallback: ``source``)."""
        state = _state(request)
        if state is None:
            return JSONResponse({"ready": False}, status_code=503)
        status = state.sync.status()
        # Routed queues no live worker consumes, as of the last heartbeat (None: not read yet);
        # a detail, never unreadiness: this instance serves whether or not workers consume.
        coverage = state.sync.live.coverage if state.sync.live is not None else None
        return JSONResponse({"ready": True, **state.current.loaded.summary(),
                             **{k: status[k] for k in ("published_version", "lagging",
                                                       "restart_required", "last_error")},
                             "unconsumed_queues": (coverage.unconsumed if coverage is not None
                                                   else None)})

    @router.get("/config/status", dependencies=[ViewAccess])
    async def config_status(state: ConfigStateDep) -> dict[str, Any]:
        """What this instance applies, what Redis holds, and whether it lags."""
        return state.sync.status()

    @router.get("/config", dependencies=[ViewAccess])
    async def config(applied: AppliedConfig) -> dict[str, Any]:
        """The configuration this instance applies (secrets redacted)."""
        loaded = applied.loaded
        return {**loaded.summary(), "meta": redact(loaded.meta),
                **redact(loaded.document.sections())}

    @router.get("/metrics", include_in_schema=False, dependencies=[ViewAccess])
    async def metrics(request: Request, state: ConfigStateDep) -> Response:
        """Prometheus exposition (OpenMetrics when the scraper asks for it); the queue depths
        read the broker's Redis, hence the thread pool and the deadline."""
        body, content_type = await within_deadline(
            state, lambda: state.metrics.render(request.headers.get("accept")))
        return Response(body, media_type=content_type)


def _health_page(router: APIRouter) -> None:
    """The page's routes. Each imports the view and the rendering when it first answers, not
    when the server starts: a process that is never asked for its page (most of them) does not
    load them, and a start is ready sooner (issue 20)."""
    @router.get("/health", include_in_schema=False, dependencies=[ViewAccess])
    async def health(request: Request, state: ConfigStateDep,
                     old: Annotated[int | None, Query(alias="from", ge=1)] = None,
                     new: Annotated[int | None, Query(alias="to", ge=1)] = None,
                     ) -> HTMLResponse:
        """The operator's page: published version, fleet and drift, queues, history, and the
        changes between two versions when ``from`` and ``to`` are given."""
        from .health_page.render import PAGE_HEADERS, render_page
        from .health_page.view import health_view, version_diff

        docs = _docs_link(request)

        def page() -> str:
            compared = (version_diff(state.health, old, new)
                        if old is not None and new is not None else None)
            return render_page(health_view(state.health), compared, docs=docs)

        return HTMLResponse(await within_deadline(state, page), headers=PAGE_HEADERS)

    @router.get("/health/live", include_in_schema=False, dependencies=[ViewAccess])
    async def health_live(state: ConfigStateDep) -> HTMLResponse:
        """The part of the page that its script refreshes every few seconds."""
        from .health_page.render import PAGE_HEADERS, render_live
        from .health_page.view import health_view

        fragment = await within_deadline(state, lambda: render_live(health_view(state.health)))
        return HTMLResponse(fragment, headers=PAGE_HEADERS)

    @router.get("/health.json", dependencies=[ViewAccess])
    async def health_json(state: ConfigStateDep) -> dict[str, Any]:
        """What the health page shows, as JSON: published version, fleet, queues, history."""
        from .health_page.view import health_view

        return await within_deadline(state, lambda: health_view(state.health))

    @router.get("/health/diff.json", dependencies=[ViewAccess])
    async def health_diff(state: ConfigStateDep, old: Annotated[Version, Query(alias="from")],
                          new: Annotated[Version, Query(alias="to")]) -> dict[str, Any]:
        """The changes from one version of the history to another, each tagged live or
        restart."""
        from .health_page.view import version_diff

        return await within_deadline(state, lambda: version_diff(state.health, old, new))

    for name, media_type in STATIC_FILES.items():
        router.add_api_route(f"/static/{name}", _static_endpoint(name, media_type),
                             methods=["GET"], include_in_schema=False,
                             name=f"celery_config_sync_static_{name.replace('.', '_')}")


def _static_endpoint(name: str, media_type: str) -> Callable[[Request], Response]:
    """One of the page's files, read from the package once (when the router is built) and
    served with a validator: a browser revalidates, and a 304 costs no body."""
    body = static_file(name).read_bytes()
    etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

    def endpoint(request: Request) -> Response:
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=media_type, headers=headers)

    return endpoint


def _docs_link(request: Request) -> str | None:
    """The app's API docs relative to the page (the router may be included under a prefix and
    the app served under a root path), or None when the app has no docs."""
    docs = getattr(request.app, "docs_url", None)
    if not isinstance(docs, str) or not docs:
        return None
    root = str(request.scope.get("root_path", ""))
    path = request.url.path
    if root and path.startswith(root):
        path = path[len(root):]
    return "../" * max(path.count("/") - 1, 0) + docs.lstrip("/")


__all__ = [
    "REDIS_ERRORS",
    "STATE_KEY",
    "ApiSecurity",
    "AppliedConfig",
    "AppliedForTasks",
    "ConfigState",
    "ConfigStateDep",
    "RequestGuard",
    "TaskAccess",
    "TaskGate",
    "ViewAccess",
    "applied_config",
    "bound_redis_calls",
    "config_lifespan",
    "config_router",
    "config_state",
    "protect",
    "task_access",
    "view_access",
    "within_deadline",
]
