"""A tiny HTTP endpoint for liveness and readiness of the stage services.

Plain asyncio on purpose: the services' process is owned by FastStream, and an ASGI server
would compete with it for signal handling.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[dict[str, str]]]
"""Returns {component: problem} for what is not ready; empty when ready."""


class HealthServer:
    def __init__(
        self,
        host: str,
        port: int,
        readiness: ReadinessCheck,
        extra_routes: dict[str, Callable[[], Awaitable[tuple[str, bytes]]]] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.readiness = readiness
        self.extra_routes = extra_routes or {}
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        sock = self._server.sockets[0].getsockname()
        self.port = sock[1]
        log.info("health endpoint on http://%s:%d/readyz", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request_line.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) >= 2 else "/"
            status, content_type, body = await self._route(path)
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _route(self, path: str) -> tuple[str, str, bytes]:
        if path == "/healthz":
            return "200 OK", "application/json", b'{"status":"alive"}'
        if path == "/readyz":
            problems = await self.readiness()
            body = json.dumps(
                {"status": "not ready" if problems else "ready", "problems": problems}
            ).encode()
            return ("503 Service Unavailable" if problems else "200 OK"), "application/json", body
        if path in self.extra_routes:
            content_type, body = await self.extra_routes[path]()
            return "200 OK", content_type, body
        return "404 Not Found", "application/json", b'{"error":"not found"}'
