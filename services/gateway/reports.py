"""The reports' own database connections: /v1/flywheel, journeys and stages read through a
small pool of their own, so however many reports run at once, ingest (the erasure guard) and
readiness keep the service's pool, and the read model's batches keep theirs.

- `FLYWHEEL_REPORTS_POOL_SIZE` connections, each in read-only transactions with a
  `statement_timeout` of `FLYWHEEL_REPORTS_STATEMENT_TIMEOUT_S`: a report that runs longer is
  cancelled by PostgreSQL itself;
- a report that cannot get a connection within `FLYWHEEL_REPORTS_ACQUIRE_TIMEOUT_S` is
  answered 503 with Retry-After, rather than queueing without bound.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import asyncpg

from services.gateway.http.problems import Unavailable
from shared.postgres import SERVER_SETTINGS, TRANSIENT_DB_ERRORS, Connection, redact
from shared.settings import Settings

log = logging.getLogger(__name__)

Connect = Callable[[], AbstractAsyncContextManager[Connection]]
"""A connection for one report, released when the block ends; Unavailable if none can be had."""


class ReportsDb:
    def __init__(self, settings: Settings) -> None:
        self.size = settings.reports_pool_size
        self.acquire_timeout_s = settings.reports_acquire_timeout_s
        self.statement_timeout_s = settings.reports_statement_timeout_s
        self.retry_after_s = max(1, math.ceil(settings.reports_acquire_timeout_s))
        self.pool: asyncpg.Pool | None = None

    async def start(self, database_url: str, *, search_path: str | None = None) -> None:
        server_settings = {
            **SERVER_SETTINGS,
            "statement_timeout": str(int(self.statement_timeout_s * 1000)),
            "default_transaction_read_only": "on",  # reports read; nothing else runs here
            "application_name": "flywheel-gateway-reports",
        }
        if search_path:
            server_settings["search_path"] = search_path
        try:
            self.pool = await asyncpg.create_pool(
                database_url,
                min_size=1,
                max_size=self.size,
                command_timeout=self.statement_timeout_s + 5,
                server_settings=server_settings,
            )
        except TRANSIENT_DB_ERRORS as exc:
            raise RuntimeError(
                f"the reports pool could not connect to {redact(database_url)}: "
                f"{type(exc).__name__}"
            ) from exc

    async def stop(self) -> None:
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), 2.0)
            except TimeoutError:
                self.pool.terminate()
            self.pool = None

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        pool = self.pool
        if pool is None:
            raise Unavailable("database", "the read model is starting")
        try:
            conn = await pool.acquire(timeout=self.acquire_timeout_s)
        except TimeoutError:
            log.warning(
                "report refused: all %d reports connections busy for %.1f s",
                self.size,
                self.acquire_timeout_s,
            )
            raise Unavailable(
                "database", "every reports connection is busy", self.retry_after_s
            ) from None
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc
        try:
            yield conn
        except asyncpg.QueryCanceledError:
            log.warning(
                "report cancelled after %.1f s (statement_timeout)", self.statement_timeout_s
            )
            raise Unavailable(
                "database", "the report took too long and was cancelled", self.retry_after_s
            ) from None
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc
        finally:
            await pool.release(conn)


def from_pool(pool: Callable[[], asyncpg.Pool | None]) -> Connect:
    """Reports over an existing pool, without bounds of their own (tests, tools)."""

    @asynccontextmanager
    async def connection() -> AsyncIterator[Connection]:
        current = pool()
        if current is None:
            raise Unavailable("database", "the read model is starting")
        try:
            async with current.acquire() as conn:
                yield conn
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc

    return connection
