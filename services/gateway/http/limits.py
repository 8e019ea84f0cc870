"""The body limit of every route, enforced before any route or authentication runs.

`BodyLimit` is a pure ASGI middleware around the router: a request whose `Content-Length` is
over its path's limit is answered 413 at once, without reading a byte of the body; any other
body (declared, or `Transfer-Encoding: chunked`) is read into memory up to the limit, the
bytes counted, and answered 413 as soon as it goes over, or 408 if it has not fully arrived
within `FLYWHEEL_HTTP_BODY_TIMEOUT_S` (a client trickling bytes to hold a slot); only a body
that fits, in time, is handed to the app. So an unauthenticated 8 MiB POST costs the gateway
at most the limit in memory for at most the timeout, and never a JSON parse or a key check.

A request that declared its length is handed that many bytes and no more, whatever the client
sends after them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.http.problems import BODY_TOO_LARGE, TYPE_PREFIX, problem_response
from services.gateway.http.views import Problem

log = logging.getLogger(__name__)

BODY_TIMEOUT = TYPE_PREFIX + "body-timeout"


@dataclass(frozen=True)
class PathLimit:
    """Requests whose path starts with `prefix` may carry up to `max_bytes`."""

    prefix: str
    max_bytes: int
    setting: str


def too_slow(timeout_s: float) -> Problem:
    return Problem(
        type=BODY_TIMEOUT,
        title="Request timeout",
        status=408,
        detail=f"the body did not arrive within {timeout_s:g} s (FLYWHEEL_HTTP_BODY_TIMEOUT_S)",
    )


def too_large(limit: int, setting: str) -> Problem:
    return Problem(
        type=BODY_TOO_LARGE,
        title="Body too large",
        status=413,
        detail=f"the body exceeds {limit} bytes ({setting}); split it into smaller requests",
    )


class BodyLimit:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        per_path: Sequence[PathLimit] = (),
        body_timeout_s: float = 30.0,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout_s = body_timeout_s
        # longest prefix first, so a more specific limit wins
        self.per_path = sorted(per_path, key=lambda p: len(p.prefix), reverse=True)

    def limit_for(self, path: str) -> tuple[int, str]:
        for rule in self.per_path:
            if path.startswith(rule.prefix):
                return rule.max_bytes, rule.setting
        return self.max_bytes, "FLYWHEEL_MAX_REQUEST_BYTES"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.limit_for(scope.get("path", ""))
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await self._refuse(scope, send, too_large(limit, setting))
            return
        # Read the body here, up to the limit and within the timeout, before the app sees it.
        messages: list[Message] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        messages.append(message)
                        break  # the client went away: the app sees it as it would have
                    body = message.get("body", b"")
                    if declared is not None and size + len(body) >= declared:
                        # all it declared: whatever else it sends is not the body
                        message = {"type": "http.request", "body": body[: declared - size]}
                        message["more_body"] = False
                        body = message["body"]
                    size += len(body)
                    if size > limit:
                        await self._refuse(scope, send, too_large(limit, setting))
                        return
                    messages.append(message)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await self._refuse(scope, send, too_slow(self.body_timeout_s))
            return
        await self.app(scope, _replaying(messages, receive), send)

    async def _refuse(self, scope: Scope, send: Send, problem: Problem) -> None:
        log.info(
            "%s %s: %d, %s", scope.get("method"), scope.get("path"), problem.status, problem.detail
        )
        response = problem_response(problem, {"Connection": "close"})
        await response(scope, _no_receive, send)


def _content_length(scope: Scope) -> int | None:
    """The declared length; an unreadable one counts as none (the body is then counted)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return max(0, int(value))
            except ValueError:
                return None
    return None


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
