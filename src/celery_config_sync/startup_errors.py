"""A server start that fails on one of our errors says so in one line, not in a traceback.

When a lifespan raises, Starlette reports ``lifespan.startup.failed`` with the formatted
traceback as its message, and uvicorn logs that message before "Application startup failed.
Exiting." (exit code 3). For a :class:`CeleryConfigError` (a token file that cannot be read,
a variable with a bad value, nothing to load) the traceback says nothing the error's own line
does not, and it hides that line in thirty others: :class:`OneLineStartupErrors` swaps the
message for the error's line. Any other exception keeps its traceback (a bug needs it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .errors import CeleryConfigError
from .terminal_text import shown

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class OneLineStartupErrors:
    """ASGI middleware: the lifespan's start failing with a :class:`CeleryConfigError` is
    reported to the server as the error's one line (the server then exits non-zero)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        # Starlette sends the failure (with the traceback) before it re-raises: hold it until
        # the exception tells which it was.
        held: list[Message] = []

        async def hold_startup_failure(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                held.append(message)
            else:
                await send(message)

        try:
            await self.app(scope, receive, hold_startup_failure)
        except CeleryConfigError as exc:
            if not held:
                raise
            # Returning (not raising) after the failure: uvicorn logs the message alone.
            await send({"type": "lifespan.startup.failed", "message": shown(str(exc))})
            return
        except BaseException:
            for message in held:
                await send(message)
            raise
        for message in held:
            await send(message)


__all__ = ["OneLineStartupErrors"]
