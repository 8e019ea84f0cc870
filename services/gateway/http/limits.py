"""The body limit of every route, enforced before any route or authentication runs.

`BodyLimit` is a pure ASGI middleware, the outermost layer of the app: a request whose
`Content-Length` is over its path's limit is answered 413 at once, without reading a byte of
the body; a request without one (`Transfer-Encoding: chunked`) is read into memory up to the
limit, the byte counted, and answered 413 as soon as it goes over; only a body that fits is
handed to the app. So an unauthenticated 8 MiB POST costs the gateway at most the limit in
memory for as long as it takes to read it, and never a JSON parse or a key check.

A request that declared its length still has its bytes counted: the app is handed that many and
no more, whatever the client sends after them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.http.problems import BODY_TOO_LARGE, problem_response
from services.gateway.http.views import Problem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PathLimit:
    """Requests whose path starts with `prefix` may carry up to `max_bytes`."""

    prefix: str
    max_bytes: int
    setting: str


def too_large(limit: int, setting: str) -> Problem:
    return Problem(
        type=BODY_TOO_LARGE,
        title="Body too large",
        status=413,
        detail=f"the body exceeds {limit} bytes ({setting}); split it into smaller requests",
    )


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int, per_path: Sequence[PathLimit] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
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
        if declared is not None:
            if declared > limit:
                await self._refuse(scope, send, limit, setting)
                return
            await self.app(scope, _counting(receive, declared), send)
            return
        # No length declared: read the body here, up to the limit, before the app sees it.
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break  # the client went away: the app sees it as it would have
            size += len(message.get("body", b""))
            if size > limit:
                await self._refuse(scope, send, limit, setting)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replaying(messages, receive), send)

    async def _refuse(self, scope: Scope, send: Send, limit: int, setting: str) -> None:
        log.info("%s %s: 413, body over %d bytes", scope.get("method"), scope.get("path"), limit)
        response = problem_response(too_large(limit, setting), {"Connection": "close"})
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


def _counting(receive: Receive, declared: int) -> Receive:
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        if seen >= declared > 0:
            # all it declared was handed on; whatever else it sends is not the body
            return {"type": "http.request", "body": b"", "more_body": False}
        message = await receive()
        if message["type"] == "http.request":
            body = message.get("body", b"")
            if seen + len(body) >= declared:  # the body ends here, whatever follows
                message = {"type": "http.request", "body": body[: declared - seen]}
                message["more_body"] = False
            seen += len(message["body"])
        return message

    return counted


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
